"""The Beethoven node: every service in one nursery, and the public API.

``async with open_node(config) as node:`` validates the configuration, opens the
store, binds the transport, starts membership, the beacon, the Locator, the store
replication, HwMon, the allocator publisher and RoleMgmt, and yields once the
node serves. Leaving the block stops the roles (with their grace period),
announces a graceful leave, flushes the store and cancels everything.

Replication of the store rides on the membership layer:

* every own-keyspace write (node record, role holdings, score) becomes a delta
  that is pushed to a few random online members in a ``StoreDelta`` datagram; a
  member that learns something new from it relays it the same way (epidemic
  dissemination that stops by itself, since a duplicate changes nothing);
* a periodic anti-entropy exchange over TCP with one random member
  (``StoreSyncRequest``/``StoreSyncReply``, digest first) repairs anything lost,
  and runs at once with the peers a join went through;
* a delta too large for a datagram (a value up to ``max_value``) is pushed by
  such an exchange with each of the fan-out members instead, and news a sync
  brings is relayed as a datagram's is, so it reaches every node in a few hops.

Node status (online/offline) comes from membership, not from the store.
"""

from __future__ import annotations

import difflib
import enum
import json
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import attrs
import trio

from beethoven import __version__
from beethoven.address import Address, parse_address
from beethoven.allocator import Allocator, PublishedScore, Signal, SignalType, choose_least_busy
from beethoven.clock_offset import ClockOffsets, ClockOffsetStats
from beethoven.config import Config, load_config
from beethoven.core import CoreServer, CoreStats, NodeRecord, NodeUpdate
from beethoven.discovery.beacon import BeaconServer, BeaconStats
from beethoven.discovery.locator import Locator, LocatorSettings, LocatorStats
from beethoven.errors import BeethovenError, CodecError, ConfigError, StoreError
from beethoven.fanout import Subscription
from beethoven.hwmon import HwMon, HwMonStats
from beethoven.membership.api import MemberEvent, MemberEventKind, MembershipStats
from beethoven.membership.params import SwimParams
from beethoven.membership.runner import MembershipRunner, RunnerStats
from beethoven.membership.swim import SwimCore
from beethoven.roles import Role, RoleMgmt, RoleMgmtStats, RoleStatus
from beethoven.transport.base import Transport, TransportStats
from beethoven.transport.memory import MemoryNetwork
from beethoven.transport.udp_tcp import open_udp_tcp_transport
from beethoven.wire.codec import encoded_size
from beethoven.wire.framing import FrameChannel
from beethoven.wire.messages import (
    BeaconHello,
    BeaconMember,
    MemberStatus,
    Message,
    Query,
    QueryReply,
    StoreDelta,
    StoreSyncReply,
    StoreSyncRequest,
)
from beethoven.wire.packet import PacketCodec, WireStats
from beethoven.wire.security import Keyring
from beethoven_store import Changes, Store, StoreConfig, StoreStats, open_store
from beethoven_store.codec import decode_delta, encode_delta
from beethoven_store.crdt import DeltaParts
from beethoven_store.hlc import hlc_wall
from beethoven_store.store import Delta

__all__ = [
    "ClusterKV",
    "Node",
    "NodeMode",
    "NodeStats",
    "RoleInfo",
    "SignalHandle",
    "open_node",
]

logger = logging.getLogger(__name__)

#: Seconds the graceful leave (roles stopped, holdings withdrawn, ``Leave`` gossiped) may
#: take when the ``async with`` block ends, however it ends; shielded from cancellation.
LEAVE_TIMEOUT = 10.0
#: Seconds the final store flush may take after the leave (shielded too).
FLUSH_TIMEOUT = 5.0
#: Members each store delta is pushed to (and relayed to, when it is news).
STORE_FANOUT = 3
#: Seconds between two anti-entropy exchanges of the store.
STORE_SYNC_INTERVAL = 2.0
#: Rounds of one anti-entropy exchange at most (each answers the other's digest).
STORE_SYNC_ROUNDS = 8
#: Seconds between two publications of this node's score at most.
SCORE_MIN_INTERVAL = 1.0
#: Relative score change that is published at once (smaller ones wait for the refresh).
SCORE_CHANGE = 0.02
#: Seconds a node that joined a cluster takes no new role (its store catches up first).
JOIN_SETTLE = 3.0
#: Seconds between store GC passes.
STORE_GC_INTERVAL = 60.0

_NODE_KEY = ("node",)
_SCORE_KEY = ("score",)
#: Largest StoreDelta payload inspected for a clock sample (a score push is ~100 bytes).
_CLOCK_SAMPLE_MAX = 1024
_KV_PREFIX = "kv"


class NodeMode(enum.StrEnum):
    """`Node.get_node_status` values, as in the original (equal to the plain strings)."""

    STANDALONE = "standalone"
    CLUSTERED = "clustered"


@attrs.frozen
class RoleInfo:
    """What `Node.get_roles` reports for one role: actual holders, not intentions."""

    role: str
    count: int
    assigned: int
    nodes: tuple[str, ...]


@attrs.frozen
class NodeStats:
    """Every counter of a node, by service."""

    name: str
    mode: NodeMode
    ready: bool
    wire: WireStats
    transport: TransportStats
    runner: RunnerStats
    membership: MembershipStats
    store: StoreStats
    store_sync_ok: int
    store_sync_failed: int
    store_deltas_in: int
    store_deltas_bad: int
    core: CoreStats
    beacon: BeaconStats
    locator: LocatorStats
    roles: RoleMgmtStats
    hwmon: HwMonStats
    clock: ClockOffsetStats


