"""The transport conformance suite, run against every backend.

`TransportConformance` is a base class: a backend (ours or a third party's) subclasses
it, implements `open_pair` and `unreachable`, and optionally overrides the `clock`
fixture (the memory backend runs in virtual time). Every test is bounded by
`trio.fail_after`.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from beethoven.address import Address
from beethoven.errors import TransportError
from beethoven.transport.base import Transport
from beethoven.transport.memory import MemoryNetwork
from beethoven.transport.udp_tcp import open_udp_tcp_transport

LIMIT = 10.0  # every test finishes within this many (real or virtual) seconds


async def echo(stream: trio.abc.Stream, peer: Address) -> None:
    while data := await stream.receive_some():
        await stream.send_all(data)


async def receive_until_closed(stream: trio.abc.Stream) -> bytes:
    """Read until EOF; a reset counts as closed too."""
    got = b""
    try:
        while data := await stream.receive_some():
            got += data
    except trio.BrokenResourceError:
        pass
    return got


class TransportConformance:
    """What every `Transport` must do. Subclass and implement the two hooks."""

    @pytest.fixture
    def clock(self) -> trio.abc.Clock | None:
        """The trio clock the tests run under (None: the real one)."""
        return None

    def open_pair(self, **options: Any) -> AbstractAsyncContextManager[tuple[Transport, Transport]]:
        """Two transports that can reach each other; *options* go to both openers."""
        raise NotImplementedError

    def unreachable(self) -> Address:
        """An address where nothing listens."""
        raise NotImplementedError

    async def test_datagram_exchange(self, clock: object) -> None:
        with trio.fail_after(LIMIT):
            async with self.open_pair() as (a, b):
                await a.send_datagram(b"ping", b.local_address)
                data, source = await b.receive_datagram()
                assert data == b"ping"
                assert source == a.local_address
                await b.send_datagram(b"ack", source)
                assert await a.receive_datagram() == (b"ack", b.local_address)
                assert a.stats().datagrams_sent == 1
                assert a.stats().bytes_sent == 4
                assert b.stats().datagrams_received == 1
                assert b.stats().bytes_received == 4

    async def test_stream_echo(self, clock: object) -> None:
        with trio.fail_after(LIMIT):
            async with self.open_pair() as (a, b), trio.open_nursery() as nursery:
                await nursery.start(b.serve_streams, echo)
                stream = await a.connect(b.local_address, timeout=5)
                payload = bytes(range(256)) * 400  # bigger than one read
                async with stream:
                    await stream.send_all(payload)
                    got = b""
                    while len(got) < len(payload):
                        got += await stream.receive_some()
                assert got == payload
                assert a.stats().streams_opened == 1
                assert b.stats().streams_accepted == 1
                nursery.cancel_scope.cancel()

    async def test_connect_to_nothing_raises_transport_error(self, clock: object) -> None:
        with trio.fail_after(LIMIT):
            async with self.open_pair() as (a, _):
                with pytest.raises(TransportError):
                    await a.connect(self.unreachable(), timeout=2)
                assert a.stats().connect_failures == 1

    async def test_send_to_unreachable_does_not_raise(self, clock: object) -> None:
        with trio.fail_after(LIMIT):
            async with self.open_pair() as (a, b):
                for _ in range(3):
                    await a.send_datagram(b"into the void", self.unreachable())
                # The transport still works afterwards, in both directions.
                await a.send_datagram(b"still here", b.local_address)
                assert (await b.receive_datagram())[0] == b"still here"
                await b.send_datagram(b"me too", a.local_address)
                assert (await a.receive_datagram())[0] == b"me too"

    async def test_oversize_datagram_is_counted_not_raised(self, clock: object) -> None:
        with trio.fail_after(LIMIT):
            async with self.open_pair() as (a, b):
                await a.send_datagram(b"x" * 70_000, b.local_address)
                assert a.stats().send_errors == 1

    async def test_inbound_stream_cap_refuses_and_counts_excess(self, clock: object) -> None:
        started_send, started_receive = trio.open_memory_channel[None](10)

        async def hold(stream: trio.abc.Stream, peer: Address) -> None:
            started_send.send_nowait(None)
            await trio.sleep_forever()

        with trio.fail_after(LIMIT):
            async with self.open_pair(max_inbound_streams=2) as (a, b), trio.open_nursery() as n:
                await n.start(b.serve_streams, hold)
                held = [await a.connect(b.local_address, timeout=5) for _ in range(2)]
                for _ in range(2):
                    await started_receive.receive()
                excess = await a.connect(b.local_address, timeout=5)
                # The server closes the excess connection at once: EOF (or a reset).
                assert await receive_until_closed(excess) == b""
                stats = b.stats()
                assert stats.streams_accepted == 2
                assert stats.streams_refused == 1
                for stream in [*held, excess]:
                    await stream.aclose()
                n.cancel_scope.cancel()

    async def test_silent_client_is_disconnected_after_idle_timeout(self, clock: object) -> None:
        with trio.fail_after(LIMIT):
            async with (
                self.open_pair(stream_idle_timeout=0.3) as (a, b),
                trio.open_nursery() as nursery,
            ):
                await nursery.start(b.serve_streams, echo)
                start = trio.current_time()
                stream = await a.connect(b.local_address, timeout=5)
                async with stream:
                    # Send nothing: the server must hang up on its own.
                    assert await receive_until_closed(stream) == b""
                assert trio.current_time() - start >= 0.3
                assert b.stats().streams_timed_out == 1
                nursery.cancel_scope.cancel()

    async def test_trickling_client_is_cut_at_max_lifetime(self, clock: object) -> None:
        with trio.fail_after(LIMIT):
            async with (
                self.open_pair(stream_idle_timeout=0.3, stream_max_lifetime=0.8) as (a, b),
                trio.open_nursery() as nursery,
            ):
                await nursery.start(b.serve_streams, echo)
                start = trio.current_time()
                stream = await a.connect(b.local_address, timeout=5)
                closed = trio.Event()

                async def trickle() -> None:
                    try:
                        while not closed.is_set():
                            await stream.send_all(b".")
                            await trio.sleep(0.1)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass

                async with trio.open_nursery() as inner:
                    inner.start_soon(trickle)
                    echoed = await receive_until_closed(stream)
                    closed.set()
                await stream.aclose()
                assert echoed.startswith(b"...")
                assert trio.current_time() - start >= 0.8
                assert b.stats().streams_timed_out == 1
                nursery.cancel_scope.cancel()


# ---- the backends ----------------------------------------------------------------


class TestUdpTcpConformance(TransportConformance):
    """The real transport on two loopback addresses sharing one port number."""

    @asynccontextmanager
    async def open_pair(self, **options: Any) -> AsyncIterator[tuple[Transport, Transport]]:
        for _ in range(10):
            async with open_udp_tcp_transport(Address("127.0.0.2", 0), **options) as a:
                port = a.local_address.port
                try:
                    opener = open_udp_tcp_transport(Address("127.0.0.3", port), **options)
                    b = await opener.__aenter__()
                except TransportError:
                    continue  # that port is taken on 127.0.0.3: try another
                try:
                    assert b.local_address.port == a.local_address.port
                    yield a, b
                finally:
                    await opener.__aexit__(None, None, None)
                return
        raise AssertionError("no port free on both 127.0.0.2 and 127.0.0.3")

    def unreachable(self) -> Address:
        # A port we just freed on a loopback address nothing else uses.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.4", 0))
            port = probe.getsockname()[1]
        return Address("127.0.0.4", port)


class TestMemoryConformance(TransportConformance):
    """The memory transport, in virtual time."""

    @pytest.fixture
    def clock(self) -> trio.abc.Clock | None:
        return trio.testing.MockClock(autojump_threshold=0)

    @asynccontextmanager
    async def open_pair(self, **options: Any) -> AsyncIterator[tuple[Transport, Transport]]:
        network = MemoryNetwork(seed=1)
        async with (
            network.attach(Address("10.0.0.1", 7000), **options) as a,
            network.attach(Address("10.0.0.2", 7000), **options) as b,
        ):
            yield a, b

    def unreachable(self) -> Address:
        return Address("10.0.0.99", 7000)
