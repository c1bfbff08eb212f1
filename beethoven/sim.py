"""A discrete-event simulator driving many sans-I/O membership cores on one heap.

One `Simulator` owns a virtual clock, a network model with the memory network's
semantics (per-link latency + jitter, loss, one-way loss, partitions) and a list of
`SimNode`, each holding one `SwimCore`. Everything is an entry on a single heap:

* one entry per node for its core's next deadline (lazily invalidated: an entry is
  honoured only if it still equals the node's scheduled deadline and life epoch);
* one entry per datagram in flight and per TCP stream leg;
* control actions (crash, restart, leave, partition, loss changes, slow-node stalls).

No task, no object per timer. A run is replayable from its seed: the network, the
scenario helpers and every core draw from RNGs derived from it.

Faults: ``crash`` is kill -9 (the node goes silent, its in-flight work is lost);
``restart`` boots a new core with a new generation that rejoins through seeds;
``leave`` is graceful; ``slow`` blocks a node's loop for stretches — while blocked it
processes nothing, and when it wakes it first runs its overdue timers, then its
backlog in arrival order (the worst case that Lifeguard guards against).

TCP streams are modelled: a request reaches a running, reachable peer after the
one-way latency (plus retransmission delays drawn from the loss rate), the reply
comes back the same way; a crashed peer answers with a reset after one RTT, a
partition or an expired timeout yields ``None``.

Metrics: per-kind member-event logs with virtual timestamps (`Simulator.log`),
false suspicions and false deaths against the ground truth, detection times per
observer, first-learn times of joins, and bytes by message type per node (from each
core's own counters).
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import time as _wall
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from beethoven.address import Address
from beethoven.membership.api import MemberEvent, MemberEventKind, SendDatagram, StreamRequest
from beethoven.membership.members import Member, TableSnapshot
from beethoven.membership.params import SwimParams
from beethoven.membership.swim import SizeOf, SwimCore
from beethoven.wire.messages import MemberStatus, Message

__all__ = [
    "EventRecord",
    "SimNode",
    "Simulator",
    "estimate_size",
    "percentile",
]

logger = logging.getLogger(__name__)

_INF = math.inf

# Heap entry kinds.
_TIMER = 0
_DGRAM = 1
_ST_ARRIVE = 2
_ST_REPLY = 3
_UNBLOCK = 4
_CALL = 5

# TCP retransmission timeouts used to delay a lossy stream leg.
_SYN_RTO = 1.0
_DATA_RTO = 0.2


# --- size estimation --------------------------------------------------------------------


def _int_size(v: int) -> int:
    if -32 <= v < 128:
        return 1
    if -128 <= v < 256:
        return 2
    if -32768 <= v < 65536:
        return 3
    if -(2**31) <= v < 2**32:
        return 5
    return 9


def _str_size(s: str) -> int:
    n = len(s) if s.isascii() else len(s.encode())
    if n < 32:
        return n + 1
    if n < 256:
        return n + 2
    if n < 65536:
        return n + 3
    return n + 5


def _bytes_size(b: bytes) -> int:
    n = len(b)
    if n < 256:
        return n + 2
    if n < 65536:
        return n + 3
    return n + 5


def _array_hdr(n: int) -> int:
    return 1 if n < 16 else 3 if n < 65536 else 5


_FIELDS: dict[type, tuple[str, ...]] = {}


def _value_size(v: Any) -> int:
    if isinstance(v, bool):
        return 1
    if isinstance(v, int):
        return _int_size(v)
    if isinstance(v, str):
        return _str_size(v)
    if isinstance(v, bytes):
        return _bytes_size(v)
    if isinstance(v, float):
        return 9
    if isinstance(v, tuple):
        return _array_hdr(len(v)) + sum(_value_size(x) for x in v)
    if isinstance(v, Address):
        return 1 + _str_size(v.host) + _int_size(v.port)
    return _record_size(v)


def _record_size(v: Any) -> int:
    cls = type(v)
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple(f.name for f in attrs.fields(cls))
        _FIELDS[cls] = names
    return _array_hdr(len(names) + 1) + sum(_value_size(getattr(v, n)) for n in names)


def estimate_size(msg: Message) -> int:
    """Estimate the encoded size of *msg* as the array-encoded msgpack codec lays it out.

    One array per record (type code first for messages), msgpack's compact int,
    str and bin headers. Close to ``beethoven.wire.codec.encoded_size`` and cheap
    enough for the simulator's hot path.
    """
    return 1 + _record_size(msg)


def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-quantile (0..1) of *values* by nearest rank; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


# --- nodes and records ------------------------------------------------------------------


@attrs.frozen
class EventRecord:
    """One member event seen by one node, with its virtual time."""

    time: float
    kind: str
    observer: str
    subject: str
    generation: int


class SimNode:
    """One simulated process: a core, its liveness and its slow-loop state.

    Attributes:
        index: position in `Simulator.nodes`.
        name: node name (``n<index>``).
        addr: its address.
        core: the current life's core (replaced on restart).
        up: True while the process runs.
        epoch: bumped at each crash/restart so stale heap entries are ignored.
        generation: the current life's generation.
        blocked_until: virtual time its loop is blocked until.
        deaf_until: virtual time until which its inbound processing is stalled
            (timers still fire: a starved receiver).
        backlog: inputs that arrived while blocked.
        sched: the deadline its heap entry was pushed for.
        leaving: True once it announced a graceful leave.
        datagrams_sent: datagrams this node sent (all lives).
    """

    __slots__ = (
        "addr",
        "backlog",
        "blocked_until",
        "core",
        "datagrams_sent",
        "deaf_until",
        "epoch",
        "generation",
        "index",
        "leaving",
        "name",
        "sched",
        "up",
    )

    def __init__(self, index: int, name: str, addr: Address, core: SwimCore) -> None:
        self.index = index
        self.name = name
        self.addr = addr
        self.core = core
        self.up = True
        self.epoch = 0
        self.generation = core.generation
        self.blocked_until = -_INF
        self.deaf_until = -_INF
        self.backlog: list[tuple[int, Any]] = []
        self.sched = _INF
        self.leaving = False
        self.datagrams_sent = 0


class Simulator:
    """The discrete-event simulator (see the module docstring).

    Args:
        params: membership parameters of every core.
        seed: the seed every random choice derives from.
        latency: base one-way latency in seconds.
        jitter: extra uniform one-way latency in ``[0, jitter)``.
        loss: probability that any datagram is lost.
        size_of: message size function given to the cores.
        record: event kinds kept in `log` (all by default; counters always run).
    """

    def __init__(
        self,
        *,
        params: SwimParams | None = None,
        seed: int = 0,
        latency: float = 0.0005,
        jitter: float = 0.0005,
        loss: float = 0.0,
        size_of: SizeOf = estimate_size,
        record: Iterable[str] | None = None,
    ) -> None:
        self.params = params if params is not None else SwimParams.lan()
        self.seed = seed
        self.rng = random.Random(seed)
        self.latency = latency
        self.jitter = jitter
        self.loss = loss
        self.size_of = size_of
        self.now = 0.0
        self.nodes: list[SimNode] = []
        self._by_addr: dict[Address, int] = {}
        self._by_name: dict[str, int] = {}
        self._heap: list[tuple[float, int, int, int, int, Any]] = []
        self._seq = 0
        #: Per (src index, dst index) extra one-way loss probability.
        self.link_loss: dict[tuple[int, int], float] = {}
        #: Per (src index, dst index) extra one-way latency.
        self.link_latency: dict[tuple[int, int], float] = {}
        self._group: list[int] | None = None
        #: Ground truth: name -> generation of every running, non-leaving life.
        self.truth: dict[str, int] = {}
        self.crash_time: dict[str, float] = {}
        self._record = None if record is None else frozenset(record)
        #: Member events kept (see *record*).
        self.log: list[EventRecord] = []
        #: Member events by kind, counted.
        self.event_counts: dict[str, int] = {}
        #: Suspicions/deaths reported about a running life.
        self.false_suspicions = 0
        self.false_deaths = 0
        self.false_suspicion_log: list[EventRecord] = []
        self.false_death_log: list[EventRecord] = []
        self.datagrams = 0
        self.datagrams_lost = 0
        self.events_processed = 0

    # --- construction --------------------------------------------------------------------

    @staticmethod
    def address_of(index: int) -> Address:
        """The address of node *index* (``10.x.y.z:7946``)."""
        return Address(f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}", 7946)

    def _generation(self, index: int) -> int:
        # An HLC-like boot stamp: milliseconds << 16, unique per node and life.
        return (int(self.now * 1000) << 16) | (index & 0xFFFF)

    def _make_core(self, index: int, generation: int) -> SwimCore:
        name = f"n{index}"
        rng = random.Random(f"{self.seed}/{index}/{generation}")
        return SwimCore(
            name=name,
            addr=self.address_of(index),
            generation=generation,
            rng=rng,
            size_of=self.size_of,
            params=self.params,
        )

    def _new_node(self) -> SimNode:
        index = len(self.nodes)
        core = self._make_core(index, self._generation(index))
        node = SimNode(index, core.name, core.addr, core)
        self.nodes.append(node)
        self._by_addr[node.addr] = index
        self._by_name[node.name] = index
        return node

    def bootstrap(self, n: int) -> list[SimNode]:
        """Create *n* running nodes that already know each other (no join traffic).

        Every core gets the same shared member table (`TableSnapshot`), so building
        10 000 nodes costs one dict copy per node.
        """
        nodes = [self._new_node() for _ in range(n)]
        members = {
            node.name: Member(
                node.name, node.addr, node.generation, 0, MemberStatus.ALIVE, b"", self.now
            )
            for node in nodes
        }
        snapshot = TableSnapshot(members, random.Random(f"{self.seed}/snapshot"))
        for node in nodes:
            node.core.install(snapshot)
            self.truth[node.name] = node.generation
            self._apply(node, node.core.start(self.now))
        return nodes

    def add_node(self, seeds: Sequence[int] = (), *, at: float | None = None) -> SimNode:
        """Create a node that starts (and joins through *seeds*) at *at* (default now)."""
        node = self._new_node()
        node.up = False
        when = self.now if at is None else at

        def boot() -> None:
            node.up = True
            node.core = self._make_core(node.index, self._generation(node.index))
            node.generation = node.core.generation
            self.truth[node.name] = node.generation
            self._apply(node, node.core.start(self.now))
            if seeds:
                addrs = [self.nodes[i].addr for i in seeds]
                self._apply(node, node.core.join(self.now, addrs))

        self.call_at(when, boot)
        return node

    def grow(self, n: int, *, seeds: int = 3, spacing: float = 0.0) -> list[SimNode]:
        """Add *n* nodes joining through up to *seeds* random running nodes each."""
        out = []
        for i in range(n):
            live = [x.index for x in self.nodes if x.up and not x.leaving]
            picked = self.rng.sample(live, min(seeds, len(live))) if live else []
            out.append(self.add_node(picked, at=self.now + i * spacing))
        return out

    # --- scenario actions ----------------------------------------------------------------

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        """Run *fn* at virtual time *when*."""
        self._push(max(when, self.now), _CALL, -1, 0, fn)

    def node(self, name_or_index: str | int) -> SimNode:
        """A node by name or index."""
        if isinstance(name_or_index, str):
            return self.nodes[self._by_name[name_or_index]]
        return self.nodes[name_or_index]

    def crash(self, index: int, *, at: float | None = None) -> None:
        """Crash node *index* like kill -9 at *at* (default now)."""

        def do() -> None:
            node = self.nodes[index]
            if not node.up:
                return
            node.up = False
            node.epoch += 1
            node.backlog.clear()
            node.sched = _INF
            if self.truth.get(node.name) == node.generation:
                del self.truth[node.name]
            self.crash_time[node.name] = self.now

        self.call_at(self.now if at is None else at, do)

    def restart(
        self, index: int, *, at: float | None = None, seeds: Sequence[int] | None = None
    ) -> None:
        """Boot a new life of node *index* (new generation) that rejoins through seeds.

        Without *seeds*, three random running nodes are used. A running node is
        crashed first.
        """

        def do() -> None:
            node = self.nodes[index]
            if node.up:
                node.up = False
                self.crash_time[node.name] = self.now
            node.epoch += 1
            node.backlog.clear()
            node.blocked_until = -_INF
            node.leaving = False
            gen = max(self._generation(index), node.generation + 1)
            node.core = self._make_core(index, gen)
            node.generation = gen
            node.up = True
            node.sched = _INF
            self.truth[node.name] = gen
            picks = seeds
            if picks is None:
                live = [x.index for x in self.nodes if x.up and x.index != index]
                picks = self.rng.sample(live, min(3, len(live)))
            self._apply(node, node.core.start(self.now))
            self._apply(node, node.core.join(self.now, [self.nodes[i].addr for i in picks]))

        self.call_at(self.now if at is None else at, do)

    def leave(self, index: int, *, at: float | None = None, linger: float = 3.0) -> None:
        """Graceful leave of node *index*; the process stops *linger* seconds later."""

        def do() -> None:
            node = self.nodes[index]
            if not node.up:
                return
            node.leaving = True
            self.truth.pop(node.name, None)
            self._apply(node, node.core.leave(self.now))

        def stop() -> None:
            node = self.nodes[index]
            if node.up and node.leaving:
                node.up = False
                node.epoch += 1
                node.sched = _INF

        when = self.now if at is None else at
        self.call_at(when, do)
        self.call_at(when + linger, stop)

    def partition(self, groups: Sequence[Iterable[int]], *, at: float | None = None) -> None:
        """Split the network: nodes in different *groups* cannot talk (unlisted: group 0)."""

        def do() -> None:
            g = [0] * len(self.nodes)
            for gid, members in enumerate(groups):
                for i in members:
                    g[i] = gid
            self._group = g

        self.call_at(self.now if at is None else at, do)

    def heal(self, *, at: float | None = None) -> None:
        """Remove the partition."""

        def do() -> None:
            self._group = None

        self.call_at(self.now if at is None else at, do)

    def set_loss(self, loss: float, *, at: float | None = None) -> None:
        """Change the global datagram loss probability."""

        def do() -> None:
            self.loss = loss

        self.call_at(self.now if at is None else at, do)

    def one_way_loss(self, src: int, dst: int, loss: float) -> None:
        """Lose *loss* of the datagrams from *src* to *dst* (not the reverse)."""
        if loss <= 0:
            self.link_loss.pop((src, dst), None)
        else:
            self.link_loss[(src, dst)] = loss

    def slow(
        self,
        index: int,
        *,
        every: float = 5.0,
        duration: float = 1.0,
        start: float | None = None,
        until: float = _INF,
        mode: str = "loop",
    ) -> None:
        """Make node *index* slow for *duration* seconds every *every* seconds.

        Args:
            index: the node.
            every: period of the stalls.
            duration: length of each stall.
            start: time of the first stall (default now).
            until: no stall starts at or after this time.
            mode: ``"loop"`` blocks the whole loop (nothing runs; on waking, overdue
                timers first, then the backlog); ``"inbound"`` only stalls the
                processing of received datagrams and stream replies while timers keep
                firing (a starved receiver, Lifeguard's slow-node model).
        """
        first = self.now if start is None else start
        if mode not in ("loop", "inbound"):
            raise ValueError(f"unknown slow mode {mode!r}")

        def stall() -> None:
            node = self.nodes[index]
            if self.now >= until:
                return
            if node.up:
                if mode == "loop":
                    node.blocked_until = self.now + duration
                    self._push(node.blocked_until, _UNBLOCK, index, node.epoch, None)
                else:
                    node.deaf_until = self.now + duration
                    self._push(node.deaf_until, _UNBLOCK, index, node.epoch, None)
            self.call_at(self.now + every, stall)

        self.call_at(first, stall)

    # --- running -------------------------------------------------------------------------

    def run_until(self, t_end: float) -> None:
        """Process every event up to virtual time *t_end*."""
        heap = self._heap
        nodes = self.nodes
        pop = heapq.heappop
        while heap and heap[0][0] <= t_end:
            t, _, kind, idx, epoch, payload = pop(heap)
            self.now = t
            self.events_processed += 1
            if kind == _CALL:
                payload()
                continue
            node = nodes[idx]
            if not node.up or node.epoch != epoch:
                if kind == _ST_ARRIVE:
                    self._stream_dead_end(payload, reset=True)
                continue
            if kind == _TIMER:
                if payload != node.sched:
                    continue
                node.sched = _INF
                if node.blocked_until > t:
                    continue  # the unblock handles it
                self._apply(node, node.core.handle_timeout(t))
            elif kind == _DGRAM:
                if node.blocked_until > t or node.deaf_until > t:
                    node.backlog.append((kind, payload))
                    continue
                self._apply(node, node.core.handle_datagram(t, payload[0], payload[1]))
            elif kind == _ST_ARRIVE:
                if node.blocked_until > t or node.deaf_until > t:
                    node.backlog.append((kind, payload))
                    continue
                self._serve_stream(node, payload)
            elif kind == _ST_REPLY:
                if node.blocked_until > t or node.deaf_until > t:
                    node.backlog.append((kind, payload))
                    continue
                self._apply(node, node.core.handle_stream_reply(t, payload[0], payload[1]))
            elif kind == _UNBLOCK and node.blocked_until <= t and node.deaf_until <= t:
                self._unblock(node)
        self.now = max(self.now, t_end)

    def run_for(self, dt: float) -> None:
        """Advance virtual time by *dt* seconds."""
        self.run_until(self.now + dt)

    def _unblock(self, node: SimNode) -> None:
        t = self.now
        core = node.core
        if core.next_deadline() <= t:
            self._apply(node, core.handle_timeout(t))
        backlog = node.backlog
        node.backlog = []
        for kind, payload in backlog:
            if not node.up:
                break
            if kind == _DGRAM:
                self._apply(node, core.handle_datagram(t, payload[0], payload[1]))
            elif kind == _ST_ARRIVE:
                self._serve_stream(node, payload)
            else:
                self._apply(node, core.handle_stream_reply(t, payload[0], payload[1]))
        self._resched(node)

    def _push(self, when: float, kind: int, idx: int, epoch: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, idx, epoch, payload))

    def _resched(self, node: SimNode) -> None:
        d = node.core.next_deadline()
        if d != node.sched:
            node.sched = d
            if d < _INF:
                self._seq += 1
                heapq.heappush(
                    self._heap,
                    (d if d > self.now else self.now, self._seq, _TIMER, node.index, node.epoch, d),
                )

    def _lost(self, src: int, dst: int) -> bool:
        g = self._group
        if g is not None and g[src] != g[dst]:
            return True
        p = self.loss
        if self.link_loss:
            p += self.link_loss.get((src, dst), 0.0)
        return p > 0 and self.rng.random() < p

    def _delay(self, src: int, dst: int) -> float:
        d = self.latency + self.jitter * self.rng.random()
        if self.link_latency:
            d += self.link_latency.get((src, dst), 0.0)
        return d

    def _apply(self, node: SimNode, effects: list[Any]) -> None:
        """Carry out a core's effects, then reschedule its timer."""
        src = node.index
        now = self.now
        for eff in effects:
            cls = type(eff)
            if cls is SendDatagram:
                node.datagrams_sent += 1
                self.datagrams += 1
                dst = self._by_addr.get(eff.to)
                if dst is None or self._lost(src, dst):
                    self.datagrams_lost += 1
                    continue
                target = self.nodes[dst]
                self._seq += 1
                heapq.heappush(
                    self._heap,
                    (
                        now + self._delay(src, dst),
                        self._seq,
                        _DGRAM,
                        dst,
                        target.epoch,
                        (node.addr, eff.messages),
                    ),
                )
            elif cls is MemberEvent:
                self._on_event(node, eff)
            elif cls is StreamRequest:
                self._open_stream(node, eff)
        self._resched(node)

    def _on_event(self, node: SimNode, ev: MemberEvent) -> None:
        kind = ev.kind
        self.event_counts[kind] = self.event_counts.get(kind, 0) + 1
        info = ev.member
        rec = None
        if self._record is None or kind in self._record:
            rec = EventRecord(self.now, kind, node.name, info.name, info.generation)
            self.log.append(rec)
        if kind in (MemberEventKind.SUSPECT, MemberEventKind.DEAD) and (
            self.truth.get(info.name) == info.generation and info.name != node.name
        ):
            rec = rec or EventRecord(self.now, kind, node.name, info.name, info.generation)
            if kind == MemberEventKind.SUSPECT:
                self.false_suspicions += 1
                self.false_suspicion_log.append(rec)
            else:
                self.false_deaths += 1
                self.false_death_log.append(rec)

    # --- TCP streams ---------------------------------------------------------------------

    def _tcp_leg(self, src: int, dst: int, rto: float) -> float:
        d = self._delay(src, dst)
        p = self.loss + (self.link_loss.get((src, dst), 0.0) if self.link_loss else 0.0)
        while p > 0 and self.rng.random() < p:
            d += rto
            rto *= 2
        return d

    def _partitioned(self, a: int, b: int) -> bool:
        g = self._group
        return g is not None and g[a] != g[b]

    def _open_stream(self, node: SimNode, req: StreamRequest) -> None:
        deadline = self.now + req.timeout
        dst = self._by_addr.get(req.to)
        payload = (node.index, node.epoch, req.token, req.message, deadline)
        if dst is None or self._partitioned(node.index, dst):
            self._push(deadline, _ST_REPLY, node.index, node.epoch, (req.token, None))
            return
        # SYN, SYN-ACK and the request: the handshake's losses use the SYN timeout.
        arrive = (
            self.now
            + self._tcp_leg(node.index, dst, _SYN_RTO)
            + self._tcp_leg(dst, node.index, _SYN_RTO)
            + self._tcp_leg(node.index, dst, _DATA_RTO)
        )
        if arrive >= deadline:
            self._push(deadline, _ST_REPLY, node.index, node.epoch, (req.token, None))
            return
        target = self.nodes[dst]
        self._push(arrive, _ST_ARRIVE, dst, target.epoch, payload)

    def _stream_dead_end(self, payload: Any, *, reset: bool) -> None:
        src, epoch, token, _msg, deadline = payload
        when = min(deadline, self.now + self.latency) if reset else deadline
        self._push(when, _ST_REPLY, src, epoch, (token, None))

    def _serve_stream(self, node: SimNode, payload: Any) -> None:
        src, epoch, token, msg, deadline = payload
        requester = self.nodes[src]
        reply, effects = node.core.handle_stream(self.now, requester.addr, msg)
        self._apply(node, effects)
        if reply is None or self._partitioned(node.index, src):
            self._push(deadline, _ST_REPLY, src, epoch, (token, None))
            return
        back = self.now + self._tcp_leg(node.index, src, _DATA_RTO)
        if back >= deadline:
            self._push(deadline, _ST_REPLY, src, epoch, (token, None))
        else:
            self._push(back, _ST_REPLY, src, epoch, (token, reply))

    # --- observation ---------------------------------------------------------------------

    def running(self) -> list[SimNode]:
        """Nodes whose process runs and has not announced a leave."""
        return [n for n in self.nodes if n.up and not n.leaving]

    def disagreements(self) -> list[str]:
        """Every way a running node's view differs from the truth (empty = converged).

        A running node must see every running life as alive or suspect at its
        current generation, and no other member as alive or suspect.
        """
        problems: list[str] = []
        truth = self.truth
        for node in self.running():
            seen: dict[str, int] = {}
            for m in node.core.members():
                if m.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT):
                    seen[m.name] = m.generation
            for name, gen in truth.items():
                got = seen.get(name)
                if got != gen:
                    problems.append(f"{node.name} sees {name} gen {got}, truth {gen}")
            for name in seen.keys() - truth.keys():
                problems.append(f"{node.name} sees {name} online, but it is not running")
        return problems

    def dead_but_running(self) -> list[str]:
        """(observer, subject) pairs where a running life is marked dead or left."""
        out = []
        for node in self.running():
            for m in node.core.members():
                if (
                    m.status in (MemberStatus.DEAD, MemberStatus.LEFT)
                    and self.truth.get(m.name) == m.generation
                ):
                    out.append(f"{node.name} marks {m.name} {m.status}")
        return out

    def first_seen(
        self, kind: str, subject: str, generation: int | None = None
    ) -> dict[str, float]:
        """Observer -> first virtual time it reported *kind* about *subject* (from `log`)."""
        out: dict[str, float] = {}
        for rec in self.log:
            if (
                rec.kind == kind
                and rec.subject == subject
                and rec.observer != subject
                and (generation is None or rec.generation == generation)
                and rec.observer not in out
            ):
                out[rec.observer] = rec.time
        return out

    def bytes_sent(self) -> dict[str, int]:
        """Bytes sent by message type, summed over the current lives of all nodes."""
        total: dict[str, int] = {}
        for node in self.nodes:
            for k, v in node.core.stats().bytes_sent.items():
                total[k] = total.get(k, 0) + v
        return total

    def measure_speed(self, dt: float) -> float:
        """Run *dt* virtual seconds; return virtual seconds per wall second."""
        t0 = _wall.perf_counter()
        self.run_for(dt)
        wall = _wall.perf_counter() - t0
        return dt / wall if wall > 0 else _INF

    def summary(self) -> dict[str, float]:
        """A few headline counters of the run so far."""
        return {
            "time": self.now,
            "nodes": float(len(self.nodes)),
            "running": float(len(self.running())),
            "datagrams": float(self.datagrams),
            "datagrams_lost": float(self.datagrams_lost),
            "false_suspicions": float(self.false_suspicions),
            "false_deaths": float(self.false_deaths),
            "events": float(self.events_processed),
        }