class SignalHandle:
    """A registered allocator signal of this node; changes are published."""

    def __init__(self, node: Node, signal: Signal) -> None:
        self._node = node
        self.signal = signal

    @property
    def value(self) -> float:
        """The current value."""
        return self._node._allocator.value(self.signal.name)

    def set(self, value: float) -> None:
        """Set the value (a count is clamped at 0)."""
        self._node._allocator.set(self.signal.name, value)
        self._node._score_changed()

    def increment(self, by: float = 1.0) -> None:
        """Add to a count."""
        self._node._allocator.increment(self.signal.name, by)
        self._node._score_changed()

    def decrement(self, by: float = 1.0) -> None:
        """Subtract from a count (never below 0)."""
        self._node._allocator.decrement(self.signal.name, by)
        self._node._score_changed()


class ClusterKV:
    """The cluster-wide key-value map: any node writes, latest (HLC, writer) wins.

    Values are plain data (None, bool, int, float, str, bytes, lists, dicts with
    string keys). Reads are local; a write is applied locally at once and
    replicated to every node in the background. Deletes are tombstones.
    """

    def __init__(self, node: Node) -> None:
        self._node = node

    def get(self, key: str, default: Any = None) -> Any:
        """The value of *key*, or *default*."""
        return self._node._store.get((_KV_PREFIX, key), default)

    def __getitem__(self, key: str) -> Any:
        missing = object()
        value = self.get(key, missing)
        if value is missing:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _MISSING) is not _MISSING

    def put(self, key: str, value: Any) -> None:
        """Set *key* cluster-wide.

        Raises:
            StoreError: the value is not plain data; or this node's clock is ahead
                of its peers' by more than the store's bound, so they would refuse
                the write (``NodeStats.clock``).
        """
        self._node._check_clock("kv.put")
        self._node._disseminate(self._node._store.put((_KV_PREFIX, _check_kv_key(key)), value))

    def __setitem__(self, key: str, value: Any) -> None:
        self.put(key, value)

    def delete(self, key: str) -> None:
        """Delete *key* cluster-wide (a tombstone).

        Raises:
            StoreError: this node's clock is ahead of its peers' beyond the bound.
        """
        self._node._check_clock("kv.delete")
        self._node._disseminate(self._node._store.delete((_KV_PREFIX, _check_kv_key(key))))

    def __delitem__(self, key: str) -> None:
        self.delete(key)

    def items(self) -> dict[str, Any]:
        """Every live key and value."""
        return {
            key[1]: value
            for key, value in self._node._store.shared_items()
            if len(key) == 2 and key[0] == _KV_PREFIX and isinstance(key[1], str)
        }


_MISSING = object()

#: LWW key prefix of the epoch marks: ``("epoch", role, node) → highest epoch node took``.
_EPOCH_PREFIX = "epoch"
#: Largest epoch accepted from a mark (a wild value from a peer must not overflow ours).
_MAX_EPOCH = 2**53


