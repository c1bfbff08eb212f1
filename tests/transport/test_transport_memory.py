"""The memory network: latency, loss, one-way loss, duplication, reordering,
partitions, crashes, bounded queues, determinism and scale — all in virtual time.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing

from beethoven.address import Address
from beethoven.errors import ConfigError, TransportError
from beethoven.transport.memory import MemoryNetwork, MemoryStream, MemoryTransport

LIMIT = 60.0  # virtual seconds; autojump makes them cost nothing

A = Address("10.0.0.1", 7000)
B = Address("10.0.0.2", 7000)
C = Address("10.0.0.3", 7000)


@asynccontextmanager
async def attached(network: MemoryNetwork, *addrs: Address) -> AsyncIterator[list[MemoryTransport]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(network.attach(addr)) for addr in addrs]


async def drain(transport: MemoryTransport, quiet: float = 5.0) -> list[bytes]:
    """Everything that arrives until nothing has arrived for *quiet* seconds."""
    got: list[bytes] = []
    while True:
        with trio.move_on_after(quiet):
            got.append((await transport.receive_datagram())[0])
            continue
        return got


async def send_numbered(sender: MemoryTransport, to: Address, count: int) -> None:
    for i in range(count):
        await sender.send_datagram(i.to_bytes(4, "big"), to)


# ---- latency -----------------------------------------------------------------------


async def test_latency_is_honoured_in_virtual_time(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork(default_latency=0.25)
    with trio.fail_after(LIMIT):
        async with attached(network, A, B) as (a, b):
            start = trio.current_time()
            await a.send_datagram(b"x", B)
            await b.receive_datagram()
            assert trio.current_time() - start == pytest.approx(0.25)

            network.set_link(A, B, latency=1.5)
            start = trio.current_time()
            await a.send_datagram(b"y", B)
            await b.receive_datagram()
            assert trio.current_time() - start == pytest.approx(1.5)
            # The reverse direction keeps the default.
            start = trio.current_time()
            await b.send_datagram(b"z", A)
            await a.receive_datagram()
            assert trio.current_time() - start == pytest.approx(0.25)


async def test_jitter_stays_within_its_bound(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork(seed=3, default_latency=0.1, default_jitter=0.05)
    with trio.fail_after(LIMIT):
        async with attached(network, A, B) as (a, b):
            delays = []
            for _ in range(50):
                start = trio.current_time()
                await a.send_datagram(b"j", B)
                await b.receive_datagram()
                delays.append(trio.current_time() - start)
            assert all(0.1 <= d < 0.15 + 1e-9 for d in delays)
            assert max(delays) - min(delays) > 0.02  # jitter is actually applied


async def test_stream_bytes_arrive_after_the_link_latency(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork(default_latency=0.2)
    with trio.fail_after(LIMIT):
        async with attached(network, A, B) as (a, b), trio.open_nursery() as nursery:

            async def reply(stream: trio.abc.Stream, peer: Address) -> None:
                assert peer == A
                await stream.send_all(b"hi " + await stream.receive_some())

            await nursery.start(b.serve_streams, reply)
            start = trio.current_time()
            stream = await a.connect(B, timeout=5)
            assert trio.current_time() - start == pytest.approx(0.4)  # one round trip
            async with stream:
                await stream.send_all(b"there")
                assert await stream.receive_some() == b"hi there"
            assert trio.current_time() - start == pytest.approx(0.8)
            nursery.cancel_scope.cancel()


# ---- loss, duplication, reordering ---------------------------------------------------


async def test_loss_rate_is_statistically_within_bounds(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork(seed=11, receive_queue=5000)
    network.set_default(loss=0.3)
    with trio.fail_after(LIMIT):
        async with attached(network, A, B) as (a, b):
            await send_numbered(a, B, 2000)
            received = await drain(b)
    rate = 1 - len(received) / 2000
    # Binomial(2000, 0.3): sd ≈ 1 %, so ±5 % is more than 4 sd.
    assert 0.25 <= rate <= 0.35
    stats = network.stats()
    assert stats.dropped_loss + stats.datagrams_delivered == stats.datagrams_sent == 2000


async def test_one_way_loss_drops_only_one_direction(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork(seed=2)
    network.set_link(A, B, loss=1.0)
    with trio.fail_after(LIMIT):
        async with attached(network, A, B) as (a, b), trio.open_nursery() as nursery:
            await send_numbered(a, B, 20)
            await send_numbered(b, A, 20)
            assert await drain(b) == []
            assert len(await drain(a)) == 20
            # TCP needs both directions, so streams across total one-way loss time out.
            await nursery.start(a.serve_streams, _echo)
            start = trio.current_time()
            with pytest.raises(TransportError, match="timed out"):
                await b.connect(A, timeout=3)
            assert trio.current_time() - start == pytest.approx(3)
            nursery.cancel_scope.cancel()


async def test_duplication_delivers_copies(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork(seed=5, receive_queue=5000)
    network.set_link(A, B, duplicate=1.0)
    network.set_link(B, A, duplicate=0.5)
    with trio.fail_after(LIMIT):
        async with attached(network, A, B) as (a, b):
            await send_numbered(a, B, 100)
            got = await drain(b)
            assert sorted(got) == sorted([i.to_bytes(4, "big") for i in range(100)] * 2)
            await send_numbered(b, A, 1000)
            extra = len(await drain(a)) - 1000
            assert 430 <= extra <= 570
    assert network.stats().duplicated == 100 + extra


async def test_reordering_lets_later_datagrams_overtake(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork(seed=9, default_latency=0.01, receive_queue=5000)
    network.set_link(A, B, reorder=0.3)
    with trio.fail_after(LIMIT):
        async with attached(network, A, B) as (a, b):
            # Paced sends: each datagram is in flight while the next ones go out.
            for i in range(300):
                await a.send_datagram(i.to_bytes(4, "big"), B)
                await trio.sleep(0.002)
            got = [int.from_bytes(d, "big") for d in await drain(b)]
    assert sorted(got) == list(range(300))  # nothing lost, nothing duplicated
    assert got != sorted(got)
    inversions = sum(1 for x, y in itertools.pairwise(got) if x > y)
    assert inversions > 30
    assert 60 <= network.stats().reordered <= 120


async def test_without_reorder_or_jitter_order_is_kept(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork(seed=9, receive_queue=5000)
    with trio.fail_after(LIMIT):
        async with attached(network, A, B) as (a, b):
            await send_numbered(a, B, 500)
            got = [int.from_bytes(d, "big") for d in await drain(b)]
    assert got == list(range(500))


# ---- partitions and crashes ---------------------------------------------------------


async def test_partitions_are_set_and_healed_at_run_time(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork(seed=4)
    with trio.fail_after(LIMIT):
        async with attached(network, A, B, C) as (a, b, c):
            network.partition("split", [A], [B, C])
            network.partition("bc", [B], [C])
            await a.send_datagram(b"1", B)
            await b.send_datagram(b"2", A)
            await b.send_datagram(b"3", C)
            assert await drain(a) == await drain(b) == await drain(c) == []

            network.heal("split")  # "bc" still holds
            await a.send_datagram(b"4", B)
            await b.send_datagram(b"5", C)
            await c.send_datagram(b"6", A)
            assert await drain(b) == [b"4"]
            assert await drain(c) == []
            assert await drain(a) == [b"6"]

            network.heal("bc")
            await b.send_datagram(b"7", C)
            assert await drain(c) == [b"7"]
            with pytest.raises(KeyError):
                network.heal("bc")
    assert network.stats().dropped_partition == 4


async def test_stream_stalls_across_a_partition_and_resumes_on_heal(
    autojump_clock: trio.abc.Clock,
) -> None:
    network = MemoryNetwork()
    with trio.fail_after(LIMIT):
        async with attached(network, A, B) as (a, b), trio.open_nursery() as nursery:
            await nursery.start(b.serve_streams, _echo)
            async with await a.connect(B, timeout=5) as stream:
                network.partition("p", [A], [B])
                await stream.send_all(b"held")
                with trio.move_on_after(5) as waited:
                    await stream.receive_some()
                assert waited.cancelled_caught
                network.heal("p")
                assert await stream.receive_some() == b"held"
            # While partitioned, new connects time out rather than being refused.
            network.partition("p", [A], [B])
            with pytest.raises(TransportError, match="timed out"):
                await a.connect(B, timeout=2)
            nursery.cancel_scope.cancel()


async def test_crash_silences_a_node_until_recovered(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork(seed=6)
    with trio.fail_after(LIMIT):
        async with attached(network, A, B) as (a, b), trio.open_nursery() as nursery:
            await nursery.start(b.serve_streams, _echo)
            await a.send_datagram(b"in flight", B)
            network.crash(B)
            assert network.is_crashed(B)
            await a.send_datagram(b"to the dead", B)
            await b.send_datagram(b"from the dead", A)
            assert await drain(b) == []  # even the datagram already in flight is gone
            assert await drain(a) == []
            start = trio.current_time()
            with pytest.raises(TransportError, match="timed out"):
                await a.connect(B, timeout=4)
            assert trio.current_time() - start == pytest.approx(4)

            network.recover(B)
            await a.send_datagram(b"back", B)
            assert await drain(b) == [b"back"]
            async with await a.connect(B, timeout=5) as stream:
                await stream.send_all(b"ok")
                assert await stream.receive_some() == b"ok"
            nursery.cancel_scope.cancel()
    assert network.stats().dropped_crashed == 3


async def test_connect_is_refused_without_a_listener(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork(default_latency=0.05)
    with trio.fail_after(LIMIT):
        async with attached(network, A, B) as (a, _):
            for target in (B, C):  # attached but not serving; nothing attached
                start = trio.current_time()
                with pytest.raises(TransportError, match="refused"):
                    await a.connect(target, timeout=10)
                assert trio.current_time() - start == pytest.approx(0.1)
    assert network.stats().connects_refused == 2


# ---- queues, attach, configuration ---------------------------------------------------


async def test_full_receive_queue_drops_and_counts(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork(receive_queue=4)
    with trio.fail_after(LIMIT):
        async with attached(network, A, B) as (a, b):
            await send_numbered(a, B, 10)
            await trio.sleep(1)
            assert len(await drain(b)) == 4
            assert b.stats().receive_dropped == 6
    assert network.stats().dropped_queue_full == 6


async def test_attaching_an_address_twice_is_refused(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork()
    async with network.attach(A):
        with pytest.raises(TransportError, match="already attached"):
            async with network.attach(A):
                pass  # pragma: no cover
    async with network.attach(A):  # free again once detached
        assert network.attached() == [A]


async def test_body_exception_comes_out_unwrapped(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork()
    with pytest.raises(LookupError, match="mine"):
        async with network.attach(A):
            raise LookupError("mine")


def test_bad_link_settings_are_config_errors() -> None:
    network = MemoryNetwork()
    with pytest.raises(ConfigError):
        network.set_link(A, B, loss=1.5)
    with pytest.raises(ConfigError):
        network.set_default(latency=-1)
    assert network.link(A, B).loss == 0.0  # nothing changed on error


def test_link_overrides_follow_default_for_other_fields() -> None:
    network = MemoryNetwork(default_latency=0.01)
    network.set_link(A, B, loss=0.2)
    network.set_default(latency=0.5)
    assert network.link(A, B).latency == 0.5
    assert network.link(A, B).loss == 0.2
    network.clear_link(A, B)
    assert network.link(A, B).loss == 0.0


# ---- streams obey trio's stream contract ---------------------------------------------


async def test_memory_streams_pass_trios_stream_checks(autojump_clock: trio.abc.Clock) -> None:
    for latency in (0.0, 0.01):
        network = MemoryNetwork(default_latency=latency, stream_buffer=1024)

        async def maker(network: MemoryNetwork = network) -> tuple[MemoryStream, MemoryStream]:
            return network._stream_pair(A, B)

        async def clogged(network: MemoryNetwork = network) -> tuple[MemoryStream, MemoryStream]:
            # Both directions full: the suite also runs the pair flipped.
            s, r = network._stream_pair(A, B)
            await s.send_all(b"x" * network.stream_buffer)
            await r.send_all(b"x" * network.stream_buffer)
            return s, r

        with trio.fail_after(LIMIT):
            await trio.testing.check_half_closeable_stream(maker, clogged)


# ---- determinism and scale -----------------------------------------------------------


async def _trace_scenario(seed: int) -> dict[Address, list[tuple[float, Address, bytes]]]:
    """Ten nodes gossiping over a lossy, jittery, duplicating, reordering network."""
    network = MemoryNetwork(seed=seed, default_latency=0.01, default_jitter=0.02)
    network.set_default(loss=0.1, duplicate=0.1, reorder=0.1)
    addrs = [Address(f"10.1.0.{i}", 7000) for i in range(1, 11)]
    trace: dict[Address, list[tuple[float, Address, bytes]]] = {addr: [] for addr in addrs}
    start = trio.current_time()

    async def talk(me: MemoryTransport, index: int) -> None:
        pick = random.Random(index)  # the senders' own choices are fixed too
        for n in range(50):
            await me.send_datagram(f"{index}:{n}".encode(), pick.choice(addrs))
            await trio.sleep(pick.random() * 0.01)

    async def listen(me: MemoryTransport) -> None:
        while True:
            data, source = await me.receive_datagram()
            trace[me.local_address].append((trio.current_time() - start, source, data))

    async with attached(network, *addrs) as transports, trio.open_nursery() as nursery:
        for t in transports:
            nursery.start_soon(listen, t)
        async with trio.open_nursery() as senders:
            for i, t in enumerate(transports):
                senders.start_soon(talk, t, i)
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    return trace


def _run_trace(seed: int) -> dict[Address, list[tuple[float, Address, bytes]]]:
    return trio.run(_trace_scenario, seed, clock=trio.testing.MockClock(autojump_threshold=0))


def test_same_seed_gives_an_identical_delivery_trace() -> None:
    first = _run_trace(7)
    assert sum(len(v) for v in first.values()) > 300
    assert _run_trace(7) == first
    assert _run_trace(8) != first


async def test_a_thousand_transports_exchange_messages_quickly(
    autojump_clock: trio.abc.Clock,
) -> None:
    network = MemoryNetwork(seed=1, default_latency=0.002, default_jitter=0.003)
    addrs = [Address(f"10.2.{i // 250}.{i % 250 + 1}", 7000) for i in range(1000)]
    received = [0] * len(addrs)
    wall = time.perf_counter()

    async def node(index: int, me: MemoryTransport) -> None:
        for k in range(1, 6):
            await me.send_datagram(b"hello %d" % index, addrs[(index + k * 37) % len(addrs)])
        with trio.move_on_after(1):
            while True:
                await me.receive_datagram()
                received[index] += 1

    with trio.fail_after(LIMIT):
        async with attached(network, *addrs) as transports, trio.open_nursery() as nursery:
            for i, t in enumerate(transports):
                nursery.start_soon(node, i, t)
    elapsed = time.perf_counter() - wall
    assert sum(received) == 5000
    assert all(count == 5 for count in received)
    assert elapsed < 5.0, f"1 000 transports took {elapsed:.2f}s of wall time"


async def _echo(stream: trio.abc.Stream, peer: Address) -> None:
    while data := await stream.receive_some():
        await stream.send_all(data)


async def test_receive_after_detach_raises_closed_resource_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    network = MemoryNetwork()
    async with network.attach(A) as a:
        pass
    with trio.fail_after(LIMIT), pytest.raises(trio.ClosedResourceError):
        await a.receive_datagram()
