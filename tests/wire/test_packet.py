"""UDP datagrams: packing, sealing, every drop reason, fuzzing, replay and key rotation."""

from __future__ import annotations

import logging

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from beethoven.address import Address
from beethoven.errors import CodecError
from beethoven.wire.codec import encode
from beethoven.wire.messages import Alive, Message, Ping, UserMessage
from beethoven.wire.packet import (
    DROP_REASONS,
    FLAG_SEALED,
    MAGIC,
    SEALED_OVERHEAD,
    PacketCodec,
    WireStats,
)
from beethoven.wire.security import Keyring, generate_key

PEER = Address("10.0.0.9", 33000)
NOW = 1_700_000_000_000
KEY = bytes(range(32))


class Clock:
    """A settable wall clock in milliseconds."""

    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def ping(seq: int = 1) -> Ping:
    return Ping(seq=seq, target="10.0.0.2:33000", source="10.0.0.1:33000")


def alive() -> Alive:
    return Alive(name="n1", generation=1 << 40, incarnation=2, addr=Address("10.0.0.1", 33000))


def pair(key: bytes | None = KEY) -> tuple[PacketCodec, PacketCodec]:
    clock = Clock()
    a = PacketCodec(Keyring(key) if key else None, clock=clock)
    b = PacketCodec(Keyring(key) if key else None, clock=clock)
    return a, b


def only_drop(stats: WireStats) -> str:
    """The one drop reason counted, asserting there is exactly one drop."""
    reasons = {r: getattr(stats, r) for r in DROP_REASONS if getattr(stats, r)}
    assert sum(reasons.values()) == 1, reasons
    return next(iter(reasons))


@pytest.mark.parametrize("key", [None, KEY], ids=["open", "sealed"])
def test_round_trip(key: bytes | None) -> None:
    a, b = pair(key)
    msgs: list[Message] = [ping(1), alive(), ping(2)]
    (datagram,) = a.pack(msgs)
    assert datagram[:2] == MAGIC
    assert bool(datagram[3] & FLAG_SEALED) == (key is not None)
    assert b.unpack(datagram, PEER) == msgs
    s = b.stats()
    assert (s.packets_in, s.messages_in, s.bytes_in, s.dropped) == (1, 3, len(datagram), 0)
    assert a.stats().packets_out == 1
    assert a.stats().messages_out == 3


def test_stats_is_a_frozen_attrs_record() -> None:
    stats = pair()[0].stats()
    assert attrs.has(type(stats))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.replay = 3  # type: ignore[misc]


def test_open_cluster_warns_once_at_construction(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="beethoven.wire.packet"):
        a, b = pair(None)
        b.unpack(a.pack([ping()])[0], PEER)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per codec, none per packet
    assert "open cluster" in warnings[0].getMessage()


def test_a_keyed_codec_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="beethoven.wire.packet"):
        pair(KEY)
    assert not caplog.records


