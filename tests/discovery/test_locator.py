"""Locator behaviour on the memory network under MockClock, watched by a spy transport.

Every test runs in virtual time (``autojump_clock``) and is bounded by `trio.fail_after`.
The spy records every address the Locator connects to; the assertions that it never
leaves the configured networks nor contacts its own address run in every test through
the ``spy_check`` helper.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import NoReturn

import attrs
import pytest
import trio
import trio.testing

from beethoven.address import Address
from beethoven.config import Config
from beethoven.discovery.beacon import BeaconServer
from beethoven.discovery.locator import JoinFn, Locator, LocatorSettings, LocatorStatus
from beethoven.discovery.seekchat import ChannelFactory
from beethoven.errors import ConfigError, TransportError
from beethoven.transport.base import StreamHandler, TransportStats
from beethoven.transport.memory import MemoryNetwork, MemoryTransport
from beethoven.wire.messages import BeaconMember

PORT = 33000
LIMIT = 120.0  # virtual seconds


class SpyTransport:
    """Wraps a memory transport; records connects; makes *silent* hosts drop SYNs."""

    def __init__(self, inner: MemoryTransport, silent: set[str] | None = None) -> None:
        self.inner = inner
        self.silent = silent or set()
        self.connects: list[tuple[float, Address]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def local_address(self) -> Address:
        return self.inner.local_address

    async def send_datagram(self, data: bytes, to: Address) -> None:
        raise AssertionError("the Locator never sends datagrams")

    async def receive_datagram(self) -> tuple[bytes, Address]:
        raise AssertionError("the Locator never receives datagrams")

    async def connect(self, to: Address, *, timeout: float) -> trio.abc.Stream:  # noqa: ASYNC109
        self.connects.append((trio.current_time(), to))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if to.host in self.silent:
                await trio.sleep(timeout)
                raise TransportError(f"connect {to} timed out")
            return await self.inner.connect(to, timeout=timeout)
        finally:
            self.in_flight -= 1

    async def serve_streams(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        await self.inner.serve_streams(handler, task_status=task_status)

    def stats(self) -> TransportStats:
        return self.inner.stats()

    def contacted(self) -> list[Address]:
        return [addr for _, addr in self.connects]


def spy_check(spy: SpyTransport, locator: Locator) -> None:
    """The Locator contacted only allowed addresses, never its own."""
    own = spy.local_address
    for addr in spy.contacted():
        assert addr.host != own.host, f"contacted its own address {addr}"
        if locator.settings.seeds:
            assert addr in locator.settings.seed_addresses
        else:
            assert locator.plan.allows(addr.host), f"contacted {addr} outside cluster_net"


class JoinRecorder:
    """A join callable that records its targets and reports success."""

    def __init__(self, ok: bool = True) -> None:
        self.calls: list[tuple[Address, ...]] = []
        self.ok = ok
        self.members: set[str] = set()

    async def __call__(self, addrs: Sequence[Address]) -> bool:
        await trio.sleep(0.01)
        self.calls.append(tuple(addrs))
        return self.ok

    def known(self) -> set[str]:
        return self.members


@asynccontextmanager
async def beacons(
    net: MemoryNetwork,
    hosts: Sequence[str],
    factory: ChannelFactory | None,
    *,
    cluster: str = "c1",
    offer: Sequence[BeaconMember] = (),
) -> AsyncIterator[list[BeaconServer]]:
    servers: list[BeaconServer] = []
    async with AsyncExitStack() as stack:
        transports = [
            await stack.enter_async_context(net.attach(Address(host, PORT))) for host in hosts
        ]
        nursery = await stack.enter_async_context(trio.open_nursery())
        for transport in transports:
            server = BeaconServer(
                cluster=cluster,
                name=f"node-{transport.local_address.host}",
                addr=transport.local_address,
                members=lambda: list(offer),
                rng=random.Random(1),
                channel_factory=factory,
            )
            await nursery.start(server.run, transport)
            servers.append(server)
        yield servers
        nursery.cancel_scope.cancel()


def make_locator(
    spy: SpyTransport,
    settings: LocatorSettings,
    join: JoinRecorder,
    factory: ChannelFactory | None,
    *,
    seed: int = 7,
    name: str = "me",
) -> Locator:
    return Locator(
        settings,
        transport=spy,
        cluster="c1",
        name=name,
        join=join,
        members=join.known,
        rng=random.Random(seed),
        channel_factory=factory,
    )


async def test_sweep_contacts_only_configured_networks_never_itself(
    autojump_clock: trio.testing.MockClock, channel_factory: ChannelFactory | None
) -> None:
    net = MemoryNetwork(seed=1)
    outside = BeaconMember("evil", Address("192.0.2.7", PORT))
    me = Address("10.0.0.5", PORT)
    inside = BeaconMember("node-10.0.0.9", Address("10.0.0.9", PORT))
    settings = LocatorSettings(cluster_net=("10.0.0.0/28", "10.0.1.0/30"), port=PORT)
    with trio.fail_after(LIMIT):
        async with (
            beacons(
                net,
                ["10.0.0.9", "10.0.1.2", "10.0.2.1"],  # the last is outside cluster_net
                channel_factory,
                offer=[outside, inside, BeaconMember("me-alias", me)],
            ),
            net.attach(me) as inner,
        ):
            spy = SpyTransport(inner)
            join = JoinRecorder()
            locator = make_locator(spy, settings, join, channel_factory)
            result = await locator.sweep()
            assert {f.addr for f in result.found} == {
                Address("10.0.0.9", PORT),
                Address("10.0.1.2", PORT),
            }
            assert result.contacted == 13 + 2  # /28 minus own, plus /30
            assert len(spy.contacted()) == 15
            assert len(set(spy.contacted())) == 15
            spy_check(spy, locator)
            assert await locator.bootstrap() == LocatorStatus.CLUSTERED
            (targets,) = join.calls
            assert outside.addr not in targets
            assert me not in targets
            assert all(locator.plan.allows(a.host) for a in targets)
            spy_check(spy, locator)


async def test_sweep_concurrency_is_bounded_and_a_silent_net_is_quick(
    autojump_clock: trio.testing.MockClock, channel_factory: ChannelFactory | None
) -> None:
    net = MemoryNetwork(seed=2)
    silent = {f"10.1.0.{i}" for i in range(256)}
    settings = LocatorSettings(
        cluster_net="10.1.0.0/24", port=PORT, sweep_concurrency=16, connect_timeout=0.25
    )
    with trio.fail_after(LIMIT):
        async with net.attach(Address("10.1.0.1", PORT)) as inner:
            spy = SpyTransport(inner, silent)
            locator = make_locator(spy, settings, JoinRecorder(), channel_factory)
            result = await locator.sweep()
    assert result.contacted == 253
    assert spy.max_in_flight == 16
    assert result.duration == pytest.approx(math.ceil(253 / 16) * 0.25, abs=0.01)
    assert dict(result.outcomes) == {"no_answer": 253}
    spy_check(spy, locator)


async def test_default_concurrency_sweeps_a_silent_slash_24_within_target(
    autojump_clock: trio.testing.MockClock, channel_factory: ChannelFactory | None
) -> None:
    net = MemoryNetwork(seed=3)
    silent = {f"10.1.0.{i}" for i in range(256)}
    with trio.fail_after(LIMIT):
        async with net.attach(Address("10.1.0.1", PORT)) as inner:
            spy = SpyTransport(inner, silent)
            settings = LocatorSettings(cluster_net="10.1.0.0/24", port=PORT)
            locator = make_locator(spy, settings, JoinRecorder(), channel_factory)
            result = await locator.sweep()
    assert spy.max_in_flight == 64
    assert result.duration <= 1.5  # the original: ~64 s


async def test_three_sweeps_with_random_backoff_then_standalone_and_resweeps(
    autojump_clock: trio.testing.MockClock, channel_factory: ChannelFactory | None
) -> None:
    net = MemoryNetwork(seed=4)
    settings = LocatorSettings(
        cluster_net="10.2.0.0/29", port=PORT, resweep_interval=10.0, resweep_jitter=0.2
    )
    with trio.fail_after(LIMIT):
        async with net.attach(Address("10.2.0.1", PORT)) as inner:
            spy = SpyTransport(inner, silent={"10.2.0.3"})
            join = JoinRecorder()
            locator = make_locator(spy, settings, join, channel_factory)
            async with trio.open_nursery() as nursery:
                t0 = trio.current_time()
                status = await nursery.start(locator.run)
                assert status == LocatorStatus.STANDALONE
                assert locator.status == LocatorStatus.STANDALONE
                bootstrap = list(spy.connects)
                await trio.sleep(45)
                nursery.cancel_scope.cancel()
    assert len(bootstrap) == 3 * 5  # /29 has 6 hosts, minus our own
    starts = sorted({round(t - t0, 6) for t, _ in bootstrap})
    # Sweep k starts after sweep k-1 (bounded by the silent host's 0.25 s) plus a back-off.
    sweep_starts = [starts[0]]
    for t in starts[1:]:
        if t - sweep_starts[-1] > 0.2:
            sweep_starts.append(t)
    assert len(sweep_starts) == 3
    for before, after in itertools.pairwise(sweep_starts):
        gap = after - before - 0.25
        assert 0.15 - 1e-6 <= gap <= 0.30 + 1e-6
    assert join.calls == []
    # Standalone: it keeps re-sweeping every 10 s ± 20 %.
    later = [t - t0 for t, _ in spy.connects[15:]]
    assert 3 <= len(later) // 5 <= 5
    assert min(later) >= sweep_starts[-1] + 0.25 + 8.0
    spy_check(spy, locator)
    stats = locator.stats()
    assert stats.sweeps >= 6
    assert stats.no_answer == stats.contacted


async def test_same_seed_same_backoff(
    autojump_clock: trio.testing.MockClock, channel_factory: ChannelFactory | None
) -> None:
    async def trace(seed: int) -> list[float]:
        net = MemoryNetwork(seed=0)
        settings = LocatorSettings(cluster_net="10.2.0.0/30", port=PORT)
        async with net.attach(Address("10.2.0.1", PORT)) as inner:
            spy = SpyTransport(inner)
            locator = make_locator(spy, settings, JoinRecorder(), channel_factory, seed=seed)
            t0 = trio.current_time()
            await locator.bootstrap()
            return [round(t - t0, 9) for t, _ in spy.connects]

    with trio.fail_after(LIMIT):
        assert await trace(5) == await trace(5)
        assert await trace(5) != await trace(6)


async def test_join_failure_retries_next_sweep_then_standalone(
    autojump_clock: trio.testing.MockClock, channel_factory: ChannelFactory | None
) -> None:
    net = MemoryNetwork(seed=5)
    settings = LocatorSettings(cluster_net="10.3.0.0/29", port=PORT)
    with trio.fail_after(LIMIT):
        async with (
            beacons(net, ["10.3.0.2"], channel_factory),
            net.attach(Address("10.3.0.1", PORT)) as inner,
        ):
            spy = SpyTransport(inner)
            join = JoinRecorder(ok=False)
            locator = make_locator(spy, settings, join, channel_factory)
            assert await locator.bootstrap() == LocatorStatus.STANDALONE
    assert len(join.calls) == 3
    assert locator.stats().joins_failed == 3


async def test_clustered_node_joins_a_beacon_it_does_not_know_and_ignores_known_ones(
    autojump_clock: trio.testing.MockClock, channel_factory: ChannelFactory | None
) -> None:
    net = MemoryNetwork(seed=6)
    settings = LocatorSettings(cluster_net="10.4.0.0/29", port=PORT)
    with trio.fail_after(LIMIT):
        async with (
            beacons(net, ["10.4.0.2", "10.4.0.3"], channel_factory),
            net.attach(Address("10.4.0.1", PORT)) as inner,
        ):
            spy = SpyTransport(inner)
            join = JoinRecorder()
            join.members = {"node-10.4.0.2"}  # already clustered with .2
            locator = make_locator(spy, settings, join, channel_factory)
            assert await locator.resweep()
            assert join.calls == [(Address("10.4.0.3", PORT),)]
            assert locator.stats().merges == 1
            join.members.add("node-10.4.0.3")
            assert not await locator.resweep()  # everyone known: no join
            assert len(join.calls) == 1
            spy_check(spy, locator)


async def test_seeds_skip_the_sweep(
    autojump_clock: trio.testing.MockClock, channel_factory: ChannelFactory | None
) -> None:
    net = MemoryNetwork(seed=7)
    settings = LocatorSettings(
        cluster_net="10.5.0.0/24", port=PORT, seeds=("10.6.0.9", "10.5.0.1:33000")
    )
    with trio.fail_after(LIMIT):
        async with (
            beacons(net, ["10.6.0.9", "10.5.0.7"], channel_factory),
            net.attach(Address("10.5.0.1", PORT)) as inner,
        ):
            spy = SpyTransport(inner)
            join = JoinRecorder()
            locator = make_locator(spy, settings, join, channel_factory)
            assert await locator.bootstrap() == LocatorStatus.CLUSTERED
    assert spy.contacted() == [Address("10.6.0.9", PORT)]  # never itself, no sweep
    assert join.calls == [(Address("10.6.0.9", PORT),)]


async def test_a_beacon_of_another_cluster_is_not_joined(
    autojump_clock: trio.testing.MockClock, channel_factory: ChannelFactory | None
) -> None:
    net = MemoryNetwork(seed=8)
    settings = LocatorSettings(cluster_net="10.7.0.0/30", port=PORT, sweeps=1)
    with trio.fail_after(LIMIT):
        async with (
            beacons(net, ["10.7.0.2"], channel_factory, cluster="other") as servers,
            net.attach(Address("10.7.0.1", PORT)) as inner,
        ):
            join = JoinRecorder()
            locator = make_locator(SpyTransport(inner), settings, join, channel_factory)
            assert await locator.bootstrap() == LocatorStatus.STANDALONE
    assert join.calls == []
    assert locator.stats().refused == 1
    assert servers[0].stats().wrong_cluster == 1
    assert servers[0].stats().answered == 0


# --- many nodes: a tiny fake membership -------------------------------------------------


@attrs.define
class FakeNode:
    name: str
    addr: Address
    up: bool = False
    view: set[str] = attrs.field(factory=set)


class FakeMembership:
    """Symmetric push-pull over a shared registry; records every join edge."""

    def __init__(self, net: MemoryNetwork) -> None:
        self.net = net
        self.nodes: dict[Address, FakeNode] = {}
        self.edges: set[frozenset[str]] = set()
        self.split: tuple[set[Address], set[Address]] | None = None
        self.changed = trio.Event()

    async def wait_connected(self) -> None:
        while not self.connected():
            self.changed = trio.Event()
            await self.changed.wait()

    def separated(self, a: Address, b: Address) -> bool:
        if self.split is None:
            return False
        one, two = self.split
        return (a in one and b in two) or (a in two and b in one)

    def node(self, name: str, addr: Address) -> FakeNode:
        self.nodes[addr] = FakeNode(name, addr, view={name})
        return self.nodes[addr]

    def join_fn(self, me: FakeNode) -> JoinFn:
        async def join(addrs: Sequence[Address]) -> bool:
            ok = False
            for addr in addrs:
                await trio.sleep(0.002)  # a round trip
                other = self.nodes.get(addr)
                if other is None or not other.up or self.separated(me.addr, addr):
                    continue
                merged = me.view | other.view
                me.view = set(merged)
                other.view = set(merged)
                self.edges.add(frozenset({me.name, other.name}))
                self.changed.set()
                ok = True
            return ok

        return join

    def connected(self) -> bool:
        names = {n.name for n in self.nodes.values()}
        start = next(iter(names))
        seen = {start}
        frontier = [start]
        while frontier:
            cur = frontier.pop()
            for edge in self.edges:
                if cur in edge:
                    for other in edge - seen:
                        seen.add(other)
                        frontier.append(other)
        return seen == names


async def run_node(
    membership: FakeMembership,
    net: MemoryNetwork,
    node: FakeNode,
    settings: LocatorSettings,
    factory: ChannelFactory | None,
    seed: int,
    *,
    task_status: trio.TaskStatus[Locator] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with net.attach(node.addr) as transport, trio.open_nursery() as nursery:
        server = BeaconServer(
            cluster="c1",
            name=node.name,
            addr=node.addr,
            members=lambda: [BeaconMember(n, node.addr) for n in sorted(node.view)],
            channel_factory=factory,
        )
        await nursery.start(server.run, transport)
        node.up = True
        locator = Locator(
            settings,
            transport=transport,
            cluster="c1",
            name=node.name,
            join=membership.join_fn(node),
            members=lambda: node.view - {node.name},
            rng=random.Random(seed),
            channel_factory=factory,
        )
        nursery.start_soon(locator.run)
        task_status.started(locator)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("spread", "sweeps"),
    [(0.05, 3), (1.5, 1)],
    ids=["same-moment", "staggered-one-sweep"],
)
async def test_five_nodes_started_at_the_same_moment_end_as_one_cluster(
    autojump_clock: trio.testing.MockClock,
    channel_factory: ChannelFactory | None,
    seed: int,
    spread: float,
    sweeps: int,
) -> None:
    net = MemoryNetwork(seed=seed)
    membership = FakeMembership(net)
    rng = random.Random(seed)
    settings = LocatorSettings(
        cluster_net="10.8.0.0/29", port=PORT, resweep_interval=2.0, sweeps=sweeps
    )
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            t0 = trio.current_time()
            for i in range(5):
                node = membership.node(f"n{i}", Address(f"10.8.0.{i + 1}", PORT))
                nursery.start_soon(
                    _start_later,
                    rng.uniform(0, spread),
                    membership,
                    net,
                    node,
                    settings,
                    channel_factory,
                    seed * 10 + i,
                )
            await membership.wait_connected()
            # Bounded: at worst one standalone re-sweep (2 s + 25 %) after the last start.
            assert trio.current_time() - t0 <= spread + 1.0 + 2.5
            nursery.cancel_scope.cancel()


async def _start_later(
    delay: float,
    membership: FakeMembership,
    net: MemoryNetwork,
    node: FakeNode,
    settings: LocatorSettings,
    factory: ChannelFactory | None,
    seed: int,
) -> None:
    await trio.sleep(delay)
    await run_node(membership, net, node, settings, factory, seed)


async def test_healed_partition_merges_the_two_clusters(
    autojump_clock: trio.testing.MockClock, channel_factory: ChannelFactory | None
) -> None:
    net = MemoryNetwork(seed=11)
    membership = FakeMembership(net)
    settings = LocatorSettings(
        cluster_net="10.9.0.0/29", port=PORT, resweep_interval=2.0, clustered_resweep_factor=5
    )
    addrs = [Address(f"10.9.0.{i + 1}", PORT) for i in range(5)]
    net.partition("split", addrs[:2], addrs[2:])
    membership.split = (set(addrs[:2]), set(addrs[2:]))
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            locators = []
            for i, addr in enumerate(addrs):
                node = membership.node(f"n{i}", addr)
                locators.append(
                    await nursery.start(
                        run_node, membership, net, node, settings, channel_factory, 100 + i
                    )
                )
            await trio.sleep(5)
            assert not membership.connected()  # two clusters: {n0, n1} and {n2, n3, n4}
            assert all(loc.status == LocatorStatus.CLUSTERED for loc in locators)
            net.heal("split")
            membership.split = None
            t0 = trio.current_time()
            await membership.wait_connected()
            # Clustered re-sweeps are slow (10 s ± 25 %) but they do come.
            assert trio.current_time() - t0 <= 12.6
            await trio.sleep(0.1)  # let the joining Locator count its merge
            assert sum(loc.stats().merges for loc in locators) >= 1
            nursery.cancel_scope.cancel()


# --- settings ---------------------------------------------------------------------------


def test_settings_defaults_match_the_original() -> None:
    s = LocatorSettings()
    assert s.cluster_net == ("127.0.0.0/29",)
    assert s.port == 33000
    assert s.sweeps == 3
    assert s.connect_timeout == 0.25
    assert s.backoff == (0.15, 0.30)
    assert s.sweep_concurrency == 64
    assert s.max_sweep_hosts == 4096


def test_port_zero_needs_seeds() -> None:
    with pytest.raises(ConfigError, match="port"):
        LocatorSettings(port=0)
    assert LocatorSettings(port=0, seeds=("10.0.0.1:33000",)).seed_addresses == (
        Address("10.0.0.1", 33000),
    )


def test_settings_from_config() -> None:
    cfg = Config(cluster_net=("10.0.0.0/24",), port=34000, seeds=("10.0.0.9",), sweeps=2)
    s = LocatorSettings.from_config(cfg, reply_timeout=0.5)
    assert s.port == 34000
    assert s.seed_addresses == (Address("10.0.0.9", 34000),)
    assert s.sweeps == 2
    assert s.reply_timeout == 0.5
    assert s.resweep_interval == cfg.resweep_interval


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"cluster_net": "10.0.0.0/16"}, "max_sweep_hosts"),
        ({"cluster_net": "nope"}, "cluster_net"),
        ({"port": 0}, "port"),
        ({"sweeps": 0}, "sweeps"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"backoff": (0.3, 0.1)}, "backoff"),
        ({"sweep_concurrency": 0}, "sweep_concurrency"),
        ({"resweep_interval": -1.0}, "resweep_interval"),
        ({"resweep_jitter": 1.0}, "resweep_jitter"),
        ({"clustered_resweep_factor": 0.5}, "clustered_resweep_factor"),
        ({"seeds": ("not-an-ip:1",)}, "seeds"),
    ],
)
def test_settings_are_validated_naming_the_key(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        LocatorSettings(**kwargs)  # type: ignore[arg-type]
