"""The Store: API behaviour, restarts, GC, markers, clock refusal, subscriptions, sync."""

from __future__ import annotations

import pathlib

import pytest
import trio
import trio.testing

from beethoven.errors import CodecError, StoreError
from beethoven_store import Changes, Store, StoreConfig, open_store, sync
from beethoven_store.backends.memory import MemoryBackend

pytestmark = pytest.mark.timeout(60)

H = 10_000  # a 10 s horizon keeps the fake clock small


class Clock:
    """A settable physical clock in seconds."""

    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def cfg(**kw: int) -> StoreConfig:
    base = {"horizon_ms": H, "volatile_horizon_ms": H // 2, "lww_horizon_ms": 3 * H}
    base.update(kw)
    return StoreConfig(**base)


def mem(owner: str, clock: Clock | None = None) -> Store:
    return open_store("memory://", owner=owner, clock=clock or Clock(), config=cfg())


def sync_pair(a: Store, b: Store, budget: int | None = None) -> int:
    """Run the reconcile protocol opened by ``a`` with ``b``; return bytes exchanged."""
    total = 0
    for _ in range(100):
        msg = a.digest()
        total += len(msg)
        reply = b.reconcile(msg, budget)
        to, other = a, b
        more = False
        for _ in range(10):
            total += len(reply.delta) + len(reply.digest)
            more = more or reply.more
            if reply.delta:
                to.merge(reply.delta)
            if not reply.digest:
                break
            reply = to.reconcile(reply.digest, budget)
            to, other = other, to
        if not more:
            return total
    raise AssertionError("reconcile did not terminate")


def full_sync(stores: list[Store], budget: int | None = None) -> None:
    for _ in range(2):
        for a in stores:
            for b in stores:
                if a is not b:
                    sync_pair(a, b, budget)


def test_reads_writes_and_changes() -> None:
    a, b = mem("a"), mem("b")
    d = a.put_own(("node",), {"port": 1})
    assert d
    assert d.entries == 1
    ch = b.merge(d.payload)
    assert ch.owned == (("a", ("node",)),)
    assert b.get_owned("a", ("node",)) == {"port": 1}
    assert b.merge(d) == Changes()  # duplicate
    assert not a.delete_own(("missing",))
    d2 = a.delete_own(("node",))
    assert b.merge(d2).owned == (("a", ("node",)),)
    assert b.get_owned("a", ("node",), "gone") == "gone"
    dl = a.put(("role", "web"), {"count": 2})
    assert b.merge(dl.payload).shared == (("role", "web"),)
    assert b.get(("role", "web")) == {"count": 2}
    assert dict(b.shared_items()) == {("role", "web"): {"count": 2}}
    a.put_own(("score",), 0.5, volatile=True)
    b.put_own(("score",), 0.25, volatile=True)
    full_sync([a, b])
    assert a.values_of(("score",)) == {"a": 0.5, "b": 0.25}
    assert a.owners() == ["a", "b"]
    with pytest.raises(StoreError):
        a.put_own(("k",), object())
    with pytest.raises(StoreError):
        a.put(["not", "a", "tuple"], 1)  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        a.merge(b"\x00garbage")


def test_lww_latest_hlc_wins_and_ties_by_writer() -> None:
    clk = Clock()
    a, b = mem("a", clk), mem("b", clk)
    da = a.put(("x",), "from a")
    db = b.put(("x",), "from b")  # same ms: order by (hlc, writer)
    for s in (a, b):
        s.merge(da)
        s.merge(db)
    winner = max(
        (da.parts.writers[0].entries[0], db.parts.writers[0].entries[0]),
        key=lambda e: (e.hlc, e.writer),
    )
    assert a.get(("x",)) == b.get(("x",)) == winner.value
    # A later delete wins over both; a delete of an unknown key still writes a tombstone.
    dd = a.delete(("x",))
    b.merge(dd)
    assert b.get(("x",)) is None
    assert a.delete(("never",))


def test_clock_refuses_far_future_deltas() -> None:
    a = mem("a", Clock(1_000.0))
    future = mem("f", Clock(1_010.0))  # 10 s ahead
    d = future.put_own(("k",), 1)
    assert a.merge(d) == Changes()
    st = a.stats()
    assert st.refused_chunks == 1
    assert st.clock.refused == 1
    assert a.get_owned("f", ("k",)) is None


def test_memory_restart_is_a_new_generation() -> None:
    clk = Clock()
    a1, b = mem("a", clk), mem("b", clk)
    a1.put_own(("old",), 1)
    a1.put(("shared", 1), "one")
    full_sync([a1, b])
    clk.t += 5
    a2 = mem("a", clk)  # reboot: memory forgets everything
    assert a2.generation > a1.generation
    a2.put_own(("new",), 2)
    a2.put(("shared", 2), "two")
    full_sync([a2, b])
    assert b.owned_items("a") == {("new",): 2}
    assert a2.owned_items("a") == {("new",): 2}
    # The former life's LWW writes survive at b and come back; the new life's
    # sequence numbers do not collide with them.
    assert a2.get(("shared", 1)) == "one"
    assert b.get(("shared", 2)) == "two"
    assert a2.full_state() == b.full_state()


def test_sqlite_crash_loses_tail_and_next_write_wins_everywhere(tmp_path: pathlib.Path) -> None:
    """Item 10b: a delta emitted but never committed; after restart the next write still wins."""
    url = f"sqlite://{tmp_path}/a.db"
    clk = Clock()
    a = open_store(url, owner="a", clock=clk, config=cfg())
    b, c = mem("b", clk), mem("c", clk)
    a.put_own(("k",), "committed")
    a.flush_sync()
    lost = a.put_own(("k",), "emitted-not-committed")
    a.put_own(("other",), "also lost")
    b.merge(lost)  # b saw it, c did not
    # Crash: drop the store without flushing (the backend connection just closes).
    a.backend.close()
    clk.t += 1
    a2 = open_store(url, owner="a", clock=clk, config=cfg())
    assert a2.get_own(("k",)) == "committed"
    assert a2.get_own(("other",)) is None
    d = a2.put_own(("k",), "after restart")
    assert d.parts.owners[0].entries[0].version > lost.parts.owners[0].entries[0].version
    b.merge(d)
    c.merge(d)
    full_sync([a2, b, c])
    for s in (a2, b, c):
        assert s.owned_items("a") == {("k",): "after restart"}
    assert a2.full_state() == b.full_state() == c.full_state()
    a2.close()


def test_sqlite_reopen_preserves_state(tmp_path: pathlib.Path) -> None:
    url = f"sqlite://{tmp_path}/a.db"
    clk = Clock()
    a = open_store(url, owner="a", clock=clk, config=cfg())
    b = mem("b", clk)
    a.put_own(("node",), {"x": 1})
    a.put_own(("sig",), 3, volatile=True)
    b.put_own(("node",), {"y": 2})
    b.put_own(("vol",), 1.5, volatile=True)
    b.put(("role",), "r")
    full_sync([a, b])
    before_b = a.owned_items("b")
    a.close()
    a2 = open_store(url, owner="a", clock=clk, config=cfg())
    assert a2.get_own(("node",)) == {"x": 1}
    assert a2.get_own(("sig",)) is None  # volatile: not persisted
    assert a2.get(("role",)) == "r"
    # b's durable entry was persisted, its volatile one was not, and the missing
    # version is refetched by anti-entropy.
    assert a2.owned_items("b") == {("node",): {"y": 2}}
    full_sync([a2, b])
    assert a2.owned_items("b") == before_b
    a2.close()


def test_stale_store_discards_others_data_at_boot(tmp_path: pathlib.Path) -> None:
    url = f"sqlite://{tmp_path}/a.db"
    clk = Clock()
    a = open_store(url, owner="a", clock=clk, config=cfg())
    b = mem("b", clk)
    b.put_own(("node",), 1)
    b.put(("cfg",), 1)
    a.put_own(("mine",), 1)
    full_sync([a, b])
    a.close()
    clk.t += 2 * H / 1000
    a2 = open_store(url, owner="a", clock=clk, config=cfg())
    assert a2.owned_items("b") == {}
    assert a2.get(("cfg",)) is None
    assert a2.get_own(("mine",)) == 1
    a2.close()
    with open_store(url, owner="a", clock=clk, config=cfg()) as a3:
        assert a3.owners() == ["a"]


def test_departed_owner_removed_after_horizon_with_marker() -> None:
    clk = Clock()
    a, b, c = mem("a", clk), mem("b", clk), mem("c", clk)
    old = c.put_own(("node",), "c")
    full_sync([a, b, c])
    a.owner_departed("c")
    clk.t += H / 2000
    assert a.gc().owners_removed == ()
    clk.t += H / 1000
    rep = a.gc()
    assert rep.owners_removed == ("c",)
    assert a.owned_items("c") == {}
    a.merge(old)  # a late delta of the removed generation
    assert a.owned_items("c") == {}
    sync_pair(a, b)  # the marker spreads
    assert b.owned_items("c") == {}
    # Markers expire after 2H.
    clk.t += 3 * H / 1000
    assert a.gc().markers_expired == 1


def test_marker_about_self_starts_a_new_generation() -> None:
    """A node removed while partitioned re-publishes its keyspace under a new generation."""
    clk = Clock()
    a, b = mem("a", clk), mem("b", clk)
    a.put_own(("node",), "a-record")
    full_sync([a, b])
    b.remove_owner("a")
    gen = a.generation
    sync_pair(b, a)
    assert a.generation > gen
    assert a.stats().own_conflicts >= 1
    full_sync([a, b])
    assert b.owned_items("a") == {("node",): "a-record"}


def test_owner_tombstone_gc_and_late_replay() -> None:
    clk = Clock()
    a, b = mem("a", clk), mem("b", clk)
    d1 = a.put_own(("k",), 1)
    d2 = a.delete_own(("k",))
    full_sync([a, b])
    clk.t += 2 * H / 1000
    assert a.gc().owned_tombstones == 1
    assert b.gc().owned_tombstones == 1
    for d in (d2, d1, d1, d2):
        b.merge(d)
    assert b.get_owned("a", ("k",)) is None
    assert b.stats().owned_tombstones == 0


def test_lww_gc_floor_drops_late_writes() -> None:
    clk = Clock()
    a, b = mem("a", clk), mem("b", clk)
    old_put = a.put(("k",), "v")
    dele = a.delete(("k",))
    full_sync([a, b])
    clk.t += 4 * H / 1000
    assert b.gc().shared_tombstones == 1
    b.merge(old_put)
    b.merge(dele)
    assert b.get(("k",)) is None
    assert b.stats().late_writes_dropped >= 1


def test_reconcile_small_and_large_clusters_and_budget() -> None:
    clk = Clock()
    a, b = mem("a", clk), mem("b", clk)
    # Mirror 300 owners into both, then make 3 differ.
    others = [mem(f"n{i:03}", clk) for i in range(300)]
    for o in others:
        d = o.put_own(("node",), {"i": o.owner})
        for k in range(3):
            o.put_own(("k", k), k)
        a.merge(o.full_state())
        b.merge(o.full_state())
        del d
    full_sync([a, b])
    assert a.full_state() == b.full_state()
    # Equal replicas: a summary digest (2 KiB) settles it with one empty answer.
    req = a.digest()
    assert len(req) < 2200
    assert b.reconcile(req).digest == b""
    for o in others[:3]:
        a.merge(o.put_own(("k", 0), "changed"))
    full_bytes = len(a.full_state())
    used = sync_pair(a, b)
    assert a.full_state() == b.full_state()
    assert used < 0.1 * full_bytes  # 2 KiB summary dominates at this size; see benchmarks
    # Budgeted catch-up of a fresh replica converges through `more`.
    c = mem("c", clk)
    sync_pair(c, a, budget=2000)
    sync_pair(a, c, budget=2000)
    assert c.owned_items("n007") == a.owned_items("n007")
    assert c.full_state() == a.full_state()


def test_delta_since_with_full_digest() -> None:
    a, b = mem("a"), mem("b")
    a.put_own(("x",), 1)
    raw = a.delta_since(b.full_digest())
    b.merge(raw)
    assert b.get_owned("a", ("x",)) == 1
    assert a.delta_since(b.full_digest()) == b""
    summary = sync.summary_digest(a.om, a.lww)
    with pytest.raises(StoreError, match="detail digest"):
        a.delta_since(summary)


def test_stats_and_close() -> None:
    a = mem("a")
    a.put_own(("k",), "v")
    a.put_own(("s",), 1.0, volatile=True)
    a.put(("l",), None)
    st = a.stats()
    assert (st.owned_entries, st.volatile_entries, st.shared_entries) == (2, 1, 1)
    a.close()
    a.close()
    with pytest.raises(StoreError, match="closed"):
        a.put_own(("k",), 1)


async def test_subscription_never_blocks_and_drops_oldest() -> None:
    a, b = mem("a"), mem("b")
    with b.subscribe(max_buffer=2) as sub:
        for i in range(5):
            b.merge(a.put_own(("k", i), i))
        assert sub.dropped == 3
        got = [await sub.receive.receive(), await sub.receive.receive()]
        assert [c.owned for c in got] == [(("a", ("k", 3)),), (("a", ("k", 4)),)]
        assert got[-1].overflowed
        b.put(("x",), 1)
        nxt = await sub.__anext__()
        assert nxt.shared == (("x",),)
    assert b.stats().subscriber_drops == 3


async def test_run_group_commits(tmp_path: pathlib.Path) -> None:
    url = f"sqlite://{tmp_path}/r.db"
    s = open_store(url, owner="a", config=StoreConfig(flush_interval=0.01))
    async with trio.open_nursery() as nursery:
        await nursery.start(s.run)
        s.put_own(("k",), 1)
        assert s.pending_rows > 0
        with trio.fail_after(5):
            await s.wait_flushed()
        nursery.cancel_scope.cancel()
    s.put_own(("k",), 2)
    await s.aclose()
    with open_store(url, owner="a") as again:
        assert again.get_own(("k",)) == 2


def test_memory_backend_is_not_written() -> None:
    s = Store(MemoryBackend(), owner="a")
    s.put_own(("k",), 1)
    s.flush_sync()
    assert s.stats().backend.batches == 0
