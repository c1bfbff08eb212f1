"""A small deterministic world of pure-core replicas, driven by hypothesis-drawn programs.

Replica ``i`` is node ``r{i}``: it owns its keyspace in the owner map and writes the
LWW map under its own name. Every delta ever emitted is recorded so tests can
deliver, duplicate, reorder and replay them. States are therefore always
*reachable* (the result of writes, deletes, GC, resets, budgeted syncs and
deliveries), never arbitrary dicts. ``model_*`` track the expected reads.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from beethoven_store import codec, sync
from beethoven_store.crdt import DeltaParts, Key, LWWMap, OwnerChunk, OwnerMap

KEYS: tuple[Key, ...] = (("k", 0), ("k", 1), ("k", 2))
N_REPLICAS = 3

Op = tuple[Any, ...]


class Replica:
    """One pure-core replica."""

    def __init__(self, name: str, gen: int) -> None:
        self.name = name
        self.om = OwnerMap(max_cloud=8)
        self.lww = LWWMap()
        self.hlc = gen
        self.om.init_owner(name, gen)
        self.seq_base = gen + 1

    def now(self) -> int:
        self.hlc += 1
        return self.hlc

    def copy_state(self) -> tuple[OwnerMap, LWWMap]:
        return self.om.copy(), self.lww.copy()


def apply_parts(
    om: OwnerMap, lww: LWWMap, parts: DeltaParts, own: str | None = None
) -> int:
    """Merge ``parts`` like ``Store.merge`` does (skipping chunks about ``own``).

    Returns:
        The highest HLC seen (for the receiver's clock).
    """
    for name, mk in parts.markers:
        if name != own:
            om.apply_marker(name, mk)
    for oc in parts.owners:
        if oc.owner != own:
            om.apply_chunk(oc)
    for wc in parts.writers:
        lww.apply_chunk(wc)
    return parts.max_hlc()


def detail(om: OwnerMap, lww: LWWMap) -> sync.Detail:
    d = sync.decode_digest(sync.detail_digest(om, lww))
    assert isinstance(d, sync.Detail)
    return d


def delta_between(
    src_om: OwnerMap, src_lww: LWWMap, dst_om: OwnerMap, dst_lww: LWWMap, budget: int | None
) -> DeltaParts:
    raw, truncated = sync.delta_since(src_om, src_lww, detail(dst_om, dst_lww), budget)
    if not raw:
        return DeltaParts()
    parts = codec.decode_delta(raw)
    assert parts.truncated == truncated
    return parts


def joined(a: OwnerMap, b: OwnerMap) -> OwnerMap:
    c = a.copy()
    c.join(b)
    return c


def ljoined(a: LWWMap, b: LWWMap) -> LWWMap:
    c = a.copy()
    c.join(b)
    return c


class World:
    """Replicas plus the record of every delta and the read model."""

    def __init__(self, n: int = N_REPLICAS) -> None:
        self.replicas = [Replica(f"r{i}", 1000 * (i + 1)) for i in range(n)]
        self.deltas: list[DeltaParts] = []
        self.model_owned: dict[str, dict[Key, Any]] = {r.name: {} for r in self.replicas}
        self.model_lww: dict[Key, tuple[int, str, Any]] = {}

    # ---- operations

    def put(self, i: int, k: int, v: int, volatile: bool = False) -> None:
        r = self.replicas[i]
        raw = codec.encode_value(v)
        chunk = r.om.write(r.name, KEYS[k], raw, v, r.now(), volatile=volatile)
        self.deltas.append(DeltaParts(owners=(chunk,)))
        self.model_owned[r.name][KEYS[k]] = v

    def delete(self, i: int, k: int) -> None:
        r = self.replicas[i]
        cur = r.om.get(r.name, KEYS[k])
        if cur is None or cur.raw is None:
            return
        chunk = r.om.write(r.name, KEYS[k], None, None, r.now(), volatile=cur.volatile)
        self.deltas.append(DeltaParts(owners=(chunk,)))
        self.model_owned[r.name].pop(KEYS[k], None)

    def lput(self, i: int, k: int, v: int | None) -> None:
        r = self.replicas[i]
        raw = None if v is None else codec.encode_value(v)
        hlc = r.now()
        chunk = r.lww.write(r.name, KEYS[k], raw, v, hlc, min_seq=r.seq_base)
        self.deltas.append(DeltaParts(writers=(chunk,)))
        cur = self.model_lww.get(KEYS[k])
        if cur is None or (hlc, r.name) > (cur[0], cur[1]):
            self.model_lww[KEYS[k]] = (hlc, r.name, v)

    def deliver(self, j: int, idx: int) -> None:
        if not self.deltas:
            return
        r = self.replicas[j]
        mx = apply_parts(r.om, r.lww, self.deltas[idx % len(self.deltas)], own=r.name)
        r.hlc = max(r.hlc, mx)

    def sync(self, i: int, j: int, budget: int | None) -> None:
        if i == j:
            return
        a, b = self.replicas[i], self.replicas[j]
        parts = delta_between(a.om, a.lww, b.om, b.lww, budget)
        if not parts.empty():
            self.deltas.append(parts)
        b.hlc = max(b.hlc, apply_parts(b.om, b.lww, parts, own=b.name))

    def gc(self, i: int, owner: int) -> None:
        r = self.replicas[i]
        r.om.purge(f"r{owner}", lambda e: True)

    def reboot(self, i: int) -> None:
        """Owner ``i`` starts a new generation with an empty keyspace (memory restart)."""
        r = self.replicas[i]
        gen = r.now() + 1000
        r.hlc = gen
        r.om.init_owner(r.name, gen)
        self.model_owned[r.name] = {}

    def run(self, program: list[Op]) -> None:
        for op in program:
            getattr(self, op[0])(*op[1:])

    def full_sync(self, rounds: int = 2) -> None:
        n = len(self.replicas)
        for _ in range(rounds):
            for i in range(n):
                for j in range(n):
                    self.sync(i, j, None)


def ops(n: int = N_REPLICAS, *, gc: bool = True, reboot: bool = True) -> st.SearchStrategy[Op]:
    """Strategy for one world operation."""
    rep = st.integers(0, n - 1)
    key = st.integers(0, len(KEYS) - 1)
    val = st.integers(0, 3)
    put = st.tuples(st.just("put"), rep, key, val, st.booleans())
    delete = st.tuples(st.just("delete"), rep, key)
    sync_ = st.tuples(st.just("sync"), rep, rep, st.none() | st.integers(40, 400))
    choices: list[st.SearchStrategy[Op]] = [
        put,
        put,
        delete,
        delete,
        st.tuples(st.just("lput"), rep, key, st.none() | val),
        st.tuples(st.just("deliver"), rep, st.integers(0, 1000)),
        sync_,
        sync_,
    ]
    if gc:
        choices.append(st.tuples(st.just("gc"), rep, rep))
        choices.append(st.tuples(st.just("gc"), rep, rep))
    if reboot:
        choices.append(st.tuples(st.just("reboot"), rep))
    return st.one_of(*choices)


def programs(
    n: int = N_REPLICAS, *, gc: bool = True, reboot: bool = True, max_size: int = 60
) -> st.SearchStrategy[list[Op]]:
    """Strategy for a random history."""
    return st.lists(ops(n, gc=gc, reboot=reboot), min_size=20, max_size=max_size)


def owner_reads(om: OwnerMap) -> dict[str, dict[Key, Any]]:
    return {
        o: {k: e.value for k, e in s.entries.items() if e.raw is not None}
        for o, s in om.owners.items()
    }


def lww_reads(lww: LWWMap) -> dict[Key, Any]:
    return {k: e.value for k, e in lww.entries.items() if e.raw is not None}


def as_state_chunk(chunk: OwnerChunk) -> OwnerChunk:
    """View a delta chunk as a state (for the full-state join)."""
    return OwnerChunk(chunk.owner, chunk.generation, chunk.gc, True, chunk.cover, chunk.entries)
