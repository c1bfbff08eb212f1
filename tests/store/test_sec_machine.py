"""Strong eventual consistency under a nemesis, as a hypothesis state machine.

Three stores (two in memory, one on SQLite) write their own keyspace (durable and
volatile) and the LWW map; deltas travel through a network bag that drops,
duplicates, reorders and partitions; anti-entropy rounds run the real
``reconcile`` protocol with random byte budgets; clocks step back and forth; GC
runs; the SQLite store crashes (with or without a final flush) and restarts.
After every step the structural invariants hold; at the end, after healing and a
few anti-entropy rounds, all replicas are equal *and* equal to a model.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from beethoven_store import Store, StoreConfig, open_store
from beethoven_store.crdt import Key
from beethoven_store.hlc import hlc_wall

H_MS = 8_000
KEYS: tuple[Key, ...] = (("k", 0), ("k", 1), ("k", 2))
CFG = StoreConfig(horizon_ms=H_MS, volatile_horizon_ms=H_MS // 2, flush_interval=0.05)
N = 3
SQL = 2  # replica 2 is SQLite-backed


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def run_sync(a: Store, b: Store, budget: int | None) -> None:
    """Reconcile rounds opened by ``a`` until nothing was cut or nothing progresses.

    A round makes no progress when the receiver refuses chunks from a clock that
    is too far ahead; a real node simply retries at its next anti-entropy tick.
    """
    before = None
    for _ in range(200):
        reply = b.reconcile(a.digest(), budget)
        to, other = a, b
        more = False
        for _ in range(10):
            more = more or reply.more
            if reply.delta:
                to.merge(reply.delta)
            if not reply.digest:
                break
            reply = to.reconcile(reply.digest, budget)
            to, other = other, to
        if not more:
            return
        now = (a.full_digest(), b.full_digest())
        if now == before:
            return
        before = now
    raise AssertionError("anti-entropy did not terminate")


class StoreNemesis(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="bstore-sm-")
        self.url = f"sqlite://{self.dir}/r2.db"
        self.clocks = [Clock(1000.0 + i * 0.1) for i in range(N)]
        self.stores: list[Store] = [
            open_store("memory://", owner="r0", clock=self.clocks[0], config=CFG),
            open_store("memory://", owner="r1", clock=self.clocks[1], config=CFG),
            open_store(self.url, owner="r2", clock=self.clocks[2], config=CFG),
        ]
        self.bag: list[tuple[int, bytes]] = []
        self.cut: set[int] = set()
        self.model: dict[str, dict[Key, tuple[Any, bool]]] = {f"r{i}": {} for i in range(N)}
        self.durable_model: dict[Key, tuple[Any, bool]] = {}
        self.lww_model: dict[Key, tuple[int, str, Any]] = {}
        self.last_hlc = [s.clock.last for s in self.stores]
        self.reloaded = False
        self.headers: list[dict[str, tuple[int, int, int]]] = [{} for _ in range(N)]

    # ------------------------------------------------------------ helpers

    def _gossip(self, src: int, payload: bytes) -> None:
        for dst in range(N):
            if dst != src:
                self.bag.append((dst, payload))

    def _after_write(self, i: int) -> None:
        if self.stores[SQL].pending_rows == 0:
            self.durable_model = {k: v for k, v in self.model["r2"].items() if not v[1]}

    # ------------------------------------------------------------ rules

    @rule(i=st.integers(0, N - 1), k=st.integers(0, 2), v=st.integers(0, 3), vol=st.booleans())
    def write(self, i: int, k: int, v: int, vol: bool) -> None:
        s = self.stores[i]
        cur = self.model[s.owner].get(KEYS[k])
        if cur is not None and cur[1] != vol:
            vol = cur[1]  # a key keeps its class
        self._gossip(i, s.put_own(KEYS[k], v, volatile=vol).payload)
        self.model[s.owner][KEYS[k]] = (v, vol)
        self._after_write(i)

    @rule(i=st.integers(0, N - 1), k=st.integers(0, 2))
    def delete(self, i: int, k: int) -> None:
        s = self.stores[i]
        d = s.delete_own(KEYS[k])
        if d:
            self._gossip(i, d.payload)
        self.model[s.owner].pop(KEYS[k], None)
        self._after_write(i)

    @rule(i=st.integers(0, N - 1), k=st.integers(0, 2), v=st.none() | st.integers(0, 3))
    def lww_write(self, i: int, k: int, v: int | None) -> None:
        s = self.stores[i]
        d = s.put(KEYS[k], v) if v is not None else s.delete(KEYS[k])
        e = d.parts.writers[0].entries[0]
        cur = self.lww_model.get(KEYS[k])
        if cur is None or (e.hlc, e.writer) > (cur[0], cur[1]):
            self.lww_model[KEYS[k]] = (e.hlc, e.writer, v)
        self._gossip(i, d.payload)
        self._after_write(i)

    @rule(i=st.integers(0, N - 1), dt=st.integers(-2000, 5000))
    def tick(self, i: int, dt: int) -> None:
        self.clocks[i].t = max(1.0, self.clocks[i].t + dt / 1000)

    @precondition(lambda self: self.bag)
    @rule(idx=st.integers(0, 10**6))
    def deliver(self, idx: int) -> None:
        dst, payload = self.bag.pop(idx % len(self.bag))
        if dst not in self.cut:
            self.stores[dst].merge(payload)
            self._after_write(dst)

    @precondition(lambda self: self.bag)
    @rule(idx=st.integers(0, 10**6))
    def drop(self, idx: int) -> None:
        self.bag.pop(idx % len(self.bag))

    @precondition(lambda self: self.bag)
    @rule(idx=st.integers(0, 10**6))
    def duplicate(self, idx: int) -> None:
        self.bag.append(self.bag[idx % len(self.bag)])

    @rule(i=st.integers(0, N - 1))
    def partition(self, i: int) -> None:
        self.cut.add(i)

    @rule()
    def heal(self) -> None:
        self.cut.clear()

    @rule(
        a=st.integers(0, N - 1),
        b=st.integers(0, N - 1),
        budget=st.none() | st.integers(60, 400),
    )
    def anti_entropy(self, a: int, b: int, budget: int | None) -> None:
        if a == b or a in self.cut or b in self.cut:
            return
        run_sync(self.stores[a], self.stores[b], budget)
        self._after_write(a)

    @rule(i=st.integers(0, N - 1))
    def gc(self, i: int) -> None:
        self.stores[i].gc()
        self._after_write(i)

    @rule(clean=st.booleans())
    def crash_restart(self, clean: bool) -> None:
        s = self.stores[SQL]
        if clean:
            s.close()
            self.model["r2"] = {k: v for k, v in self.model["r2"].items() if not v[1]}
        else:
            s.backend.close()  # SIGKILL-like: the write-behind tail is lost
            self.model["r2"] = dict(self.durable_model)
        self.stores[SQL] = open_store(self.url, owner="r2", clock=self.clocks[SQL], config=CFG)
        self.durable_model = dict(self.model["r2"])
        self.last_hlc[SQL] = 0
        self.headers[SQL] = {}
        self.reloaded = True

    # ------------------------------------------------------------ invariants

    @invariant()
    def structural(self) -> None:
        for i, s in enumerate(self.stores):
            for o, st_ in s.om.owners.items():
                if not (i == SQL and self.reloaded):
                    st_.check()
                # (generation, gc, m) never goes backwards within one life.
                key = (st_.generation, st_.gc, st_.m)
                prev = self.headers[i].get(o)
                if prev is not None and prev[0] == key[0]:
                    assert key >= prev, (o, prev, key)
                if prev is None or key >= prev:
                    self.headers[i][o] = key
            s.lww.check()
            assert s.clock.last >= self.last_hlc[i]
            self.last_hlc[i] = s.clock.last
            for o, mk in s.om.markers.items():
                assert o not in s.om.owners or s.om.owners[o].generation > mk.generation

    def teardown(self) -> None:
        try:
            self.cut.clear()
            self.bag.clear()
            # Physical clocks catch up with every timestamp issued (else peers
            # would still refuse the ones more than max_offset ahead).
            issued = max(hlc_wall(s.clock.last) for s in self.stores) / 1000
            t = max(issued, *(c.t for c in self.clocks)) + 0.001
            for c in self.clocks:
                c.t = t
            for _ in range(3):
                for a in range(N):
                    for b in range(N):
                        if a != b:
                            run_sync(self.stores[a], self.stores[b], None)
            first = self.stores[0].full_state()
            for s in self.stores[1:]:
                assert s.full_state() == first
            expect_lww = {k: v[2] for k, v in self.lww_model.items() if v[2] is not None}
            for s in self.stores:
                for owner, model in self.model.items():
                    want = {k: v[0] for k, v in model.items()}
                    assert s.owned_items(owner) == want, (s.owner, owner)
                assert dict(s.shared_items()) == expect_lww
        finally:
            for s in self.stores:
                s.close()
            shutil.rmtree(self.dir, ignore_errors=True)


_default = settings.default
assert _default is not None
StoreNemesis.TestCase.settings = settings(
    _default,
    max_examples=max(10, _default.max_examples // 4),
    stateful_step_count=50,
)
TestStoreNemesis = pytest.mark.timeout(300)(StoreNemesis.TestCase)
