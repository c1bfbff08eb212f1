"""A key holder whose clock is beyond the 30 s age limit is refused *and told of*.

Before the fix a sealed datagram or frame from a peer whose clock was more than
30 s off was dropped as ``stale`` at debug level: such a node could never join a
keyed cluster and no log line anywhere said why. Now the receiver checks the tag of
a stale packet now and then and, when it is authentic, logs one WARNING with the
offset; forged stale packets are never reported, and tag checks are rate-limited.
"""

from __future__ import annotations

import logging
import struct
import time

import pytest
import trio
import trio.testing

from beethoven.address import Address
from beethoven.cli import query_agent
from beethoven.errors import BeethovenError, ClockSkewError, SecurityError
from beethoven.node import open_node
from beethoven.transport.udp_tcp import open_udp_tcp_transport
from beethoven.wire.framing import FrameChannel
from beethoven.wire.messages import Ping, Query
from beethoven.wire.packet import PacketCodec
from beethoven.wire.security import Keyring, SkewNotice, generate_key, key_to_string

PEER = Address("127.0.0.9", 33000)
NOW = 1_700_000_000_000
KEY = bytes(range(32))


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def ping(seq: int = 1) -> Ping:
    return Ping(seq=seq, target="10.0.0.2:33000", source="10.0.0.1:33000")


def skew_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "clock" in r.getMessage()
    ]


def test_authentic_datagrams_from_a_far_clock_are_refused_and_told_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    far, here = Clock(NOW + 60_000), Clock(NOW)
    sender = PacketCodec(Keyring(KEY), clock=far)
    receiver = PacketCodec(Keyring(KEY), clock=here)
    with caplog.at_level(logging.DEBUG, logger="beethoven.wire.packet"):
        for seq in range(5):
            (datagram,) = sender.pack([ping(seq)])
            assert receiver.unpack(datagram, PEER) == []
            here.now += 100
            far.now += 100
    assert receiver.stats().stale == 5
    (warning,) = skew_warnings(caplog)
    assert "127.0.0.9:33000" in warning
    assert "+60.0 s" in warning
    assert "NTP" in warning
    # A minute later it is told again, if it still is off.
    caplog.clear()
    here.now += 60_000
    far.now += 60_000
    with caplog.at_level(logging.WARNING, logger="beethoven.wire.packet"):
        (datagram,) = sender.pack([ping(9)])
        assert receiver.unpack(datagram, PEER) == []
    assert len(skew_warnings(caplog)) == 1


def test_forged_stale_datagrams_are_never_told(caplog: pytest.LogCaptureFixture) -> None:
    far, here = Clock(NOW - 45_000), Clock(NOW)
    sender = PacketCodec(Keyring(KEY), clock=far)
    receiver = PacketCodec(Keyring(KEY), clock=here)
    with caplog.at_level(logging.WARNING, logger="beethoven.wire.packet"):
        for seq in range(3):
            (datagram,) = sender.pack([ping(seq)])
            forged = datagram[:-1] + bytes([datagram[-1] ^ 1])
            assert receiver.unpack(forged, PEER) == []
            here.now += 2_000
    assert receiver.stats().stale == 3
    assert skew_warnings(caplog) == []
    # A wrong key's stale datagram is not authentic either.
    stranger = PacketCodec(Keyring(generate_key()), clock=far)
    (datagram,) = stranger.pack([ping()])
    assert receiver.unpack(datagram, PEER) == []
    assert skew_warnings(caplog) == []


def test_stale_tag_checks_are_rate_limited() -> None:
    notice = SkewNotice(check_ms=1_000, warn_ms=60_000)
    assert notice.due(NOW)
    assert not notice.due(NOW + 999)  # a stranger's flood costs one check a second
    assert notice.due(NOW + 1_000)
    notice.tell(NOW + 1_000)
    assert not notice.due(NOW + 30_000)  # told: quiet for a minute
    assert notice.due(NOW + 61_000)
    assert notice.told == 1


async def sealed_frame(keyring: Keyring, clock: Clock, *, forge: bool = False) -> bytes:
    a, b = trio.testing.memory_stream_pair()
    await FrameChannel(a, keyring, clock=clock).send(ping())
    data = bytes(await b.receive_some())
    if forge:
        data = data[:-1] + bytes([data[-1] ^ 1])
    assert struct.unpack(">I", data[:4])[0] == len(data) - 4
    return data


async def receive(data: bytes, keyring: Keyring, clock: Clock) -> None:
    a, b = trio.testing.memory_stream_pair()
    await a.send_all(data)
    await FrameChannel(b, keyring, clock=clock).receive()


async def test_authentic_frame_from_a_far_clock_raises_clock_skew_error() -> None:
    with trio.fail_after(5):
        frame = await sealed_frame(Keyring(KEY), Clock(NOW + 40_000))
        with pytest.raises(ClockSkewError, match=r"\+40\.0 s") as info:
            await receive(frame, Keyring(KEY), Clock(NOW))
        assert info.value.offset_ms == 40_000


async def test_forged_stale_frame_is_a_plain_security_error() -> None:
    with trio.fail_after(5):
        frame = await sealed_frame(Keyring(KEY), Clock(NOW + 40_000), forge=True)
        with pytest.raises(SecurityError, match="stale") as info:
            await receive(frame, Keyring(KEY), Clock(NOW))
        assert not isinstance(info.value, ClockSkewError)


async def test_real_node_warns_of_a_key_holder_whose_clock_is_far_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real keyed node on 127.0.0.x: a query sealed 45 s ahead is refused and told."""
    host = "127.0.0.94"
    async with open_udp_tcp_transport(Address(host, 0)) as probe:
        port = probe.local_address.port
    key = generate_key()
    with trio.fail_after(30), caplog.at_level(logging.WARNING):
        async with open_node(
            name="keyed", bind=host, port=port, cluster_net=[f"{host}/32"], sweeps=1,
            keys=[key_to_string(key)],
        ) as node:  # fmt: skip
            await node.wait_ready()
            far = Clock(time.time_ns() // 1_000_000 + 45_000)  # a sender 45 s ahead
            stream = await trio.open_tcp_stream(host, port)
            channel = FrameChannel(stream, Keyring(key), clock=far, read_timeout=2)
            await channel.send(Query("status"))
            with pytest.raises((trio.EndOfChannel, BeethovenError, trio.BrokenResourceError)):
                await channel.receive()
            await channel.aclose()
            # The node is fine and still answers a query from a good clock.
            body = await query_agent(
                f"{host}:{port}", "status", key=key_to_string(key), timeout=5
            )
            assert body["name"] == "keyed"
    (warning,) = [m for m in skew_warnings(caplog) if "refused" in m]
    assert "stream from 127.0.0." in warning  # the peer's address
    assert "+45.0 s" in warning or "+44.9 s" in warning