def _is_epoch(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_EPOCH


def _is_news(changes: Changes) -> bool:
    """Whether merged changes are relayed epidemically.

    Score refreshes are not: they are frequent and volatile, so the direct push
    plus anti-entropy carries them (no O(N²) relay).
    """
    return bool(
        changes.shared
        or changes.removed_owners
        or any(key != _SCORE_KEY for _, key in changes.owned)
    )


def _check_kv_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise StoreError(f"kv keys are non-empty strings, got {key!r}")
    return key


def _monotonic_now() -> float:
    """The trio clock; outside trio (stats() read after the run) no sample is stale."""
    try:
        return trio.current_time()
    except RuntimeError:
        return -math.inf


class _View:
    """RoleMgmt's view of the cluster and its holdings publisher."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def online_nodes(self) -> Collection[str]:
        return self._node.get_active_cluster_nodes()

    def node_tags(self, node: str) -> frozenset[str]:
        record = self._node._store.get_owned(node, _NODE_KEY)
        if isinstance(record, dict) and isinstance(record.get("tags"), list):
            return frozenset(t for t in record["tags"] if isinstance(t, str))
        return frozenset()

    def role_holders(self, role: str) -> Mapping[str, int]:
        return self._node._holders(role)

    def scores(self) -> Mapping[str, float]:
        return {name: s.score for name, s in self._node._published_scores().items()}

    def epoch_marks(self, role: str) -> Mapping[str, int]:
        # The marks live in the cluster-wide LWW map, one key per (role, node), so each
        # key has one writer that only raises it: a max-register per node. They are
        # never deleted, and neither a new generation nor the reaping of an owner
        # touches the LWW map. Every writer of a mark has an LWW cover (never purged).
        # A holding still in the store counts too: anti-entropy may bring it first.
        store = self._node._store
        marks: dict[str, int] = {}
        for writer in list(store.lww.covers):
            value = store.get((_EPOCH_PREFIX, role, writer))
            if _is_epoch(value):
                marks[writer] = value
        for owner, held in store.values_of(("hold", role)).items():
            if isinstance(held, dict) and _is_epoch(held.get("epoch")):
                marks[owner] = max(marks.get(owner, 0), held["epoch"])
        return marks

    def publish_holding(self, role: str, epoch: int) -> None:
        node = self._node
        store = node._store
        key = (_EPOCH_PREFIX, role, node.name)
        mark = store.get(key)
        writers: tuple[Any, ...] = ()
        if not _is_epoch(mark) or mark < epoch:
            writers = store.put(key, epoch).parts.writers  # committed before it returns
        held = store.put_own(("hold", role), {"epoch": epoch, "gen": node._generation})
        # One delta: whoever receives the holding receives the raised mark with it.
        parts = DeltaParts(owners=held.parts.owners, writers=writers)
        node._disseminate(Delta(encode_delta(parts), parts))

    def refresh_marks(self, hosted: Mapping[str, int]) -> None:
        """Re-write this node's marks of the roles it hosts (role → epoch) once they age.

        A replica drops an LWW entry older than the LWW horizon that it did not hold
        before its GC floor passed it (``specs/store.md`` §4), so a mark left alone
        for a week would not reach a joiner that missed its join sync. A holder holds
        the role's latest mark; it keeps it younger than a quarter of the horizon.
        """
        node = self._node
        store = node._store
        oldest = store.clock.physical() - store.config.lww_horizon_ms // 4
        for role, epoch in hosted.items():
            key = (_EPOCH_PREFIX, role, node.name)
            entry, mark = store.lww.get(key), store.get(key)
            if entry is not None and hlc_wall(entry.hlc) >= oldest and _is_epoch(mark):
                continue
            node._disseminate(store.put(key, max(epoch, mark if _is_epoch(mark) else 0)))

    def release_holding(self, role: str) -> None:
        node = self._node
        node._disseminate(node._store.delete_own(("hold", role)))


class Node:
    """A running cluster member. Create it with `open_node`, never directly."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store,
        transport: Transport,
        keyring: Keyring | None,
        params: SwimParams,
        rng: random.Random,
        sampler: Callable[[], tuple[float, float]] | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        self.name = config.node_name
        self._store = store
        self._transport = transport
        self._keyring = keyring
        self._rng = rng
        self.address = transport.local_address
        self._params = params
        self._packets = PacketCodec(keyring, max_payload=config.max_payload)
        self._generation = store.clock.now()
        self._core_swim = SwimCore(
            name=self.name,
            addr=self.address,
            generation=self._generation,
            rng=random.Random(rng.getrandbits(64)),
            size_of=encoded_size,
            params=params,
            cluster=config.cluster,
        )
        self._runner = MembershipRunner(
            self._core_swim,
            transport,
            self._packets,
            keyring=keyring,
            stream_timeout=params.stream_timeout,
            max_frame=config.max_frame,
        )
        self._core = CoreServer(clock=clock)
        self._beacon = BeaconServer(
            cluster=config.cluster,
            name=self.name,
            addr=self.address,
            members=self._beacon_members,
            keyring=keyring,
            rng=random.Random(rng.getrandbits(64)),
        )
        own = {config.bind, self.address.host}
        self._locator = Locator(
            LocatorSettings.from_config(config),
            transport=transport,
            cluster=config.cluster,
            name=self.name,
            join=self._join,
            members=self._other_online,
            keyring=keyring,
            own_addresses=own,
            rng=random.Random(rng.getrandbits(64)),
        )
        self._allocator = Allocator()
        self._allocator.register("cpu", 1.0, SignalType.PERCENT)
        self._allocator.register("ram", 1.0, SignalType.PERCENT)
        self._allocator.register("roles", 0.1, SignalType.COUNT)
        hw_kwargs: dict[str, Any] = {"clock": clock}
        if sampler is not None:
            hw_kwargs["sampler"] = sampler
        self.hwmon = HwMon(config.hwmon_interval, on_sample=self._on_hw_sample, **hw_kwargs)
        self._view = _View(self)
        self._roles = RoleMgmt(
            self.name,
            config.roles,
            self._view,
            self._view,
            on_change=self._hosting_changed,
        )
        self.kv = ClusterKV(self)
        self._ready = trio.Event()
        self._score_dirty = trio.Event()
        self._stale_after = max(30.0, 6 * config.hwmon_interval)
        self._scores_cache: dict[str, PublishedScore] | None = None
        self._allocated: tuple[str | None, float] | None = None  # (answer, valid until)
        self._peers: dict[str, Address] = {}  # online members other than self → address
        self._lives: dict[str, int] = {}  # online members (self too) → membership generation
        self._sync_ok = 0
        self._sync_failed = 0
        self._deltas_in = 0
        self._deltas_bad = 0
        self._offsets = ClockOffsets(
            self.name,
            bound=store.clock.max_offset_ms / 1000,
            max_age=max(60.0, 3 * self._stale_after),
        )
        self._runner.add_stream_handler(BeaconHello, self._beacon.handle)
        self._runner.add_stream_handler(StoreSyncRequest, self._serve_store_sync)
        self._runner.add_stream_handler(Query, self._serve_query)
        self._runner.add_datagram_handler(StoreDelta, self._on_store_delta)
        self._core.add_listener(self._roles.notify)

    # --- readiness ------------------------------------------------------------------

    def is_ready(self) -> bool:
        """True once discovery finished and roles were assigned for the first time."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        """Wait until `is_ready` (bound it with ``trio.fail_after``)."""
        await self._ready.wait()

    async def until_ready(self, timeout: float = 5.0) -> bool:  # noqa: ASYNC109 - original API
        """Wait at most *timeout* seconds for readiness; the original's ``until_ready/1``.

        Returns:
            True if ready, False on timeout.
        """
        with trio.move_on_after(timeout):
            await self._ready.wait()
        return self._ready.is_set()

    # --- membership views -----------------------------------------------------------

    def get_node_status(self) -> NodeMode:
        """`NodeMode.CLUSTERED` when another member is online, else `NodeMode.STANDALONE`."""
        return NodeMode.CLUSTERED if self._other_online() else NodeMode.STANDALONE

    def get_cluster_nodes(self) -> list[str]:
        """Every node that joined and is not yet reaped (online or offline), sorted."""
        return [r.node for r in self._core.records()]

    def get_active_cluster_nodes(self) -> list[str]:
        """The online nodes (alive or suspect), sorted; this node included."""
        return self._core.online()

    def get_detailed_cluster_nodes(self) -> list[NodeRecord]:
        """Every known node with its status and the time of its last change."""
        return self._core.records()

    @asynccontextmanager
    async def alert_me(self, maxlen: int = 1024) -> AsyncIterator[Subscription[NodeUpdate]]:
        """Receive a `NodeUpdate` whenever a node goes online or offline.

        Example::

            async with node.alert_me() as updates:
                async for update in updates:
                    print(update.node, update.status)

        Args:
            maxlen: buffer size; when full the oldest update is dropped (counted).
        """
        async with self._core.alert_me(maxlen) as sub:
            yield sub

    def add_alert_callback(self, callback: Callable[[NodeUpdate], None]) -> None:
        """Call *callback* on every `NodeUpdate` (synchronously; it must not block)."""
        self._core.add_callback(callback)

    # --- roles ----------------------------------------------------------------------

    def _holders(self, role: str) -> dict[str, int]:
        """Online members holding *role* in their current life: node → epoch.

        A holding carries the membership generation of the life that took it, so a
        node that crashed and came back under the same name is not counted as a
        holder on the strength of its previous life's holding (which peers may
        still keep until the new life's keyspace replaces it).
        """
        lives = self._lives
        holders: dict[str, int] = {}
        for owner, value in self._store.values_of(("hold", role)).items():
            if owner in lives and isinstance(value, dict):
                epoch, gen = value.get("epoch"), value.get("gen")
                if isinstance(epoch, int) and gen == lives[owner]:
                    holders[owner] = epoch
        return holders

    def get_roles(self) -> list[RoleInfo]:
        """Every declared role with its desired count and its actual online holders."""
        infos = []
        for role in self.config.roles:
            nodes = tuple(sorted(self._holders(role.name)))
            infos.append(RoleInfo(role.name, role.count, len(nodes), nodes))
        return infos

    def whois_hosting(self, role: str) -> list[str]:
        """The online nodes that host *role* (published holdings), sorted."""
        return sorted(self._holders(role))

    def role_status(self) -> list[RoleStatus]:
        """Status of the role tasks running on this node."""
        return self._roles.status()

    # --- allocator ------------------------------------------------------------------

    def signal(
        self,
        name: str,
        weight: float | None = None,
        type: SignalType | str | None = None,
    ) -> SignalHandle:
        """Register an allocator signal of this node, or get the registered one.

        Args:
            name: the signal name.
            weight: its weight (default 1.0 for a new signal).
            type: ``"count"`` (default for a new signal), ``"percent"`` or
                ``"pre_processed"``.

        Raises:
            ConfigError: *name* is registered with another weight or type than
                the ones given.
        """
        existing = {s.name: s for s in self._allocator.signals()}.get(name)
        if existing is not None:
            weight = existing.weight if weight is None else weight
            type = existing.type if type is None else type
        signal = self._allocator.register(
            name, 1.0 if weight is None else weight, SignalType.COUNT if type is None else type
        )
        return SignalHandle(self, signal)

    def score(self) -> float:
        """This node's current allocator score."""
        return self._allocator.score()

    def _published_scores(self) -> dict[str, PublishedScore]:
        """Parsed scores of every owner, cached until a score or membership changes."""
        if self._scores_cache is None:
            self._scores_cache = self._parse_scores()
        return self._scores_cache

    def _scores_changed(self) -> None:
        self._scores_cache = None
        self._allocated = None

    def _parse_scores(self) -> dict[str, PublishedScore]:
        scores: dict[str, PublishedScore] = {}
        for owner, value in self._store.values_of(_SCORE_KEY).items():
            if isinstance(value, dict):
                s, t = value.get("s"), value.get("t")
                if isinstance(s, int | float) and isinstance(t, int | float):
                    scores[owner] = PublishedScore(float(s), float(t))
        return scores

    def allocate(self) -> str | None:
        """The online node with the lowest fresh score (this node included).

        Returns:
            A node name, or ``None`` if no node is online (before start).
        """
        now = self._clock()
        cached = self._allocated
        if cached is not None and now < cached[1]:
            return cached[0]
        choice = choose_least_busy(
            self._published_scores(),
            self._lives,
            now=now,
            stale_after=self._stale_after,
        )
        # The answer holds until a score or membership changes, or for a second (the
        # staleness of scores is judged at that granularity).
        self._allocated = (choice, now + 1.0)
        return choice

    def _on_hw_sample(self, cpu: float, ram: float) -> None:
        self._allocator.set("cpu", cpu)
        self._allocator.set("ram", ram)
        self._score_changed()

    def _hosting_changed(self) -> None:
        """RoleMgmt started or stopped a role here: update the built-in ``roles`` signal."""
        self._allocator.set("roles", len(self._roles.hosting()))
        self._score_changed()

    def _score_changed(self) -> None:
        self._score_dirty.set()

    # --- stats ----------------------------------------------------------------------

    def stats(self) -> NodeStats:
        """Every counter of the node, by service."""
        return NodeStats(
            name=self.name,
            mode=self.get_node_status(),
            ready=self.is_ready(),
            wire=self._packets.stats(),
            transport=self._transport.stats(),
            runner=self._runner.stats(),
            membership=self._core_swim.stats(),
            store=self._store.stats(),
            store_sync_ok=self._sync_ok,
            store_sync_failed=self._sync_failed,
            store_deltas_in=self._deltas_in,
            store_deltas_bad=self._deltas_bad,
            core=self._core.stats(),
            beacon=self._beacon.stats(),
            locator=self._locator.stats(),
            roles=self._roles.stats(),
            hwmon=self.hwmon.stats(),
            clock=self._offsets.stats(_monotonic_now(), self._peers),
        )

    def describe(self, kind: str) -> Any:
        """A JSON-ready view for operators: ``members``, ``roles`` or ``status``.

        This is what ``beethoven members|roles|status`` prints (``specs/node.md``).

        Raises:
            ValueError: an unknown *kind*.
        """
        if kind == "members":
            addresses = {m.name: str(m.addr) for m in self._runner.members()}
            return [
                {
                    "node": r.node,
                    "status": r.status.value,
                    "last_change": r.last_change.isoformat(),
                    "address": addresses.get(r.node, ""),
                }
                for r in self._core.records()
            ]
        if kind == "roles":
            return [
                {"role": i.role, "count": i.count, "assigned": i.assigned, "nodes": list(i.nodes)}
                for i in self.get_roles()
            ]
        if kind == "status":
            clock = self._offsets.stats(trio.current_time(), self._peers)
            return {
                "name": self.name,
                "address": str(self.address),
                "cluster": self.config.cluster,
                "mode": self.get_node_status(),
                "ready": self.is_ready(),
                "online": self.get_active_cluster_nodes(),
                "hosting": self._roles.hosting(),
                "score": round(self._allocator.score(), 4),
                "allocate": self.allocate(),
                "version": __version__,
                "encrypted": self._keyring is not None,
                "clock_offset": None if clock.offset is None else round(clock.offset, 3),
                "clock_bound": clock.bound,
                "clock_skewed": clock.skewed,
            }
        raise ValueError(f"unknown query {kind!r}; expected members, roles or status")

    def kill(self) -> None:
        """Stop every service at once, without leaving — as if the process died.

        For demos and tests of failover on real sockets. The node falls silent;
        peers detect its death by failure detection. Exit the ``async with`` block
        afterwards (nothing more is sent when it closes).
        """
        self._killed = True
        if self._services is not None:
            self._services.cancel()
        if self._lifetime is not None:
            self._lifetime.cancel()

    # --- internals: membership glue -------------------------------------------------

    def _other_online(self) -> list[str]:
        return list(self._peers)

    def _beacon_members(self) -> Sequence[BeaconMember]:
        return [BeaconMember(name, addr) for name, addr in self._peers.items()]

    async def _join(self, seeds: Sequence[Address]) -> bool:
        ok = await self._runner.join(seeds)
        if ok:
            # Pull the cluster's state at once, so roles are planned on a full view.
            for seed in seeds[:2]:
                await self._store_sync(seed)
        return ok

    async def _follow_membership(self) -> None:
        async with self._runner.subscribe(maxlen=65536) as events:
            async for event in events:
                self._on_member_event(event)

    def _on_member_event(self, event: MemberEvent) -> None:
        member = event.member
        name = member.name
        if member.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT):
            self._lives[name] = member.generation
            if name != self.name:
                self._peers[name] = member.addr
        else:
            self._lives.pop(name, None)
            self._peers.pop(name, None)
        self._scores_changed()
        self._core.handle(event)
        if name == self.name:
            return
        if event.kind in (MemberEventKind.DEAD, MemberEventKind.LEFT):
            self._store.owner_departed(name)
        elif event.kind in (MemberEventKind.JOINED, MemberEventKind.ALIVE):
            self._store.owner_returned(name)
        elif event.kind == MemberEventKind.REAPED:
            self._store.remove_owner(name)

    # --- internals: clock offset to peers -------------------------------------------

    def _sample_clock(self, source: Address, payload: bytes) -> None:
        """Sample the clock of a peer from its score record, pushed straight from it.

        Sampled before the merge, so a delta the store refuses for its timestamp
        still tells how far off the sender's clock is.
        """
        if len(payload) > _CLOCK_SAMPLE_MAX:
            return  # a score push is small; anything larger is other news
        try:
            parts = decode_delta(payload)
        except (CodecError, StoreError):
            return  # the merge counts it
        now, at = self._clock(), trio.current_time()
        sampled = False
        for chunk in parts.owners:
            if self._peers.get(chunk.owner) != source:
                continue  # relayed: its timestamp is not fresh
            for entry in chunk.entries:
                value = entry.value
                if entry.key == _SCORE_KEY and isinstance(value, dict):
                    t = value.get("t")
                    if isinstance(t, int | float) and not isinstance(t, bool):
                        self._offsets.observe(chunk.owner, float(t) - now, at)
                        sampled = True
        if sampled:
            self._offsets.evaluate(at, self._peers)

    def _check_clock(self, what: str) -> None:
        """Refuse a write that peers would refuse for this node's fast clock."""
        now = trio.current_time()
        bound = self._offsets.bound
        # The write's HLC is max(last + 1, clock): after the clock stepped back it
        # still leads the clock, and peers judge the HLC.
        hlc_lead = max(0.0, hlc_wall(self._store.clock.last) / 1000 - self._clock())
        offset = self._offsets.offset(now, self._peers, lead=hlc_lead)
        if offset is not None and offset > bound:
            clock = self._offsets.offset(now, self._peers) or 0.0
            why = f"this node's clock is ahead of its peers' by {clock:.3f} s"
            if hlc_lead > bound / 10:
                why += f" and its HLC leads its clock by {hlc_lead:.3f} s (clock stepped back)"
            raise StoreError(
                f"{what} refused: {why}, {offset:.3f} s in all, over the store's bound of "
                f"{bound:.3f} s, so peers would refuse the write; fix the clock (NTP)"
            )

    # --- internals: store replication -----------------------------------------------

    def _disseminate(self, delta: Any, *, exclude: Address | None = None) -> None:
        """Push a local write (or a relayed novelty) to a few random online members."""
        if not delta:
            return
        payload: bytes = delta.payload if hasattr(delta, "payload") else delta
        addresses = list(self._peers.values())
        # Sample one extra, then drop the sender: O(fanout), not O(N) comparisons.
        picked = self._rng.sample(addresses, min(STORE_FANOUT + 1, len(addresses)))
        peers = [a for a in picked if a != exclude][:STORE_FANOUT]
        if not peers:
            return
        message = StoreDelta(payload)
        fits = encoded_size(message) <= self._packets.budget
        for peer in peers:
            if fits:
                self._runner.send(peer, [message])
            elif self._nursery is not None:
                self._nursery.start_soon(self._store_sync, peer)
        self._roles.notify()

    def _on_store_delta(self, source: Address, message: Message) -> None:
        assert isinstance(message, StoreDelta)
        self._deltas_in += 1
        self._sample_clock(source, message.payload)
        try:
            changes = self._store.merge(message.payload)
        except (CodecError, StoreError) as exc:
            self._deltas_bad += 1
            logger.debug("bad store delta from %s: %s", source, exc)
            return
        if not changes:
            return
        self._note_changes(changes)
        if _is_news(changes):
            self._disseminate(message.payload, exclude=source)
        else:
            self._roles.notify()

    async def _store_sync(self, peer: Address) -> bool:
        """One anti-entropy exchange with *peer* (this node opens); never raises.

        Network and protocol failures are counted in ``store_sync_failed``; any
        other exception (a bug, input no check foresaw) also in the runner's
        ``exchange_errors`` and logged at WARNING: it ends this exchange only.
        """
        channel: FrameChannel | None = None
        try:
            request: Message = StoreSyncRequest(self._store.digest())
            with trio.fail_after(self._params.stream_timeout):
                stream = await self._transport.connect(
                    peer, timeout=self.config.connect_timeout * 4
                )
                channel = FrameChannel(
                    stream,
                    self._keyring,
                    max_frame=self.config.max_frame,
                    read_timeout=self._params.stream_timeout,
                )
                await channel.send(request)
                for _ in range(STORE_SYNC_ROUNDS):
                    reply = await channel.receive()
                    if not isinstance(reply, StoreSyncReply):
                        raise CodecError(f"expected StoreSyncReply, got {type(reply).__name__}")
                    if reply.delta:
                        self._merge_synced(reply.delta, peer)
                    if not reply.digest:
                        break
                    answer = self._store.reconcile(reply.digest)
                    await channel.send(StoreSyncReply(answer.delta, answer.digest, answer.more))
                    if not answer.digest:
                        break
            self._sync_ok += 1
            return True
        except (BeethovenError, OSError, trio.TooSlowError, trio.BrokenResourceError,
                trio.ClosedResourceError, trio.EndOfChannel) as exc:  # fmt: skip
            self._sync_failed += 1
            logger.debug("store sync with %s failed: %r", peer, exc)
            return False
        except Exception as exc:
            self._sync_failed += 1
            self._runner.exchange_failed("request StoreSyncRequest", peer, exc)
            return False
        finally:
            if channel is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await channel.aclose()

    def _note_changes(self, changes: Changes) -> None:
        if changes.removed_owners or any(key == _SCORE_KEY for _, key in changes.owned):
            self._scores_changed()

    def _merge_synced(self, delta: bytes, peer: Address) -> None:
        try:
            changes = self._store.merge(delta)
        except (CodecError, StoreError) as exc:
            self._deltas_bad += 1
            logger.debug("bad store sync delta from %s: %s", peer, exc)
            return
        if not changes:
            return
        self._note_changes(changes)
        if _is_news(changes):
            # Relay what a sync brought, as for a datagram: a value too large for a
            # datagram reaches every node within a few exchanges, not anti-entropy rounds.
            self._disseminate(delta, exclude=peer)
        else:
            self._roles.notify()

    async def _serve_store_sync(self, channel: FrameChannel, peer: Address, first: Message) -> None:
        assert isinstance(first, StoreSyncRequest)
        try:
            message: StoreSyncRequest | StoreSyncReply = first
            for _ in range(STORE_SYNC_ROUNDS):
                digest = message.digest
                if isinstance(message, StoreSyncReply) and message.delta:
                    self._merge_synced(message.delta, peer)
                if not digest:
                    return
                answer = self._store.reconcile(digest)
                await channel.send(StoreSyncReply(answer.delta, answer.digest, answer.more))
                if not answer.digest:
                    return
                received = await channel.receive()
                if not isinstance(received, StoreSyncReply):
                    return
                message = received
            return
        except (CodecError, StoreError) as exc:
            self._deltas_bad += 1
            logger.debug("bad store sync from %s: %s", peer, exc)

    async def _serve_query(self, channel: FrameChannel, peer: Address, first: Message) -> None:
        assert isinstance(first, Query)
        try:
            body: Any = self.describe(first.kind)
        except ValueError as exc:
            body = {"error": str(exc)}
        payload = json.dumps(body, sort_keys=True).encode()
        with trio.move_on_after(self._params.stream_timeout):
            await channel.send(QueryReply(payload))

    async def _anti_entropy(self) -> NoReturn:
        while True:
            await trio.sleep(STORE_SYNC_INTERVAL * (0.5 + self._rng.random()))
            peers = list(self._peers.values())
            if peers:
                await self._store_sync(self._rng.choice(peers))

    async def _gc_loop(self) -> NoReturn:
        while True:
            await trio.sleep(STORE_GC_INTERVAL)
            try:
                self._view.refresh_marks({s.role: s.epoch for s in self._roles.status()})
                self._store.gc()
            except StoreError:
                logger.exception("store GC failed")

    async def _publish_score(self) -> NoReturn:
        """Publish the score when it changes (at most every second) and periodically."""
        refresh = max(1.0, self._stale_after / 3)
        last_score: float | None = None
        last_at = -math.inf
        while True:
            with trio.move_on_after(refresh):
                await self._score_dirty.wait()
            self._score_dirty = trio.Event()
            score = self._allocator.score()
            now = trio.current_time()
            material = last_score is None or abs(score - last_score) > SCORE_CHANGE * max(
                1.0, abs(last_score)
            )
            if material or now - last_at >= refresh:
                value = {"s": score, "t": self._clock()}
                self._disseminate(self._store.put_own(_SCORE_KEY, value, volatile=True))
                self._scores_changed()
                last_score, last_at = score, now
            await trio.sleep(SCORE_MIN_INTERVAL)

    # --- lifecycle ------------------------------------------------------------------

    _nursery: trio.Nursery | None = None  # the services' nursery (see _node_nursery)
    _services: _Services | None = None
    _lifetime: trio.CancelScope | None = None  # the scope around the body and the services
    _killed = False

    async def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        record = {
            "addr": str(self.address),
            "tags": list(self.config.tags),
            "version": __version__,
            "started": self._clock(),
        }
        self._store.put_own(_NODE_KEY, record)
        if self._store.durable:  # the memory backend has nothing to commit
            await nursery.start(self._store.run)
        nursery.start_soon(self._follow_membership)
        await nursery.start(self._runner.run)
        await nursery.start(self.hwmon.run)
        nursery.start_soon(self._publish_score)
        nursery.start_soon(self._anti_entropy)
        nursery.start_soon(self._gc_loop)
        nursery.start_soon(self._bootstrap, nursery)

    async def _bootstrap(self, nursery: trio.Nursery) -> None:
        """Discovery, then the first role plan, then ready (in the background)."""
        mode = await nursery.start(self._locator.run)
        logger.info("node %s at %s: discovery finished (%s)", self.name, self.address, mode)
        if self._peers:
            self._roles.hold_new_roles(JOIN_SETTLE)
        await nursery.start(self._roles.run)
        await self._roles.planned_once.wait()
        self._ready.set()

    async def _stop(self) -> None:
        """The goodbye, however the block ends: roles, leave, flush — each bounded.

        Runs in the body's task while the services still run (`_node_nursery` keeps
        them out of reach of the cancellation that may be ending the body), inside
        shielded scopes with deadlines, so a cancelled caller waits at most
        ``LEAVE_TIMEOUT + FLUSH_TIMEOUT`` seconds. After a kill, or when a service
        already failed (nothing left to say it with), only the store is flushed.
        """
        if self._killed:
            return
        services = self._services
        if services is not None and services.running:
            with trio.move_on_after(LEAVE_TIMEOUT) as scope:
                scope.shield = True
                await self._roles.stop_all()
                # Gossip the Leave for a few rounds; alone, there is no one to tell.
                linger = min(1.0, 4 * self._params.gossip_interval) if self._peers else 0.0
                await self._runner.leave(linger=linger)
            if scope.cancelled_caught:
                logger.warning(
                    "node %s: leaving took over %s s, cut short", self.name, LEAVE_TIMEOUT
                )
        try:
            with trio.CancelScope(shield=True), trio.move_on_after(FLUSH_TIMEOUT):
                await self._store.flush()
        except StoreError:
            logger.exception("final store flush failed")


