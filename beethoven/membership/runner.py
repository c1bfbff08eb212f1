"""Drive a sans-I/O membership core on a `Transport` with trio's clock.

The runner owns four tasks in one nursery: the datagram receive loop, the timer
loop, the datagram send loop and the inbound stream server. Every call into the
core happens synchronously between two checkpoints, so the core needs no lock.
Effects are carried out without ever blocking the core: datagrams go through a
bounded send queue (full → dropped and counted), stream requests run in their own
task, and member events go to a `Fanout` whose subscribers have bounded buffers.

Inbound TCP streams share the node's port: the first frame decides who handles it.
Membership messages go to the core; other message types go to the handlers given
in ``stream_handlers`` (the beacon, store sync, CLI queries).

Every per-peer exchange is contained: an exception other than the expected network
and protocol errors (a bug, or input no check foresaw) ends that exchange only. It is
counted in `RunnerStats.exchange_errors` (and by kind) and logged in one WARNING
line naming the peer (at most one per kind every `EXCHANGE_WARN_INTERVAL` seconds;
the rest, and every traceback, at DEBUG); the node goes on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import NoReturn

import attrs
import trio
import trio.lowlevel

from beethoven.address import Address
from beethoven.errors import (
    BeethovenError,
    ClockSkewError,
    CodecError,
    NameConflictError,
    SecurityError,
)
from beethoven.fanout import Fanout, FanoutStats, Subscription
from beethoven.membership.api import (
    Effect,
    MemberEvent,
    MemberInfo,
    MembershipCore,
    SendDatagram,
    StreamRequest,
)
from beethoven.transport.base import Transport
from beethoven.wire.framing import FrameChannel
from beethoven.wire.messages import Message, PushPullReply
from beethoven.wire.packet import PacketCodec
from beethoven.wire.security import Keyring

__all__ = ["MembershipRunner", "RunnerStats", "StreamHandler"]

logger = logging.getLogger(__name__)

#: Handler for an inbound stream whose first message is of a registered type.
StreamHandler = Callable[[FrameChannel, Address, Message], Awaitable[None]]

#: Seconds between two WARNING lines about failed exchanges of one kind.
EXCHANGE_WARN_INTERVAL = 10.0

_NETWORK_ERRORS = (
    BeethovenError,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    trio.EndOfChannel,
)


@attrs.frozen
class RunnerStats:
    """Counters of the runner (the core and the wire keep their own).

    ``exchange_errors`` counts per-peer exchanges ended by an unexpected exception;
    ``exchange_errors_by_kind`` splits it by kind: ``"serve <first message type>"``
    (inbound streams: push-pull, beacon, store sync, queries), ``"datagram <type>"``
    (store deltas), ``"request <type>"`` (outbound push-pull, the node's store sync).
    """

    datagrams_received: int
    datagrams_sent: int
    datagrams_dropped_queue_full: int
    datagrams_unpackable: int
    streams_served: int
    streams_bad_first_frame: int
    stream_requests: int
    stream_requests_failed: int
    core_errors: int
    exchange_errors: int
    events: FanoutStats
    exchange_errors_by_kind: Mapping[str, int] = attrs.field(factory=dict)


_NOT_COUNTERS = frozenset({"events", "exchange_errors_by_kind"})


class MembershipRunner:
    """Runs a `MembershipCore` on a transport until cancelled.

    Args:
        core: the sans-I/O membership core.
        transport: a bound transport (real sockets or the memory network).
        packets: packs and seals outgoing messages, opens and checks incoming ones.
        keyring: the cluster keys for TCP frames, or ``None`` for an open cluster.
        stream_timeout: read deadline on inbound streams, seconds.
        max_frame: largest accepted TCP frame, bytes.
        send_queue: datagrams that may wait to be sent before new ones are dropped.
        stream_handlers: first-message type → handler, for non-membership streams.
    """

    def __init__(
        self,
        core: MembershipCore,
        transport: Transport,
        packets: PacketCodec,
        *,
        keyring: Keyring | None = None,
        stream_timeout: float = 5.0,
        max_frame: int = 20 * 2**20,
        send_queue: int = 4096,
        stream_handlers: Mapping[type, StreamHandler] | None = None,
    ) -> None:
        self.core = core
        self.transport = transport
        self.packets = packets
        self._keyring = keyring
        self._stream_timeout = stream_timeout
        self._max_frame = max_frame
        self._handlers: dict[type, StreamHandler] = dict(stream_handlers or {})
        self._datagram_handlers: dict[type, Callable[[Address, Message], None]] = {}
        self._send_in, self._send_out = trio.open_memory_channel[tuple[bytes, Address]](send_queue)
        self._events: Fanout[MemberEvent] = Fanout()
        self._kick = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._pending: dict[int, trio.Event] = {}
        self._awaited: set[int] = set()  # join() tokens whose outcome someone waits for
        self._results: dict[int, bool] = {}
        # One counter per int field of RunnerStats (the others are built in stats()).
        self._n = dict.fromkeys(
            (f.name for f in attrs.fields(RunnerStats) if f.name not in _NOT_COUNTERS), 0
        )
        self._errors_by_kind: dict[str, int] = {}
        self._warn_after: dict[str, float] = {}
        self._running = False

    # --- public API -----------------------------------------------------------------

    def add_stream_handler(self, message_type: type, handler: StreamHandler) -> None:
        """Route inbound streams whose first message is *message_type* to *handler*."""
        self._handlers[message_type] = handler

    def add_datagram_handler(
        self, message_type: type, handler: Callable[[Address, Message], None]
    ) -> None:
        """Hand received messages of *message_type* to *handler* instead of the core.

        The handler runs synchronously in the receive loop and must not block.
        """
        self._datagram_handlers[message_type] = handler

    def send(self, to: Address, messages: Sequence[Message]) -> None:
        """Queue *messages* for *to* as datagrams (never blocks; dropped if the queue is full)."""
        self._queue_datagram(SendDatagram(to, tuple(messages)))

    async def request(self, to: Address, message: Message) -> Message | None:
        """Open a stream to *to*, send *message*, return the reply.

        Returns ``None`` on any failure, or when no reply came within the runner's
        stream timeout.
        """
        return await self._request(to, message, self._stream_timeout)

    async def _request(self, to: Address, message: Message, limit: float) -> Message | None:
        channel: FrameChannel | None = None
        try:
            with trio.fail_after(limit):
                stream = await self.transport.connect(to, timeout=limit)
                channel = self._channel(stream)
                await channel.send(message)
                return await channel.receive()
        except _NETWORK_ERRORS as exc:
            logger.debug("request to %s failed: %r", to, exc)
            return None
        except Exception as exc:
            self.exchange_failed(f"request {type(message).__name__}", to, exc)
            return None
        finally:
            if channel is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await channel.aclose()

    @asynccontextmanager
    async def subscribe(self, maxlen: int = 1024) -> AsyncIterator[Subscription[MemberEvent]]:
        """Receive `MemberEvent`s for the duration of the block (drop-oldest when full)."""
        async with self._events.subscribe(maxlen) as sub:
            yield sub

    def members(self) -> list[MemberInfo]:
        """Snapshot of every known member, self included."""
        return self.core.members()

    async def join(self, seeds: Sequence[Address]) -> bool:
        """Push-pull with every seed; return True if at least one answered.

        Waits at most for the stream timeouts the core chose for the requests.

        Raises:
            NameConflictError: a seed's answer shows this node's name held by a live
                member at another address (the core has withdrawn).
        """
        if not self._running:
            raise RuntimeError("the runner is not running")
        self._check_name()
        tokens = self._apply(self.core.join(trio.current_time(), list(seeds)))
        self._awaited.update(tokens)  # before any checkpoint: no request has finished yet
        ok = False
        try:
            for token in tokens:
                event = self._pending.get(token)
                if event is not None:
                    await event.wait()
                ok = self._results.pop(token, False) or ok
        finally:
            self._awaited.difference_update(tokens)
            for token in tokens:
                self._results.pop(token, None)
        self._check_name()
        return ok

    def _check_name(self) -> None:
        holder = self.core.name_conflict
        if holder is not None:
            raise NameConflictError(self.core.name, str(holder.addr))

    async def leave(self, linger: float = 1.0) -> None:
        """Announce a graceful leave, then keep gossiping for *linger* seconds."""
        if not self._running:
            return
        self._apply(self.core.leave(trio.current_time()))
        await trio.sleep(linger)

    def stats(self) -> RunnerStats:
        """Current counters."""
        return RunnerStats(
            **self._n,
            events=self._events.stats(),
            exchange_errors_by_kind=dict(self._errors_by_kind),
        )

    def exchange_failed(self, kind: str, peer: Address, exc: Exception) -> None:
        """Count and log an exchange with *peer* that ended with an unexpected *exc*.

        The exchange is over; the node goes on. One WARNING line per kind at most
        every `EXCHANGE_WARN_INTERVAL` seconds, the rest at DEBUG with the traceback.

        Args:
            kind: what the exchange was, e.g. ``"serve StoreSyncRequest"``.
            peer: the other end.
            exc: what ended it.
        """
        self._n["exchange_errors"] += 1
        self._errors_by_kind[kind] = self._errors_by_kind.get(kind, 0) + 1
        now = trio.current_time()
        if now >= self._warn_after.get(kind, -math.inf):
            self._warn_after[kind] = now + EXCHANGE_WARN_INTERVAL
            logger.warning("%s with %s failed, exchange dropped: %r", kind, peer, exc)
        logger.debug("%s with %s failed", kind, peer, exc_info=exc)

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Serve until cancelled; ``task_status.started()`` once the core runs."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.transport.serve_streams, self._serve_stream)
                nursery.start_soon(self._send_loop)
                nursery.start_soon(self._receive_loop)
                self._running = True
                self._apply(self.core.start(trio.current_time()))
                nursery.start_soon(self._timer_loop)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._running = False
            self._nursery = None
            self._events.close()
            for event in self._pending.values():
                event.set()
        raise AssertionError("unreachable")  # pragma: no cover

    # --- effects --------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], list[Effect]]) -> list[int]:
        """Call into the core; a core bug is logged and counted, never fatal."""
        try:
            effects = fn()
        except Exception:
            self._n["core_errors"] += 1
            logger.exception("membership core failed in %s; input dropped", what)
            return []
        return self._apply(effects)

    def _apply(self, effects: Sequence[Effect]) -> list[int]:
        tokens: list[int] = []
        for effect in effects:
            if isinstance(effect, SendDatagram):
                self._queue_datagram(effect)
            elif isinstance(effect, StreamRequest):
                tokens.append(effect.token)
                self._pending[effect.token] = trio.Event()
                if self._nursery is not None:
                    self._nursery.start_soon(self._stream_request, effect)
            elif isinstance(effect, MemberEvent):
                self._events.publish(effect)
        self._kick.set()
        return tokens

    def _queue_datagram(self, effect: SendDatagram) -> None:
        try:
            datagrams = self.packets.pack(effect.messages)
        except (CodecError, SecurityError) as exc:
            self._n["datagrams_unpackable"] += 1
            logger.debug("cannot pack datagram for %s: %s", effect.to, exc)
            return
        for data in datagrams:
            try:
                self._send_in.send_nowait((data, effect.to))
            except trio.WouldBlock:
                self._n["datagrams_dropped_queue_full"] += 1

    # --- tasks ----------------------------------------------------------------------

    async def _send_loop(self) -> None:
        async for data, to in self._send_out:
            await self.transport.send_datagram(data, to)
            self._n["datagrams_sent"] += 1

    async def _receive_loop(self) -> None:
        while True:
            data, source = await self.transport.receive_datagram()
            self._n["datagrams_received"] += 1
            messages = self.packets.unpack(data, source)
            if messages:
                self._deliver(source, messages)

    def _deliver(self, source: Address, messages: list[Message]) -> None:
        """Divert messages with a registered datagram handler; the rest go to the core."""
        if self._datagram_handlers:
            core_messages: list[Message] = []
            for message in messages:
                handler = self._datagram_handlers.get(type(message))
                if handler is None:
                    core_messages.append(message)
                    continue
                try:
                    handler(source, message)
                except Exception as exc:
                    self.exchange_failed(f"datagram {type(message).__name__}", source, exc)
            messages = core_messages
        if messages:
            self._call(
                "handle_datagram",
                lambda: self.core.handle_datagram(trio.current_time(), source, messages),
            )

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.core.next_deadline()
            if trio.current_time() >= deadline:
                self._call("handle_timeout", lambda: self.core.handle_timeout(trio.current_time()))
                # Guard against a core that does not move its deadline forward.
                await trio.lowlevel.checkpoint()
                continue
            self._kick = trio.Event()
            with trio.move_on_at(deadline if math.isfinite(deadline) else math.inf):
                await self._kick.wait()

    async def _stream_request(self, request: StreamRequest) -> None:
        self._n["stream_requests"] += 1
        reply = await self._request(request.to, request.message, request.timeout)
        if reply is None:
            self._n["stream_requests_failed"] += 1
        if request.token in self._awaited:
            # An answer from a node bearing our own name is no join: nothing is merged.
            self._results[request.token] = reply is not None and not (
                isinstance(reply, PushPullReply) and reply.sender == self.core.name
            )
        self._call(
            "handle_stream_reply",
            lambda: self.core.handle_stream_reply(trio.current_time(), request.token, reply),
        )
        event = self._pending.pop(request.token, None)
        if event is not None:
            event.set()

    def _channel(self, stream: trio.abc.Stream) -> FrameChannel:
        return FrameChannel(
            stream, self._keyring, max_frame=self._max_frame, read_timeout=self._stream_timeout
        )

    async def _serve_stream(self, stream: trio.abc.Stream, peer: Address) -> None:
        channel = self._channel(stream)
        kind = "serve stream"
        try:
            try:
                first = await channel.receive()
            except _NETWORK_ERRORS as exc:
                self._n["streams_bad_first_frame"] += 1
                if isinstance(exc, ClockSkewError):  # rate-limited where raised (SkewNotice)
                    logger.warning("stream from %s refused: %s", peer, exc)
                else:
                    logger.debug("dropped stream from %s: %r", peer, exc)
                return
            self._n["streams_served"] += 1
            kind = f"serve {type(first).__name__}"
            handler = self._handlers.get(type(first))
            if handler is not None:
                await handler(channel, peer, first)
                return
            reply: Message | None = None
            try:
                reply, effects = self.core.handle_stream(trio.current_time(), peer, first)
            except Exception:
                self._n["core_errors"] += 1
                logger.exception("membership core failed on a stream from %s", peer)
                return
            self._apply(effects)
            if reply is not None:
                with trio.move_on_after(self._stream_timeout):
                    await channel.send(reply)
        except _NETWORK_ERRORS as exc:
            logger.debug("stream from %s ended: %r", peer, exc)
        except Exception as exc:
            self.exchange_failed(kind, peer, exc)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await channel.aclose()
