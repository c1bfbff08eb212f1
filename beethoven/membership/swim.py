"""The sans-I/O SWIM + Lifeguard membership core.

`SwimCore` implements `beethoven.membership.api.MembershipCore`. It never touches
sockets, trio, a clock or the global ``random``: the driver passes ``now`` into every
call, a seeded ``random.Random`` and a ``size_of`` function into the constructor,
and carries out the effects the calls return. Every rule, timer and formula is
stated in ``specs/membership.md``; the section names below refer to it.

Hot-path costs (the simulator drives 10 000 of these): a probe, an ack, a
piggyback selection and a gossip round are O(k + facts sent), never O(N). Only
push-pull with differing roots, reaping and joins walk the member table.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from beethoven.address import Address
from beethoven.errors import ConfigError
from beethoven.membership.api import (
    Effect,
    MemberEvent,
    MemberEventKind,
    MemberInfo,
    MembershipStats,
    SendDatagram,
    StreamRequest,
)
from beethoven.membership.awareness import Awareness
from beethoven.membership.broadcast import BroadcastQueue
from beethoven.membership.members import Member, MemberTable, TableSnapshot
from beethoven.membership.params import (
    SwimParams,
    pushpull_scale,
    retransmit_limit,
    suspicion_timeout,
)
from beethoven.membership.suspicion import Suspicion
from beethoven.wire.messages import (
    Ack,
    Alive,
    Dead,
    ErrorReply,
    IndirectPing,
    Leave,
    MemberDigest,
    MemberState,
    MemberStatus,
    Message,
    Nack,
    Ping,
    PushPullReply,
    PushPullRequest,
    Suspect,
)

__all__ = ["ERROR_CLUSTER_MISMATCH", "SizeOf", "SwimCore"]

logger = logging.getLogger(__name__)

#: Computes the encoded size in bytes of one message inside a datagram.
SizeOf = Callable[[Message], int]

#: `ErrorReply.code` sent when a push-pull names another cluster.
ERROR_CLUSTER_MISMATCH = 1

_INF = math.inf
_ALIVE = MemberStatus.ALIVE
_SUSPECT = MemberStatus.SUSPECT
_DEAD = MemberStatus.DEAD
_LEFT = MemberStatus.LEFT

# Probe phases.
_IDLE = 0
_DIRECT = 1
_INDIRECT = 2

# Stream request kinds.
_ST_PING = 0
_ST_JOIN = 1
_ST_PP1 = 2
_ST_PP2 = 3


class _Relay:
    """An indirect probe this node runs on behalf of a requester."""

    __slots__ = ("deadline", "orig_seq", "requester", "target", "want_nack")

    def __init__(
        self, requester: Address, orig_seq: int, target: str, want_nack: bool, deadline: float
    ) -> None:
        self.requester = requester
        self.orig_seq = orig_seq
        self.target = target
        self.want_nack = want_nack
        self.deadline = deadline


def _info(m: Member) -> MemberInfo:
    return MemberInfo(m.name, m.addr, m.generation, m.incarnation, m.status, m.meta, m.last_change)


class SwimCore:
    """One node's SWIM + Lifeguard state machine (see the module docstring).

    Args:
        name: this node's unique name.
        addr: the address peers reach it at (UDP and TCP, same port).
        generation: this life's boot timestamp (an HLC value at boot); a restart must
            pass a greater value.
        rng: the seeded random source for every random choice.
        size_of: encoded size of one message in a datagram
            (``beethoven.wire.codec.encoded_size`` in production).
        params: timing and fanout parameters (default `SwimParams.lan`).
        cluster: cluster name; push-pull with another cluster is refused.
        meta: application metadata, at most ``params.max_meta`` bytes.

    Raises:
        ConfigError: *meta* is larger than ``params.max_meta``.
    """

    def __init__(
        self,
        *,
        name: str,
        addr: Address,
        generation: int,
        rng: random.Random,
        size_of: SizeOf,
        params: SwimParams | None = None,
        cluster: str = "beethoven",
        meta: bytes = b"",
    ) -> None:
        self._p = p = params if params is not None else SwimParams.lan()
        if len(meta) > p.max_meta:
            raise ConfigError(f"metadata is {len(meta)} bytes, max_meta is {p.max_meta}")
        self._name = name
        self._addr = addr
        self._cluster = cluster
        self._rng = rng
        self._size_of = size_of
        self._budget = p.udp_payload - p.datagram_overhead
        self._table = MemberTable(name, rng)
        self._me = Member(name, addr, generation, 0, _ALIVE, meta, 0.0)
        self._table.put(self._me)
        self._bq = BroadcastQueue()
        self._aw = Awareness(p.awareness_max, enabled=p.local_health)
        self._inconclusive = p.local_health and p.inconclusive_probes
        self._out: list[Effect] = []
        self._started = False
        self._left = False
        self._seq = 0
        # Probe state (one probe at a time).
        self._probe_target = ""
        self._probe_gen = 0
        self._probe_addr = addr
        self._probe_seq = -1
        self._probe_phase = _IDLE
        self._probe_nacks = 0
        self._probe_expected = 0
        self._probe_extended = False
        self._probe_timeout_at = _INF
        self._probe_end_at = _INF
        self._next_probe = _INF
        self._reprobe: deque[str] = deque()
        # Other periodic timers.
        self._next_gossip = _INF
        self._last_gossip = -_INF
        self._next_pushpull = _INF
        self._join_sync_left = 0  # early push-pulls still due after a join
        self._join_sync_gap = 0.0
        self._next_reconnect = _INF
        self._next_reap = _INF
        # Suspicions and relays, with lazily invalidated heaps.
        self._susp: dict[str, Suspicion] = {}
        self._susp_heap: list[tuple[float, str]] = []
        self._verify_heap: list[tuple[float, str, float]] = []
        self._relays: dict[int, _Relay] = {}
        self._relay_heap: list[tuple[float, int]] = []
        # Members that are dead or left (reaping) and recently dead (gossip targets).
        self._gone: set[str] = set()
        self._recent_dead: list[tuple[float, str]] = []
        # Stream requests in flight: token -> (kind, peer name).
        self._streams: dict[int, tuple[int, str]] = {}
        self._token = 0
        # Caches.
        self._limit_n = -1
        self._limit = 1
        # Statistics.
        self._sent_msgs: dict[str, int] = {}
        self._sent_bytes: dict[str, int] = {}
        self._recv_msgs: dict[str, int] = {}
        self._c_probes = 0
        self._c_probe_failures = 0
        self._c_indirect = 0
        self._c_tcp_ok = 0
        self._c_raised = 0
        self._c_refuted = 0
        self._c_deaths = 0
        self._c_pushpulls = 0
        self._c_pp_diff = 0
        self._c_joins_ok = 0
        self._c_joins_failed = 0
        self._c_dropped = 0
        self._c_stalls = 0
        self._c_inconclusive = 0
        self._c_conflicts = 0
        # Name ownership (specs/membership.md §Name ownership): the live holder of
        # our name found on join, and per name the lives refused because another
        # live life holds it at another address (their accusations are dropped too).
        self._conflict: Member | None = None
        self._refused: dict[str, set[int]] = {}
        self._handlers: dict[type, Callable[[float, Address, Message], None]] = {
            Ping: self._on_ping,  # type: ignore[dict-item]
            Ack: self._on_ack,  # type: ignore[dict-item]
            Nack: self._on_nack,  # type: ignore[dict-item]
            IndirectPing: self._on_indirect,  # type: ignore[dict-item]
            Alive: self._on_alive_msg,  # type: ignore[dict-item]
            Suspect: self._on_suspect_msg,  # type: ignore[dict-item]
            Dead: self._on_dead_msg,  # type: ignore[dict-item]
            Leave: self._on_leave_msg,  # type: ignore[dict-item]
        }

    # --- read-only views ---------------------------------------------------------------

    @property
    def name(self) -> str:
        """This node's name."""
        return self._name

    @property
    def addr(self) -> Address:
        """This node's address."""
        return self._addr

    @property
    def name_conflict(self) -> MemberInfo | None:
        """The live member holding this node's name at another address, found on join.

        Once set, this core has withdrawn: it merged nothing from that reply, gossips
        nothing about itself and sends no `Leave`.
        """
        c = self._conflict
        return None if c is None else _info(c)

    @property
    def generation(self) -> int:
        """This life's generation."""
        return self._me.generation

    @property
    def incarnation(self) -> int:
        """This node's current incarnation."""
        return self._me.incarnation

    @property
    def params(self) -> SwimParams:
        """The parameters in effect."""
        return self._p

    @property
    def local_health(self) -> int:
        """Lifeguard's local health score (0 = healthy)."""
        return self._aw.score

    @property
    def has_left(self) -> bool:
        """True once `leave` was called."""
        return self._left

    def member(self, name: str) -> MemberInfo | None:
        """Snapshot of one member, or None when unknown."""
        m = self._table.get(name)
        return None if m is None else _info(m)

    def members(self) -> list[MemberInfo]:
        """Snapshot of every known member, self included."""
        return [_info(m) for m in self._table]

    def live_count(self) -> int:
        """Members alive or suspect, self included while not left."""
        return self._table.live_count

    def root(self) -> bytes:
        """The push-pull digest root of the member table (16 bytes)."""
        return self._table.root_bytes()

    def pending_broadcasts(self) -> int:
        """Facts still queued for piggybacking (a leaving node waits for 0)."""
        return len(self._bq)

    def stats(self) -> MembershipStats:
        """Counters since construction, as a frozen record."""
        return MembershipStats(
            messages_sent=dict(self._sent_msgs),
            bytes_sent=dict(self._sent_bytes),
            messages_received=dict(self._recv_msgs),
            probes=self._c_probes,
            probe_failures=self._c_probe_failures,
            indirect_probes=self._c_indirect,
            tcp_fallback_acks=self._c_tcp_ok,
            suspicions_raised=self._c_raised,
            suspicions_refuted=self._c_refuted,
            deaths_declared=self._c_deaths,
            pushpulls=self._c_pushpulls,
            pushpull_differing=self._c_pp_diff,
            joins_ok=self._c_joins_ok,
            joins_failed=self._c_joins_failed,
            dropped=self._c_dropped,
            stalls=self._c_stalls,
            inconclusive_probes=self._c_inconclusive,
            name_conflicts=self._c_conflicts,
            local_health=self._aw.score,
            members=len(self._table),
            live=self._table.live_count,
        )

    # --- commands ------------------------------------------------------------------------

    def install(self, snapshot: TableSnapshot) -> None:
        """Install a member table without events or broadcasts (simulator bootstrap).

        The snapshot must contain this node with this node's generation.
        """
        self._table.install(snapshot)
        me = self._table.get(self._name)
        if me is None or me.generation != self._me.generation:
            raise ConfigError("snapshot does not contain this node's current life")
        self._me = me
        for m in snapshot.members.values():
            if not m.live:
                self._gone.add(m.name)

    def start(self, now: float) -> list[Effect]:
        """Begin operating: schedule the first probe, push-pull, reconnect and reap."""
        out = self._begin()
        if self._started:
            return out
        self._started = True
        p = self._p
        rng = self._rng
        self._me = self._me.evolve(last_change=now)
        self._table.put(self._me)
        self._next_probe = now + rng.random() * p.probe_interval
        self._next_pushpull = now + (0.5 + rng.random()) * self._pushpull_period()
        if p.reconnect_interval > 0:
            self._next_reconnect = now + (0.5 + rng.random()) * p.reconnect_interval
        self._next_reap = now + self._reap_period()
        if self._bq:
            self._next_gossip = now + rng.random() * p.gossip_interval
        self._emit(MemberEventKind.JOINED, self._me)
        return out

    def join(self, now: float, seeds: Sequence[Address]) -> list[Effect]:
        """Push-pull with each seed (its full state comes back) to join its cluster."""
        out = self._begin()
        self._queue_fact(now, self._name, self._alive_msg())
        req = PushPullRequest(
            self._cluster,
            self._name,
            True,
            self._table.root_bytes(),
            (),
            b"",
            (self._me.state(),),
        )
        for seed in seeds:
            if seed == self._addr:
                continue
            self._stream(_ST_JOIN, "", seed, req, self._p.stream_timeout)
        return out

    def leave(self, now: float) -> list[Effect]:
        """Announce a graceful leave; keep driving the core until broadcasts drain."""
        out = self._begin()
        if self._left:
            return out
        self._left = True
        me = self._me
        self._me = me.evolve(incarnation=me.incarnation + 1, status=_LEFT, last_change=now)
        self._table.put(self._me)
        self._probe_phase = _IDLE
        self._probe_timeout_at = self._probe_end_at = _INF
        self._next_probe = self._next_pushpull = self._next_reconnect = _INF
        self._queue_fact(now, self._name, Leave(self._name, me.generation, me.incarnation + 1))
        self._emit(MemberEventKind.LEFT, self._me)
        return out

    def update_meta(self, now: float, meta: bytes) -> list[Effect]:
        """Change this node's metadata: a new incarnation, gossiped as an `Alive`.

        Raises:
            ConfigError: *meta* is larger than ``params.max_meta``.
        """
        if len(meta) > self._p.max_meta:
            raise ConfigError(f"metadata is {len(meta)} bytes, max_meta is {self._p.max_meta}")
        out = self._begin()
        if self._left:
            return out
        me = self._me
        self._me = Member(
            me.name, me.addr, me.generation, me.incarnation + 1, _ALIVE, meta, now,
            me.vmin, me.vmax,
        )  # fmt: skip
        self._table.put(self._me)
        self._queue_fact(now, self._name, self._alive_msg())
        self._emit(MemberEventKind.UPDATED, self._me)
        return out

    # --- inputs --------------------------------------------------------------------------

    def handle_datagram(
        self, now: float, source: Address, messages: Sequence[Message]
    ) -> list[Effect]:
        """Process the messages of one received UDP datagram, in order."""
        out = self._begin()
        handlers = self._handlers
        recv = self._recv_msgs
        for msg in messages:
            cls = type(msg)
            tname = cls.__name__
            recv[tname] = recv.get(tname, 0) + 1
            handler = handlers.get(cls)
            if handler is None:
                self._c_dropped += 1
                continue
            handler(now, source, msg)
        return out

    def handle_stream(
        self, now: float, source: Address, message: Message
    ) -> tuple[Message | None, list[Effect]]:
        """Answer one request from an inbound TCP stream (TCP ping or push-pull)."""
        out = self._begin()
        reply: Message | None = None
        if isinstance(message, Ping):
            if message.target == self._name:
                reply = Ack(message.seq, self._name)
            else:
                self._c_dropped += 1
        elif isinstance(message, PushPullRequest):
            reply = self._serve_pushpull(now, message)
        else:
            self._c_dropped += 1
        if reply is not None:
            self._count_sent(reply, self._size_of(reply))
        return reply, out

    def handle_stream_reply(self, now: float, token: int, reply: Message | None) -> list[Effect]:
        """Report the outcome of a `StreamRequest` (None: failed or timed out)."""
        out = self._begin()
        entry = self._streams.pop(token, None)
        if entry is None:
            return out
        kind, peer = entry
        if kind == _ST_PING:
            if (
                isinstance(reply, Ack)
                and reply.seq == self._probe_seq
                and self._probe_phase != _IDLE
            ):
                self._c_tcp_ok += 1
                self._probe_succeeded()
            return out
        if not isinstance(reply, PushPullReply) or reply.cluster != self._cluster:
            if kind == _ST_JOIN:
                self._c_joins_failed += 1
            if isinstance(reply, ErrorReply):
                logger.debug("push-pull refused by %s: %s", peer, reply.reason)
            return out
        if kind == _ST_JOIN:
            if self._conflict is not None:
                return out  # withdrawn: merge nothing more
            holder = self._holder_of_own_name(now, reply.members)
            if holder is not None:
                self._withdraw(holder)
                return out
            if reply.sender == self._name:
                # A later namesake (or ourselves at an alias address) answered: we
                # hold the name; merging its view would merge nothing but that claim.
                self._c_joins_failed += 1
                return out
            self._c_joins_ok += 1
            self._merge(now, reply.members, reply.sender, rebroadcast=False)
            # Members that join right after us learn us from their join replies and
            # never relay themselves to us: pull them with a few early push-pulls.
            if self._p.join_sync_rounds > 0 and self._join_sync_left == 0:
                self._join_sync_left = self._p.join_sync_rounds
                self._join_sync_gap = self._p.join_sync_delay
                self._next_pushpull = min(self._next_pushpull, now + self._join_sync_gap)
            return out
        self._merge(now, reply.members, reply.sender, rebroadcast=True)
        if kind == _ST_PP1 and reply.digest and reply.root != self._table.root_bytes():
            self._pushpull_round2(now, reply)
        return out

    def next_deadline(self) -> float:
        """The driver time at which `handle_timeout` must next be called (may be inf)."""
        t = min(
            self._probe_timeout_at,
            self._probe_end_at,
            self._next_probe,
            self._next_gossip,
            self._next_pushpull,
            self._next_reconnect,
            self._next_reap,
        )
        heap = self._susp_heap
        while heap:
            when, name = heap[0]
            s = self._susp.get(name)
            if s is not None and s.deadline == when:
                if when < t:
                    t = when
                break
            heapq.heappop(heap)
        vheap = self._verify_heap
        while vheap:
            when, name, start = vheap[0]
            s = self._susp.get(name)
            if s is not None and s.start == start:
                if when < t:
                    t = when
                break
            heapq.heappop(vheap)
        rheap = self._relay_heap
        while rheap:
            when, seq = rheap[0]
            r = self._relays.get(seq)
            if r is not None and r.deadline == when:
                if when < t:
                    t = when
                break
            heapq.heappop(rheap)
        return t

    def handle_timeout(self, now: float) -> list[Effect]:
        """Run every timer due at or before *now*."""
        out = self._begin()
        for _ in range(100_000):
            if self._probe_timeout_at <= now:
                self._on_direct_timeout(now)
            elif self._probe_end_at <= now:
                self._on_probe_end(now)
            elif self._next_probe <= now:
                self._probe_tick(now)
            elif self._next_gossip <= now:
                self._gossip_tick(now)
            elif self._susp_heap and self._susp_heap[0][0] <= now:
                self._on_suspicion_timer(now, *heapq.heappop(self._susp_heap))
            elif self._verify_heap and self._verify_heap[0][0] <= now:
                self._on_verify(*heapq.heappop(self._verify_heap))
            elif self._relay_heap and self._relay_heap[0][0] <= now:
                self._on_relay_timer(now, *heapq.heappop(self._relay_heap))
            elif self._next_pushpull <= now:
                self._pushpull_tick(now)
            elif self._next_reconnect <= now:
                self._reconnect_tick(now)
            elif self._next_reap <= now:
                self._reap_tick(now)
            else:
                break
        return out

    # --- plumbing ------------------------------------------------------------------------

    def _begin(self) -> list[Effect]:
        out: list[Effect] = []
        self._out = out
        return out

    def _emit(self, kind: str, m: Member) -> None:
        self._out.append(MemberEvent(kind, _info(m)))

    def _count_sent(self, msg: Message, size: int) -> None:
        tname = type(msg).__name__
        self._sent_msgs[tname] = self._sent_msgs.get(tname, 0) + 1
        self._sent_bytes[tname] = self._sent_bytes.get(tname, 0) + size

    def _limit_now(self) -> int:
        n = self._table.live_count
        if n != self._limit_n:
            self._limit_n = n
            self._limit = retransmit_limit(self._p.retransmit_mult, n)
        return self._limit

    def _send(self, to: Address, msgs: list[Message]) -> None:
        """Send *msgs* to *to* in one datagram, filled up with queued facts.

        With no *msgs* (a gossip round) nothing is sent unless facts are queued.
        """
        used = 0
        sent_msgs = self._sent_msgs
        sent_bytes = self._sent_bytes
        size_of = self._size_of
        for msg in msgs:
            size = size_of(msg)
            used += size
            tname = type(msg).__name__
            sent_msgs[tname] = sent_msgs.get(tname, 0) + 1
            sent_bytes[tname] = sent_bytes.get(tname, 0) + size
        if self._bq:
            facts, sizes = self._bq.take(self._budget - used, self._limit_now())
            if facts:
                for msg, size in zip(facts, sizes, strict=True):
                    tname = type(msg).__name__
                    sent_msgs[tname] = sent_msgs.get(tname, 0) + 1
                    sent_bytes[tname] = sent_bytes.get(tname, 0) + size
                msgs = msgs + facts
        if msgs:
            self._out.append(SendDatagram(to, tuple(msgs)))
        if not self._bq:
            self._next_gossip = _INF

    def _stream(self, kind: int, peer: str, to: Address, msg: Message, timeout: float) -> None:
        self._token += 1
        token = self._token
        self._streams[token] = (kind, peer)
        self._count_sent(msg, self._size_of(msg))
        self._out.append(StreamRequest(token, to, msg, timeout))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _alive_msg(self) -> Alive:
        me = self._me
        return Alive(me.name, me.generation, me.incarnation, me.addr, me.meta, me.vmin, me.vmax)

    def _queue_fact(self, now: float, key: str, msg: Message) -> None:
        """Queue a fact for piggybacking and pull the next gossip round forward."""
        self._bq.queue(key, msg, self._size_of(msg))
        gap = self._p.relay_gap
        if gap is not None:
            t = self._last_gossip + gap
            if t < now:
                t = now
            if t < self._next_gossip:
                self._next_gossip = t
        elif self._next_gossip == _INF:
            self._next_gossip = now + self._p.gossip_interval

    def _stalled(self, now: float, deadline: float) -> bool:
        """Stall guard: True when a timer fired so late that our own loop was blocked."""
        if self._aw.enabled and now - deadline > self._p.stall_threshold:
            self._c_stalls += 1
            self._aw.apply(1)
            return True
        return False

    # --- facts (specs/membership.md §Precedence, §Refutation) ------------------------------

    def _refute(self, now: float, incarnation: int) -> None:
        """Answer an accusation about self at *incarnation* with a higher incarnation."""
        me = self._me
        self._me = me.evolve(incarnation=max(me.incarnation, incarnation) + 1, last_change=now)
        self._table.put(self._me)
        self._queue_fact(now, self._name, self._alive_msg())
        self._aw.apply(1)
        self._c_refuted += 1

    def _accused(self, now: float, generation: int, incarnation: int) -> None:
        """Someone says this node is suspect, dead or left at (generation, incarnation)."""
        if self._left:
            return
        me = self._me
        if generation < me.generation:
            # About an earlier life: make sure the current one is being announced.
            if self._name not in self._bq:
                self._queue_fact(now, self._name, self._alive_msg())
            return
        if generation > me.generation:
            logger.debug("%s: a newer life of this node's name exists", self._name)
            self._c_dropped += 1
            return
        if incarnation < me.incarnation:
            # The accuser missed our refutation: make sure it is being told again
            # (it rides on the ack that answers the buddy ping carrying this).
            if self._name not in self._bq:
                self._queue_fact(now, self._name, self._alive_msg())
            return
        self._refute(now, incarnation)

    def _on_alive_msg(self, now: float, source: Address, msg: Alive) -> None:
        self._on_alive(now, msg, True)

    def _on_alive(self, now: float, msg: Alive, rebroadcast: bool) -> None:
        name = msg.name
        if name == self._name:
            me = self._me
            if msg.generation > me.generation and msg.addr != me.addr:
                # Another process claims our name: refused, never an accusation.
                self._refuse(name, msg.generation, msg.addr, me)
            elif (msg.generation, msg.incarnation) > (me.generation, me.incarnation):
                self._accused(now, msg.generation, msg.incarnation)
            return
        if len(msg.meta) > self._p.max_meta:
            self._c_dropped += 1
            return
        table = self._table
        old = table.get(name)
        if old is not None:
            if not (msg.generation, msg.incarnation, _ALIVE) > old.key:
                return
            if old.live and msg.addr != old.addr and msg.generation != old.generation:
                self._refuse(name, msg.generation, msg.addr, old)
                return
        new = Member(
            name, msg.addr, msg.generation, msg.incarnation, _ALIVE, msg.meta, now,
            msg.vmin, msg.vmax,
        )  # fmt: skip
        table.put(new)
        if name in self._refused:
            self._forget_refused(name, new.generation)
        if old is None or old.generation < new.generation or not old.live:
            self._gone.discard(name)
            if old is not None:
                self._susp.pop(name, None)
            self._emit(MemberEventKind.JOINED, new)
        elif old.status == _SUSPECT:
            self._susp.pop(name, None)
            self._emit(MemberEventKind.ALIVE, new)
        elif old.addr != new.addr or old.meta != new.meta:
            self._emit(MemberEventKind.UPDATED, new)
        if rebroadcast:
            self._queue_fact(now, name, msg)

    def _on_suspect_msg(self, now: float, source: Address, msg: Suspect) -> None:
        self._on_suspect(now, msg, True)

    def _on_suspect(self, now: float, msg: Suspect, rebroadcast: bool) -> None:
        name = msg.name
        if name == self._name:
            self._accused(now, msg.generation, msg.incarnation)
            return
        old = self._table.get(name)
        if old is None:
            return
        if self._refused and self._refused_life(old, msg.generation):
            return
        if (
            old.status == _SUSPECT
            and old.generation == msg.generation
            and old.incarnation == msg.incarnation
        ):
            s = self._susp.get(name)
            if s is not None and s.confirm(msg.accuser):
                heapq.heappush(self._susp_heap, (s.deadline, name))
                if rebroadcast:
                    self._queue_fact(now, name, msg)
            return
        if not (msg.generation, msg.incarnation, _SUSPECT) > old.key:
            return
        new = self._changed(old, msg.generation, msg.incarnation, _SUSPECT, now)
        self._table.put(new)
        self._gone.discard(name)
        self._start_suspicion(now, name, msg.accuser)
        self._emit(MemberEventKind.SUSPECT, new)
        if rebroadcast:
            self._queue_fact(now, name, msg)
        if msg.accuser != self._name and self._p.reprobe_fanout > 0:
            n_others = self._table.live_count - 2
            if n_others <= 0 or self._rng.random() * n_others < self._p.reprobe_fanout:
                self._reprobe.append(name)

    def _changed(self, old: Member, gen: int, inc: int, status: int, now: float) -> Member:
        meta = old.meta if gen == old.generation else b""
        return Member(old.name, old.addr, gen, inc, status, meta, now, old.vmin, old.vmax)

    def _start_suspicion(self, now: float, name: str, accuser: str) -> None:
        p = self._p
        n = self._table.live_count
        k = p.suspicion_confirmations if n - 2 >= p.suspicion_confirmations else 0
        lo = suspicion_timeout(p.suspicion_mult, n, p.probe_interval)
        s = Suspicion(accuser, now, k, lo, lo * p.suspicion_max_mult)
        self._susp[name] = s
        heapq.heappush(self._susp_heap, (s.deadline, name))
        # Verification: if still unconfirmed halfway through the minimum, probe it.
        heapq.heappush(self._verify_heap, (now + lo / 2, name, s.start))

    def _on_dead_msg(self, now: float, source: Address, msg: Dead) -> None:
        self._on_dead(now, msg, True)

    def _on_dead(self, now: float, msg: Dead, rebroadcast: bool) -> None:
        name = msg.name
        if name == self._name:
            self._accused(now, msg.generation, msg.incarnation)
            return
        old = self._table.get(name)
        if old is None or not (msg.generation, msg.incarnation, _DEAD) > old.key:
            return
        if self._refused and self._refused_life(old, msg.generation):
            return
        self._mark_gone(now, old, msg.generation, msg.incarnation, _DEAD)
        if rebroadcast:
            self._queue_fact(now, name, msg)

    def _on_leave_msg(self, now: float, source: Address, msg: Leave) -> None:
        self._on_leave(now, msg, True)

    def _on_leave(self, now: float, msg: Leave, rebroadcast: bool) -> None:
        name = msg.name
        if name == self._name:
            self._accused(now, msg.generation, msg.incarnation)
            return
        old = self._table.get(name)
        if old is None or not (msg.generation, msg.incarnation, _LEFT) > old.key:
            return
        if self._refused and self._refused_life(old, msg.generation):
            return
        self._mark_gone(now, old, msg.generation, msg.incarnation, _LEFT)
        if rebroadcast:
            self._queue_fact(now, name, msg)

    def _mark_gone(self, now: float, old: Member, gen: int, inc: int, status: int) -> None:
        new = self._changed(old, gen, inc, status, now)
        self._table.put(new)
        self._susp.pop(new.name, None)
        self._gone.add(new.name)
        was_live = old.live
        if status == _DEAD:
            self._recent_dead.append((now, new.name))
        if was_live or old.generation < gen or status != old.status:
            kind = MemberEventKind.DEAD if status == _DEAD else MemberEventKind.LEFT
            self._emit(kind, new)

    # --- name ownership (specs/membership.md §Name ownership) -----------------------------

    def _refuse(self, name: str, generation: int, addr: Address, holder: Member) -> None:
        """Refuse a claim on *name* by another life at *addr*: not applied, not relayed."""
        self._c_conflicts += 1
        lives = self._refused.setdefault(name, set())
        if generation in lives:
            return
        if len(lives) >= 8:  # bounded: a flood of fake lives cannot grow it
            lives.clear()
        lives.add(generation)
        logger.warning(
            "refused a node at %s calling itself %s: that name is held by the live member at %s",
            addr, name, holder.addr,
        )  # fmt: skip

    def _refused_life(self, old: Member, generation: int) -> bool:
        """True for a fact about a refused life of a name another life holds alive."""
        if not old.live or generation == old.generation:
            return False
        if generation in self._refused.get(old.name, ()):
            self._c_dropped += 1
            return True
        return False

    def _forget_refused(self, name: str, generation: int) -> None:
        lives = self._refused[name]
        lives.discard(generation)
        if not lives:
            del self._refused[name]

    def _holder_of_own_name(self, now: float, states: Iterable[MemberState]) -> Member | None:
        """The live member of an earlier life, at another address, holding our name."""
        me = self._me
        for st in states:
            # Only an earlier life wins: a holder that joins through a later namesake
            # (a re-sweep finding its beacon) must not give its own name away.
            if (
                st.name == self._name
                and st.status in (_ALIVE, _SUSPECT)
                and st.addr != me.addr
                and st.generation < me.generation
            ):
                return Member(
                    st.name, st.addr, st.generation, st.incarnation, st.status, b"", now,
                    st.vmin, st.vmax,
                )  # fmt: skip
        return None

    def _withdraw(self, holder: Member) -> None:
        """Our join was answered with a live holder of our name: take no part, say nothing."""
        self._conflict = holder
        self._c_conflicts += 1
        self._c_joins_failed += 1
        # INFO: the driver raises NameConflictError, which tells the operator.
        logger.info(
            "node name %s is held by the live member at %s: this node (%s) withdraws",
            self._name, holder.addr, self._addr,
        )  # fmt: skip
        # As after a leave, but without the Leave: that fact would be about the holder's name.
        self._left = True
        self._bq.invalidate(self._name)
        self._join_sync_left = 0
        self._probe_phase = _IDLE
        self._probe_timeout_at = self._probe_end_at = _INF
        self._next_probe = self._next_pushpull = self._next_reconnect = _INF

    def _merge(
        self, now: float, states: Iterable[MemberState], sender: str, *, rebroadcast: bool
    ) -> None:
        """Merge push-pull states. A remote *dead* becomes a local suspicion (refutable)."""
        table = self._table
        for st in states:
            name = st.name
            status = st.status
            if name == self._name:
                if status == _ALIVE:
                    self._on_alive(now, self._state_alive(st), False)
                else:
                    self._accused(now, st.generation, st.incarnation)
                continue
            if status == _ALIVE:
                self._on_alive(now, self._state_alive(st), rebroadcast)
                continue
            old = table.get(name)
            if old is None:
                if status in (_DEAD, _LEFT) and len(st.meta) <= self._p.max_meta:
                    # Record silently: it never was alive here, but its key must
                    # stop stale alives of that life from resurrecting it.
                    m = Member(
                        name, st.addr, st.generation, st.incarnation, status, st.meta, now,
                        st.vmin, st.vmax,
                    )  # fmt: skip
                    table.put(m)
                    self._gone.add(name)
                elif status == _SUSPECT:
                    self._on_alive(now, self._state_alive(st), False)
                    self._on_suspect(
                        now, Suspect(name, st.generation, st.incarnation, sender), rebroadcast
                    )
                continue
            if old.live and st.generation > old.generation and st.addr != old.addr:
                self._refuse(name, st.generation, st.addr, old)
                continue
            if status == _LEFT:
                self._on_leave(now, Leave(name, st.generation, st.incarnation), rebroadcast)
            elif status in (_SUSPECT, _DEAD):
                self._on_suspect(
                    now, Suspect(name, st.generation, st.incarnation, sender), rebroadcast
                )
            else:
                self._c_dropped += 1

    @staticmethod
    def _state_alive(st: MemberState) -> Alive:
        return Alive(st.name, st.generation, st.incarnation, st.addr, st.meta, st.vmin, st.vmax)

    # --- probing (specs/membership.md §Probe) --------------------------------------------

    def _probe_tick(self, now: float) -> None:
        p = self._p
        if self._left:
            self._next_probe = _INF
            return
        table = self._table
        target: Member | None = None
        while self._reprobe:
            m = table.get(self._reprobe.popleft())
            if m is not None and m.status == _SUSPECT:
                target = m
                break
        if target is None:
            target = table.next_probe()
        if target is None:
            self._next_probe = now + p.probe_interval
            return
        seq = self._next_seq()
        self._c_probes += 1
        self._probe_target = target.name
        self._probe_gen = target.generation
        self._probe_addr = target.addr
        self._probe_seq = seq
        self._probe_phase = _DIRECT
        self._probe_nacks = 0
        self._probe_expected = 0
        self._probe_extended = False
        scale = self._aw.score + 1
        self._probe_timeout_at = now + p.probe_timeout * scale
        self._probe_end_at = now + p.probe_interval * scale
        self._next_probe = self._probe_end_at
        ping = Ping(seq, target.name, self._name)
        if target.status == _SUSPECT:
            # Buddy system: tell the suspect first, so it can refute in its ack.
            self._send(
                target.addr,
                [Suspect(target.name, target.generation, target.incarnation, self._name), ping],
            )
        else:
            self._send(target.addr, [ping])

    def _probe_succeeded(self) -> None:
        self._probe_phase = _IDLE
        self._probe_timeout_at = self._probe_end_at = _INF
        self._aw.apply(-1)
        target = self._probe_target
        if target in self._susp and target not in self._reprobe:
            # It answers but we still hold it suspect: we missed its refutation.
            # Keep probing it (each ping carries the buddy suspect, each ack its alive).
            self._reprobe.append(target)

    def _on_direct_timeout(self, now: float) -> None:
        p = self._p
        deadline = self._probe_timeout_at
        self._probe_timeout_at = _INF
        if self._probe_phase != _DIRECT:
            return
        scale = self._aw.score + 1
        if not self._probe_extended and self._stalled(now, deadline):
            # Our own loop stalled: the ack may be in the backlog; read it first.
            self._probe_extended = True
            self._probe_timeout_at = now + p.probe_timeout
            self._probe_end_at = max(
                self._probe_end_at,
                self._probe_timeout_at + (p.probe_interval - p.probe_timeout) * scale,
            )
            self._next_probe = max(self._next_probe, self._probe_end_at)
            return
        self._probe_phase = _INDIRECT
        target = self._probe_target
        relays = self._table.random_live(p.indirect_checks, (target,))
        if relays:
            req = IndirectPing(self._probe_seq, target, self._probe_addr, self._name, True)
            for relay in relays:
                self._send(relay.addr, [req])
            self._c_indirect += len(relays)
        self._probe_expected = len(relays)
        if p.tcp_fallback:
            self._stream(
                _ST_PING,
                target,
                self._probe_addr,
                Ping(self._probe_seq, target, self._name),
                max(0.001, self._probe_end_at - now),
            )

    def _on_probe_end(self, now: float) -> None:
        deadline = self._probe_end_at
        self._probe_end_at = _INF
        if self._probe_phase == _IDLE:
            return
        if not self._probe_extended and self._stalled(now, deadline):
            self._probe_extended = True
            self._probe_end_at = now + self._p.probe_timeout
            self._next_probe = max(self._next_probe, self._probe_end_at)
            return
        self._probe_phase = _IDLE
        self._probe_timeout_at = _INF
        self._c_probe_failures += 1
        if self._probe_expected > 0:
            self._aw.apply(self._probe_expected - self._probe_nacks)
        else:
            self._aw.apply(1)
        if self._inconclusive and self._probe_expected > 0 and self._probe_nacks == 0:
            # Not one relay answered either: the silence is more likely ours.
            self._c_inconclusive += 1
            return
        m = self._table.get(self._probe_target)
        if m is None or not m.live or m.generation != self._probe_gen:
            return
        self._c_raised += 1
        self._on_suspect(now, Suspect(m.name, m.generation, m.incarnation, self._name), True)

    def _on_ping(self, now: float, source: Address, msg: Ping) -> None:
        if msg.target != self._name:
            self._c_dropped += 1
            return
        self._send(source, [Ack(msg.seq, self._name)])

    def _on_ack(self, now: float, source: Address, msg: Ack) -> None:
        seq = msg.seq
        if seq == self._probe_seq:
            if self._probe_phase != _IDLE:
                self._probe_succeeded()
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._send(relay.requester, [Ack(relay.orig_seq, relay.target)])

    def _on_nack(self, now: float, source: Address, msg: Nack) -> None:
        if msg.seq == self._probe_seq and self._probe_phase == _INDIRECT:
            self._probe_nacks += 1

    def _on_indirect(self, now: float, source: Address, msg: IndirectPing) -> None:
        if msg.target == self._name:
            self._send(source, [Ack(msg.seq, self._name)])
            return
        seq = self._next_seq()
        p = self._p
        # Answer (nack) before the requester's indirect window closes.
        deadline = now + 0.8 * (p.probe_interval - p.probe_timeout)
        self._relays[seq] = _Relay(source, msg.seq, msg.target, msg.want_nack, deadline)
        heapq.heappush(self._relay_heap, (deadline, seq))
        self._send(msg.target_addr, [Ping(seq, msg.target, self._name)])

    def _on_relay_timer(self, now: float, deadline: float, seq: int) -> None:
        relay = self._relays.get(seq)
        if relay is None or relay.deadline != deadline:
            return
        del self._relays[seq]
        if relay.want_nack:
            self._send(relay.requester, [Nack(relay.orig_seq, self._name)])

    def _on_verify(self, when: float, name: str, start: float) -> None:
        s = self._susp.get(name)
        if s is None or s.start != start or s.confirmations >= s.k > 0:
            return
        if name not in self._reprobe and not self._left:
            self._reprobe.append(name)

    def _on_suspicion_timer(self, now: float, deadline: float, name: str) -> None:
        s = self._susp.get(name)
        if s is None or s.deadline != deadline:
            return
        if not s.extended and self._stalled(now, deadline):
            # Our own loop stalled: read the backlog (maybe a refutation) first.
            s.extended = True
            s.deadline = now + self._p.probe_timeout
            heapq.heappush(self._susp_heap, (s.deadline, name))
            return
        del self._susp[name]
        m = self._table.get(name)
        if m is None or m.status != _SUSPECT:
            return
        self._c_deaths += 1
        self._on_dead(now, Dead(name, m.generation, m.incarnation, self._name), True)

    # --- gossip (specs/membership.md §Dissemination) -------------------------------------

    def _gossip_tick(self, now: float) -> None:
        p = self._p
        self._last_gossip = now
        if not self._bq:
            self._next_gossip = _INF
            return
        self._next_gossip = now + p.gossip_interval
        targets = self._table.random_live(p.gossip_nodes)
        recent = self._recent_dead
        if recent:
            horizon = now - p.gossip_to_dead
            while recent and recent[0][0] < horizon:
                recent.pop(0)
            if recent:
                live = self._table.live_count
                if self._rng.random() * (live + len(recent)) < len(recent):
                    _, name = recent[int(self._rng.random() * len(recent))]
                    m = self._table.get(name)
                    if m is not None and m.status == _DEAD:
                        if len(targets) >= p.gossip_nodes:
                            targets.pop()
                        targets.append(m)
        for target in targets:
            if not self._bq:
                break
            self._send(target.addr, [])
        if not self._bq:
            self._next_gossip = _INF

    # --- anti-entropy (specs/membership.md §Push-pull) -----------------------------------

    def _pushpull_period(self) -> float:
        p = self._p
        return pushpull_scale(
            p.pushpull_interval, p.pushpull_scale_threshold, self._table.live_count
        )

    def _pushpull_tick(self, now: float) -> None:
        self._next_pushpull = now + self._pushpull_period()
        if self._join_sync_left > 0:
            self._join_sync_left -= 1
            if self._join_sync_left > 0:
                self._join_sync_gap *= 2
                self._next_pushpull = min(self._next_pushpull, now + self._join_sync_gap)
        if self._left:
            self._next_pushpull = _INF
            return
        peers = self._table.random_live(1)
        if peers:
            self._start_pushpull(peers[0])

    def _start_pushpull(self, peer: Member) -> None:
        self._c_pushpulls += 1
        req = PushPullRequest(self._cluster, self._name, False, self._table.root_bytes())
        self._stream(_ST_PP1, peer.name, peer.addr, req, self._p.stream_timeout)

    def _reconnect_tick(self, now: float) -> None:
        p = self._p
        self._next_reconnect = now + p.reconnect_interval
        if self._left or not self._gone:
            return
        dead = [
            m
            for name in self._gone
            if (m := self._table.get(name)) is not None and m.status == _DEAD
        ]
        if not dead:
            return
        live = max(1, self._table.live_count - 1)
        if self._rng.random() * live >= len(dead):
            return
        dead.sort(key=lambda m: m.name)
        self._start_pushpull(dead[int(self._rng.random() * len(dead))])

    def _pushpull_round2(self, now: float, reply: PushPullReply) -> None:
        """Roots differ: send what the peer lacks, ask for what we lack."""
        self._c_pp_diff += 1
        table = self._table
        want: list[MemberDigest] = []
        send: list[MemberState] = [self._me.state()]
        seen: set[str] = set()
        for d in reply.digest:
            seen.add(d.name)
            if d.name == self._name:
                if (d.generation, d.incarnation, d.status) > self._me.key:
                    want.append(d)
                continue
            m = table.get(d.name)
            key = (d.generation, d.incarnation, d.status)
            if m is None or key > m.key:
                want.append(d)
            elif m.key > key:
                send.append(m.state())
        for m in table:
            if m.name not in seen and m.name != self._name:
                send.append(m.state())
        req = PushPullRequest(
            self._cluster,
            self._name,
            False,
            table.root_bytes(),
            tuple(want),
            b"",
            tuple(send),
        )
        peer_addr = self._addr_of(reply.sender)
        self._stream(_ST_PP2, reply.sender, peer_addr, req, self._p.stream_timeout)

    def _addr_of(self, name: str) -> Address:
        m = self._table.get(name)
        return self._addr if m is None else m.addr

    def _serve_pushpull(self, now: float, req: PushPullRequest) -> Message:
        if req.cluster != self._cluster:
            return ErrorReply(ERROR_CLUSTER_MISMATCH, "cluster name mismatch")
        table = self._table
        if req.members:
            self._merge(now, req.members, req.sender, rebroadcast=True)
        root = table.root_bytes()
        if req.join:
            return PushPullReply(self._cluster, self._name, root, (), table.states())
        if not req.digest and not req.members:
            if req.root == root:
                return PushPullReply(self._cluster, self._name, root)
            return PushPullReply(self._cluster, self._name, root, table.digests())
        out: list[MemberState] = [self._me.state()]
        for d in req.digest:
            m = table.get(d.name)
            if m is not None and d.name != self._name:
                out.append(m.state())
        return PushPullReply(self._cluster, self._name, root, (), tuple(out))

    # --- reaping (specs/membership.md §Reaping) ------------------------------------------

    def _reap_period(self) -> float:
        return min(60.0, self._p.reap_after / 4)

    def _reap_tick(self, now: float) -> None:
        self._next_reap = now + self._reap_period()
        horizon = now - self._p.reap_after
        for name in sorted(self._gone):
            m = self._table.get(name)
            if m is None or m.live:
                self._gone.discard(name)
                continue
            if m.last_change <= horizon:
                self._gone.discard(name)
                self._table.remove(name)
                self._bq.invalidate(name)
                self._susp.pop(name, None)
                self._refused.pop(name, None)
                self._emit(MemberEventKind.REAPED, m)