def _membership_params(config: Config) -> SwimParams:
    params = SwimParams.preset(config.preset)
    overrides = dict(config.membership)
    if config.reap_after != attrs.fields(Config).reap_after.default:
        overrides.setdefault("reap_after", config.reap_after)
    overrides.setdefault("udp_payload", config.max_payload)
    known = {f.name: f for f in attrs.fields(SwimParams)}
    values: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(
                f"membership.{key}: unknown parameter (known: {', '.join(sorted(known))})"
            )
        default = getattr(params, key)
        if isinstance(default, bool):
            values[key] = bool(value)
        elif isinstance(default, int):
            if not float(value).is_integer():
                raise ConfigError(f"membership.{key}: expected a whole number, got {value!r}")
            values[key] = int(value)
        else:
            values[key] = float(value)
    try:
        return attrs.evolve(params, **values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"membership: {exc}") from None


def _with_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    """*config* with keyword *overrides* applied, as `open_node` promises: bad is ConfigError."""
    known = sorted(f.name for f in attrs.fields(Config))
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"unknown configuration key {key!r} ({hint}known keys: {', '.join(known)})"
            )
    try:
        return attrs.evolve(config, **overrides)
    except (TypeError, ValueError) as exc:  # a converter's complaint; validators raise ConfigError
        raise ConfigError(str(exc)) from None


