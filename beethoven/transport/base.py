"""The `Transport` protocol every network backend implements, and what backends share.

A transport moves opaque bytes: best-effort datagrams (UDP, for probes and gossip) and
reliable byte streams (TCP, for push-pull and SeekChat frames). It knows nothing of the
wire format, encryption or membership. Two backends exist: `beethoven.transport.udp_tcp`
(real trio sockets) and `beethoven.transport.memory` (an in-process simulated network).

This module also holds the pieces both backends share: the stats record, the inbound
stream guard (idle and lifetime deadlines) and a nursery helper that re-raises a
caller's exception unwrapped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import NoReturn, Protocol

import attrs
import trio

from beethoven.address import Address
from beethoven.errors import BeethovenError

__all__ = [
    "Datagram",
    "GuardedStream",
    "StreamHandler",
    "Transport",
    "TransportCounters",
    "TransportStats",
    "open_service_nursery",
    "run_guarded_handler",
]

logger = logging.getLogger(__name__)

Datagram = tuple[bytes, Address]
"""One received datagram: its payload and the address it came from."""

StreamHandler = Callable[[trio.abc.Stream, Address], Awaitable[None]]
"""Called once per inbound stream with the stream and the peer's address."""


@attrs.frozen
class TransportStats:
    """Counters of one transport since it was opened (a snapshot).

    Attributes:
        datagrams_sent: datagrams handed to `Transport.send_datagram`.
        bytes_sent: payload bytes of those datagrams.
        datagrams_received: datagrams returned by `Transport.receive_datagram`.
        bytes_received: payload bytes of those datagrams.
        send_errors: datagrams that could not be sent (oversize, OS error).
        receive_errors: OS errors while receiving (the receive loop carried on).
        receive_dropped: datagrams dropped because the receive queue was full.
        streams_opened: outbound streams successfully connected.
        connect_failures: outbound connects that failed (refused, unreachable, timeout).
        streams_accepted: inbound streams handed to the handler.
        streams_refused: inbound streams closed at once because the cap was reached.
        streams_timed_out: inbound streams whose handler was cancelled by a deadline.
        stream_errors: inbound stream handlers that ended with an exception.
    """

    datagrams_sent: int = 0
    bytes_sent: int = 0
    datagrams_received: int = 0
    bytes_received: int = 0
    send_errors: int = 0
    receive_errors: int = 0
    receive_dropped: int = 0
    streams_opened: int = 0
    connect_failures: int = 0
    streams_accepted: int = 0
    streams_refused: int = 0
    streams_timed_out: int = 0
    stream_errors: int = 0


@attrs.define
class TransportCounters:
    """The mutable counters behind `TransportStats` (backends increment these)."""

    datagrams_sent: int = 0
    bytes_sent: int = 0
    datagrams_received: int = 0
    bytes_received: int = 0
    send_errors: int = 0
    receive_errors: int = 0
    receive_dropped: int = 0
    streams_opened: int = 0
    connect_failures: int = 0
    streams_accepted: int = 0
    streams_refused: int = 0
    streams_timed_out: int = 0
    stream_errors: int = 0

    def snapshot(self) -> TransportStats:
        """Return the current values as a frozen `TransportStats`."""
        return TransportStats(**attrs.asdict(self))


