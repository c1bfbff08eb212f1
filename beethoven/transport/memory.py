"""An in-process network for tests and simulations: `MemoryNetwork` and `MemoryTransport`.

Many transports attach to one `MemoryNetwork`, each under its own `Address`. The network
delivers datagrams after a per-link latency and jitter, and can lose, duplicate and
reorder them, cut named partitions, and crash nodes — all changeable while traffic
flows. Everything runs on the trio clock, so a whole cluster runs under
``trio.testing.MockClock(autojump_threshold=0)`` in virtual time.

Determinism: every directional link ``a → b`` has its own ``random.Random`` seeded from
``(seed, a, b)``, drawn a fixed number of times per datagram. trio deliberately
randomises the order in which runnable tasks are scheduled, so one shared generator
would be consulted in a run-dependent order whenever two tasks send in the same
scheduling batch; per-link generators make each link's fate depend only on the order
of that link's own datagrams. Delivery ties are broken by ``(time, source, link
sequence)``, never by scheduling order. The full semantics are in ``specs/transport.md``.
"""

from __future__ import annotations

import heapq
import logging
import math
import operator
import random
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import NoReturn

import attrs
import trio

from beethoven.address import Address
from beethoven.errors import ConfigError, TransportError
from beethoven.transport.base import (
    Datagram,
    StreamHandler,
    TransportCounters,
    TransportStats,
    open_service_nursery,
    run_guarded_handler,
)

__all__ = [
    "LinkConditions",
    "MemoryNetwork",
    "MemoryStream",
    "MemoryTransport",
    "NetworkStats",
]

logger = logging.getLogger(__name__)

_DEFAULT_RECEIVE_MAX = 65536


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be within 0..1, got {value!r}")


def _check_duration(name: str, value: float) -> None:
    if not 0.0 <= value < math.inf:
        raise ConfigError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


@attrs.frozen
class LinkConditions:
    """How one directional link ``a → b`` treats datagrams.

    Attributes:
        latency: one-way delay in seconds (also applied to stream bytes).
        jitter: extra delay drawn uniformly from ``[0, jitter)`` per datagram.
        loss: probability that a datagram is dropped. ``1.0`` also blocks streams.
        duplicate: probability that a datagram is delivered twice.
        reorder: probability that a datagram is held back by an extra
            ``max(latency + jitter, 1 ms) × U[1, 2)``, letting later ones overtake it.
    """

    latency: float = 0.001
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0

    def __attrs_post_init__(self) -> None:
        _check_duration("latency", self.latency)
        _check_duration("jitter", self.jitter)
        _check_probability("loss", self.loss)
        _check_probability("duplicate", self.duplicate)
        _check_probability("reorder", self.reorder)


@attrs.frozen
class NetworkStats:
    """Counters of a `MemoryNetwork` since it was created (a snapshot).

    Attributes:
        datagrams_sent: datagrams handed to the network by any transport.
        datagrams_delivered: datagrams placed in a receiver's queue (copies included).
        dropped_loss: datagrams dropped by a link's loss probability.
        dropped_partition: datagrams dropped because a partition separated the ends.
        dropped_crashed: datagrams from or to a crashed address.
        dropped_unattached: datagrams to an address with no transport attached.
        dropped_queue_full: datagrams dropped because the receiver's queue was full.
        duplicated: extra copies created.
        reordered: datagrams held back to be reordered.
        streams_connected: streams successfully connected.
        connects_refused: connects refused (nothing attached or not serving streams).
        connects_timed_out: connects that timed out (partition, crash, total loss).
    """

    datagrams_sent: int = 0
    datagrams_delivered: int = 0
    dropped_loss: int = 0
    dropped_partition: int = 0
    dropped_crashed: int = 0
    dropped_unattached: int = 0
    dropped_queue_full: int = 0
    duplicated: int = 0
    reordered: int = 0
    streams_connected: int = 0
    connects_refused: int = 0
    connects_timed_out: int = 0


@attrs.define
class _NetworkCounters:
    datagrams_sent: int = 0
    datagrams_delivered: int = 0
    dropped_loss: int = 0
    dropped_partition: int = 0
    dropped_crashed: int = 0
    dropped_unattached: int = 0
    dropped_queue_full: int = 0
    duplicated: int = 0
    reordered: int = 0
    streams_connected: int = 0
    connects_refused: int = 0
    connects_timed_out: int = 0


