"""SeekChat: the one-round-trip exchange between a Locator and a BeaconServer.

A Locator opens a TCP stream to a candidate address and sends one `BeaconHello`
frame; the beacon answers with one `BeaconReply` (its cluster name, its identity and a
few live members to join through) or one `ErrorReply`, then closes. Frames come from
``beethoven.wire.framing``: length-prefixed, size-capped, and AEAD-sealed when the
cluster has a key, so a peer without the key can neither produce a hello the beacon
accepts nor read the reply. Every step has a deadline; nothing a peer sends (or fails
to send) can stall either side beyond it.

This module owns the client side (`exchange`, `hello`) and the error codes. The
server side is `beethoven.discovery.beacon.BeaconServer`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from beethoven.address import Address
from beethoven.errors import BeethovenError, CodecError, SecurityError, TransportError
from beethoven.wire.messages import (
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    BeaconHello,
    BeaconReply,
    ErrorReply,
    Message,
)

if TYPE_CHECKING:
    from beethoven.transport.base import Transport
    from beethoven.wire.security import Keyring

__all__ = [
    "ERR_VERSION",
    "ERR_WRONG_CLUSTER",
    "PEER_ERRORS",
    "SEEKCHAT_MAX_FRAME",
    "ChannelFactory",
    "HelloOutcome",
    "HelloResult",
    "MessageChannel",
    "classify_error",
    "default_channel_factory",
    "exchange",
    "hello",
]

logger = logging.getLogger(__name__)

#: `ErrorReply` code: the hello named another cluster.
ERR_WRONG_CLUSTER = 1
#: `ErrorReply` code: no protocol version in common.
ERR_VERSION = 2

#: Largest SeekChat frame either side accepts. A hello is well under 1 KiB and a
#: reply with a handful of members a few KiB; anything bigger is an attack or a bug.
SEEKCHAT_MAX_FRAME = 64 * 1024

#: Errors a peer can cause while we talk to it. They end the exchange quietly.
PEER_ERRORS: tuple[type[BaseException], ...] = (
    BeethovenError,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    trio.EndOfChannel,
)


class MessageChannel(Protocol):
    """What SeekChat needs from a framed channel (`FrameChannel` satisfies it)."""

    async def send(self, msg: Message) -> None:
        """Encode, seal and send one message."""
        ...

    async def receive(self) -> Message:
        """Receive, open and decode one message (raises on any bad input)."""
        ...

    async def aclose(self) -> None:
        """Close the channel and its stream."""
        ...


ChannelFactory = Callable[[trio.abc.Stream, "Keyring | None", int, float], MessageChannel]
"""``factory(stream, keyring, max_frame, read_timeout) -> MessageChannel``."""


def default_channel_factory(
    stream: trio.abc.Stream, keyring: Keyring | None, max_frame: int, read_timeout: float
) -> MessageChannel:
    """Wrap *stream* in a `beethoven.wire.framing.FrameChannel`.

    Args:
        stream: a connected stream.
        keyring: the cluster keys, or ``None`` for an open cluster.
        max_frame: largest frame accepted, bytes.
        read_timeout: seconds a single receive may wait.

    Returns:
        The framed channel.
    """
    from beethoven.wire.framing import FrameChannel

    return FrameChannel(stream, keyring, max_frame=max_frame, read_timeout=read_timeout)


class HelloOutcome:
    """How one SeekChat exchange ended, as stable strings (used in stats and logs)."""

    BEACON = "beacon"  # a BeaconReply of our cluster
    NO_ANSWER = "no_answer"  # connect refused, unreachable or timed out
    REFUSED = "refused"  # the beacon answered with an ErrorReply
    WRONG_CLUSTER = "wrong_cluster"  # a reply naming another cluster
    BAD_REPLY = "bad_reply"  # garbage, failed authentication, wrong message type
    TIMEOUT = "timeout"  # connected, but no reply within the deadline
    CLOSED = "closed"  # connected, but the peer closed without a reply


@attrs.frozen
class HelloResult:
    """The outcome of one `exchange`.

    Attributes:
        outcome: a `HelloOutcome` value.
        reply: the beacon's reply when *outcome* is ``beacon``.
        error: the beacon's refusal when *outcome* is ``refused``.
    """

    outcome: str
    reply: BeaconReply | None = None
    error: ErrorReply | None = None


def classify_error(exc: BaseException) -> str:
    """Map an exception raised while reading a peer's frame to a `HelloOutcome`-style word.

    Args:
        exc: the exception.

    Returns:
        ``"auth"`` (authentication failed), ``"timeout"``, ``"closed"`` (EOF, reset)
        or ``"garbage"`` (undecodable, oversize, anything else).
    """
    if isinstance(exc, SecurityError):
        return "auth"
    if isinstance(exc, trio.TooSlowError | TimeoutError):
        return "timeout"
    if isinstance(exc, CodecError):
        return "garbage"
    if isinstance(
        exc,
        trio.EndOfChannel
        | trio.BrokenResourceError
        | trio.ClosedResourceError
        | TransportError
        | EOFError
        | ConnectionError,
    ):
        return "closed"
    return "garbage"


async def exchange(
    transport: Transport,
    addr: Address,
    *,
    cluster: str,
    sender: str,
    keyring: Keyring | None,
    connect_timeout: float,
    reply_timeout: float,
    max_frame: int = SEEKCHAT_MAX_FRAME,
    channel_factory: ChannelFactory | None = None,
) -> HelloResult:
    """Say hello to the beacon at *addr* and classify what happened.

    Never raises for anything the network or the peer does; the whole exchange takes
    at most ``connect_timeout + reply_timeout`` seconds (plus a bounded close).

    Args:
        transport: the node's transport (its ``connect`` is used).
        addr: the candidate beacon.
        cluster: our cluster name, sent in the hello and required in the reply.
        sender: our node name.
        keyring: cluster keys (frames sealed), or ``None`` for an open cluster.
        connect_timeout: seconds allowed for the TCP connect.
        reply_timeout: seconds allowed for sending the hello and reading the reply.
        max_frame: largest reply frame accepted.
        channel_factory: builds the framed channel (tests inject fakes); default
            `default_channel_factory`.

    Returns:
        The classified result; ``result.reply`` is set only for a reply of *cluster*.
    """
    factory = channel_factory or default_channel_factory
    try:
        with trio.fail_after(connect_timeout):
            stream = await transport.connect(addr, timeout=connect_timeout)
    except PEER_ERRORS as exc:
        logger.debug("seekchat: no beacon at %s: %r", addr, exc)
        return HelloResult(HelloOutcome.NO_ANSWER)
    channel = factory(stream, keyring, max_frame, reply_timeout)
    try:
        try:
            with trio.fail_after(reply_timeout):
                await channel.send(BeaconHello(cluster=cluster, sender=sender))
                answer = await channel.receive()
        except PEER_ERRORS as exc:
            kind = classify_error(exc)
            logger.debug("seekchat: exchange with %s failed (%s): %r", addr, kind, exc)
            if kind == "timeout":
                return HelloResult(HelloOutcome.TIMEOUT)
            if kind == "closed":
                return HelloResult(HelloOutcome.CLOSED)
            return HelloResult(HelloOutcome.BAD_REPLY)
        except Exception as exc:
            # A bug, or input no check foresaw: it ends this exchange, never the sweep.
            logger.warning("seekchat: exchange with %s failed, dropped: %r", addr, exc)
            logger.debug("seekchat: exchange with %s failed", addr, exc_info=exc)
            return HelloResult(HelloOutcome.BAD_REPLY)
    finally:
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(0.5),
            contextlib.suppress(*PEER_ERRORS),
        ):
            await channel.aclose()
    if isinstance(answer, ErrorReply):
        logger.debug("seekchat: %s refused: %d %s", addr, answer.code, answer.reason)
        return HelloResult(HelloOutcome.REFUSED, error=answer)
    if not isinstance(answer, BeaconReply):
        logger.debug("seekchat: %s answered with %s", addr, type(answer).__name__)
        return HelloResult(HelloOutcome.BAD_REPLY)
    if answer.cluster != cluster:
        logger.debug("seekchat: %s belongs to cluster %r", addr, answer.cluster)
        return HelloResult(HelloOutcome.WRONG_CLUSTER)
    if answer.vmax < PROTOCOL_MIN or answer.vmin > PROTOCOL_MAX:
        logger.debug("seekchat: %s speaks versions %d..%d", addr, answer.vmin, answer.vmax)
        return HelloResult(HelloOutcome.REFUSED)
    return HelloResult(HelloOutcome.BEACON, reply=answer)


async def hello(
    transport: Transport,
    addr: Address,
    *,
    cluster: str,
    sender: str,
    keyring: Keyring | None,
    connect_timeout: float = 0.25,
    reply_timeout: float = 1.0,
    max_frame: int = SEEKCHAT_MAX_FRAME,
) -> BeaconReply | None:
    """Ask the beacon at *addr* for its cluster's members.

    Args:
        transport: the node's transport.
        addr: the candidate beacon.
        cluster: our cluster name.
        sender: our node name.
        keyring: cluster keys, or ``None`` for an open cluster.
        connect_timeout: seconds allowed for the TCP connect.
        reply_timeout: seconds allowed for the hello and the reply.
        max_frame: largest reply frame accepted.

    Returns:
        The beacon's reply if a beacon of *cluster* answered, else ``None``.
    """
    result = await exchange(
        transport,
        addr,
        cluster=cluster,
        sender=sender,
        keyring=keyring,
        connect_timeout=connect_timeout,
        reply_timeout=reply_timeout,
        max_frame=max_frame,
    )
    return result.reply
