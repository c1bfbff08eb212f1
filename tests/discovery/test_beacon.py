"""BeaconServer and SeekChat: who gets an answer, who gets nothing, and how fast.

Protocol tests run on the memory network in virtual time; hostile-client tests run on
real sockets on 127.0.0.x (a free port), so the read deadlines are real deadlines.
"""

from __future__ import annotations

import logging
import random
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from beethoven.address import Address
from beethoven.discovery.beacon import BeaconServer
from beethoven.discovery.seekchat import (
    ERR_VERSION,
    ERR_WRONG_CLUSTER,
    HelloOutcome,
    exchange,
    hello,
)
from beethoven.errors import TransportError
from beethoven.transport.base import Transport
from beethoven.transport.memory import MemoryNetwork
from beethoven.transport.udp_tcp import UdpTcpTransport, open_udp_tcp_transport
from beethoven.wire.framing import FrameChannel
from beethoven.wire.messages import (
    BeaconHello,
    BeaconMember,
    BeaconReply,
    ErrorReply,
    Message,
    Ping,
)
from beethoven.wire.security import Keyring, generate_key

KEY = generate_key()
OTHER_KEY = generate_key()
BEACON = Address("10.0.0.2", 33000)
CLIENT = Address("10.0.0.1", 33000)


def make_beacon(
    keyring: Keyring | None, *, members: int = 20, read_timeout: float = 0.5
) -> BeaconServer:
    offered = [BeaconMember(f"m{i}", Address(f"10.0.1.{i}", 33000)) for i in range(members)]
    offered.append(BeaconMember("beacon", BEACON))  # self, must not be offered back
    return BeaconServer(
        cluster="c1",
        name="beacon",
        addr=BEACON,
        members=lambda: offered,
        keyring=keyring,
        read_timeout=read_timeout,
        max_members=8,
        rng=random.Random(3),
    )