def _keyring(config: Config) -> Keyring | None:
    if not config.keys:
        return None
    try:
        return Keyring.from_strings(config.keys)
    except ConfigError as exc:
        raise ConfigError(f"keys: {exc}") from None


@asynccontextmanager
async def open_node(
    config: Config | None = None,
    *,
    roles: Sequence[Role] = (),
    network: MemoryNetwork | None = None,
    seed: int | None = None,
    hw_sampler: Callable[[], tuple[float, float]] | None = None,
    clock: Callable[[], float] = time.time,
    **overrides: Any,
) -> AsyncIterator[Node]:
    """Start a node and yield it once it serves; leave the cluster on exit.

    Args:
        config: the configuration; ``None`` builds one from the environment and
            *overrides* (see `load_config`).
        roles: roles to run in addition to ``config.roles``.
        network: attach to this in-memory network instead of real sockets (tests,
            simulations); the node binds ``config.bind:config.port`` on it.
        seed: seed of the node's random choices (reproducible tests).
        hw_sampler: replaces psutil as the CPU/RAM source (tests).
        clock: wall-clock seconds for the store's HLC, score timestamps and
            ``last_change``; tests under ``MockClock`` pass a function of
            ``trio.current_time()`` so seeded runs replay exactly.
        **overrides: config keys, applied over *config*.

    Yields:
        The running `Node` (not necessarily ready: see `Node.wait_ready`).

    Raises:
        ConfigError: any bad setting — an unknown key, a bad value, a bad role, a
            network too large to sweep, an unknown store scheme. Nothing has
            started when it is raised.
        BeethovenError: a service failed while the node ran.
    """
    if config is None:
        config = load_config(**overrides)
    elif overrides:
        config = _with_overrides(config, overrides)
    if roles:
        config = attrs.evolve(config, roles=(*config.roles, *roles))
    params = _membership_params(config)
    keyring = _keyring(config)
    LocatorSettings.from_config(config)  # validates cluster_net against max_sweep_hosts
    name = config.node_name
    try:
        store = open_store(
            config.store, owner=name, clock=clock, config=StoreConfig(max_value=config.max_value)
        )
    except StoreError as exc:
        raise ConfigError(f"store: {exc}") from None
    rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "big"))
    try:
        bind = Address(config.bind, config.port)
        advertise = (
            parse_address(config.advertise, default_port=config.port) if config.advertise else None
        )
        async with _open_transport(bind, advertise, network) as transport:
            node = Node(
                config,
                store=store,
                transport=transport,
                keyring=keyring,
                params=params,
                rng=rng,
                sampler=hw_sampler,
                clock=clock,
            )
            async with _node_nursery(node) as nursery:
                await node._start(nursery)
                try:
                    yield node
                finally:
                    await node._stop()
    finally:
        store.close()