class _LinkState:
    """Per directional link: its random generator and datagram sequence number."""

    def __init__(self, seed: int, src: Address, dst: Address) -> None:
        # str seeds are hashed with SHA-512 by random.Random: stable across runs,
        # unlike hash(), which is salted per process.
        self.rng = random.Random(f"beethoven-link|{seed}|{src}|{dst}")
        self.seq = 0


class MemoryNetwork:
    r"""A simulated network that `MemoryTransport` objects attach to.

    Args:
        seed: seeds every link's random generator; same seed, same program → same
            delivery trace.
        default_latency: one-way latency of links without their own setting.
        default_jitter: jitter of links without their own setting.
        receive_queue: datagrams a transport buffers before dropping (and counting).
        stream_buffer: bytes a stream direction buffers before ``send_all`` blocks.
        max_datagram: largest datagram a transport accepts to send.

    Example:
        >>> async def main():                                    # doctest: +SKIP
        ...     net = MemoryNetwork(seed=1)
        ...     async with net.attach(Address("10.0.0.1", 1)) as a, \\
        ...                net.attach(Address("10.0.0.2", 1)) as b:
        ...         net.set_link(a.local_address, b.local_address, loss=0.2)
        ...         await a.send_datagram(b"hi", b.local_address)
        ...         print(await b.receive_datagram())
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        default_latency: float = 0.001,
        default_jitter: float = 0.0,
        receive_queue: int = 1024,
        stream_buffer: int = 65536,
        max_datagram: int = 65507,
    ) -> None:
        if receive_queue < 1 or stream_buffer < 1 or max_datagram < 1:
            raise ConfigError("receive_queue, stream_buffer and max_datagram must be >= 1")
        self._seed = seed
        self._default = LinkConditions(latency=default_latency, jitter=default_jitter)
        self._overrides: dict[tuple[Address, Address], dict[str, float]] = {}
        self._link_cache: dict[tuple[Address, Address], LinkConditions] = {}
        self._link_states: dict[tuple[Address, Address], _LinkState] = {}
        self._partitions: dict[str, tuple[frozenset[Address], frozenset[Address]]] = {}
        self._crashed: set[Address] = set()
        self._transports: dict[Address, MemoryTransport] = {}
        self._pipes: weakref.WeakSet[_Pipe] = weakref.WeakSet()
        self._change_lot = trio.lowlevel.ParkingLot()
        self._counters = _NetworkCounters()
        self.receive_queue = receive_queue
        self.stream_buffer = stream_buffer
        self.max_datagram = max_datagram

    # ---- attaching ---------------------------------------------------------------

    @asynccontextmanager
    async def attach(
        self,
        addr: Address,
        *,
        max_inbound_streams: int = 256,
        stream_idle_timeout: float = 10.0,
        stream_max_lifetime: float = 120.0,
    ) -> AsyncIterator[MemoryTransport]:
        """Attach a transport at *addr* for the duration of the ``async with`` block.

        Args:
            addr: the transport's address (also its advertised address).
            max_inbound_streams: inbound streams handled at once; more are closed.
            stream_idle_timeout: seconds an inbound stream may be idle.
            stream_max_lifetime: seconds an inbound stream may live.

        Yields:
            The attached transport, with its delivery task running.

        Raises:
            TransportError: a transport is already attached at *addr*.
        """
        if addr in self._transports:
            raise TransportError(f"{addr} is already attached to this network")
        if max_inbound_streams < 1:
            raise ConfigError("max_inbound_streams must be at least 1")
        if not stream_idle_timeout > 0 or not stream_max_lifetime > 0:
            raise ConfigError("stream timeouts must be positive")
        transport = MemoryTransport(
            self,
            addr,
            max_inbound_streams=max_inbound_streams,
            stream_idle_timeout=stream_idle_timeout,
            stream_max_lifetime=stream_max_lifetime,
        )
        self._transports[addr] = transport
        try:
            async with open_service_nursery() as nursery:
                await nursery.start(transport._deliver_loop)
                yield transport
        finally:
            del self._transports[addr]
            transport._close()

    def attached(self) -> list[Address]:
        """Return the addresses currently attached, sorted."""
        return sorted(self._transports)

    # ---- link controls -----------------------------------------------------------

    def link(self, a: Address, b: Address) -> LinkConditions:
        """Return the effective conditions of the directional link ``a → b``."""
        key = (a, b)
        cached = self._link_cache.get(key)
        if cached is None:
            overrides = self._overrides.get(key)
            cached = attrs.evolve(self._default, **overrides) if overrides else self._default
            self._link_cache[key] = cached
        return cached

    def set_link(
        self,
        a: Address,
        b: Address,
        *,
        latency: float | None = None,
        jitter: float | None = None,
        loss: float | None = None,
        duplicate: float | None = None,
        reorder: float | None = None,
    ) -> None:
        """Override conditions of the directional link ``a → b`` (``None`` = unchanged).

        Only ``a → b`` changes, so ``set_link(a, b, loss=1.0)`` is one-way loss. Fields
        never overridden follow the network default.

        Raises:
            ConfigError: a value is out of range.
        """
        given = _given(
            latency=latency, jitter=jitter, loss=loss, duplicate=duplicate, reorder=reorder
        )
        merged = {**self._overrides.get((a, b), {}), **given}
        attrs.evolve(self._default, **merged)  # validates before anything changes
        self._overrides[(a, b)] = merged
        self._changed()

    def clear_link(self, a: Address, b: Address) -> None:
        """Drop every override of ``a → b``; the link follows the default again."""
        self._overrides.pop((a, b), None)
        self._changed()

    def set_default(
        self,
        *,
        latency: float | None = None,
        jitter: float | None = None,
        loss: float | None = None,
        duplicate: float | None = None,
        reorder: float | None = None,
    ) -> None:
        """Change the conditions of every link that does not override them.

        Raises:
            ConfigError: a value is out of range.
        """
        given = _given(
            latency=latency, jitter=jitter, loss=loss, duplicate=duplicate, reorder=reorder
        )
        self._default = attrs.evolve(self._default, **given)
        self._changed()

    def partition(self, name: str, group_a: Iterable[Address], group_b: Iterable[Address]) -> None:
        """Cut all traffic, both ways, between *group_a* and *group_b* until healed.

        Several named partitions may be active at once; re-using a name replaces that
        partition. Datagrams already in flight are still delivered; stream bytes stall
        until the partition heals.
        """
        self._partitions[name] = (frozenset(group_a), frozenset(group_b))
        self._changed()

    def heal(self, name: str) -> None:
        """Remove the partition called *name*.

        Raises:
            KeyError: no partition has that name.
        """
        del self._partitions[name]
        self._changed()

    def heal_all(self) -> None:
        """Remove every partition."""
        self._partitions.clear()
        self._changed()

    def crash(self, addr: Address) -> None:
        """Make *addr* silent, like a host that lost power.

        Its datagrams (sent, in flight or arriving) vanish, connects to or from it
        time out and bytes on its existing streams stall. Its tasks keep running; use
        `recover` to bring its network back.
        """
        self._crashed.add(addr)
        self._changed()

    def recover(self, addr: Address) -> None:
        """Undo `crash` for *addr* (what was lost meanwhile stays lost)."""
        self._crashed.discard(addr)
        self._changed()

    def is_crashed(self, addr: Address) -> bool:
        """Return True while *addr* is crashed."""
        return addr in self._crashed

    def stats(self) -> NetworkStats:
        """Return a snapshot of the network's counters."""
        return NetworkStats(**attrs.asdict(self._counters))

    # ---- internals ---------------------------------------------------------------

    def _changed(self) -> None:
        self._link_cache.clear()
        self._change_lot.unpark_all()
        # Stream readers parked behind a blocked link re-check now.
        for pipe in list(self._pipes):
            pipe.lot.unpark_all()

    def _separated(self, a: Address, b: Address) -> bool:
        for group_a, group_b in self._partitions.values():
            if (a in group_a and b in group_b) or (a in group_b and b in group_a):
                return True
        return False

    def _stream_blocked(self, a: Address, b: Address) -> bool:
        # TCP needs both directions: total loss either way blocks the stream.
        return (
            a in self._crashed
            or b in self._crashed
            or self._separated(a, b)
            or self.link(a, b).loss >= 1.0
            or self.link(b, a).loss >= 1.0
        )

    def _route(self, src: Address, dst: Address, data: bytes) -> None:
        counters = self._counters
        counters.datagrams_sent += 1
        if src in self._crashed or dst in self._crashed:
            counters.dropped_crashed += 1
            return
        if self._partitions and self._separated(src, dst):
            counters.dropped_partition += 1
            return
        dest = self._transports.get(dst)
        if dest is None:
            counters.dropped_unattached += 1
            return
        key = (src, dst)
        state = self._link_states.get(key)
        if state is None:
            state = self._link_states[key] = _LinkState(self._seed, src, dst)
        link = self.link(src, dst)
        # Always six draws, in this order, so changing one probability never shifts
        # the draws that decide the other effects.
        rnd = state.rng.random
        draws = [rnd() for _ in range(6)]
        u_loss, u_jitter, u_reorder, u_reorder_delay, u_dup, u_dup_jitter = draws
        if u_loss < link.loss:
            counters.dropped_loss += 1
            return
        now = trio.current_time()
        deliver_at = now + link.latency + link.jitter * u_jitter
        if u_reorder < link.reorder:
            counters.reordered += 1
            deliver_at += max(link.latency + link.jitter, 0.001) * (1.0 + u_reorder_delay)
        state.seq += 1
        dest._enqueue(deliver_at, src, state.seq, data)
        if u_dup < link.duplicate:
            counters.duplicated += 1
            state.seq += 1
            dest._enqueue(now + link.latency + link.jitter * u_dup_jitter, src, state.seq, data)

    def _deliver(self, dest: MemoryTransport, src: Address, data: bytes) -> None:
        if dest.local_address in self._crashed:
            self._counters.dropped_crashed += 1
            return
        try:
            dest._queue_send.send_nowait((data, src))
        except trio.WouldBlock:
            self._counters.dropped_queue_full += 1
            dest._counters.receive_dropped += 1
        else:
            self._counters.datagrams_delivered += 1

    async def _connect(self, src: Address, dst: Address) -> MemoryStream:
        while self._stream_blocked(src, dst):
            await self._wait_change()
        await trio.sleep(self.link(src, dst).latency + self.link(dst, src).latency)
        while self._stream_blocked(src, dst):
            await self._wait_change()
        dest = self._transports.get(dst)
        if dest is None or not dest._serving:
            self._counters.connects_refused += 1
            raise TransportError(f"connect {src} → {dst}: connection refused")
        client, server = self._stream_pair(src, dst)
        dest._accept_queue.append((server, src))
        dest._accept_lot.unpark_all()
        self._counters.streams_connected += 1
        return client

    async def _wait_change(self) -> None:
        # A connect blocked by a partition or crash waits for any network change.
        await self._change_lot.park()

    def _stream_pair(self, a: Address, b: Address) -> tuple[MemoryStream, MemoryStream]:
        """Two connected stream ends, ``a``'s and ``b``'s, subject to the a↔b links."""
        ab = _Pipe(self, a, b)
        ba = _Pipe(self, b, a)
        self._pipes.add(ab)
        self._pipes.add(ba)
        return MemoryStream(out=ab, inp=ba), MemoryStream(out=ba, inp=ab)


