"""HLC properties and codec round trips, determinism and fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beethoven.errors import CodecError, StoreError
from beethoven_store import codec, sync
from beethoven_store.crdt import LWWMap, OwnerMap
from beethoven_store.hlc import (
    LOGICAL_BITS,
    HybridClock,
    hlc_logical,
    hlc_pack,
    hlc_unpack,
    hlc_wall,
    make_hlc,
)

pytestmark = pytest.mark.timeout(60)

steps = st.lists(
    st.tuples(st.integers(-2000, 5000), st.none() | st.integers(-3000, 3000)), max_size=60
)


class FakeClock:
    def __init__(self, t: int = 1_000_000) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


@given(steps, st.integers(1, 1000))
def test_hlc_monotonic_and_receive_rule(script: list[tuple[int, int | None]], offset: int) -> None:
    pc = FakeClock()
    clock = HybridClock(pc, max_offset_ms=offset)
    last = clock.last
    max_pt = pc.t
    for dt, remote_delta in script:
        pc.t = max(0, pc.t + dt)
        max_pt = max(max_pt, pc.t)
        if remote_delta is None:
            ts = clock.now()
            assert ts > last
            assert hlc_wall(ts) >= pc.t or ts == last + 1
        else:
            remote = make_hlc(max(0, pc.t + remote_delta), 7)
            refused_before = clock.stats().refused
            res = clock.update(remote)
            refuse = hlc_wall(remote) - pc.t > offset
            assert (res is None) == refuse
            if res is None:
                assert clock.stats().refused == refused_before + 1
                assert clock.last == last
                continue
            assert res > remote
            assert res > last
            ts = res
        # l − pt ≤ max_offset, measured against the highest physical time seen
        # (the physical clock may step back below what was already issued).
        assert hlc_wall(ts) - max_pt <= offset
        last = ts
    assert clock.last == last


def test_hlc_logical_overflow_advances_wall() -> None:
    pc = FakeClock(10)
    clock = HybridClock(pc, start=make_hlc(10, (1 << LOGICAL_BITS) - 1))
    ts = clock.now()
    assert hlc_wall(ts) == 11
    assert hlc_logical(ts) == 0


def test_hlc_stays_within_offset_of_physical_time() -> None:
    pc = FakeClock(1000)
    clock = HybridClock(pc, max_offset_ms=500)
    clock.update(make_hlc(1500, 3))
    assert hlc_wall(clock.now()) - pc.t <= 500
    assert clock.update(make_hlc(1501, 0)) is None


def test_hlc_zero_offset_rejected() -> None:
    with pytest.raises(StoreError):
        HybridClock(FakeClock(), max_offset_ms=0)


def test_backward_jump_counted() -> None:
    pc = FakeClock(10_000)
    clock = HybridClock(pc, max_offset_ms=500)
    clock.now()
    pc.t = 9_000
    t2 = clock.now()
    assert clock.stats().backward_jumps == 1
    assert hlc_wall(t2) == 10_000


@given(
    st.integers(0, (1 << 48) - 1),
    st.integers(0, (1 << 16) - 1),
    st.integers(0, (1 << 48) - 1),
    st.integers(0, (1 << 16) - 1),
)
def test_hlc_packing_order(w1: int, l1: int, w2: int, l2: int) -> None:
    a, b = make_hlc(w1, l1), make_hlc(w2, l2)
    assert hlc_unpack(hlc_pack(a)) == a
    assert (hlc_wall(a), hlc_logical(a)) == (w1, l1)
    assert (hlc_pack(a) < hlc_pack(b)) == ((w1, l1) < (w2, l2))


def test_hlc_pack_errors() -> None:
    with pytest.raises(StoreError):
        make_hlc(1 << 48)
    with pytest.raises(StoreError):
        hlc_unpack(b"123")


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(values)
def test_value_round_trip_and_determinism(v: object) -> None:
    raw = codec.encode_value(v)
    back = codec.decode_value(raw)
    assert back == v
    assert codec.encode_value(back) == raw


def test_dict_order_does_not_change_encoding() -> None:
    assert codec.encode_value({"a": 1, "b": [1, {"y": 2, "x": 3}]}) == codec.encode_value(
        {"b": [1, {"x": 3, "y": 2}], "a": 1}
    )
    assert codec.encode_value((1, 2)) == codec.encode_value([1, 2])


@pytest.mark.parametrize("bad", [object(), {1: 2}, {"a": {3}}, 1 << 70, [1, 2j]])
def test_invalid_values_raise_store_error(bad: object) -> None:
    with pytest.raises(StoreError):
        codec.encode_value(bad)


@pytest.mark.parametrize("bad", [(), ["a"], ("a", 1.5), ("a", None), "a", ("a", True)])
def test_invalid_keys_raise_store_error(bad: object) -> None:
    with pytest.raises(StoreError):
        codec.validate_key(bad)


def _state() -> tuple[OwnerMap, LWWMap]:
    om, lww = OwnerMap(), LWWMap()
    om.init_owner("a", 5)
    om.write("a", ("k", 1), codec.encode_value({"x": 1}), {"x": 1}, 100)
    om.write("a", ("k", 2), None, None, 101)
    om.write("a", ("v",), codec.encode_value(0.5), 0.5, 102, volatile=True)
    lww.write("a", ("role", "web"), codec.encode_value({"n": 2}), {"n": 2}, 103)
    lww.write("b", ("user",), None, None, 104)
    om.remove_owner("gone", 99, generation=3)
    return om, lww


def test_state_encoding_is_deterministic_and_round_trips() -> None:
    om, lww = _state()
    raw = sync.full_state(om, lww)
    parts = codec.decode_delta(raw)
    assert codec.encode_delta(parts) == raw
    om2, lww2 = OwnerMap(), LWWMap()
    for name, mk in parts.markers:
        om2.apply_marker(name, mk)
    for c in parts.owners:
        om2.apply_chunk(c)
    for wc in parts.writers:
        lww2.apply_chunk(wc)
    assert om2 == om
    assert lww2 == lww
    assert sync.full_state(om2, lww2) == raw
    # Equal states built in another order give equal bytes.
    om3, lww3 = om2.copy(), lww2.copy()
    om3.owners = dict(reversed(list(om3.owners.items())))
    lww3.entries = dict(reversed(list(lww3.entries.items())))
    assert sync.full_state(om3, lww3) == raw
    assert sync.summary_digest(om3, lww3) == sync.summary_digest(om, lww)


@given(st.binary(max_size=200))
def test_fuzzed_delta_bytes_raise_only_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        codec.decode_delta(data)


@given(st.data())
def test_mutated_delta_raises_only_codec_error(data: st.DataObject) -> None:
    raw = bytearray(sync.full_state(*_state()))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(CodecError):
        codec.decode_delta(bytes(raw[:cut]))


@given(st.binary(max_size=100))
def test_fuzzed_digest_bytes_raise_only_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        sync.decode_digest(data)