@asynccontextmanager
async def _open_transport(
    bind: Address, advertise: Address | None, network: MemoryNetwork | None
) -> AsyncIterator[Transport]:
    if network is not None:
        async with network.attach(bind) as memory:
            yield memory
    else:
        async with open_udp_tcp_transport(bind, advertise=advertise) as udp:
            yield udp


class _Services:
    """The node's service tasks: one nursery, in a task shielded from outside cancellation.

    Cancelling the caller's scope, a sibling's failure or a ``KeyboardInterrupt`` in
    the caller's nursery reaches the body of ``open_node``'s block, never the
    services directly: the graceful leave the body's exit runs still has the
    runner's receive and send loops, the transport and the role tasks. They end
    when `cancel` is called (after the leave), when the node is killed, or when
    one of them fails.
    """

    def __init__(self) -> None:
        self.shield = trio.CancelScope(shield=True)
        self.running = False

    async def run(
        self, *, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Hold the services' nursery open until `cancel` (or a service fails)."""
        # A start cancelled from outside ends here, before the shield: past it,
        # nothing from outside could end this task while ``nursery.start`` waits.
        await trio.lowlevel.checkpoint()
        try:
            with self.shield:
                async with trio.open_nursery() as nursery:
                    self.running = True
                    task_status.started(nursery)
                    await trio.sleep_forever()
        finally:
            self.running = False

    def cancel(self) -> None:
        """Cancel every service (safe before `run` and more than once)."""
        self.shield.cancel()


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in _leaves(e)]
    return [error]