def _given(**values: float | None) -> dict[str, float]:
    return {name: value for name, value in values.items() if value is not None}


class MemoryTransport:
    """A `Transport` attached to a `MemoryNetwork` (create with `MemoryNetwork.attach`).

    See `beethoven.transport.base.Transport` for the method contracts. Streams are
    `MemoryStream` objects; the *peer* passed to a stream handler is the connecting
    transport's address.
    """

    def __init__(
        self,
        network: MemoryNetwork,
        addr: Address,
        *,
        max_inbound_streams: int,
        stream_idle_timeout: float,
        stream_max_lifetime: float,
    ) -> None:
        self._network = network
        self._addr = addr
        self._max_inbound = max_inbound_streams
        self._idle_timeout = stream_idle_timeout
        self._max_lifetime = stream_max_lifetime
        self._counters = TransportCounters()
        self._heap: list[tuple[float, Address, int, bytes]] = []
        self._wakeup = trio.Event()
        self._queue_send, self._queue_recv = trio.open_memory_channel[Datagram](
            network.receive_queue
        )
        self._accept_queue: deque[tuple[MemoryStream, Address]] = deque()
        self._accept_lot = trio.lowlevel.ParkingLot()
        self._serving = False
        self._active_inbound = 0

    @property
    def local_address(self) -> Address:
        """This transport's address on the network."""
        return self._addr

    @property
    def network(self) -> MemoryNetwork:
        """The network this transport is attached to."""
        return self._network

    async def send_datagram(self, data: bytes, to: Address) -> None:
        """Hand one datagram to the network; never raises for network conditions.

        Args:
            data: the payload (at most the network's ``max_datagram`` bytes).
            to: the destination address.
        """
        await trio.lowlevel.checkpoint()
        self._counters.datagrams_sent += 1
        self._counters.bytes_sent += len(data)
        if len(data) > self._network.max_datagram:
            self._counters.send_errors += 1
            logger.debug("dropping %d-byte datagram to %s: over max_datagram", len(data), to)
            return
        self._network._route(self._addr, to, bytes(data))

    async def receive_datagram(self) -> Datagram:
        """Wait for the next datagram delivered to this transport.

        Returns:
            ``(payload, source address)``.

        Raises:
            trio.ClosedResourceError: the transport was detached.
        """
        try:
            data, source = await self._queue_recv.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError("transport detached from its network") from None
        self._counters.datagrams_received += 1
        self._counters.bytes_received += len(data)
        return data, source

    async def connect(
        self,
        to: Address,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the agreed Transport API
    ) -> trio.abc.Stream:
        """Open a stream to *to* after one round trip of latency.

        Refusal is immediate (after the round trip) when nothing is attached at *to*
        or it is not serving streams. A partition, a crash of either end or total loss
        on either direction makes the connect wait until *timeout*.

        Args:
            to: the peer's address.
            timeout: seconds allowed to establish the connection.

        Returns:
            A connected `MemoryStream`.

        Raises:
            TransportError: refused or timed out.
        """
        try:
            with trio.fail_after(timeout):
                stream = await self._network._connect(self._addr, to)
        except trio.TooSlowError:
            self._counters.connect_failures += 1
            self._network._counters.connects_timed_out += 1
            raise TransportError(
                f"connect {self._addr} → {to} timed out after {timeout}s"
            ) from None
        except TransportError:
            self._counters.connect_failures += 1
            raise
        self._counters.streams_opened += 1
        return stream

    async def serve_streams(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Accept inbound streams forever, one handler task each, within the cap.

        Args:
            handler: ``await handler(stream, peer)`` per inbound stream.
            task_status: ``started()`` once connects are accepted.

        Raises:
            trio.BusyResourceError: another task is already serving this transport.
        """
        if self._serving:
            raise trio.BusyResourceError("serve_streams is already running on this transport")
        self._serving = True
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    while not self._accept_queue:
                        await self._accept_lot.park()
                    stream, peer = self._accept_queue.popleft()
                    if self._active_inbound >= self._max_inbound:
                        self._counters.streams_refused += 1
                        logger.debug("refusing stream from %s: %d open", peer, self._max_inbound)
                        await trio.aclose_forcefully(stream)
                        continue
                    self._active_inbound += 1
                    self._counters.streams_accepted += 1
                    nursery.start_soon(self._run_handler, handler, stream, peer)
        finally:
            self._serving = False
            while self._accept_queue:
                stream, _ = self._accept_queue.popleft()
                stream._abort()

    async def _run_handler(
        self, handler: StreamHandler, stream: MemoryStream, peer: Address
    ) -> None:
        try:
            await run_guarded_handler(
                handler,
                stream,
                peer,
                idle_timeout=self._idle_timeout,
                max_lifetime=self._max_lifetime,
                counters=self._counters,
            )
        finally:
            self._active_inbound -= 1

    def stats(self) -> TransportStats:
        """Return a snapshot of this transport's counters."""
        return self._counters.snapshot()

    def _enqueue(self, deliver_at: float, src: Address, seq: int, data: bytes) -> None:
        item = (deliver_at, src, seq, data)
        heapq.heappush(self._heap, item)
        if self._heap[0] is item:
            self._wakeup.set()

    async def _deliver_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # One task per transport moves due datagrams from the heap to the queue.
        task_status.started()
        heap = self._heap
        network = self._network
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, src, _, data = heapq.heappop(heap)
                network._deliver(self, src, data)
            self._wakeup = trio.Event()
            with trio.move_on_at(heap[0][0] if heap else math.inf):
                await self._wakeup.wait()

    def _close(self) -> None:
        self._heap.clear()
        self._queue_send.close()
        while self._accept_queue:
            stream, _ = self._accept_queue.popleft()
            stream._abort()


class _Pipe:
    """One direction of a `MemoryStream`: timestamped chunks in flight, flow control."""

    def __init__(self, network: MemoryNetwork, src: Address, dst: Address) -> None:
        self.network = network
        self.src = src
        self.dst = dst
        self.limit = network.stream_buffer
        self.chunks: deque[tuple[float, bytes]] = deque()
        self.buffered = 0
        self.last_at = -math.inf
        self.eof = False  # the writer finished (send_eof or close)
        self.reader_closed = False
        self.lot = trio.lowlevel.ParkingLot()  # reader and writer wait here

    def push(self, data: bytes) -> None:
        # Bytes keep their order: a chunk never arrives before the previous one.
        at = max(trio.current_time() + self.network.link(self.src, self.dst).latency, self.last_at)
        self.last_at = at
        self.chunks.append((at, data))
        self.buffered += len(data)
        self.lot.unpark_all()


class MemoryStream(trio.abc.HalfCloseableStream):
    """One end of an in-memory, flow-controlled byte stream between two addresses.

    Bytes arrive after the link's latency, stall while the link is blocked (partition,
    crash, total loss) and resume when it heals. ``send_all`` blocks while the peer has
    more than the network's ``stream_buffer`` bytes unread. Passes
    ``trio.testing.check_half_closeable_stream``.
    """

    def __init__(self, *, out: _Pipe, inp: _Pipe) -> None:
        self._out = out
        self._in = inp
        self._closed = False
        self._send_busy = False
        self._receive_busy = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of *data* (blocks while the peer's buffer is full).

        Raises:
            trio.BusyResourceError: another task is sending on this stream.
            trio.ClosedResourceError: this end was closed or ``send_eof`` was called.
            trio.BrokenResourceError: the peer closed its end.
        """
        if self._send_busy:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._send_busy = True
        try:
            await trio.lowlevel.checkpoint()
            await self._wait_writable(for_send=True)
            if data:
                self._out.push(bytes(data))
        finally:
            self._send_busy = False

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the peer's buffer has room (or the stream is broken).

        Raises:
            trio.BusyResourceError: another task is sending on this stream.
            trio.ClosedResourceError: this end was closed.
        """
        if self._send_busy:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._send_busy = True
        try:
            await trio.lowlevel.checkpoint()
            await self._wait_writable(for_send=False)
        finally:
            self._send_busy = False

    async def _wait_writable(self, *, for_send: bool) -> None:
        pipe = self._out
        while True:
            if self._closed or (for_send and pipe.eof):
                raise trio.ClosedResourceError("stream closed for sending")
            if pipe.reader_closed:
                if for_send:
                    raise trio.BrokenResourceError("the peer closed the stream")
                return
            if pipe.buffered < pipe.limit:
                return
            await pipe.lot.park()

    async def send_eof(self) -> None:
        """Tell the peer no more bytes will come; receiving still works.

        Raises:
            trio.BusyResourceError: another task is sending on this stream.
            trio.ClosedResourceError: this end was closed.
        """
        if self._send_busy:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._send_busy = True
        try:
            await trio.lowlevel.checkpoint()
            if self._closed:
                raise trio.ClosedResourceError("stream closed")
            self._out.eof = True
            self._out.lot.unpark_all()
        finally:
            self._send_busy = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive up to *max_bytes* bytes; ``b""`` once the peer sent EOF or closed.

        Raises:
            trio.BusyResourceError: another task is receiving on this stream.
            trio.ClosedResourceError: this end was closed.
        """
        if max_bytes is None:
            max_bytes = _DEFAULT_RECEIVE_MAX
        else:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receive_busy:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receive_busy = True
        try:
            await trio.lowlevel.checkpoint()
            pipe = self._in
            network = pipe.network
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("stream closed")
                if pipe.chunks:
                    if network._stream_blocked(pipe.src, pipe.dst):
                        await pipe.lot.park()
                        continue
                    at, data = pipe.chunks[0]
                    if at > trio.current_time():
                        with trio.move_on_at(at):
                            await pipe.lot.park()
                        continue
                    if len(data) <= max_bytes:
                        pipe.chunks.popleft()
                    else:
                        pipe.chunks[0] = (at, data[max_bytes:])
                        data = data[:max_bytes]
                    pipe.buffered -= len(data)
                    pipe.lot.unpark_all()
                    return data
                if pipe.eof:
                    return b""
                await pipe.lot.park()
        finally:
            self._receive_busy = False

    async def aclose(self) -> None:
        """Close this end: the peer reads what was sent, then EOF; its sends break."""
        self._abort()
        await trio.lowlevel.checkpoint()

    def _abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._out.eof = True
        self._out.lot.unpark_all()
        self._in.reader_closed = True
        self._in.chunks.clear()
        self._in.buffered = 0
        self._in.lot.unpark_all()
