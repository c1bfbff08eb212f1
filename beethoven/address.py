"""Network addresses: the `Address` record and parsing of `host:port` strings."""

from __future__ import annotations

import ipaddress

import attrs

from beethoven.errors import ConfigError

__all__ = ["Address", "parse_address"]


@attrs.frozen(order=True)
class Address:
    """A UDP/TCP endpoint: an IP literal (v4 or v6, no brackets) and a port.

    Attributes:
        host: IP address literal, e.g. ``"127.0.0.2"`` or ``"::1"``.
        port: port number, 0..65535 (0 only for "pick one" when binding).
    """

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def is_ipv6(self) -> bool:
        """True when the host is an IPv6 literal."""
        return ":" in self.host

    def as_tuple(self) -> tuple[str, int]:
        """Return ``(host, port)`` as the socket module wants it."""
        return (self.host, self.port)


def parse_address(text: str, *, default_port: int | None = None) -> Address:
    """Parse ``"host:port"``, ``"[v6]:port"`` or a bare host into an `Address`.

    Args:
        text: the address text. The host must be an IP literal.
        default_port: port to use when *text* has none.

    Returns:
        The parsed address, with the host normalised (``ipaddress`` form).

    Raises:
        ConfigError: the text is not a valid address, or it has no port and no
            default was given.
    """
    raw = text.strip()
    host: str
    port_text: str | None
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise ConfigError(f"bad address {text!r}: missing ']'")
        host = raw[1:end]
        rest = raw[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ConfigError(f"bad address {text!r}: junk after ']'")
        port_text = rest[1:] if rest else None
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    else:
        host, port_text = raw, None
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        raise ConfigError(f"bad address {text!r}: {host!r} is not an IP address") from None
    if port_text is None or port_text == "":
        if default_port is None:
            raise ConfigError(f"bad address {text!r}: no port")
        port = default_port
    else:
        if not port_text.isdigit():
            raise ConfigError(f"bad address {text!r}: port {port_text!r} is not a number")
        port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"bad address {text!r}: port {port} out of range")
    return Address(host, port)