@pytest.mark.parametrize("key", [None, KEY], ids=["open", "sealed"])
def test_pack_fills_few_datagrams_within_the_payload(key: bytes | None) -> None:
    a, b = pair(key)
    msgs: list[Message] = [UserMessage(payload=bytes([i]) * (50 + 37 * i)) for i in range(30)]
    datagrams = a.pack(msgs)
    assert all(len(d) <= 1400 for d in datagrams)
    # First fit: at most one datagram is half empty (else two would have been merged).
    overhead = 1400 - a.budget
    assert sum(1 for d in datagrams if len(d) - overhead <= a.budget // 2) <= 1
    received = [m for d in datagrams for m in b.unpack(d, PEER)]
    assert sorted(received, key=encode) == sorted(msgs, key=encode)


def test_a_message_too_big_for_a_datagram_is_dropped_and_counted() -> None:
    a, b = pair()
    big = UserMessage(payload=bytes(1400))
    datagrams = a.pack([ping(), big, ping(2)])
    assert [m for d in datagrams for m in b.unpack(d, PEER)] == [ping(), ping(2)]
    assert a.stats().oversized_out == 1
    exact = UserMessage(payload=bytes(a.budget - 5))  # 0x92 0x0c 0xc5 len16 payload
    assert len(encode(exact)) == a.budget
    (d,) = a.pack([exact])
    assert len(d) == 1400


def test_pack_refuses_a_version_it_does_not_speak() -> None:
    with pytest.raises(CodecError):
        pair()[0].pack([ping()], version=99)


def test_wrong_key_is_refused() -> None:
    a, _ = pair(KEY)
    other = PacketCodec(Keyring(generate_key()), clock=Clock())
    assert other.unpack(a.pack([ping()])[0], PEER) == []
    assert only_drop(other.stats()) == "unknown_key"


@pytest.mark.parametrize("key", [None, KEY], ids=["open", "sealed"])
def test_every_single_bit_flip_is_refused_or_harmless(key: bytes | None) -> None:
    a, _ = pair(key)
    (datagram,) = a.pack([ping()])
    for i in range(len(datagram)):
        for bit in (0, 7):
            tampered = bytearray(datagram)
            tampered[i] ^= 1 << bit
            b = PacketCodec(Keyring(key) if key else None, clock=Clock())
            got = b.unpack(bytes(tampered), PEER)
            if key is not None:
                # Sealed: nothing tampered is ever accepted.
                assert got == [], (i, bit)
                only_drop(b.stats())
            else:
                # Open: no authenticity, but the decoder never raises.
                assert got == [] or len(got) == 1


def test_tampered_ciphertext_is_a_bad_tag() -> None:
    a, b = pair()
    (datagram,) = a.pack([ping()])
    tampered = datagram[:-20] + bytes([datagram[-20] ^ 1]) + datagram[-19:]
    assert b.unpack(tampered, PEER) == []
    assert only_drop(b.stats()) == "bad_tag"
    # The authentic packet still gets through: a forgery did not burn its counter.
    assert b.unpack(datagram, PEER) == [ping()]


def test_replayed_packet_is_refused() -> None:
    a, b = pair()
    d1, d2, d3 = (a.pack([ping(i)])[0] for i in range(3))
    assert b.unpack(d3, PEER) == [ping(2)]
    assert b.unpack(d1, PEER) == [ping(0)]  # late but new: accepted
    assert b.unpack(d1, PEER) == []
    assert b.unpack(d3, PEER) == []
    assert b.stats().replay == 2
    assert b.unpack(d2, PEER) == [ping(1)]


def test_packet_behind_the_window_is_refused() -> None:
    a, b = pair()
    old = a.pack([ping(0)])[0]
    for i in range(1, 1100):
        a.pack([ping(i)])
    assert b.unpack(a.pack([ping(2000)])[0], PEER) == [ping(2000)]
    assert b.unpack(old, PEER) == []
    assert only_drop(b.stats()) == "replay"


def test_old_packet_refused_after_receiver_restart() -> None:
    clock = Clock()
    a = PacketCodec(Keyring(KEY), clock=clock)
    captured = a.pack([ping()])[0]
    assert PacketCodec(Keyring(KEY), clock=clock).unpack(captured, PEER) == [ping()]
    clock.now += 30_001
    restarted = PacketCodec(Keyring(KEY), clock=clock)  # empty replay table
    assert restarted.unpack(captured, PEER) == []
    assert only_drop(restarted.stats()) == "stale"


def test_packet_from_the_far_future_is_stale() -> None:
    sender = PacketCodec(Keyring(KEY), clock=Clock(NOW + 60_000))
    receiver = PacketCodec(Keyring(KEY), clock=Clock())
    assert receiver.unpack(sender.pack([ping()])[0], PEER) == []
    assert only_drop(receiver.stats()) == "stale"


def test_session_eviction_never_reopens_a_replay() -> None:
    clock = Clock()
    receiver = PacketCodec(Keyring(KEY), clock=clock, sessions=2)
    senders = [PacketCodec(Keyring(KEY), clock=clock) for _ in range(3)]
    first = senders[0].pack([ping()])[0]
    assert receiver.unpack(first, PEER) == [ping()]
    clock.now += 1
    for s in senders[1:]:
        assert receiver.unpack(s.pack([ping()])[0], PEER) == [ping()]
    assert receiver.unpack(first, PEER) == []  # evicted session, refused by the floor
    assert only_drop(receiver.stats()) == "stale"


def test_open_datagram_refused_when_a_key_is_required() -> None:
    a, _ = pair(None)
    _, b = pair(KEY)
    assert b.unpack(a.pack([ping()])[0], PEER) == []
    assert only_drop(b.stats()) == "unsealed"


def test_sealed_datagram_refused_without_a_keyring() -> None:
    a, _ = pair(KEY)
    _, b = pair(None)
    assert b.unpack(a.pack([ping()])[0], PEER) == []
    assert only_drop(b.stats()) == "sealed_no_key"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (MAGIC + b"\x01", "truncated"),
        (b"\x00\x00\x01\x00" + encode(ping()), "bad_magic"),
        (MAGIC + b"\x02\x00" + encode(ping()), "bad_version"),
        (MAGIC + b"\x00\x00" + encode(ping()), "bad_version"),
        (MAGIC + b"\x01\x80" + encode(ping()), "bad_flags"),
        (MAGIC + b"\x01\x00" + b"\xc1", "decode_error"),
        (MAGIC + b"\x01\x00", "decode_error"),
        (MAGIC + b"\x01\x00" + encode(ping())[:-1], "decode_error"),
        (MAGIC + b"\x01\x00" + bytes(1500), "oversized"),
    ],
)
def test_bad_open_datagrams_are_dropped_by_reason(data: bytes, reason: str) -> None:
    _, b = pair(None)
    assert b.unpack(data, PEER) == []
    assert only_drop(b.stats()) == reason


