"""Lattice laws and delta properties of the pure core, over reachable states.

States come from replaying random histories (the ``World`` below): owner writes and
deletes (durable and volatile), LWW writes, deliveries of any recorded delta
(duplicated, reordered), budgeted syncs (truncated deltas), GC and new
generations. See ``specs/store.md`` §3–§5 for the rules under test.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from beethoven_store import codec, sync
from beethoven_store.crdt import DeltaParts, Key, LWWMap, Marker, OwnerChunk, OwnerMap

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


def apply_parts(om: OwnerMap, lww: LWWMap, parts: DeltaParts, own: str | None = None) -> int:
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
        else:
            om.adopt_gc(oc)
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


# ---------------------------------------------------------------- properties

pytestmark = pytest.mark.timeout(120)

replica = st.integers(0, 2)


def _world(program: list[Any]) -> World:
    w = World()
    w.run(program)
    for r in w.replicas:
        r.om.check()
        r.lww.check()
    return w


def _delta_state(parts: DeltaParts) -> OwnerMap:
    om = OwnerMap()
    for c in parts.owners:
        om.apply_chunk(as_state_chunk(c))
    return om


def _check_laws(a: Any, b: Any, c: Any, join: Any) -> None:
    ab = join(a, b)
    assert ab == join(b, a), "commutative"
    assert join(ab, c) == join(a, join(b, c)), "associative"
    assert join(a, a) == a, "idempotent"
    assert join(ab, a) == ab, "a ⊑ a ⊔ b"
    assert join(ab, b) == ab, "b ⊑ a ⊔ b"


@given(programs())
def test_owner_map_join_laws(program: list[Any]) -> None:
    w = _world(program)
    a, b, c = (r.om for r in w.replicas)
    _check_laws(a, b, c, joined)
    joined(joined(a, b), c).check()


@given(programs(gc=False))
def test_lww_map_join_laws(program: list[Any]) -> None:
    w = _world(program)
    a, b, c = (r.lww for r in w.replicas)
    _check_laws(a, b, c, ljoined)


@given(programs(), st.data())
def test_deltas_are_states_join_laws(program: list[Any], data: st.DataObject) -> None:
    w = _world(program)
    if not w.deltas:
        return
    idx = st.integers(0, len(w.deltas) - 1)
    d1 = _delta_state(w.deltas[data.draw(idx)])
    d2 = _delta_state(w.deltas[data.draw(idx)])
    s = w.replicas[data.draw(replica)].om
    _check_laws(d1, d2, s, joined)


@given(
    programs(),
    replica,
    st.integers(0, 2),
    st.integers(0, 3),
    st.sampled_from(["put", "vput", "delete", "lput", "ldel"]),
)
def test_delta_mutators(program: list[Any], i: int, k: int, v: int, kind: str) -> None:
    """X ⊔ mδ(X) == m(X), X ⊑ m(X), and mδ(X) ⊑ m(X), for every mutator."""
    w = _world(program)
    r = w.replicas[i]
    x_om, x_lww = r.copy_state()
    before = len(w.deltas)
    if kind == "put":
        w.put(i, k, v)
    elif kind == "vput":
        w.put(i, k, v, True)
    elif kind == "delete":
        w.delete(i, k)
    elif kind == "lput":
        w.lput(i, k, v)
    else:
        w.lput(i, k, None)
    if len(w.deltas) == before:
        return  # a no-op delete
    delta = w.deltas[-1]
    if delta.owners:
        m_x = r.om
        dstate = _delta_state(delta)
        assert joined(x_om, dstate) == m_x
        assert joined(m_x, x_om) == m_x
        assert joined(m_x, dstate) == m_x
        # Delta application (not only the full join) gives the same result.
        y = x_om.copy()
        apply_parts(y, LWWMap(), delta)
        assert y == m_x
    else:
        m_l = r.lww
        dl = LWWMap()
        for wc in delta.writers:
            dl.apply_chunk(wc)
        assert ljoined(x_lww, dl) == m_l
        assert ljoined(m_l, x_lww) == m_l
        assert ljoined(m_l, dl) == m_l


pairs = st.permutations(range(3)).map(lambda p: (p[0], p[1]))


def _gc_all(om: OwnerMap) -> None:
    for o in list(om.owners):
        om.purge(o, lambda e: True)


@given(programs(), pairs, st.booleans())
def test_delta_completeness(program: list[Any], ij: tuple[int, int], gc_x: bool) -> None:
    """Y ⊔ delta_since(X, digest(Y)) == X ⊔ Y, including the reset path."""
    w = _world(program)
    x, y = w.replicas[ij[0]], w.replicas[ij[1]]
    if gc_x:
        _gc_all(x.om)
    parts = delta_between(x.om, x.lww, y.om, y.lww, None)
    if any(c.reset for c in parts.owners):
        event("reset chunk")
    if any(len(c.cover) > 1 for c in parts.owners):
        event("gapped claim")
    got_om, got_lww = y.copy_state()
    apply_parts(got_om, got_lww, parts)
    assert got_om == joined(y.om, x.om)
    assert got_lww == ljoined(y.lww, x.lww)
    got_om.check()


@given(programs(), pairs, st.integers(40, 160), st.booleans())
def test_truncation_safety(
    program: list[Any], ij: tuple[int, int], budget: int, gc_x: bool
) -> None:
    """Budgeted rounds reach X ⊔ Y in bounded rounds, never exceed it, never delete."""
    w = _world(program)
    x, y = w.replicas[ij[0]], w.replicas[ij[1]]
    if gc_x:
        _gc_all(x.om)
    target_om, target_lww = joined(y.om, x.om), ljoined(y.lww, x.lww)
    cur_om, cur_lww = y.copy_state()
    n_entries = sum(len(s.entries) for s in x.om.owners.values()) + len(x.lww.entries)
    # One entry is at most ~40 bytes here; a reset may take a whole round.
    max_rounds = n_entries + len(x.om.owners) + len(x.lww.covers) + 2
    for _ in range(max_rounds):
        parts = delta_between(x.om, x.lww, cur_om, cur_lww, budget)
        if parts.empty():
            break
        if parts.truncated:
            event("truncated delta")
        if any(c.reset for c in parts.owners):
            event("reset chunk")
        reset_owners = {c.owner for c in parts.owners if c.reset}
        before = {
            (o, k)
            for o, s in cur_om.owners.items()
            for k, e in s.entries.items()
            if o not in reset_owners and e.raw is not None
        }
        before_gen = {o: s.generation for o, s in cur_om.owners.items()}
        apply_parts(cur_om, cur_lww, parts)
        cur_om.check()
        for o, k in before:
            if cur_om.owners.get(o) is not None and cur_om.owners[o].generation == before_gen[o]:
                assert k in cur_om.owners[o].entries, f"truncated delta deleted {o}/{k}"
        assert joined(cur_om, target_om) == target_om, "intermediate ⊑ X ⊔ Y"
        assert ljoined(cur_lww, target_lww) == target_lww
    else:
        raise AssertionError("did not converge within the round bound")
    assert cur_om == target_om
    assert cur_lww == target_lww


@given(programs())
def test_reads_after_full_sync_equal_model(program: list[Any]) -> None:
    w = _world(program)
    w.full_sync()
    expect_lww = {k: v[2] for k, v in w.model_lww.items() if v[2] is not None}
    for r in w.replicas:
        reads = owner_reads(r.om)
        for owner, model in w.model_owned.items():
            assert reads.get(owner, {}) == model, (r.name, owner)
        assert lww_reads(r.lww) == expect_lww
    first = w.replicas[0]
    for r in w.replicas[1:]:
        assert r.om == first.om
        assert r.lww == first.lww


@given(programs(), st.randoms(use_true_random=False))
def test_no_resurrection_after_gc(program: list[Any], rnd: Any) -> None:
    """After GC, replaying every recorded delta in any order, twice, changes no read."""
    w = _world(program)
    w.full_sync()
    for r in w.replicas:
        for o in list(r.om.owners):
            r.om.purge(o, lambda e: True)
    reads = [(owner_reads(r.om), lww_reads(r.lww)) for r in w.replicas]
    replay = list(w.deltas) * 2
    rnd.shuffle(replay)
    for parts in replay:
        for r in w.replicas:
            apply_parts(r.om, r.lww, parts, own=r.name)
    assert [(owner_reads(r.om), lww_reads(r.lww)) for r in w.replicas] == reads


@given(programs(gc=False, reboot=False), st.randoms(use_true_random=False))
def test_removed_owner_stays_removed(program: list[Any], rnd: Any) -> None:
    """Late deltas of a removed owner generation never recreate it; a newer one is accepted."""
    w = _world(program)
    w.full_sync()
    r0 = w.replicas[0]
    gen1 = w.replicas[1].om.owners["r1"].generation
    r0.om.remove_owner("r1", removed_hlc=r0.now())
    assert "r1" not in r0.om.owners
    replay = list(w.deltas)
    rnd.shuffle(replay)
    for parts in replay:
        apply_parts(r0.om, r0.lww, parts, own="r0")
    assert "r1" not in r0.om.owners
    assert r0.om.markers["r1"] == Marker(gen1, r0.om.markers["r1"].removed_hlc)
    # The marker spreads through anti-entropy like any state.
    w.sync(0, 2, None)
    assert "r1" not in w.replicas[2].om.owners
    # A new life of r1 (higher generation) is accepted.
    w.reboot(1)
    w.put(1, 0, 7)
    w.deliver(0, len(w.deltas) - 1)
    assert r0.om.owners["r1"].entries[KEYS[0]].value == 7


def test_stale_entry_below_watermark_is_dropped() -> None:
    """An incoming entry absent locally with version ≤ m was superseded or purged."""
    w = World()
    w.put(0, 0, 1)
    old = w.deltas[-1]
    w.delete(0, 0)
    w.sync(0, 1, None)
    r1 = w.replicas[1]
    r1.om.purge("r0", lambda e: True)
    assert ("k", 0) not in r1.om.owners["r0"].entries
    apply_parts(r1.om, r1.lww, old, own="r1")
    assert ("k", 0) not in r1.om.owners["r0"].entries
    assert r1.om.counters.stale_dropped == 1


def test_behind_gc_point_gets_reset_and_drops_stale_entry() -> None:
    """A peer that missed a purged tombstone receives a reset that removes the stale value."""
    w = World()
    w.put(0, 0, 1)
    w.sync(0, 1, None)  # r1 holds k0 = 1
    w.delete(0, 0)
    w.put(0, 1, 5)
    w.gc(0, 0)  # r0 purges the tombstone of k0
    r1 = w.replicas[1]
    # An ordinary gossip delta of the later write is accepted (it claims only its version)...
    w.deliver(1, len(w.deltas) - 1)
    assert r1.om.get("r0", ("k", 1)) is not None
    # ...but the stale k0 remains until anti-entropy sends a reset.
    assert r1.om.get("r0", ("k", 0)) is not None
    parts = delta_between(w.replicas[0].om, w.replicas[0].lww, r1.om, r1.lww, None)
    assert [c.reset for c in parts.owners if c.owner == "r0"] == [True]
    apply_parts(r1.om, r1.lww, parts, own="r1")
    assert r1.om.get("r0", ("k", 0)) is None
    assert owner_reads(r1.om)["r0"] == {("k", 1): 5}


def test_ordinary_chunk_past_gc_point_is_rejected() -> None:
    w = World()
    w.put(0, 0, 1)
    w.sync(0, 1, None)
    w.delete(0, 0)
    w.put(0, 1, 2)
    w.gc(0, 0)
    r0 = w.replicas[0]
    st0 = r0.om.owners["r0"]
    from beethoven_store.crdt import OwnerChunk

    forged = OwnerChunk("r0", st0.generation, st0.gc, False, st0.cover, tuple(st0.entries.values()))
    r1 = w.replicas[1]
    assert not r1.om.apply_chunk(forged)
    assert r1.om.counters.gc_rejected == 1


def test_codec_round_trip_of_world_deltas() -> None:
    w = World()
    w.run(
        [("put", 0, 0, 1, False), ("lput", 1, 1, 2), ("put", 2, 2, 3, True), ("sync", 0, 1, None)]
    )
    for parts in w.deltas:
        raw = codec.encode_delta(parts)
        assert codec.encode_delta(codec.decode_delta(raw)) == raw


@given(programs(), pairs, st.integers(0, 2), st.none() | st.integers(40, 160))
def test_delta_completeness_reset_path(
    program: list[Any], ij: tuple[int, int], k: int, budget: int | None
) -> None:
    """X purged a tombstone Y has not seen: the reset still gives Y ⊔ X (also budgeted)."""
    w = _world(program)
    i, j = ij
    x, y = w.replicas[i], w.replicas[j]
    w.put(i, k, 9)
    w.deliver(j, len(w.deltas) - 1)
    w.delete(i, k)
    w.put(i, (k + 1) % 3, 8)
    _gc_all(x.om)
    target_om, target_lww = joined(y.om, x.om), ljoined(y.lww, x.lww)
    got_om, got_lww = y.copy_state()
    for _ in range(50):
        parts = delta_between(x.om, x.lww, got_om, got_lww, budget)
        if parts.empty():
            break
        apply_parts(got_om, got_lww, parts)
        got_om.check()
    assert got_om == target_om
    assert got_lww == target_lww
    assert got_om.get(x.name, KEYS[k]) is None
