"""Large values in the store: the ``max_value`` limit, and chunk cutting that always progresses.

A value larger than the sync byte budget used to raise ``IndexError`` in
``sync._cut_writer_chunk`` / ``_cut_owner_chunk`` (``entries[n]`` with ``n ==
len(entries)``) and, through anti-entropy, take every node down. These tests pin
the fix in the pure core: an entry larger than the budget is sent alone (or after
what fitted before it), the cut chunk's claim skips nothing, and repeated budgeted
syncs always converge.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beethoven.errors import StoreError
from beethoven_store import Store, StoreConfig, open_store, sync
from beethoven_store.crdt import Key

pytestmark = pytest.mark.timeout(120)

LIMIT = 1_048_576


class Clock:
    """A settable physical clock in seconds."""

    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def mem(owner: str, clock: Clock | None = None, **kw: int) -> Store:
    return open_store("memory://", owner=owner, clock=clock or Clock(), config=StoreConfig(**kw))


def raw_size(value: bytes) -> int:
    """Encoded size of a bytes value (msgpack bin header + body)."""
    return len(value) + (2 if len(value) < 256 else 3 if len(value) < 65536 else 5)


def push_until_equal(src: Store, dst: Store, budget: int, *, max_rounds: int) -> int:
    """Send ``src.delta_since(dst's digest)`` until nothing is missing; return the rounds."""
    for rounds in range(max_rounds):
        delta = src.delta_since(dst.full_digest(), budget)
        if not delta:
            return rounds
        dst.merge(delta)
    raise AssertionError(f"no convergence in {max_rounds} rounds")


# --------------------------------------------------------------------------- the limit


def test_put_just_below_the_value_limit_is_accepted() -> None:
    a = mem("a")
    value = b"x" * (LIMIT - 5)  # bin32 header: 5 bytes, so exactly LIMIT encoded
    assert raw_size(value) == LIMIT
    assert a.put(("kv", "k"), value)
    assert a.put_own(("blob",), value)
    assert a.get(("kv", "k")) == value


def test_put_just_above_the_value_limit_raises_naming_limit_and_key() -> None:
    a = mem("a")
    value = b"x" * (LIMIT - 4)
    with pytest.raises(StoreError, match=r"1048576 bytes.*max_value"):
        a.put(("kv", "k"), value)
    with pytest.raises(StoreError, match=r"1048576 bytes.*max_value"):
        a.put_own(("blob",), value)
    assert a.get(("kv", "k")) is None
    assert a.get_own(("blob",)) is None


def test_value_limit_is_configurable_and_counts_encoded_bytes() -> None:
    a = mem("a", max_value=100)
    a.put(("kv", "s"), "é" * 49)  # 98 bytes of UTF-8 + 2 header bytes = 100
    with pytest.raises(StoreError, match="limit of 100 bytes"):
        a.put(("kv", "s"), "é" * 50)
    with pytest.raises(StoreError, match="limit of 100 bytes"):
        a.put(("kv", "l"), [1] * 100)  # 100 one-byte ints + a 3-byte array header


# --------------------------------------------------------------------------- chunk cutting


def test_oversized_lww_entry_alone_in_its_chunk_does_not_raise_index_error() -> None:
    a, b = mem("a"), mem("b")
    b.merge(a.full_state())  # b knows a's keyspace: the writer chunk is first in the reply
    a.put(("kv", "k"), b"x" * 70_000)
    delta = a.delta_since(b.full_digest(), 60_000)
    b.merge(delta)
    assert b.get(("kv", "k")) == b"x" * 70_000
    assert a.delta_since(b.full_digest(), 60_000) == b""


def test_oversized_owned_entry_alone_in_its_chunk_does_not_raise_index_error() -> None:
    a, b = mem("a"), mem("b")
    b.merge(a.full_state())
    a.put_own(("blob",), b"y" * 70_000)
    b.merge(a.delta_since(b.full_digest(), 60_000))
    assert b.get_owned("a", ("blob",)) == b"y" * 70_000
    assert a.delta_since(b.full_digest(), 60_000) == b""


def test_oversized_last_entry_after_small_ones_is_not_skipped() -> None:
    a, b = mem("a"), mem("b")
    b.merge(a.full_state())
    a.put(("kv", "small1"), b"s")
    a.put(("kv", "small2"), b"t")
    a.put(("kv", "big"), b"B" * 5_000)
    a.put_own(("o1",), b"o")
    a.put_own(("o2",), b"p")
    a.put_own(("o3",), b"O" * 5_000)
    rounds = push_until_equal(a, b, 100, max_rounds=20)
    assert rounds <= 6
    assert dict(b.shared_items()) == dict(a.shared_items())
    assert b.owned_items("a") == a.owned_items("a")


def test_oversized_entry_is_not_starved_by_other_owners_changing_each_round() -> None:
    """Small owner chunks come first in a reply; a big LWW entry still goes out."""
    clock = Clock()
    owners = [mem(f"o{i}", clock) for i in range(3)]
    a, b = mem("a", clock), mem("b", clock)
    for o in owners:
        b.merge(o.full_state())
    b.merge(a.full_state())
    a.put(("kv", "big"), b"B" * 200_000)
    for step in range(5):
        for o in owners:  # every round, fresh small news that b lacks and a holds
            a.merge(o.put_own(("score",), step))
        b.merge(a.delta_since(b.full_digest(), 60_000))
        if b.get(("kv", "big")) is not None:
            break
    assert b.get(("kv", "big")) == b"B" * 200_000


# --------------------------------------------------------------------------- property

SIZES = st.sampled_from([0, 1, 20, 150, 600, 3_000])

op = st.tuples(
    st.integers(0, 1),  # which store writes
    st.sampled_from(["put", "put_own", "delete", "delete_own"]),
    st.integers(0, 4),  # key
    SIZES,
)


def apply_op(store: Store, kind: str, k: int, size: int, n: int) -> None:
    key: Key = ("k", k)
    value = bytes([n % 256]) * size
    if kind == "put":
        store.put(key, value)
    elif kind == "put_own":
        store.put_own(key, value, volatile=size == 20)
    elif kind == "delete":
        store.delete(key)
    else:
        store.delete_own(key)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(op, max_size=30),
    gossip=st.lists(st.booleans(), max_size=30),
    budget=st.integers(1, 400),
)
def test_budgeted_sync_of_tiny_and_huge_entries_always_progresses_and_converges(
    ops: list[tuple[int, str, int, int]], gossip: list[bool], budget: int
) -> None:
    """Mixed tiny and huge entries, small budgets: no error, progress every round, equal end."""
    clock = Clock()
    stores = [mem("a", clock), mem("b", clock)]
    largest = 0
    for n, (who, kind, k, size) in enumerate(ops):
        clock.t += 0.001
        writer, other = stores[who], stores[1 - who]
        before = writer.full_digest()
        apply_op(writer, kind, k, size, n)
        largest = max(largest, size)
        if n < len(gossip) and gossip[n]:  # some writes reach the peer at once, some not
            other.merge(writer.delta_since(before, None))
    total_entries = len(ops) + 4
    for src, dst in ((stores[0], stores[1]), (stores[1], stores[0])):
        for _ in range(total_entries + 2):
            delta = src.delta_since(dst.full_digest(), budget)
            if not delta:
                break
            # Soft budget: over it by at most one entry plus chunk heads and covers.
            assert len(delta) <= budget + largest + 400
            digest_before = dst.full_digest()
            dst.merge(delta)
            assert dst.full_digest() != digest_before, "a non-empty delta made no progress"
        else:
            raise AssertionError("budgeted delta_since did not converge")
    a, b = stores
    assert sync.root_hash(a.om, a.lww) == sync.root_hash(b.om, b.lww)
    assert dict(a.shared_items()) == dict(b.shared_items())
    for owner in ("a", "b"):
        assert a.owned_items(owner) == b.owned_items(owner)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(SIZES, min_size=1, max_size=12), budget=st.integers(1, 300))
def test_reconcile_protocol_delivers_every_entry_whatever_its_size(
    sizes: list[int], budget: int
) -> None:
    """The real digest → reconcile exchange (what the node runs) with small budgets."""
    clock = Clock()
    a, b = mem("a", clock), mem("b", clock)
    b.merge(a.full_state())
    for i, size in enumerate(sizes):
        clock.t += 0.001
        a.put(("kv", i), bytes([i]) * size)
        a.put_own(("own", i), bytes([i]) * size)
    for _ in range(2 * len(sizes) + 4):
        reply = b.reconcile(a.digest(), budget)
        to, other = a, b
        for _ in range(8):  # STORE_SYNC_ROUNDS
            if reply.delta:
                to.merge(reply.delta)
            if not reply.digest:
                break
            reply = to.reconcile(reply.digest, budget)
            to, other = other, to
        if dict(b.shared_items()) == dict(a.shared_items()) and b.owned_items(
            "a"
        ) == a.owned_items("a"):
            break
    else:
        raise AssertionError("reconcile did not deliver every entry")