class Transport(Protocol):
    """What the membership runner, the store sync and discovery need from a network.

    Implementations are opened by an async context manager that yields once the
    transport is bound; leaving it closes every socket and cancels background tasks.
    """

    @property
    def local_address(self) -> Address:
        """The address peers should use to reach this transport (the advertised one)."""
        ...

    async def send_datagram(self, data: bytes, to: Address) -> None:
        """Send one datagram, best effort.

        Network errors (unreachable, oversize, ...) are counted in `stats` and logged
        at debug; they are never raised.
        """
        ...

    async def receive_datagram(self) -> Datagram:
        """Wait for the next datagram and return it with its source address."""
        ...

    async def connect(
        self,
        to: Address,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the agreed Transport API
    ) -> trio.abc.Stream:
        """Open a reliable stream to *to*.

        Args:
            to: the peer's address.
            timeout: seconds allowed for the connection to be established.

        Returns:
            The connected stream; the caller owns it and must close it.

        Raises:
            TransportError: refused, unreachable or timed out.
        """
        ...

    async def serve_streams(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Accept inbound streams forever, running *handler* for each in its own task.

        At most the configured number of handlers run at once; an inbound stream over
        the cap is closed at once and counted. Each handler is cancelled when its
        stream has been idle for the idle timeout, or has lived for the maximum
        lifetime; the stream is closed when the handler returns.

        Args:
            handler: ``await handler(stream, peer)`` per inbound stream.
            task_status: ``started()`` once inbound streams are being accepted.
        """
        ...

    def stats(self) -> TransportStats:
        """Return a snapshot of this transport's counters."""
        ...


class GuardedStream(trio.abc.Stream):
    """A stream wrapper that pushes a cancel scope's deadline forward on each activity.

    Every ``receive_some`` that returns data and every completed ``send_all`` moves the
    deadline to ``now + idle_timeout``, but never past the hard ``lifetime_deadline``.
    A peer that goes silent (or trickles bytes forever) therefore cannot hold a
    handler task and its socket indefinitely.

    Args:
        inner: the stream to wrap.
        scope: the cancel scope around the handler using this stream.
        idle_timeout: seconds of inactivity allowed.
        lifetime_deadline: absolute trio time after which the handler is cancelled.
    """

    def __init__(
        self,
        inner: trio.abc.Stream,
        scope: trio.CancelScope,
        *,
        idle_timeout: float,
        lifetime_deadline: float,
    ) -> None:
        self._inner = inner
        self._scope = scope
        self._idle_timeout = idle_timeout
        self._lifetime_deadline = lifetime_deadline
        self.touch()

    @property
    def inner(self) -> trio.abc.Stream:
        """The wrapped stream."""
        return self._inner

    def touch(self) -> None:
        """Record activity now: push the idle deadline forward."""
        self._scope.deadline = min(
            trio.current_time() + self._idle_timeout, self._lifetime_deadline
        )

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of *data*, then count it as activity."""
        await self._inner.send_all(data)
        self.touch()

    async def wait_send_all_might_not_block(self) -> None:
        """Delegate to the wrapped stream."""
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Receive up to *max_bytes*; data received counts as activity."""
        data = await self._inner.receive_some(max_bytes)
        if data:
            self.touch()
        return data

    async def aclose(self) -> None:
        """Close the wrapped stream."""
        await self._inner.aclose()


# Errors a misbehaving or vanished peer can cause inside a handler: expected, so they
# are counted and logged at debug rather than reported as bugs.
_PEER_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, BeethovenError, OSError)


async def run_guarded_handler(
    handler: StreamHandler,
    stream: trio.abc.Stream,
    peer: Address,
    *,
    idle_timeout: float,
    max_lifetime: float,
    counters: TransportCounters,
) -> None:
    """Run *handler* on *stream* under idle and lifetime deadlines, then close the stream.

    The handler's own exceptions never escape: peer-caused errors are logged at debug,
    anything else is logged with its traceback; both are counted.

    Args:
        handler: the user's stream handler.
        stream: the accepted inbound stream (closed on return).
        peer: the peer's address as the network reports it.
        idle_timeout: seconds of inactivity before the handler is cancelled.
        max_lifetime: seconds after which the handler is cancelled regardless.
        counters: where timeouts and errors are counted.
    """
    try:
        with trio.CancelScope() as scope:
            lifetime = (
                trio.current_time() + max_lifetime if math.isfinite(max_lifetime) else math.inf
            )
            guarded = GuardedStream(
                stream, scope, idle_timeout=idle_timeout, lifetime_deadline=lifetime
            )
            try:
                await handler(guarded, peer)
            except _PEER_ERRORS as exc:
                counters.stream_errors += 1
                logger.debug("stream handler for %s ended: %r", peer, exc)
            except Exception:
                counters.stream_errors += 1
                logger.exception("stream handler for %s failed", peer)
        if scope.cancelled_caught:
            counters.streams_timed_out += 1
            logger.debug("stream from %s cancelled by its idle/lifetime deadline", peer)
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def open_service_nursery() -> AsyncIterator[trio.Nursery]:
    """Open a nursery for background tasks that is cancelled when the body ends.

    An exception raised by the body (or a single failing background task) comes out
    unwrapped rather than inside an ``ExceptionGroup``, so ``async with`` openers built
    on this behave like plain resources to their callers.

    Yields:
        The nursery; start background tasks in it.
    """
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            exc = group.exceptions[0]
            raise exc from exc.__cause__
        raise