@asynccontextmanager
async def _node_nursery(node: Node) -> AsyncIterator[trio.Nursery]:
    """The services' nursery (see `_Services`); the body runs beside it, cancellable.

    When the body's block is left — normally, by an exception, or by a cancellation
    from outside — the body's ``finally`` (the graceful leave) runs while the
    services still serve; then they are cancelled. A cancellation from outside is
    still honoured afterwards (its ``Cancelled`` comes out for its scope to catch).
    The body's exception comes out unwrapped; a failed service as one
    `BeethovenError` (a ``KeyboardInterrupt`` or other ``BaseException`` delivered
    inside a service as itself).
    """
    body_error: BaseException | None = None
    services = _Services()
    node._services = services
    try:
        async with trio.open_nursery() as outer:
            node._lifetime = outer.cancel_scope
            try:
                nursery: trio.Nursery = await outer.start(services.run)
                try:
                    yield nursery
                except BaseException as exc:
                    body_error = exc
                    raise
            finally:
                services.cancel()
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if body_error is not None and any(e is body_error for e in leaves):
            rest = [e for e in leaves if e is not body_error and not isinstance(e, trio.Cancelled)]
            if rest:
                logger.error("node %s: services failed while the body raised: %r", node.name, rest)
            raise body_error from None
        failures = [e for e in leaves if not isinstance(e, trio.Cancelled)]
        if not failures:
            raise  # only cancellations from outside: their scopes catch them
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure from None  # KeyboardInterrupt, SystemExit: not a failure of ours
        if len(failures) == 1 and isinstance(failures[0], BeethovenError):
            raise failures[0] from None
        raise BeethovenError(f"node {node.name}: a service failed: {failures!r}") from group