@asynccontextmanager
async def memory_pair(
    beacon: BeaconServer,
) -> AsyncIterator[Transport]:
    net = MemoryNetwork(seed=1)
    async with (
        net.attach(BEACON) as server_t,
        net.attach(CLIENT) as client_t,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(beacon.run, server_t)
        yield client_t
        nursery.cancel_scope.cancel()


async def say_hello(
    transport: Transport, keyring: Keyring | None, *, cluster: str = "c1"
) -> HelloOutcome | str:
    result = await exchange(
        transport,
        BEACON,
        cluster=cluster,
        sender="client",
        keyring=keyring,
        connect_timeout=0.25,
        reply_timeout=1.0,
    )
    return result.outcome


@pytest.mark.parametrize("keyed", [True, False], ids=["sealed", "open"])
async def test_a_hello_of_our_cluster_gets_identity_and_a_few_members(
    autojump_clock: trio.testing.MockClock, keyed: bool
) -> None:
    keyring = Keyring(KEY) if keyed else None
    beacon = make_beacon(keyring)
    with trio.fail_after(10):
        async with memory_pair(beacon) as client:
            reply = await hello(client, BEACON, cluster="c1", sender="client", keyring=keyring)
    assert isinstance(reply, BeaconReply)
    assert reply.cluster == "c1"
    assert reply.name == "beacon"
    assert reply.addr == BEACON
    assert len(reply.members) == 8
    assert all(m.name != "beacon" for m in reply.members)
    assert beacon.stats().answered == 1
    assert beacon.stats().refused == 0


async def test_another_clusters_hello_gets_no_member_information(
    autojump_clock: trio.testing.MockClock,
) -> None:
    beacon = make_beacon(Keyring(KEY))
    with trio.fail_after(10):
        async with memory_pair(beacon) as client:
            result = await exchange(
                client,
                BEACON,
                cluster="other",
                sender="client",
                keyring=Keyring(KEY),
                connect_timeout=0.25,
                reply_timeout=1.0,
            )
    assert result.outcome == HelloOutcome.REFUSED
    assert result.reply is None
    assert result.error is not None
    assert result.error.code == ERR_WRONG_CLUSTER
    assert "c1" not in result.error.reason  # not even our cluster name
    assert beacon.stats().wrong_cluster == 1
    assert beacon.stats().answered == 0


async def test_no_common_version_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    beacon = make_beacon(None)
    with trio.fail_after(10):
        async with memory_pair(beacon) as client:
            stream = await client.connect(BEACON, timeout=1)
            channel = FrameChannel(stream, None)
            await channel.send(BeaconHello(cluster="c1", sender="x", vmin=7, vmax=9))
            answer = await channel.receive()
            await channel.aclose()
    assert isinstance(answer, ErrorReply)
    assert answer.code == ERR_VERSION
    assert beacon.stats().bad_version == 1


@pytest.mark.parametrize(
    ("beacon_key", "client_key"),
    [(KEY, OTHER_KEY), (KEY, None), (None, KEY)],
    ids=["different-keys", "client-without-key", "beacon-without-key"],
)
async def test_wrong_key_neither_side_learns_anything(
    autojump_clock: trio.testing.MockClock, beacon_key: bytes | None, client_key: bytes | None
) -> None:
    beacon_ring = Keyring(beacon_key) if beacon_key else None
    client_ring = Keyring(client_key) if client_key else None
    beacon = make_beacon(beacon_ring)
    with trio.fail_after(10):
        async with memory_pair(beacon) as client:
            # What the client gets back, byte for byte: nothing at all.
            stream = await client.connect(BEACON, timeout=1)
            channel = FrameChannel(stream, client_ring)
            await channel.send(BeaconHello(cluster="c1", sender="client"))
            received = b""
            with trio.fail_after(2):
                while chunk := await stream.receive_some():
                    received += chunk
            await stream.aclose()
            # And through the client API: no reply.
            outcome = await say_hello(client, client_ring)
    assert received == b""
    assert outcome in (HelloOutcome.CLOSED, HelloOutcome.BAD_REPLY)
    stats = beacon.stats()
    assert stats.auth_failures == 2  # the beacon learnt nothing either: never decoded
    assert stats.answered == 0
    assert stats.wrong_cluster == 0


async def test_a_client_cannot_read_a_reply_sealed_with_another_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Sealed reply, client with the wrong key: the reply frame fails authentication.
    beacon = make_beacon(Keyring(KEY))
    with trio.fail_after(10):
        async with memory_pair(beacon) as client:
            stream = await client.connect(BEACON, timeout=1)
            good = FrameChannel(stream, Keyring(KEY))
            await good.send(BeaconHello(cluster="c1", sender="client"))
            raw = b""
            with trio.fail_after(2):
                while chunk := await stream.receive_some():
                    raw += chunk
    assert raw  # a reply was sent ...
    assert b"beacon" not in raw  # ... sealed: no name, no member in clear
    assert b"m1" not in raw
    assert b"10.0.1" not in raw


async def test_another_message_type_first_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    beacon = make_beacon(None)
    with trio.fail_after(10):
        async with memory_pair(beacon) as client:
            stream = await client.connect(BEACON, timeout=1)
            channel = FrameChannel(stream, None)
            await channel.send(Ping(seq=1, target="beacon", source="x"))
            with pytest.raises(trio.EndOfChannel):
                await channel.receive()
    assert beacon.stats().bad_request == 1


async def test_handle_routes_from_a_dispatcher_that_read_the_first_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The node's stream dispatcher reads the first frame and calls beacon.handle.
    beacon = make_beacon(Keyring(KEY))
    left, right = trio.testing.memory_stream_pair()
    server = FrameChannel(right, Keyring(KEY))
    client = FrameChannel(left, Keyring(KEY))
    with trio.fail_after(10):
        await client.send(BeaconHello(cluster="c1", sender="x"))
        first = await server.receive()
        await beacon.handle(server, CLIENT, first)
        reply = await client.receive()
    assert isinstance(reply, BeaconReply)
    assert beacon.stats().answered == 1


async def test_a_failing_members_callable_does_not_take_the_beacon_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def broken() -> list[BeaconMember]:
        raise RuntimeError("boom")

    beacon = BeaconServer(cluster="c1", name="beacon", addr=BEACON, members=broken)
    with trio.fail_after(10):
        async with memory_pair(beacon) as client:
            reply = await hello(client, BEACON, cluster="c1", sender="client", keyring=None)
    assert reply is not None
    assert reply.members == ()


# --- hostile clients on real sockets ---------------------------------------------------

READ_TIMEOUT = 0.5
SLACK = 0.5  # scheduling slack on a shared 2-core machine


@asynccontextmanager
async def loopback_beacon(
    keyring: Keyring | None,
) -> AsyncIterator[tuple[BeaconServer, UdpTcpTransport]]:
    async with open_udp_tcp_transport(Address("127.0.0.1", 0)) as transport:
        beacon = BeaconServer(
            cluster="c1",
            name="beacon",
            addr=transport.local_address,
            members=list,
            keyring=keyring,
            read_timeout=READ_TIMEOUT,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(beacon.run, transport)
            yield beacon, transport
            nursery.cancel_scope.cancel()


async def _until_closed(stream: trio.abc.Stream) -> bytes:
    got = b""
    try:
        while chunk := await stream.receive_some():
            got += chunk
    except trio.BrokenResourceError:
        pass
    return got


async def test_garbage_stalled_and_oversized_clients_are_dropped_within_the_deadline() -> None:
    keyring = Keyring(KEY)
    with trio.fail_after(20):
        async with loopback_beacon(keyring) as (beacon, transport):
            addr = transport.local_address

            async def hostile(name: str, payload: bytes, trickle: bool = False) -> None:
                stream = await trio.open_tcp_stream(addr.host, addr.port)
                start = trio.current_time()
                try:
                    if trickle:
                        for byte in payload:  # slow loris: one byte every 50 ms
                            await stream.send_all(bytes([byte]))
                            await trio.sleep(0.05)
                    elif payload:
                        await stream.send_all(payload)
                except trio.BrokenResourceError:
                    pass
                with trio.fail_after(READ_TIMEOUT + SLACK):
                    got = await _until_closed(stream)
                elapsed = trio.current_time() - start
                await stream.aclose()
                assert got == b"", f"{name} got an answer"
                assert elapsed <= READ_TIMEOUT + SLACK, f"{name} held {elapsed:.2f} s"

            big_hello = bytearray()
            sink, source = trio.testing.memory_stream_pair()
            await FrameChannel(sink, keyring).send(BeaconHello(cluster="c1", sender="x" * 100_000))
            big_hello += await source.receive_some()
            while len(big_hello) < 100_000:
                big_hello += await source.receive_some()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(hostile, "garbage", random.Random(1).randbytes(3000))
                nursery.start_soon(hostile, "stalled", b"")
                nursery.start_soon(hostile, "half-frame", struct.pack(">I", 100) + b"BT")
                nursery.start_soon(hostile, "huge-length", struct.pack(">I", 2**31) + b"\0" * 64)
                nursery.start_soon(hostile, "oversized-hello", bytes(big_hello))
                nursery.start_soon(hostile, "open-frame", _open_hello())
                nursery.start_soon(hostile, "slow-loris", b"\0" * 40, True)
                # Many mute peers at once (a burst from a big sweep) ...
                for _ in range(100):
                    nursery.start_soon(hostile, "mute", b"")
                # ... while an honest hello is answered at once.
                await trio.sleep(0.05)
                start = trio.current_time()
                reply = await hello(transport, addr, cluster="c1", sender="honest", keyring=keyring)
                assert reply is not None
                assert trio.current_time() - start < 0.5

            # The beacon is unharmed and still answers.
            again = await hello(transport, addr, cluster="c1", sender="after", keyring=keyring)
            assert again is not None
    stats = beacon.stats()
    assert stats.answered == 2
    assert stats.garbage >= 3  # garbage, huge length, oversized hello (half-frame may time out)
    assert stats.auth_failures == 1  # the open frame
    assert stats.timeouts >= 102  # stalled, mute x100, slow loris
    assert stats.refused >= 107


def _open_hello() -> bytes:
    # An unsealed hello as a keyless client would send it.
    from beethoven.wire.codec import encode
    from beethoven.wire.packet import MAGIC

    body = encode(BeaconHello(cluster="c1", sender="nokey"))
    return struct.pack(">I", 4 + len(body)) + MAGIC + bytes((1, 0)) + body


async def test_connect_and_vanish_does_not_crash_the_beacon() -> None:
    # Fault 5 of the original: a fast request crashed the beacon, nothing listened after.
    with trio.fail_after(10):
        async with loopback_beacon(None) as (beacon, transport):
            addr = transport.local_address
            for _ in range(50):
                raw = await trio.open_tcp_stream(addr.host, addr.port)
                await raw.aclose()
            for _ in range(20):
                stream = await transport.connect(addr, timeout=1)
                await FrameChannel(stream, None).send(BeaconHello(cluster="c1", sender="x"))
                await trio.aclose_forcefully(stream)  # do not wait for the reply
            reply = await hello(transport, addr, cluster="c1", sender="y", keyring=None)
            assert reply is not None
    assert beacon.stats().closed >= 1


async def test_hello_to_nothing_is_no_answer_within_connect_timeout() -> None:
    with trio.fail_after(5):
        async with open_udp_tcp_transport(Address("127.0.0.1", 0)) as transport:
            port = transport.local_address.port
            # Same port, another loopback address where nothing listens: refused.
            result = await exchange(
                transport,
                Address("127.0.0.254", port),
                cluster="c1",
                sender="x",
                keyring=None,
                connect_timeout=0.25,
                reply_timeout=0.5,
            )
    assert result.outcome == HelloOutcome.NO_ANSWER


async def test_a_mute_server_is_a_timeout_not_a_hang() -> None:
    # Fault 10: reads without timeout. A server that accepts and never answers.
    async def mute(stream: trio.abc.Stream, peer: Address) -> None:
        await trio.sleep_forever()

    with trio.fail_after(5):
        async with (
            open_udp_tcp_transport(Address("127.0.0.1", 0)) as server,
            open_udp_tcp_transport(Address("127.0.0.1", 0)) as client,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(server.serve_streams, mute)
            start = trio.current_time()
            result = await exchange(
                client,
                server.local_address,
                cluster="c1",
                sender="x",
                keyring=None,
                connect_timeout=0.25,
                reply_timeout=0.3,
            )
            assert trio.current_time() - start < 0.3 + SLACK
            nursery.cancel_scope.cancel()
    assert result.outcome == HelloOutcome.TIMEOUT


def test_beacon_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="read_timeout"):
        BeaconServer(cluster="c", name="n", addr=BEACON, members=list, read_timeout=0)


async def test_unreachable_is_no_answer(autojump_clock: trio.testing.MockClock) -> None:
    class Refusing:
        local_address = CLIENT

        async def connect(self, to: Address, *, timeout: float) -> trio.abc.Stream:  # noqa: ASYNC109
            raise TransportError("refused")

    result = await exchange(
        Refusing(),  # type: ignore[arg-type]
        BEACON,
        cluster="c1",
        sender="x",
        keyring=None,
        connect_timeout=0.25,
        reply_timeout=0.5,
    )
    assert result.outcome == HelloOutcome.NO_ANSWER


async def test_unexpected_error_in_an_outgoing_hello_ends_that_exchange_only(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug-class exception while reading a beacon's reply never escapes `exchange`.

    Before the fix it escaped, ended the Locator's sweep worker and so the node.
    """

    class Buggy(FrameChannel):
        async def receive(self) -> Message:
            raise RuntimeError("bug in reply handling")

    def factory(
        stream: trio.abc.Stream, keyring: Keyring | None, max_frame: int, read_timeout: float
    ) -> Buggy:
        return Buggy(stream, keyring, max_frame=max_frame, read_timeout=read_timeout)

    with trio.fail_after(10), caplog.at_level(logging.WARNING):
        async with memory_pair(make_beacon(None)) as client:
            result = await exchange(
                client, BEACON, cluster="c1", sender="client", keyring=None,
                connect_timeout=0.25, reply_timeout=1.0, channel_factory=factory,
            )  # fmt: skip
            assert result.outcome == HelloOutcome.BAD_REPLY
            # The next, ordinary hello works.
            assert await say_hello(client, None) == HelloOutcome.BEACON
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                  and "seekchat" in r.getMessage()]  # fmt: skip
    assert str(BEACON) in warning
    assert "bug in reply handling" in warning
