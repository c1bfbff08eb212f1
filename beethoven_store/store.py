"""The replicated :class:`Store`: CRDT state in memory over a persistence backend.

One ``Store`` per node. Reads are synchronous dictionary lookups (they sit on hot
paths such as ``allocate()``). Writes to the node's own keyspace and to the
cluster-wide LWW map return a :class:`Delta` to disseminate (its ``payload``
rides in ``beethoven.wire.messages.StoreDelta``); ``merge()`` applies a received
delta and returns the :class:`Changes`. Anti-entropy uses :meth:`Store.digest`
and :meth:`Store.reconcile` (``StoreSyncRequest`` / ``StoreSyncReply``).

Persistence is write-behind and group-committed: changes accumulate and are
written as one backend transaction per batch by :meth:`Store.flush` (or the
:meth:`Store.run` service every ``flush_interval``). Exceptions, because they
must not be lost: LWW writes (``put``/``delete``) and version-ceiling bumps are
committed before the call returns when the backend is durable.

Typical node use::

    store = open_store("sqlite:///var/lib/node.db", owner="n1", clock=time.time)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)          # periodic group commit
        d = store.put_own(("node",), {"addr": "10.0.0.1", "port": 33000})
        gossip(StoreDelta(payload=d.payload))
        store.put_own(("score",), 0.25, volatile=True)
        changes = store.merge(received.payload)
        scores = store.values_of(("score",))    # owner → value, synchronous
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, NoReturn

import attrs
import msgpack
import trio

from beethoven.errors import CodecError, StoreError
from beethoven_store import codec, sync
from beethoven_store.backends.base import (
    SPACE_LWW,
    SPACE_OWNED,
    Backend,
    BackendStats,
    Batch,
    Row,
    RowId,
)
from beethoven_store.crdt import (
    DeltaParts,
    Entry,
    Key,
    LwwEntry,
    LWWMap,
    Marker,
    MergeCounters,
    OwnerMap,
    OwnerState,
    Value,
    cover_diff,
    cover_max,
)
from beethoven_store.hlc import ClockStats, HybridClock, hlc_wall, make_hlc
from beethoven_store.sync import SyncReply

__all__ = [
    "Changes",
    "Delta",
    "GcReport",
    "Store",
    "StoreConfig",
    "StoreStats",
    "Subscription",
    "SyncReply",
]

logger = logging.getLogger(__name__)

_HOUR_MS = 3_600_000
_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_META_SCHEMA = b"beethoven-store/1"


@attrs.frozen
class StoreConfig:
    """Tunables of a :class:`Store` (protocol durations live here, not in calls).

    Attributes:
        max_offset_ms: Largest tolerated lead of a remote HLC over local time; deltas
            further ahead are refused (counted).
        horizon_ms: Durable horizon H: durable owner tombstones are purged after it,
            departed owners are removed after it, and a node absent longer than it
            discards non-own persisted data at boot. Removal markers live ``2H``.
        volatile_horizon_ms: Horizon for volatile tombstones.
        lww_horizon_ms: LWW tombstones are purged after it; older late writes are dropped.
        version_headroom: How far ahead of use the own-version ceiling is persisted.
        flush_interval: Seconds between group commits in :meth:`Store.run`.
        flush_rows: Pending rows that wake :meth:`Store.run` early.
        budget_bytes: Default byte budget of :meth:`Store.delta_since` / :meth:`Store.reconcile`
            (soft: a reply exceeds it by at most one entry, so a value larger than
            the budget is still sent, alone).
        max_value: Largest value a local write accepts, in bytes of its msgpack
            encoding (the node's ``max_value`` config key); larger ones raise
            `StoreError`. Merged values are not checked against it.
        max_cloud: Cover intervals kept per owner beyond the contiguous prefix.
        subscriber_buffer: Default buffer of :meth:`Store.subscribe`.
    """

    max_offset_ms: int = 500
    horizon_ms: int = 24 * _HOUR_MS
    volatile_horizon_ms: int = _HOUR_MS
    lww_horizon_ms: int = 7 * 24 * _HOUR_MS
    version_headroom: int = 10_000
    flush_interval: float = 0.05
    flush_rows: int = 1000
    budget_bytes: int = 60_000
    max_value: int = 1_048_576
    max_cloud: int = 64
    subscriber_buffer: int = 64


@attrs.frozen
class Delta:
    """A delta to disseminate: the encoded ``payload`` and its decoded ``parts``.

    ``bool(delta)`` is false for an empty delta (a no-op write), which needs no
    gossip. Pass either the object or its ``payload`` to :meth:`Store.merge`.

    Attributes:
        payload: The deterministic encoding (``StoreDelta.payload``).
        parts: The decoded delta.
    """

    payload: bytes
    parts: DeltaParts = attrs.field(eq=False, repr=False)

    def __bool__(self) -> bool:
        return not self.parts.empty()

    @property
    def entries(self) -> int:
        """Number of entries carried."""
        return len(self.parts)


@attrs.frozen
class Changes:
    """What a write, merge or GC changed, as seen by readers.

    Attributes:
        owned: ``(owner, key)`` pairs whose visible value changed (set or deleted).
        shared: LWW keys whose visible value changed.
        removed_owners: Owners whose whole keyspace was removed (departed or replaced).
        overflowed: Set on a subscription item delivered after older items were
            dropped for lack of buffer space: re-read what you track.
    """

    owned: tuple[tuple[str, Key], ...] = ()
    shared: tuple[Key, ...] = ()
    removed_owners: tuple[str, ...] = ()
    overflowed: bool = False

    def __bool__(self) -> bool:
        return bool(self.owned or self.shared or self.removed_owners)


_NO_CHANGES = Changes()


@attrs.frozen
class GcReport:
    """What one :meth:`Store.gc` pass did.

    Attributes:
        owned_tombstones: Owner tombstones purged.
        owners_removed: Departed owners removed behind a marker.
        markers_expired: Removal markers dropped after ``2H``.
        shared_tombstones: LWW tombstones purged.
    """

    owned_tombstones: int = 0
    owners_removed: tuple[str, ...] = ()
    markers_expired: int = 0
    shared_tombstones: int = 0


@attrs.frozen
class StoreStats:
    """Sizes and counters of a store (all counters are monotone).

    Attributes:
        owner: This node's name.
        generation: Its current generation.
        owners: Owners with state.
        owned_entries: Live owned entries (all owners).
        owned_tombstones: Owned tombstones.
        volatile_entries: Live volatile entries.
        shared_entries: Live LWW entries.
        shared_tombstones: LWW tombstones.
        markers: Removal markers.
        value_bytes: Encoded size of all live values.
        merges: ``merge()`` calls.
        merged_entries: Entries received in merged deltas.
        refused_chunks: Chunks refused because an HLC was too far ahead.
        own_conflicts: Chunks or markers about this node from a newer life (answered
            with a new generation).
        counters: Merge anomaly counters of the owner map.
        late_writes_dropped: LWW entries dropped under the GC floor.
        subscriber_drops: Subscription items dropped (drop-oldest).
        pending_rows: Rows waiting for the next commit.
        batches: Batches committed.
        delta_bytes_sent: Bytes returned by ``delta_since``/``reconcile``.
        clock: The HLC's counters.
        backend: The backend's counters.
    """

    owner: str
    generation: int
    owners: int
    owned_entries: int
    owned_tombstones: int
    volatile_entries: int
    shared_entries: int
    shared_tombstones: int
    markers: int
    value_bytes: int
    merges: int
    merged_entries: int
    refused_chunks: int
    own_conflicts: int
    counters: MergeCounters
    late_writes_dropped: int
    subscriber_drops: int
    pending_rows: int
    batches: int
    delta_bytes_sent: int
    clock: ClockStats
    backend: BackendStats


class Subscription:
    """A bounded stream of :class:`Changes` that never blocks the writer.

    When the buffer is full the *oldest* item is dropped, ``dropped`` is
    incremented and the next item delivered has ``overflowed=True`` (re-read the
    state you track). Iterate with ``async for changes in sub``; close with
    ``sub.close()`` or use it as a (sync) context manager.

    Attributes:
        receive: The receiving end of the underlying trio memory channel.
        dropped: Items dropped so far.
    """

    def __init__(self, store: Store, max_buffer: int) -> None:
        send, receive = trio.open_memory_channel[Changes](max_buffer)
        self._store = store
        self._send = send
        self._drain = receive.clone()
        self.receive = receive
        self.dropped = 0
        self._closed = False

    def _publish(self, changes: Changes) -> None:
        try:
            self._send.send_nowait(changes)
            return
        except trio.WouldBlock:
            pass
        with contextlib.suppress(trio.WouldBlock):
            self._drain.receive_nowait()
        self.dropped += 1
        self._store._subscriber_drops += 1
        try:
            self._send.send_nowait(attrs.evolve(changes, overflowed=True))
        except trio.WouldBlock:
            self.dropped += 1

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Changes:
        try:
            return await self.receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop delivery and close the channel (idempotent)."""
        if not self._closed:
            self._closed = True
            self._store._subs.discard(self)
            self._send.close()
            self._drain.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _enc_header(st: OwnerState, volatile_versions: list[int]) -> bytes:
    cover = st.cover
    if volatile_versions:
        holes = tuple((v, v) for v in sorted(volatile_versions))
        cover = cover_diff(cover, holes)
    return _pack((st.generation, st.gc, codec.encode_cover(cover)))  # type: ignore[no-any-return]


def _meta_int(meta: Mapping[str, bytes], key: str, default: int = 0) -> int:
    raw = meta.get(key)
    if raw is None:
        return default
    try:
        v = codec.unpack(raw)
    except CodecError as exc:
        raise StoreError(f"corrupt store meta {key!r}: {exc}") from exc
    if type(v) is not int:
        raise StoreError(f"corrupt store meta {key!r}")
    return v


class Store:
    """One node's replica of the cluster state (see the module docstring).

    Use :func:`beethoven_store.open_store` rather than this constructor.

    Args:
        backend: An open backend; the store owns it and closes it.
        owner: This node's name (owner of its keyspace, its LWW writer id).
        clock: Physical clock in seconds (default ``time.time``).
        config: Tunables.

    Raises:
        StoreError: If the backend holds another node's store or is corrupt.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        owner: str,
        clock: Callable[[], float] | None = None,
        config: StoreConfig | None = None,
    ) -> None:
        if not isinstance(owner, str) or not owner:
            raise StoreError("a store needs a non-empty owner name")
        self.owner = owner
        self.config = cfg = config or StoreConfig()
        self.backend = backend
        self.durable = bool(getattr(backend, "durable", True))
        phys = clock or time.time
        self._clock = HybridClock(lambda: int(phys() * 1000), max_offset_ms=cfg.max_offset_ms)
        self.om = OwnerMap(max_cloud=cfg.max_cloud)
        self.lww = LWWMap()
        self._subs: set[Subscription] = set()
        self._departed: dict[str, int] = {}
        # write-behind state (durable backends only)
        self._image: dict[str, dict[Key, tuple[int, bytes]]] = {}
        self._dirty_owners: set[str] = set()
        self._dirty_lww: set[Key] = set()
        self._dirty_writers: set[str] = set()
        self._dirty_markers: set[str] = set()
        self._pending_meta: dict[str, bytes | None] = {}
        self._queue: collections.deque[Batch] = collections.deque()
        self._apply_lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(1)
        self._wakeup: trio.Event | None = None
        self._flush_waiters: list[trio.Event] = []
        self._version_ceiling = 0
        self._seq_base = 1
        self._closed = False
        # counters
        self._merges = 0
        self._merged_entries = 0
        self._refused = 0
        self._own_conflicts = 0
        self._subscriber_drops = 0
        self._batches = 0
        self._delta_bytes = 0
        self._load()

    # ------------------------------------------------------------------ boot

    def _load(self) -> None:
        snap = self.backend.load() if self.durable else None
        meta = dict(snap.meta) if snap is not None else {}
        if meta:
            if meta.get("schema") != _META_SCHEMA:
                raise StoreError("backend holds data that is not a beethoven store")
            node = meta.get("node_id", b"").decode("utf-8", "replace")
            if node != self.owner:
                raise StoreError(f"store belongs to node {node!r}, not {self.owner!r}")
        self._clock.observe(_meta_int(meta, "hlc_high"))
        now = self._clock.physical()
        last_seen = _meta_int(meta, "last_seen")
        discard = bool(meta) and now - last_seen > self.config.horizon_ms
        if discard:
            logger.warning(
                "store was offline %.1f h (> horizon): discarding other nodes' data",
                (now - last_seen) / _HOUR_MS,
            )
        generation = _meta_int(meta, "generation")
        if snap is not None and meta:
            self._restore(snap.rows, meta, discard)
        if not self.durable or not generation:
            generation = self._clock.now()
            self.om.init_owner(self.owner, generation)
            self._version_ceiling = 0
        else:
            ceiling = _meta_int(meta, "version_ceiling")
            st = self.om.owners.get(self.owner)
            if st is None or st.generation != generation:
                self.om.owners[self.owner] = st = OwnerState(generation)
            # Skip to the persisted ceiling: versions emitted before a crash may be
            # lost locally; treating the skipped range as purged makes peers that
            # hold them take a reset, so no version is ever reused.
            st.cover = ((1, ceiling),) if ceiling else ()
            for key, e in list(st.entries.items()):
                if e.version > ceiling:
                    del st.entries[key]
            st.purge_through(ceiling)
            # Re-issue the surviving entries above the ceiling: a peer may hold a
            # lost newer write of the same key, which must not outrank them.
            for e in sorted(st.entries.values(), key=lambda e: e.version):
                self.om.write(self.owner, e.key, e.raw, e.value, self._clock.now())
            self._version_ceiling = ceiling
        # A writer without a persisted cover (memory backend, fresh file) may have
        # had a former life: number its LWW writes above anything that life used
        # (its seqs never exceeded its HLC, which is below our boot HLC).
        self._seq_base = 1 if self.lww.covers.get(self.owner) else generation + 1
        if self.durable:
            self._pending_meta.update(
                {
                    "schema": _META_SCHEMA,
                    "node_id": self.owner.encode(),
                    "generation": _pack(generation),
                }
            )
            self._dirty_owners.add(self.owner)
            self._bump_ceiling(cover_max(self.om.owners[self.owner].cover) + 1)

    def _restore(self, rows: Any, meta: dict[str, bytes], discard: bool) -> None:
        om, lww = self.om, self.lww
        for k, raw in meta.items():
            try:
                if k.startswith("oh/"):
                    name = k[3:]
                    if discard and name != self.owner:
                        self._pending_meta[k] = None
                        continue
                    gen, gc, cov = codec.unpack(raw)
                    om.owners[name] = OwnerState(gen, codec.decode_cover(cov), gc)
                elif k.startswith("mk/") and not discard:
                    gen, when = codec.unpack(raw)
                    om.markers[k[3:]] = Marker(gen, when)
                elif k.startswith("lc/") and not discard:
                    lww.covers[k[3:]] = codec.decode_cover(codec.unpack(raw))
            except (CodecError, ValueError, TypeError) as exc:
                raise StoreError(f"corrupt store meta {k!r}: {exc}") from exc
        if discard:
            self._pending_meta.update({k: None for k in meta if k[:3] in ("mk/", "lc/")})
        else:
            lww.gc_floor = _meta_int(meta, "lww_floor")
        for r in rows:
            try:
                key = codec.decode_key(r.key)
                value = None if r.value is None else codec.decode_value(r.value)
            except CodecError as exc:
                raise StoreError(f"corrupt store row {r!r}: {exc}") from exc
            if r.space == SPACE_OWNED:
                if discard and r.owner != self.owner:
                    self._queue_delete((SPACE_OWNED, r.owner, r.key))
                    continue
                st = om.owners.get(r.owner)
                if st is None:
                    raise StoreError(f"corrupt store: row of unknown owner {r.owner!r}")
                st.entries[key] = Entry(key, r.version, r.hlc, r.value, value, False)
                self._image.setdefault(r.owner, {})[key] = (r.version, r.key)
            elif r.space == SPACE_LWW:
                if discard:
                    self._queue_delete((SPACE_LWW, "", r.key))
                    continue
                lww.entries[key] = LwwEntry(key, r.hlc, r.writer, r.version, r.value, value)
            else:
                raise StoreError(f"corrupt store: row space {r.space}")

    def _queue_delete(self, rid: RowId) -> None:
        self._queue.append(Batch(deletes=[rid]))

    # ------------------------------------------------------------------ reads

    @property
    def generation(self) -> int:
        """This node's current generation."""
        return self.om.owners[self.owner].generation

    @property
    def clock(self) -> HybridClock:
        """The store's hybrid logical clock (shared with the node if it wishes)."""
        return self._clock

    def get(self, key: Key, default: Value = None) -> Value:
        """Read the LWW map: the winning value at ``key``, or ``default``."""
        e = self.lww.entries.get(key)
        if e is None or e.raw is None:
            return default
        return e.value

    def shared_items(self) -> Iterator[tuple[Key, Value]]:
        """Iterate over the LWW map's live ``(key, value)`` pairs."""
        for k, e in list(self.lww.entries.items()):
            if e.raw is not None:
                yield k, e.value

    def get_owned(self, owner: str, key: Key, default: Value = None) -> Value:
        """Read ``owner``'s keyspace: its value at ``key``, or ``default``."""
        st = self.om.owners.get(owner)
        if st is None:
            return default
        e = st.entries.get(key)
        if e is None or e.raw is None:
            return default
        return e.value

    def get_own(self, key: Key, default: Value = None) -> Value:
        """Read this node's own keyspace."""
        return self.get_owned(self.owner, key, default)

    def owned_items(self, owner: str) -> dict[Key, Value]:
        """Return ``owner``'s live keyspace as a new dict (empty if unknown)."""
        st = self.om.owners.get(owner)
        if st is None:
            return {}
        return {k: e.value for k, e in st.entries.items() if e.raw is not None}

    def values_of(self, key: Key) -> dict[str, Value]:
        """Return ``owner → value`` of ``key`` for every owner that has it live.

        This is the hot-path read of ``allocate()`` (e.g. ``values_of(("score",))``).
        """
        out: dict[str, Value] = {}
        for o, st in self.om.owners.items():
            e = st.entries.get(key)
            if e is not None and e.raw is not None:
                out[o] = e.value
        return out

    def owners(self) -> list[str]:
        """Return the owners this replica holds state for, sorted."""
        return sorted(self.om.owners)

    def generation_of(self, owner: str) -> int | None:
        """Return the generation held for ``owner`` (``None`` if unknown)."""
        st = self.om.owners.get(owner)
        return None if st is None else st.generation

    # ------------------------------------------------------------------ writes

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    def _bump_ceiling(self, version: int) -> None:
        """Persist a new own-version ceiling before any version ≥ the old one is emitted."""
        if not self.durable or version < self._version_ceiling:
            return
        self._version_ceiling = version + self.config.version_headroom
        self._pending_meta["version_ceiling"] = _pack(self._version_ceiling)
        self.flush_sync()

    def put_own(self, key: Key, value: Value, *, volatile: bool = False) -> Delta:
        """Set ``key`` in this node's own keyspace.

        Args:
            key: A non-empty tuple of str/int.
            value: Plain msgpack-able data (None, bool, int, float, str, bytes,
                lists, dicts with str keys); tuples read back as lists.
            volatile: Never persist this entry (signals, scores, hardware
                samples); it is lost on restart and rebuilt by the next sample.

        Returns:
            The delta to gossip.

        Raises:
            StoreError: For an invalid key or value, a value larger than
                ``config.max_value`` bytes encoded, or a closed store.
        """
        self._check_writable()
        codec.validate_key(key)
        canon = codec.canonical_value(value)
        raw = self._encode_value(canon)
        return self._write_own(key, raw, canon, volatile)

    def _encode_value(self, canon: Value) -> bytes:
        raw: bytes = _pack(canon)
        limit = self.config.max_value
        if len(raw) > limit:
            raise StoreError(
                f"value too large: {len(raw)} bytes encoded, above the limit of {limit} bytes"
                " (config key max_value)"
            )
        return raw

    def delete_own(self, key: Key) -> Delta:
        """Delete ``key`` from this node's own keyspace (a tombstone).

        Returns:
            The delta to gossip; empty (falsy) if the key was not set.

        Raises:
            StoreError: For an invalid key or a closed store.
        """
        self._check_writable()
        codec.validate_key(key)
        cur = self.om.owners[self.owner].entries.get(key)
        if cur is None or cur.raw is None:
            return _EMPTY_DELTA
        return self._write_own(key, None, None, cur.volatile)

    def _write_own(self, key: Key, raw: bytes | None, value: Value, volatile: bool) -> Delta:
        st = self.om.owners[self.owner]
        self._bump_ceiling(cover_max(st.cover) + 1)
        prev = st.entries.get(key)
        chunk = self.om.write(self.owner, key, raw, value, self._clock.now(), volatile=volatile)
        if self.durable and not (volatile and (prev is None or prev.volatile)):
            self._dirty_owners.add(self.owner)
            self._maybe_wake()
        parts = DeltaParts(owners=(chunk,))
        if self._subs and not (raw is None and prev is None):
            self._publish(Changes(owned=((self.owner, key),)))
        return Delta(codec.encode_delta(parts), parts)

    def put(self, key: Key, value: Value) -> Delta:
        """Set ``key`` in the cluster-wide LWW map (latest ``(HLC, writer)`` wins).

        Committed to a durable backend before returning.

        Returns:
            The delta to gossip.

        Raises:
            StoreError: For an invalid key or value, a value larger than
                ``config.max_value`` bytes encoded, or a closed store.
        """
        self._check_writable()
        codec.validate_key(key)
        canon = codec.canonical_value(value)
        return self._write_lww(key, self._encode_value(canon), canon)

    def delete(self, key: Key) -> Delta:
        """Delete ``key`` from the LWW map (a tombstone that wins over older writes).

        Committed to a durable backend before returning.

        Returns:
            The delta to gossip.
        """
        self._check_writable()
        codec.validate_key(key)
        return self._write_lww(key, None, None)

    def _write_lww(self, key: Key, raw: bytes | None, value: Value) -> Delta:
        prev = self.lww.entries.get(key)
        chunk = self.lww.write(
            self.owner, key, raw, value, self._clock.now(), min_seq=self._seq_base
        )
        if self.durable:
            self._dirty_lww.add(key)
            self._dirty_writers.add(self.owner)
            self.flush_sync()
        parts = DeltaParts(writers=(chunk,))
        if self._subs and not (raw is None and (prev is None or prev.raw is None)):
            self._publish(Changes(shared=(key,)))
        return Delta(codec.encode_delta(parts), parts)

    # ------------------------------------------------------------------ merge

    def merge(self, delta: bytes | Delta | DeltaParts) -> Changes:
        """Apply a received delta (or state, or reset); duplicates and reordering are harmless.

        Chunks whose HLCs lead local time by more than ``max_offset_ms`` are
        refused and counted; so are chunks for removed owner generations, and
        ordinary chunks from a sender that purged past our watermark (a reset
        follows through anti-entropy).

        Returns:
            The visible changes (also published to subscribers).

        Raises:
            beethoven.errors.CodecError: If ``delta`` bytes are malformed.
            StoreError: If the store is closed.
        """
        self._check_writable()
        if isinstance(delta, Delta):
            parts = delta.parts
        elif isinstance(delta, DeltaParts):
            parts = delta
        else:
            if not delta:
                return _NO_CHANGES
            parts = codec.decode_delta(delta)
        self._merges += 1
        self._merged_entries += len(parts)
        owned: list[tuple[str, Key]] = []
        removed: list[str] = []
        om = self.om
        clock = self._clock
        durable = self.durable

        def owned_sink(o: str, k: Key) -> None:
            owned.append((o, k))

        for name, mk in parts.markers:
            if name == self.owner:
                if mk.generation >= self.generation:
                    self._own_conflict(mk.generation)
                continue
            had = name in om.owners
            if om.apply_marker(name, mk) and durable:
                self._dirty_markers.add(name)
                self._dirty_owners.add(name)
            if had and name not in om.owners:
                removed.append(name)
        for oc in parts.owners:
            if oc.owner == self.owner:
                if oc.generation > self.generation:
                    self._own_conflict(oc.generation)
                elif om.adopt_gc(oc) and durable:
                    self._dirty_owners.add(self.owner)
                continue
            mx = max((e.hlc for e in oc.entries), default=0)
            if mx and clock.update(mx) is None:
                self._refused += 1
                continue
            gen_before = self.generation_of(oc.owner)
            if om.apply_chunk(oc, owned_sink):
                if durable:
                    self._dirty_owners.add(oc.owner)
                if gen_before is not None and gen_before != oc.generation:
                    removed.append(oc.owner)
        shared: list[Key] = []
        dirty_lww = self._dirty_lww

        def lww_sink(key: Key, visible: bool) -> None:
            if durable:
                dirty_lww.add(key)
            if visible:
                shared.append(key)

        for wc in parts.writers:
            mx = max((e.hlc for e in wc.entries), default=0)
            if mx and clock.update(mx) is None:
                self._refused += 1
                continue
            self.lww.apply_chunk(wc, lww_sink)
            if durable and wc.cover:
                self._dirty_writers.add(wc.writer)
        if durable:
            self._maybe_wake()
        if not (owned or shared or removed):
            return _NO_CHANGES
        changes = Changes(tuple(owned), tuple(shared), tuple(removed))
        self._publish(changes)
        return changes

    def _own_conflict(self, seen_generation: int) -> None:
        """Another replica holds a newer life (or a removal) of this node: start a new one."""
        self._own_conflicts += 1
        old = self.om.owners[self.owner]
        gen = max(self._clock.now(), seen_generation + 1)
        logger.warning(
            "store: peers hold generation %d of %r (ours %d); re-publishing as generation %d",
            seen_generation,
            self.owner,
            old.generation,
            gen,
        )
        self.om.markers.pop(self.owner, None)
        self.om.owners[self.owner] = OwnerState(gen)
        self._version_ceiling = 0
        if self.durable:
            self._pending_meta["generation"] = _pack(gen)
            self._pending_meta[f"mk/{self.owner}"] = None
            self._dirty_owners.add(self.owner)
        self._bump_ceiling(len(old.entries) + 1)
        for e in sorted(old.entries.values(), key=lambda e: e.version):
            if e.raw is not None:
                self.om.write(
                    self.owner, e.key, e.raw, e.value, self._clock.now(), volatile=e.volatile
                )

    # ------------------------------------------------------------------ anti-entropy

    def digest(self) -> bytes:
        """Return the opening digest for anti-entropy (``StoreSyncRequest.digest``).

        A detail digest of every item for small clusters (≤ 64 owners and
        writers), else the 8-byte root hash; answer either with :meth:`reconcile`.
        """
        if sync.item_count(self.om, self.lww) <= sync.SMALL_DIGEST_ITEMS:
            return sync.detail_digest(self.om, self.lww, stage=1)
        return sync.root_digest(self.om, self.lww)

    def full_digest(self) -> bytes:
        """Return a detail digest of every item (the flat ``owner → cover`` form)."""
        return sync.detail_digest(self.om, self.lww, stage=2)

    def delta_since(self, digest: bytes, budget_bytes: int | None = None) -> bytes:
        """Return what the replica that produced the detail ``digest`` lacks.

        Args:
            digest: A detail digest (:meth:`full_digest`, or one received while
                reconciling); for root and summary digests use :meth:`reconcile`.
            budget_bytes: Soft size cap (default ``config.budget_bytes``; a value
                ≤ 0 means unlimited). A cut delta is a valid prefix: applying it
                never removes anything the receiver holds.

        Returns:
            The encoded delta, ``b""`` if the peer lacks nothing.

        Raises:
            beethoven.errors.CodecError: If ``digest`` is malformed.
            StoreError: If ``digest`` is a root or summary digest.
        """
        d = sync.decode_digest(digest)
        if not isinstance(d, sync.Detail):
            raise StoreError(
                "delta_since() needs a detail digest; answer root/summary digests with reconcile()"
            )
        out, _ = sync.delta_since(self.om, self.lww, d, self._budget(budget_bytes))
        self._delta_bytes += len(out)
        return out

    def _budget(self, budget_bytes: int | None) -> int | None:
        b = self.config.budget_bytes if budget_bytes is None else budget_bytes
        return b if b > 0 else None

    def reconcile(self, digest: bytes, budget_bytes: int | None = None) -> SyncReply:
        """Answer a peer's digest; the result maps 1:1 to ``StoreSyncReply``.

        Protocol (A opens, B answers; each side merges every reply's ``delta``,
        then answers its ``digest``, if any, with ``reconcile`` again)::

            A → B  StoreSyncRequest(A.digest())          root (8 bytes)
            B → A  reconcile(root)    = (b"", B's summary)        done if roots match
            A → B  reconcile(summary) = (b"", A's detail of the differing buckets)
            B → A  reconcile(detail)  = (delta for A, B's partial detail: what differs)
            A → B  reconcile(partial) = (delta for B, b"")

        With few items ``digest()`` is already a detail and the first two steps
        are skipped. ``more=True`` means a delta was cut at the budget: run
        another round soon.

        Raises:
            beethoven.errors.CodecError: If ``digest`` is malformed.
        """
        d = sync.decode_digest(digest)
        om, lww = self.om, self.lww
        if isinstance(d, sync.Root):
            if d.root == sync.root_hash(om, lww):
                return SyncReply()
            return SyncReply(digest=sync.summary_digest(om, lww))
        if isinstance(d, sync.Summary):
            diff = sync.differing_buckets(sync.bucket_hashes(om, lww), d)
            if not diff:
                return SyncReply()
            return SyncReply(digest=sync.detail_digest(om, lww, scope=diff, stage=1))
        delta, more = sync.delta_since(om, lww, d, self._budget(budget_bytes))
        self._delta_bytes += len(delta)
        reply_digest = b""
        if d.stage == 1:
            reply_digest = sync.partial_detail_digest(om, lww, d)
        return SyncReply(delta=delta, digest=reply_digest, more=more)

    def full_state(self) -> bytes:
        """Return the whole replica, deterministically encoded (a mergeable delta)."""
        return sync.full_state(self.om, self.lww)

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, max_buffer: int | None = None) -> Subscription:
        """Subscribe to :class:`Changes` (local writes, merges, GC).

        Args:
            max_buffer: Items buffered before the oldest is dropped
                (default ``config.subscriber_buffer``).
        """
        sub = Subscription(self, max_buffer or self.config.subscriber_buffer)
        self._subs.add(sub)
        return sub

    def _publish(self, changes: Changes) -> None:
        for sub in list(self._subs):
            try:
                sub._publish(changes)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subs.discard(sub)

    # ------------------------------------------------------------------ GC

    def owner_departed(self, owner: str, *, since: float | None = None) -> None:
        """Note that membership reports ``owner`` left or dead since ``since`` (clock seconds).

        :meth:`gc` removes its keyspace behind a marker once ``horizon_ms`` has
        passed. Repeated calls keep the earliest time.
        """
        if owner == self.owner:
            return
        at = self._clock.physical() if since is None else int(since * 1000)
        self._departed[owner] = min(at, self._departed.get(owner, at))

    def owner_returned(self, owner: str) -> None:
        """Cancel a pending departure (the owner is alive again)."""
        self._departed.pop(owner, None)

    def remove_owner(self, owner: str) -> bool:
        """Remove ``owner``'s keyspace now, behind a removal marker (for its generation).

        Returns:
            Whether anything was removed.
        """
        if owner == self.owner:
            raise StoreError("a store cannot remove its own keyspace")
        if not self.om.remove_owner(owner, self._clock.now()):
            return False
        self._departed.pop(owner, None)
        if self.durable:
            self._dirty_markers.add(owner)
            self._dirty_owners.add(owner)
        self._publish(Changes(removed_owners=(owner,)))
        return True

    def gc(self, *, stable: Mapping[str, int] | None = None) -> GcReport:
        """Run one garbage-collection pass (call it periodically, e.g. every minute).

        Purges owner tombstones inside the complete prefix whose deletion is older
        than the horizon (or whose version every live member holds, per ``stable``:
        ``owner → lowest watermark among live members``), removes owners departed
        for longer than ``horizon_ms``, expires markers after ``2 × horizon_ms`` and
        purges LWW tombstones older than ``lww_horizon_ms``.
        """
        cfg = self.config
        now = self._clock.physical()
        purged_owned = 0
        for o in list(self.om.owners):
            stable_v = stable.get(o, 0) if stable else 0

            def eligible(e: Entry, stable_v: int = stable_v) -> bool:
                h = cfg.volatile_horizon_ms if e.volatile else cfg.horizon_ms
                return e.version <= stable_v or hlc_wall(e.hlc) < now - h

            n = len(self.om.purge(o, eligible))
            if n:
                purged_owned += n
                if self.durable:
                    self._dirty_owners.add(o)
        removed: list[str] = []
        for o, since in list(self._departed.items()):
            if now - since > cfg.horizon_ms and self.remove_owner(o):
                removed.append(o)
        expired = 0
        for o, mk in list(self.om.markers.items()):
            if hlc_wall(mk.removed_hlc) < now - 2 * cfg.horizon_ms:
                del self.om.markers[o]
                expired += 1
                if self.durable:
                    self._dirty_markers.add(o)
        shared = 0
        floor_ms = now - cfg.lww_horizon_ms
        if floor_ms > 0:
            purged = self.lww.purge(make_hlc(floor_ms))
            shared = len(purged)
            if self.durable and (purged or self.lww.gc_floor):
                self._dirty_lww.update(e.key for e in purged)
                self._pending_meta["lww_floor"] = _pack(self.lww.gc_floor)
        return GcReport(purged_owned, tuple(removed), expired, shared)

    # ------------------------------------------------------------------ persistence

    def _maybe_wake(self) -> None:
        if self._wakeup is not None and len(self._dirty_lww) + len(self._dirty_owners) >= (
            self.config.flush_rows
        ):
            self._wakeup.set()

    def _owner_row(self, o: str, e: Entry, kb: bytes) -> Row:
        return Row(
            SPACE_OWNED, o, kb, e.version, e.hlc, "", e.raw, e.hlc if e.raw is None else None
        )

    def _build_batch(self) -> Batch | None:
        """Turn the dirty sets into one batch (called in the trio thread)."""
        if not self.durable:
            return None
        if not (
            self._dirty_owners
            or self._dirty_lww
            or self._dirty_writers
            or self._dirty_markers
            or self._pending_meta
        ):
            return None
        upserts: list[Row] = []
        deletes: list[RowId] = []
        meta = self._pending_meta
        self._pending_meta = {}
        om = self.om
        for o in self._dirty_owners:
            img = self._image.get(o)
            st = om.owners.get(o)
            if st is None:
                if img:
                    deletes.extend((SPACE_OWNED, o, kb) for _, kb in img.values())
                    del self._image[o]
                meta[f"oh/{o}"] = None
                continue
            if img is None:
                img = self._image[o] = {}
            vol: list[int] = []
            for key, e in st.entries.items():
                if e.volatile:
                    vol.append(e.version)
                    continue
                have = img.get(key)
                if have is None or have[0] != e.version:
                    kb = have[1] if have is not None else codec.encode_key(key)
                    upserts.append(self._owner_row(o, e, kb))
                    img[key] = (e.version, kb)
            for key in [k for k in img if k not in st.entries or st.entries[k].volatile]:
                deletes.append((SPACE_OWNED, o, img.pop(key)[1]))
            meta[f"oh/{o}"] = _enc_header(st, vol)
        self._dirty_owners = set()
        for key in self._dirty_lww:
            kb = codec.encode_key(key)
            le = self.lww.entries.get(key)
            if le is None:
                deletes.append((SPACE_LWW, "", kb))
            else:
                upserts.append(
                    Row(
                        SPACE_LWW,
                        "",
                        kb,
                        le.seq,
                        le.hlc,
                        le.writer,
                        le.raw,
                        le.hlc if le.raw is None else None,
                    )
                )
        self._dirty_lww = set()
        for w in self._dirty_writers:
            meta[f"lc/{w}"] = _pack(codec.encode_cover(self.lww.covers.get(w, ())))
        self._dirty_writers = set()
        for o in self._dirty_markers:
            mk = om.markers.get(o)
            meta[f"mk/{o}"] = None if mk is None else _pack((mk.generation, mk.removed_hlc))
        self._dirty_markers = set()
        meta["hlc_high"] = _pack(self._clock.last)
        meta["last_seen"] = _pack(self._clock.physical())
        return Batch(upserts, deletes, meta)

    def _drain(self) -> None:
        """Apply every queued batch in order (any thread; serialised)."""
        with self._apply_lock:
            while self._queue:
                batch = self._queue[0]
                self.backend.apply(batch)
                self._queue.popleft()
                self._batches += 1

    def _enqueue(self) -> bool:
        batch = self._build_batch()
        if batch is not None:
            self._queue.append(batch)
        return bool(self._queue)

    @property
    def pending_rows(self) -> int:
        """Rows (approximately) waiting for the next commit."""
        return (
            len(self._dirty_lww)
            + len(self._dirty_owners)
            + sum(len(b.upserts) + len(b.deletes) for b in self._queue)
        )

    def flush_sync(self) -> None:
        """Commit everything pending now, blocking the calling thread.

        Raises:
            StoreError: If the backend fails (the batch stays queued for a retry).
        """
        if self._enqueue():
            self._drain()

    async def flush(self) -> None:
        """Commit everything pending in a worker thread; returns once durable.

        Raises:
            StoreError: If the backend fails (the batch stays queued for a retry).
        """
        if self._enqueue():
            await trio.to_thread.run_sync(self._drain, limiter=self._limiter)
        waiters, self._flush_waiters = self._flush_waiters, []
        for ev in waiters:
            ev.set()

    async def wait_flushed(self) -> None:
        """Wait until nothing is pending, i.e. everything written so far is committed.

        Relies on :meth:`run` (or another task calling :meth:`flush`); bound the
        wait with ``trio.fail_after``.
        """
        while self.pending_rows:
            ev = trio.Event()
            self._flush_waiters.append(ev)
            await ev.wait()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Group-commit service: flush every ``flush_interval`` (sooner when many rows wait).

        Start it with ``await nursery.start(store.run)``. Cancelling it does not
        flush; call :meth:`aclose` (or :meth:`flush`) on shutdown.
        """
        task_status.started()
        while True:
            self._wakeup = trio.Event()
            with trio.move_on_after(self.config.flush_interval):
                await self._wakeup.wait()
            try:
                await self.flush()
            except StoreError:
                logger.exception("store: group commit failed; will retry")

    # ------------------------------------------------------------------ stats & lifecycle

    def stats(self) -> StoreStats:
        """Return sizes and counters (O(entries); not for hot paths)."""
        owned = tombs = vol = vbytes = 0
        for st in self.om.owners.values():
            for e in st.entries.values():
                if e.raw is None:
                    tombs += 1
                else:
                    owned += 1
                    vbytes += len(e.raw)
                    if e.volatile:
                        vol += 1
        shared = stombs = 0
        for le in self.lww.entries.values():
            if le.raw is None:
                stombs += 1
            else:
                shared += 1
                vbytes += len(le.raw)
        return StoreStats(
            owner=self.owner,
            generation=self.generation,
            owners=len(self.om.owners),
            owned_entries=owned,
            owned_tombstones=tombs,
            volatile_entries=vol,
            shared_entries=shared,
            shared_tombstones=stombs,
            markers=len(self.om.markers),
            value_bytes=vbytes,
            merges=self._merges,
            merged_entries=self._merged_entries,
            refused_chunks=self._refused,
            own_conflicts=self._own_conflicts,
            counters=attrs.evolve(self.om.counters),
            late_writes_dropped=self.lww.counters.late_dropped,
            subscriber_drops=self._subscriber_drops,
            pending_rows=self.pending_rows,
            batches=self._batches,
            delta_bytes_sent=self._delta_bytes,
            clock=self._clock.stats(),
            backend=self.backend.stats(),
        )

    def close(self) -> None:
        """Flush (blocking) and close the backend and subscriptions; idempotent."""
        if self._closed:
            return
        try:
            if self.durable:
                self.flush_sync()
        finally:
            self._closed = True
            for sub in list(self._subs):
                sub.close()
            self.backend.close()

    async def aclose(self) -> None:
        """Flush in a worker thread, then close."""
        if not self._closed and self.durable:
            await self.flush()
        self.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


_EMPTY_DELTA = Delta(codec.encode_delta(DeltaParts()), DeltaParts())
