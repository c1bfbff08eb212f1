"""The pure CRDT core: the per-owner versioned map, the LWW map and their deltas.

No I/O, no trio, no clock reads: every timestamp is passed in. All state changes
are lattice joins or delta applications that are proved (tests/store) to
converge to the join.

Two replicated types live here:

* :class:`OwnerMap` — one single-writer causal δ-CRDT per owner (node). Each
  :class:`OwnerState` has a ``generation`` (lexicographic join: a higher
  generation replaces the whole keyspace), a ``cover`` (the set of owner
  versions this replica has incorporated: a contiguous prefix ``[1, m]`` plus a
  small "cloud" of extra intervals), ``gc`` (the highest purged tombstone
  version, ``gc ≤ m``) and the entries ``key → Entry``. Departed owners are
  removed behind a :class:`Marker`.
* :class:`LWWMap` — a multi-writer map where the latest ``(hlc, writer)`` wins;
  deletes are tombstones; each write also carries the writer's sequence number so
  replicas can sync by a ``writer → cover`` digest.

Covers are tuples of inclusive ``(lo, hi)`` intervals, sorted, disjoint and
non-adjacent; versions and sequence numbers start at 1.

The normative description is ``specs/store.md``.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

__all__ = [
    "Cover",
    "DeltaParts",
    "Entry",
    "Key",
    "LWWMap",
    "LwwEntry",
    "Marker",
    "MergeCounters",
    "OwnerChunk",
    "OwnerMap",
    "OwnerState",
    "Value",
    "WriterChunk",
    "cover_add",
    "cover_clip",
    "cover_contains",
    "cover_diff",
    "cover_m",
    "cover_max",
    "cover_union",
]

logger = logging.getLogger(__name__)

#: A key: a tuple of str and int parts.
Key = tuple[str | int, ...]
#: A value: msgpack-able plain data (None, bool, int, float, str, bytes, lists, str-keyed dicts).
Value = Any
#: A set of versions: sorted, disjoint, non-adjacent inclusive intervals.
Cover = tuple[tuple[int, int], ...]

_EMPTY: Cover = ()

# --------------------------------------------------------------------------- covers


def cover_m(cover: Cover) -> int:
    """Return the contiguous watermark: the largest m with ``[1, m] ⊆ cover`` (0 if none)."""
    if cover and cover[0][0] <= 1:
        return cover[0][1]
    return 0


def cover_max(cover: Cover) -> int:
    """Return the highest version in ``cover`` (0 if empty)."""
    return cover[-1][1] if cover else 0


def cover_contains(cover: Cover, v: int) -> bool:
    """Return whether version ``v`` is in ``cover``."""
    if not cover:
        return False
    if len(cover) == 1:
        lo, hi = cover[0]
        return lo <= v <= hi
    i = bisect.bisect_right(cover, (v, 1 << 64)) - 1
    return i >= 0 and cover[i][1] >= v


def _normalise(intervals: Iterable[tuple[int, int]]) -> Cover:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(intervals):
        if lo > hi:
            continue
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


def cover_add(cover: Cover, lo: int, hi: int) -> Cover:
    """Return ``cover ∪ [lo, hi]``."""
    if lo > hi:
        return cover
    if not cover:
        return ((lo, hi),)
    last_lo, last_hi = cover[-1]
    if lo >= last_lo and lo <= last_hi + 1:  # the common case: extend the tail
        if hi <= last_hi:
            return cover
        return (*cover[:-1], (last_lo, hi))
    return _normalise((*cover, (lo, hi)))


def cover_union(a: Cover, b: Cover) -> Cover:
    """Return ``a ∪ b``."""
    if not b:
        return a
    if not a:
        return b
    if len(b) == 1:
        return cover_add(a, b[0][0], b[0][1])
    return _normalise((*a, *b))


def cover_diff(a: Cover, b: Cover) -> Cover:
    """Return ``a − b``."""
    if not b:
        return a
    out: list[tuple[int, int]] = []
    for lo, hi in a:
        cur = lo
        for blo, bhi in b:
            if bhi < cur:
                continue
            if blo > hi:
                break
            if blo > cur:
                out.append((cur, blo - 1))
            cur = max(cur, bhi + 1)
            if cur > hi:
                break
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


def cover_clip(cover: Cover, upto: int) -> Cover:
    """Return ``cover ∩ [1, upto]``."""
    out: list[tuple[int, int]] = []
    for lo, hi in cover:
        if lo > upto:
            break
        out.append((lo, min(hi, upto)))
    return tuple(out)


# --------------------------------------------------------------------------- entries


class Entry:
    """One write of an owner: ``key`` at ``version``, a value or a tombstone.

    Immutable by convention. ``raw`` is the canonical msgpack encoding of the
    value, ``None`` for a tombstone; ``value`` is the decoded value (``None`` for a
    tombstone). ``hlc`` is the HLC of the write (for a tombstone: the deletion
    time the GC horizon is measured from). ``volatile`` entries are never
    persisted.
    """

    __slots__ = ("hlc", "key", "packed", "raw", "value", "version", "volatile")

    def __init__(
        self, key: Key, version: int, hlc: int, raw: bytes | None, value: Value, volatile: bool
    ) -> None:
        self.key = key
        self.version = version
        self.hlc = hlc
        self.raw = raw
        self.value = value
        self.volatile = volatile
        self.packed: bytes | None = None

    @property
    def tombstone(self) -> bool:
        """Whether this entry records a delete."""
        return self.raw is None

    def ident(self) -> tuple[Key, int, int, bytes | None, bool]:
        """Return the identity tuple used for equality."""
        return (self.key, self.version, self.hlc, self.raw, self.volatile)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return self.ident() == other.ident()

    def __hash__(self) -> int:
        return hash(self.ident())

    def __repr__(self) -> str:
        kind = "del" if self.raw is None else repr(self.value)
        vol = " volatile" if self.volatile else ""
        return f"Entry({self.key!r}@{self.version} {kind} hlc={self.hlc}{vol})"


class LwwEntry:
    """One write to the LWW map: ``key`` by ``writer`` at ``hlc``, ``seq``-th write of that writer.

    ``raw`` is ``None`` for a tombstone. Ordered by ``(hlc, writer)``.
    """

    __slots__ = ("hlc", "key", "packed", "raw", "seq", "value", "writer")

    def __init__(
        self, key: Key, hlc: int, writer: str, seq: int, raw: bytes | None, value: Value
    ) -> None:
        self.key = key
        self.hlc = hlc
        self.writer = writer
        self.seq = seq
        self.raw = raw
        self.value = value
        self.packed: bytes | None = None

    @property
    def tombstone(self) -> bool:
        """Whether this entry records a delete."""
        return self.raw is None

    def order(self) -> tuple[int, str]:
        """Return the total order key ``(hlc, writer)``."""
        return (self.hlc, self.writer)

    def ident(self) -> tuple[Key, int, str, int, bytes | None]:
        """Return the identity tuple used for equality."""
        return (self.key, self.hlc, self.writer, self.seq, self.raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LwwEntry):
            return NotImplemented
        return self.ident() == other.ident()

    def __hash__(self) -> int:
        return hash(self.ident())

    def __repr__(self) -> str:
        kind = "del" if self.raw is None else repr(self.value)
        return f"LwwEntry({self.key!r} {kind} hlc={self.hlc} by {self.writer}#{self.seq})"


# --------------------------------------------------------------------------- chunks


@attrs.frozen
class Marker:
    """A departed owner's removal marker: data of generations ≤ ``generation`` is ignored.

    Attributes:
        generation: The highest removed generation.
        removed_hlc: When the removal happened (the marker expires ``2H`` later).
    """

    generation: int
    removed_hlc: int

    def joined(self, other: Marker) -> Marker:
        """Return the larger marker by ``(generation, removed_hlc)``."""
        return (
            self
            if (self.generation, self.removed_hlc)
            >= (
                other.generation,
                other.removed_hlc,
            )
            else other
        )


@attrs.frozen
class OwnerChunk:
    """The part of a delta about one owner.

    A chunk claims ``cover``: for every version in it, the sender includes its
    current entry of that version if it has one (tombstones included), so a version
    in ``cover`` without an entry was superseded or deleted. ``reset`` chunks carry
    the sender's whole state for the owner and are applied with the full-state
    join (they may delete stale entries); ordinary chunks never delete.

    Attributes:
        owner: The owner's name.
        generation: The owner's generation.
        gc: The sender's highest purged tombstone version for this owner.
        reset: Whether this is a full state (see above).
        cover: The versions this chunk speaks for.
        entries: Entries in ascending version order.
    """

    owner: str
    generation: int
    gc: int
    reset: bool
    cover: Cover
    entries: tuple[Entry, ...]


@attrs.frozen
class WriterChunk:
    """The part of a delta about one LWW writer.

    Attributes:
        writer: The writer's name.
        cover: The sequence numbers this chunk speaks for.
        entries: The sender's *winning* entries by this writer with seq in ``cover``,
            in ascending seq order.
    """

    writer: str
    cover: Cover
    entries: tuple[LwwEntry, ...]


@attrs.frozen
class DeltaParts:
    """A decoded delta (also a state: deltas are mergeable states).

    Attributes:
        owners: Owner chunks, sorted by owner.
        markers: Removal markers ``(owner, marker)``, sorted by owner.
        writers: LWW writer chunks, sorted by writer.
        truncated: Whether the sender cut the delta at its byte budget.
    """

    owners: tuple[OwnerChunk, ...] = ()
    markers: tuple[tuple[str, Marker], ...] = ()
    writers: tuple[WriterChunk, ...] = ()
    truncated: bool = False

    def __len__(self) -> int:
        return sum(len(c.entries) for c in self.owners) + sum(len(c.entries) for c in self.writers)

    def empty(self) -> bool:
        """Whether the delta carries nothing at all."""
        return not (self.owners or self.markers or self.writers)

    def max_hlc(self) -> int:
        """Return the highest entry HLC carried (0 if none)."""
        best = 0
        for oc in self.owners:
            for e in oc.entries:
                if e.hlc > best:
                    best = e.hlc
        for wc in self.writers:
            for le in wc.entries:
                if le.hlc > best:
                    best = le.hlc
        return best


@attrs.define
class MergeCounters:
    """Counters of anomalies seen while merging (all monotone).

    Attributes:
        stale_dropped: Incoming entries absent locally and already covered (superseded or purged).
        gc_rejected: Ordinary chunks refused because the sender purged past our watermark.
        gapped_ignored: Chunks ignored because the cover cloud was full.
        marker_ignored: Chunks for a removed owner generation.
        generation_ignored: Chunks of an older generation.
        late_dropped: LWW entries at or below the GC floor that would have changed state.
    """

    stale_dropped: int = 0
    gc_rejected: int = 0
    gapped_ignored: int = 0
    marker_ignored: int = 0
    generation_ignored: int = 0
    late_dropped: int = 0


#: Receives ``(owner, key)`` of every visible owned change.
OwnedSink = Callable[[str, Key], None]


# --------------------------------------------------------------------------- OwnerState


class OwnerState:
    """One owner's replicated keyspace (see the module docstring).

    Invariants (checked by :meth:`check`): ``gc ≤ m``; every entry's version is in
    ``cover``; no tombstone has a version ≤ ``gc``; the replica is complete up to
    ``m``.
    """

    __slots__ = ("cover", "entries", "gc", "generation")

    def __init__(
        self,
        generation: int,
        cover: Cover = _EMPTY,
        gc: int = 0,
        entries: dict[Key, Entry] | None = None,
    ) -> None:
        self.generation = generation
        self.cover = cover
        self.gc = gc
        self.entries: dict[Key, Entry] = {} if entries is None else entries

    @property
    def m(self) -> int:
        """The contiguous watermark of :attr:`cover`."""
        return cover_m(self.cover)

    def copy(self) -> OwnerState:
        """Return an independent copy (entries are immutable and shared)."""
        return OwnerState(self.generation, self.cover, self.gc, dict(self.entries))

    def live(self) -> Iterator[Entry]:
        """Iterate over the non-tombstone entries."""
        return (e for e in self.entries.values() if e.raw is not None)

    def canonical(self) -> tuple[Any, ...]:
        """Return a comparable, order-independent representation."""
        return (
            self.generation,
            self.cover,
            self.gc,
            tuple(sorted((e.ident() for e in self.entries.values()), key=lambda t: t[1])),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OwnerState):
            return NotImplemented
        return self.canonical() == other.canonical()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"OwnerState(gen={self.generation}, cover={self.cover}, gc={self.gc}, "
            f"entries={sorted(self.entries.values(), key=lambda e: e.version)})"
        )

    def check(self) -> None:
        """Assert the structural invariants (for tests).

        Raises:
            AssertionError: If an invariant does not hold.
        """
        assert self.gc <= self.m, (self.gc, self.cover)
        assert self.cover == _normalise(self.cover), self.cover
        seen: set[int] = set()
        for key, e in self.entries.items():
            assert e.key == key
            assert cover_contains(self.cover, e.version), (e, self.cover)
            assert not (e.raw is None and e.version <= self.gc), (e, self.gc)
            assert e.version not in seen
            seen.add(e.version)

    def purge_through(self, gc: int) -> list[Entry]:
        """Raise ``gc`` to ``gc`` (clamped to ``m``) and drop tombstones at or below it.

        Returns:
            The purged tombstones.
        """
        gc = min(gc, self.m)
        if gc <= self.gc:
            return []
        self.gc = gc
        purged = [e for e in self.entries.values() if e.raw is None and e.version <= gc]
        for e in purged:
            del self.entries[e.key]
        return purged

    def join_state(
        self,
        cover: Cover,
        gc: int,
        entries: Iterable[Entry],
        sink: Callable[[Key], None] | None = None,
        counters: MergeCounters | None = None,
    ) -> None:
        """Full-state (causal) join with another state of the same generation, in place.

        Keeps an entry present on both sides (larger version per key), keeps a
        one-sided entry iff its version is not in the other side's cover (covered
        and absent means superseded or deleted), unites covers, takes the larger
        ``gc`` and drops tombstones at or below it.

        Args:
            cover: The other state's cover.
            gc: The other state's ``gc``.
            entries: The other state's entries.
            sink: Called with every key whose visible value changed.
            counters: Incremented for stale drops.
        """
        mine = self.entries
        my_cover = self.cover
        other_keys: set[Key] = set()
        for e in entries:
            if not cover_contains(cover, e.version):
                continue  # malformed: an entry must lie in its state's cover
            key = e.key
            other_keys.add(key)
            cur = mine.get(key)
            if cur is None:
                if cover_contains(my_cover, e.version):
                    if counters is not None:
                        counters.stale_dropped += 1
                    continue
                mine[key] = e
                if sink is not None and e.raw is not None:
                    sink(key)
            elif e.version > cur.version:
                mine[key] = e
                if sink is not None and not (cur.raw is None and e.raw is None):
                    sink(key)
        for key in [k for k in mine if k not in other_keys]:
            cur = mine[key]
            if cover_contains(cover, cur.version):
                del mine[key]
                if sink is not None and cur.raw is not None:
                    sink(key)
        self.cover = cover_union(my_cover, cover)
        if gc > self.gc:
            self.purge_through(gc)


# --------------------------------------------------------------------------- OwnerMap


class OwnerMap:
    """All owners' keyspaces plus removal markers (a lattice; see the module docstring).

    Args:
        max_cloud: Largest number of cover intervals kept per owner beyond the
            contiguous prefix; a chunk that would exceed it is ignored (counted),
            which is always safe — anti-entropy fills the gap.
    """

    def __init__(self, *, max_cloud: int = 64) -> None:
        self.owners: dict[str, OwnerState] = {}
        self.markers: dict[str, Marker] = {}
        self.counters = MergeCounters()
        self.max_cloud = max_cloud

    # ---- reads

    def get(self, owner: str, key: Key) -> Entry | None:
        """Return the entry (possibly a tombstone) of ``owner`` at ``key``."""
        st = self.owners.get(owner)
        if st is None:
            return None
        return st.entries.get(key)

    def copy(self) -> OwnerMap:
        """Return an independent copy."""
        out = OwnerMap(max_cloud=self.max_cloud)
        out.owners = {o: st.copy() for o, st in self.owners.items()}
        out.markers = dict(self.markers)
        return out

    def canonical(self) -> tuple[Any, ...]:
        """Return a comparable representation of the whole map."""
        return (
            tuple(sorted((o, st.canonical()) for o, st in self.owners.items())),
            tuple(sorted(self.markers.items(), key=lambda kv: kv[0])),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OwnerMap):
            return NotImplemented
        return self.canonical() == other.canonical()

    __hash__ = None  # type: ignore[assignment]

    def check(self) -> None:
        """Assert the invariants of every owner state and marker (for tests)."""
        for owner, st in self.owners.items():
            st.check()
            mk = self.markers.get(owner)
            assert mk is None or st.generation > mk.generation, (owner, mk, st.generation)

    # ---- the owner's mutators (delta mutators: each returns its delta)

    def init_owner(self, owner: str, generation: int, cover: Cover = _EMPTY, gc: int = 0) -> None:
        """Create (or replace) ``owner``'s state for a new generation or a restart.

        Args:
            owner: The owner's name.
            generation: Its generation.
            cover: The initial cover (``[1, ceiling]`` after a durable restart).
            gc: The initial ``gc`` (equal to the skipped ceiling after a durable restart).
        """
        st = self.owners.get(owner)
        if st is None or st.generation != generation:
            self.owners[owner] = OwnerState(generation, cover, gc)
            return
        st.cover = cover_union(st.cover, cover)
        st.purge_through(gc)

    def write(
        self,
        owner: str,
        key: Key,
        raw: bytes | None,
        value: Value,
        hlc: int,
        *,
        volatile: bool = False,
    ) -> OwnerChunk:
        """Write ``key`` in ``owner``'s keyspace (only the owner calls this).

        Mints version ``max(cover) + 1``; ``raw=None`` writes a tombstone.

        Returns:
            The delta: a chunk with cover ``[v, v]`` and the one entry.

        Raises:
            KeyError: If the owner was not initialised with :meth:`init_owner`.
        """
        st = self.owners[owner]
        v = cover_max(st.cover) + 1
        e = Entry(key, v, hlc, raw, value, volatile)
        st.entries[key] = e
        st.cover = cover_add(st.cover, v, v)
        return OwnerChunk(owner, st.generation, st.gc, False, ((v, v),), (e,))

    # ---- merging

    def apply_chunk(self, chunk: OwnerChunk, sink: OwnedSink | None = None) -> bool:
        """Apply one owner chunk (delta application; a reset is a full-state join).

        Returns:
            Whether the chunk was applied (``False`` if ignored or rejected).
        """
        owner = chunk.owner
        c = self.counters
        mk = self.markers.get(owner)
        if mk is not None and chunk.generation <= mk.generation:
            c.marker_ignored += 1
            return False
        st = self.owners.get(owner)
        cover = chunk.cover
        key_sink: Callable[[Key], None] | None = None
        if sink is not None:

            def key_sink(key: Key) -> None:
                sink(owner, key)

        if st is None or chunk.generation > st.generation:
            # Lexicographic join: the newer generation replaces the keyspace (even
            # while it is still empty: that is the bottom of the new generation).
            if not chunk.reset and chunk.gc and (not cover or chunk.gc >= cover[0][0]):
                c.gc_rejected += 1
                return False
            if not chunk.reset and len(cover) > self.max_cloud + 1:
                c.gapped_ignored += 1
                return False
            fresh = OwnerState(chunk.generation)
            fresh.join_state(cover, chunk.gc, chunk.entries)
            if st is not None and key_sink is not None:
                for key, e in st.entries.items():
                    if e.raw is not None:
                        key_sink(key)
            if key_sink is not None:
                for key in fresh.entries:
                    key_sink(key)
            self.owners[owner] = fresh
            return True
        if chunk.generation < st.generation:
            c.generation_ignored += 1
            return False
        if chunk.reset:
            st.join_state(cover, chunk.gc, chunk.entries, key_sink, c)
            return True
        m = st.m
        if chunk.gc > m and (not cover or chunk.gc >= cover[0][0]):
            # The sender purged tombstones we have not seen and that this chunk
            # would claim: only a reset may bring us past its GC point.
            c.gc_rejected += 1
            return False
        new_cover = cover_union(st.cover, cover)
        if len(new_cover) > self.max_cloud + 1 and len(new_cover) > len(st.cover):
            c.gapped_ignored += 1
            return False
        mine = st.entries
        old_cover = st.cover
        single = len(cover) == 1
        lo, hi = cover[0] if cover else (1, 0)
        for e in chunk.entries:
            v = e.version
            if not (lo <= v <= hi if single else cover_contains(cover, v)):
                continue  # malformed: outside its own claim
            key = e.key
            cur = mine.get(key)
            if cur is None:
                if v <= m or cover_contains(old_cover, v):
                    c.stale_dropped += 1
                    continue
                mine[key] = e
                if key_sink is not None and e.raw is not None:
                    key_sink(key)
            elif v > cur.version:
                mine[key] = e
                if key_sink is not None and not (cur.raw is None and e.raw is None):
                    key_sink(key)
        st.cover = new_cover
        if chunk.gc > st.gc:
            st.purge_through(chunk.gc)
        return True

    def adopt_gc(self, chunk: OwnerChunk) -> bool:
        """Take only the GC point from a chunk about a keyspace we own.

        The owner ignores peers' data about its own keyspace but follows their GC
        point (purging tombstones is always safe: peers behind it get a reset), so
        digests converge.

        Returns:
            Whether tombstones were purged or ``gc`` advanced.
        """
        st = self.owners.get(chunk.owner)
        if st is None or st.generation != chunk.generation or chunk.gc <= st.gc:
            return False
        before = st.gc
        st.purge_through(chunk.gc)
        return st.gc != before

    def apply_marker(self, owner: str, marker: Marker, sink: OwnedSink | None = None) -> bool:
        """Join a removal marker; drops the owner's state if it is not newer.

        Returns:
            Whether anything changed.
        """
        cur = self.markers.get(owner)
        new = marker if cur is None else cur.joined(marker)
        changed = new != cur
        self.markers[owner] = new
        st = self.owners.get(owner)
        if st is not None and st.generation <= new.generation:
            del self.owners[owner]
            if sink is not None:
                for key, e in st.entries.items():
                    if e.raw is not None:
                        sink(owner, key)
            changed = True
        return changed

    def join(self, other: OwnerMap) -> None:
        """Full-state join with another map, in place (the lattice join)."""
        for owner, mk in other.markers.items():
            self.apply_marker(owner, mk)
        for owner, st in other.owners.items():
            self.apply_chunk(
                OwnerChunk(owner, st.generation, st.gc, True, st.cover, tuple(st.entries.values()))
            )

    # ---- anti-entropy

    def chunk_for(self, owner: str, peer: tuple[int, int, Cover] | None) -> OwnerChunk | None:
        """Return what a peer with ``peer = (generation, gc, cover)`` lacks of ``owner``.

        A reset (whole state) when the peer is behind our GC point, else an
        ordinary chunk claiming ``cover − peer.cover`` with the entries in it in
        ascending version order, else ``None`` when the peer lacks nothing.
        """
        st = self.owners.get(owner)
        if st is None:
            return None
        newer = peer is None or peer[0] < st.generation
        if newer:
            p_gc, p_cover = 0, _EMPTY
        elif peer is not None and peer[0] > st.generation:
            return None
        elif peer is not None:
            p_gc, p_cover = peer[1], peer[2]
        if st.gc > cover_m(p_cover):
            ents = tuple(sorted(st.entries.values(), key=lambda e: e.version))
            return OwnerChunk(owner, st.generation, st.gc, True, st.cover, ents)
        claim = cover_diff(st.cover, p_cover)
        if not claim and st.gc <= p_gc and not newer:
            return None
        if len(claim) == 1:
            lo, hi = claim[0]
            sel = [e for e in st.entries.values() if lo <= e.version <= hi]
        else:
            sel = [e for e in st.entries.values() if cover_contains(claim, e.version)]
        sel.sort(key=lambda e: e.version)
        return OwnerChunk(owner, st.generation, st.gc, False, claim, tuple(sel))

    def full_chunks(self) -> list[OwnerChunk]:
        """Return the whole map as reset chunks, sorted by owner (the full state)."""
        return [
            OwnerChunk(
                o,
                st.generation,
                st.gc,
                True,
                st.cover,
                tuple(sorted(st.entries.values(), key=lambda e: e.version)),
            )
            for o, st in sorted(self.owners.items())
        ]

    # ---- GC

    def purge(self, owner: str, eligible: Callable[[Entry], bool]) -> list[Entry]:
        """Purge ``owner``'s tombstones up to the highest eligible one at or below ``m``.

        Args:
            owner: The owner.
            eligible: Whether a tombstone may be purged (horizon passed or stable).

        Returns:
            The purged tombstones.
        """
        st = self.owners.get(owner)
        if st is None:
            return []
        m = st.m
        best = 0
        for e in st.entries.values():
            if e.raw is None and st.gc < e.version <= m and e.version > best and eligible(e):
                best = e.version
        if best == 0:
            return []
        return st.purge_through(best)

    def remove_owner(self, owner: str, removed_hlc: int, generation: int | None = None) -> bool:
        """Remove ``owner``'s state behind a marker for its generation.

        Args:
            owner: The owner.
            removed_hlc: The removal time.
            generation: The generation to mark (default: the one held).

        Returns:
            Whether anything changed.
        """
        st = self.owners.get(owner)
        if generation is None:
            if st is None:
                return False
            generation = st.generation
        return self.apply_marker(owner, Marker(generation, removed_hlc))


# --------------------------------------------------------------------------- LWWMap


class LWWMap:
    """The cluster-wide last-writer-wins map (see the module docstring)."""

    def __init__(self) -> None:
        self.entries: dict[Key, LwwEntry] = {}
        self.covers: dict[str, Cover] = {}
        self.gc_floor = 0
        self.counters = MergeCounters()

    def get(self, key: Key) -> LwwEntry | None:
        """Return the winning entry (possibly a tombstone) at ``key``."""
        return self.entries.get(key)

    def copy(self) -> LWWMap:
        """Return an independent copy."""
        out = LWWMap()
        out.entries = dict(self.entries)
        out.covers = dict(self.covers)
        out.gc_floor = self.gc_floor
        return out

    def canonical(self) -> tuple[Any, ...]:
        """Return a comparable representation."""
        return (
            tuple(sorted((repr(k), e.ident()) for k, e in self.entries.items())),
            tuple(sorted(self.covers.items())),
            self.gc_floor,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LWWMap):
            return NotImplemented
        return self.canonical() == other.canonical()

    __hash__ = None  # type: ignore[assignment]

    def check(self) -> None:
        """Assert the invariants (for tests)."""
        for key, e in self.entries.items():
            assert e.key == key
            assert cover_contains(self.covers.get(e.writer, _EMPTY), e.seq), e
            assert not (e.raw is None and e.hlc <= self.gc_floor), e

    def write(
        self,
        writer: str,
        key: Key,
        raw: bytes | None,
        value: Value,
        hlc: int,
        *,
        min_seq: int = 1,
    ) -> WriterChunk:
        """Write ``key`` as ``writer`` at ``hlc`` (which must exceed every HLC seen).

        Args:
            writer: The writer (this node).
            key: The key.
            raw: The encoded value, ``None`` for a tombstone.
            value: The decoded value.
            hlc: The write's timestamp.
            min_seq: Lowest sequence number to use: a writer that lost its own
                cover (a new life) starts above anything a former life used.

        Returns:
            The delta: a writer chunk with cover ``[seq, seq]`` and the one entry.
        """
        cov = self.covers.get(writer, _EMPTY)
        seq = max(cover_max(cov) + 1, min_seq)
        e = LwwEntry(key, hlc, writer, seq, raw, value)
        cur = self.entries.get(key)
        if cur is None or (hlc, writer) > (cur.hlc, cur.writer):
            self.entries[key] = e
        self.covers[writer] = cover_add(cov, seq, seq)
        return WriterChunk(writer, ((seq, seq),), (e,))

    def apply_chunk(
        self, chunk: WriterChunk, sink: Callable[[Key, bool], None] | None = None
    ) -> None:
        """Apply a writer chunk: per key max by ``(hlc, writer)``, cover union.

        Entries at or below the GC floor that would change state are dropped and
        counted (the horizon contract; see ``specs/store.md``).

        Args:
            chunk: The chunk.
            sink: Called as ``sink(key, visible)`` for every replaced entry;
                ``visible`` is false when a tombstone replaced a tombstone.
        """
        w = chunk.writer
        cover = chunk.cover
        mine = self.entries
        floor = self.gc_floor
        for e in chunk.entries:
            if e.writer != w or not cover_contains(cover, e.seq):
                continue  # malformed
            cur = mine.get(e.key)
            if cur is None or (e.hlc, w) > (cur.hlc, cur.writer):
                if e.hlc <= floor:
                    self.counters.late_dropped += 1
                    continue
                mine[e.key] = e
                if sink is not None:
                    sink(e.key, not (e.raw is None and (cur is None or cur.raw is None)))
        if cover:
            self.covers[w] = cover_union(self.covers.get(w, _EMPTY), cover)

    def join(self, other: LWWMap) -> None:
        """Full-state join, in place: per key max, covers union, max floor, then purge."""
        for wc in other.writer_chunks(None):
            self.apply_chunk(wc)
        for w, cov in other.covers.items():
            self.covers[w] = cover_union(self.covers.get(w, _EMPTY), cov)
        if other.gc_floor > self.gc_floor:
            self.purge(other.gc_floor)

    def writer_chunks(self, peer: dict[str, Cover] | None) -> list[WriterChunk]:
        """Return what a peer with covers ``peer`` lacks (all if ``None``), sorted by writer."""
        by_writer: dict[str, list[LwwEntry]] = {}
        claims: dict[str, Cover] = {}
        for w, cov in self.covers.items():
            claim = cov if peer is None else cover_diff(cov, peer.get(w, _EMPTY))
            if claim:
                claims[w] = claim
                by_writer[w] = []
        if not claims:
            return []
        for e in self.entries.values():
            lst = by_writer.get(e.writer)
            if lst is not None and cover_contains(claims[e.writer], e.seq):
                lst.append(e)
        out = []
        for w in sorted(claims):
            lst = by_writer[w]
            lst.sort(key=lambda e: e.seq)
            out.append(WriterChunk(w, claims[w], tuple(lst)))
        return out

    def purge(self, floor: int) -> list[LwwEntry]:
        """Raise the GC floor to ``floor`` and drop tombstones at or below it.

        Returns:
            The purged tombstones.
        """
        if floor <= self.gc_floor:
            return []
        self.gc_floor = floor
        purged = [e for e in self.entries.values() if e.raw is None and e.hlc <= floor]
        for e in purged:
            del self.entries[e.key]
        return purged