def test_sealed_datagram_shorter_than_its_overhead_is_truncated() -> None:
    a, b = pair(KEY)
    (d,) = a.pack([ping()])
    assert b.unpack(d[:SEALED_OVERHEAD], PEER) == []
    assert only_drop(b.stats()) == "truncated"


def test_unknown_message_types_are_skipped_and_counted() -> None:
    a, b = pair(None)
    body = encode(ping()) + b"\x92\xcc\xfa\x01" + encode(ping(2))  # [250, 1] in between
    assert b.unpack(a.seal(body), PEER) == [ping(), ping(2)]
    s = b.stats()
    assert (s.unknown_type, s.packets_in, s.dropped) == (1, 1, 0)


def test_drops_are_logged_at_debug_with_the_peer(caplog: pytest.LogCaptureFixture) -> None:
    _, b = pair(KEY)
    with caplog.at_level(logging.DEBUG, logger="beethoven.wire.packet"):
        b.unpack(b"garbage", PEER)
    (record,) = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert str(PEER) in record.getMessage()
    assert "bad_magic" in record.getMessage()


@pytest.mark.parametrize("key", [None, KEY], ids=["open", "sealed"])
@given(data=st.binary(max_size=1600))
def test_random_bytes_never_raise(key: bytes | None, data: bytes) -> None:
    b = PacketCodec(Keyring(key) if key else None, clock=Clock())
    result = b.unpack(data, PEER)
    s = b.stats()
    assert s.packets_in + s.dropped == 1
    assert s.internal == 0
    if key is not None:
        assert result == []


_SEALED_SAMPLE = PacketCodec(Keyring(KEY), clock=Clock()).pack([ping(), alive()])[0]
_OPEN_SAMPLE = MAGIC + b"\x01\x00" + encode(ping()) + encode(alive())


@pytest.mark.parametrize("key", [None, KEY], ids=["open", "sealed"])
@given(data=st.data())
def test_mutated_datagrams_never_raise(key: bytes | None, data: st.DataObject) -> None:
    sample = bytearray(_SEALED_SAMPLE if key else _OPEN_SAMPLE)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = data.draw(st.integers(0, max(len(sample) - 1, 0)))
        if op == "flip" and sample:
            sample[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del sample[pos:]
        elif op == "insert":
            sample[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif sample:
            del sample[pos]
    b = PacketCodec(Keyring(key) if key else None, clock=Clock())
    result = b.unpack(bytes(sample), PEER)
    s = b.stats()
    assert s.internal == 0
    assert s.packets_in + s.dropped == 1
    if key is not None and bytes(sample) != _SEALED_SAMPLE:
        assert result == []


def test_key_rotation_with_traffic_flowing_loses_nothing() -> None:
    """install everywhere, then use everywhere, then remove everywhere: zero loss.

    Every step is applied to one node at a time while every node keeps sending to
    every other; each packet is delivered one step after it was sealed, so packets
    sealed before a step are still in flight after it.
    """
    clock = Clock()
    old, new = generate_key(), generate_key()
    rings = [Keyring(old) for _ in range(5)]
    nodes = [PacketCodec(ring, clock=clock) for ring in rings]
    in_flight: list[tuple[int, bytes, Message]] = []
    sent = delivered = 0
    seq = 0

    def tick() -> None:
        nonlocal in_flight, sent, delivered, seq
        arriving, in_flight = in_flight, []
        for dst, datagram, expected in arriving:
            assert nodes[dst].unpack(datagram, PEER) == [expected]
            delivered += 1
        for i, src in enumerate(nodes):
            for j in range(len(nodes)):
                if i != j:
                    seq += 1
                    msg = ping(seq)
                    (datagram,) = src.pack([msg])
                    in_flight.append((j, datagram, msg))
                    sent += 1
        clock.now += 200

    tick()
    for ring in rings:
        ring.install(new)
        tick()
    for ring in rings:
        ring.use(new)
        tick()
    tick()  # let packets sealed under the old key drain before anyone drops it
    for ring in rings:
        ring.remove(old)
        tick()
    tick()
    assert all(ring.keys == (new,) for ring in rings)
    assert sent - delivered == len(in_flight) == 20
    assert delivered > 300
    for node in nodes:
        assert node.stats().dropped == 0
