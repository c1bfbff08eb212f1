"""The exception hierarchy of Beethoven: one base class, one subclass per concern."""

from __future__ import annotations

__all__ = [
    "BeethovenError",
    "ClockSkewError",
    "CodecError",
    "ConfigError",
    "NameConflictError",
    "SecurityError",
    "StoreError",
    "TransportError",
]


class BeethovenError(Exception):
    """Base class of every error raised by Beethoven."""


class ConfigError(BeethovenError, ValueError):
    """A configuration value is missing, malformed or out of range."""


class CodecError(BeethovenError, ValueError):
    """Bytes could not be decoded into a message, or a value could not be encoded."""


class SecurityError(BeethovenError):
    """A packet or frame failed authentication, decryption or the replay check."""


class ClockSkewError(SecurityError):
    """An authentic sealed frame was refused: the sender's clock is off beyond the age limit.

    Attributes:
        offset_ms: sender timestamp minus this node's clock, in milliseconds.
    """

    def __init__(self, message: str, *, offset_ms: int) -> None:
        super().__init__(message)
        self.offset_ms = offset_ms


class TransportError(BeethovenError, OSError):
    """A socket could not be bound, connected, read or written."""


class StoreError(BeethovenError):
    """The replicated state store or one of its backends failed."""


class NameConflictError(BeethovenError):
    """This node's name is held by a live member at another address: the join was refused.

    Attributes:
        name: the contested node name.
        holder: the address (``host:port``) of the live member that holds it.
    """

    def __init__(self, name: str, holder: str) -> None:
        super().__init__(name, holder)
        self.name = name
        self.holder = holder

    def __str__(self) -> str:
        return (
            f"node name {self.name!r} is held by a live member at {self.holder}; "
            "choose another name, or stop that node and retry once the cluster sees it gone"
        )
