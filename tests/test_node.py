"""The node's public API on the in-memory network (virtual time, deterministic)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
import trio
import trio.testing

from beethoven.address import Address
from beethoven.config import Config
from beethoven.core import NodeStatus, NodeUpdate
from beethoven.errors import ConfigError
from beethoven.node import NodeMode, open_node
from beethoven.roles import Role, RoleContext
from beethoven.testing import Cluster, open_cluster
from beethoven.transport.memory import MemoryNetwork
from beethoven.wire.codec import encode_compound
from beethoven.wire.messages import StoreDelta
from beethoven.wire.packet import PacketCodec


class Hosting:
    """Role functions that record where they run right now."""

    def __init__(self) -> None:
        self.running: dict[str, set[str]] = defaultdict(set)
        self.started: list[tuple[str, str, float]] = []
        self.epochs: list[tuple[str, str, int]] = []

    def role(self, name: str, count: int) -> Role:
        async def run(ctx: RoleContext) -> None:
            self.running[ctx.role].add(ctx.node)
            self.started.append((ctx.role, ctx.node, trio.current_time()))
            self.epochs.append((ctx.role, ctx.node, ctx.epoch))
            try:
                await trio.sleep_forever()
            finally:
                self.running[ctx.role].discard(ctx.node)

        return Role(name, count, run)


def holders_agree(cluster: Cluster, hosting: Hosting, role: str, count: int) -> bool:
    running = hosting.running[role]
    return len(running) == count and all(
        set(node.whois_hosting(role)) == running for node in cluster.nodes()
    )


async def test_five_nodes_find_each_other_and_host_each_role_exactly_count_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hosting = Hosting()
    roles = [hosting.role("solo", 1), hosting.role("pair", 2)]
    with trio.fail_after(120):
        async with open_cluster(5, roles=roles, discovery="sweep", preset="local") as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(cluster.converged)
            await cluster.wait_for(lambda: holders_agree(cluster, hosting, "solo", 1))
            await cluster.wait_for(lambda: holders_agree(cluster, hosting, "pair", 2))
            for node in cluster.nodes():
                assert node.get_node_status() == NodeMode.CLUSTERED
                assert node.is_ready()
                infos = {info.role: info for info in node.get_roles()}
                assert (infos["solo"].count, infos["solo"].assigned) == (1, 1)
                assert (infos["pair"].count, infos["pair"].assigned) == (2, 2)
            await trio.sleep(30)  # and it stays that way: no duplicate ever appears
            assert len(hosting.running["solo"]) == 1
            assert len(hosting.running["pair"]) == 2
            assert len(hosting.started) == 3


async def test_a_crashed_holders_role_runs_elsewhere_within_detection_plus_one_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hosting = Hosting()
    with trio.fail_after(300):
        async with open_cluster(5, roles=[hosting.role("solo", 1)]) as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(lambda: holders_agree(cluster, hosting, "solo", 1))
            (holder,) = hosting.running["solo"]
            await cluster.crash(holder)
            crashed_at = trio.current_time()
            hosting.running["solo"].discard(holder)  # its task died with the process
            observer = cluster.nodes()[0]
            detected: list[float] = []
            observer.add_alert_callback(
                lambda u: (
                    detected.append(trio.current_time())
                    if u == NodeUpdate(holder, NodeStatus.OFFLINE)
                    else None
                )
            )
            await cluster.wait_for(lambda: len(hosting.running["solo"]) == 1)
            moved_at = trio.current_time()
            await cluster.wait_for(lambda: bool(detected))
            assert moved_at - crashed_at <= (detected[0] - crashed_at) + 1.0
            (new_holder,) = hosting.running["solo"]
            assert new_holder != holder
            epochs = [e for role, node, e in hosting.epochs if role == "solo"]
            assert epochs == sorted(epochs)  # fencing: every new holding has a higher epoch
            assert len(set(epochs)) == len(epochs)
            # the crashed node comes back: a new life, no double hosting
            await cluster.start(holder)
            await cluster.wait_for(cluster.converged)
            await trio.sleep(20)
            assert hosting.running["solo"] == {new_holder}
            assert all(n.whois_hosting("solo") == [new_holder] for n in cluster.nodes())


async def test_allocate_follows_signals_and_never_returns_an_offline_node(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(300):
        async with open_cluster(3) as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(cluster.converged)
            for node in cluster.nodes():
                node.signal("jobs", 10.0, "count").set(5)
            cluster.node("n1").signal("jobs", 10.0, "count").set(0)  # n1 is the least busy
            await cluster.wait_for(lambda: all(n.allocate() == "n1" for n in cluster.nodes()))
            await cluster.crash("n1")
            await cluster.wait_for(
                lambda: "n1" not in cluster.node("n0").get_active_cluster_nodes()
            )
            for _ in range(50):
                assert cluster.node("n0").allocate() in {"n0", "n2"}
                await trio.sleep(0.1)
            cluster.node("n2").signal("jobs").set(1)
            await cluster.wait_for(lambda: cluster.node("n0").allocate() == "n2")


async def test_alert_me_sees_offline_then_online(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(300):
        async with open_cluster(3) as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(cluster.converged)
            seen: list[NodeUpdate] = []
            async with cluster.node("n0").alert_me() as updates:
                await cluster.crash("n2")
                async for update in updates:
                    seen.append(update)
                    if update == NodeUpdate("n2", NodeStatus.OFFLINE):
                        break
                await cluster.start("n2")
                async for update in updates:
                    seen.append(update)
                    if update == NodeUpdate("n2", NodeStatus.ONLINE):
                        break
            assert seen[-2:] == [
                NodeUpdate("n2", NodeStatus.OFFLINE),
                NodeUpdate("n2", NodeStatus.ONLINE),
            ]
            record = {r.node: r for r in cluster.node("n0").get_detailed_cluster_nodes()}["n2"]
            assert record.status is NodeStatus.ONLINE
            assert record.last_change.tzinfo is not None


async def test_standalone_becomes_clustered_when_a_second_node_appears(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=3)
    base = Config(cluster_net=("10.0.0.0/29",), resweep_interval=5.0, preset="local")
    with trio.fail_after(300):
        async with open_node(base, name="a", bind="10.0.0.1", network=net) as a:
            assert await a.until_ready(timeout=30)
            assert a.get_node_status() == NodeMode.STANDALONE
            assert a.get_active_cluster_nodes() == ["a"]
            async with open_node(base, name="b", bind="10.0.0.2", network=net) as b:
                await b.wait_ready()
                while a.get_node_status() != NodeMode.CLUSTERED:  # noqa: ASYNC110
                    await trio.sleep(0.1)
                assert b.get_node_status() == NodeMode.CLUSTERED
                assert a.get_cluster_nodes() == ["a", "b"]


async def test_until_ready_times_out_without_spinning(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=4)
    config = Config(name="slow", bind="10.0.0.1", cluster_net=("10.0.0.0/24",), sweeps=3)
    async with open_node(config, network=net) as node:
        assert not node.is_ready()
        assert await node.until_ready(timeout=0.001) is False
        assert await node.until_ready(timeout=60) is True


async def test_cluster_kv_replicates_everywhere(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(120):
        async with open_cluster(4) as cluster:
            await cluster.wait_ready()
            cluster.node("n3").kv.put("config", {"batch": 10})
            await cluster.wait_for(
                lambda: all(n.kv.get("config") == {"batch": 10} for n in cluster.nodes())
            )
            cluster.node("n1").kv.delete("config")
            await cluster.wait_for(lambda: all("config" not in n.kv for n in cluster.nodes()))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"colour": "blue"}, "unknown configuration key"),
        ({"roles": [{"name": "r", "count": 0, "run": "beethoven.roles:Role"}]}, "count"),
        ({"roles": [{"name": "r", "run": "no.such.module:f"}]}, "cannot import"),
        ({"cluster_net": ["10.0.0.0/40"]}, "cluster_net"),
        ({"cluster_net": ["10.0.0.0/8"]}, "max_sweep_hosts"),
        ({"store": "nosuch://x"}, "store"),
        ({"keys": ["not-a-key"]}, "keys"),
        ({"membership": {"probe_wobble": 1.0}}, "membership.probe_wobble"),
    ],
)
async def test_bad_config_is_one_clear_error_and_nothing_starts(
    overrides: dict[str, Any], message: str
) -> None:
    net = MemoryNetwork(seed=5)
    with pytest.raises(ConfigError, match=message):
        async with open_node(network=net, bind="10.0.0.1", **overrides):
            pytest.fail("the node must not start")
    assert net.attached() == []


async def test_a_users_exception_comes_out_unwrapped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=6)
    with pytest.raises(KeyError, match="mine"):
        async with open_node(Config(name="x", bind="10.0.0.1"), network=net):
            raise KeyError("mine")
    assert net.attached() == []


async def test_garbage_from_the_network_is_counted_and_harms_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Bad datagrams, a forged store delta and a garbage stream reach a running node."""
    with trio.fail_after(120):
        async with open_cluster(2) as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(cluster.converged)
            target = cluster.node("n1")
            before = target.stats()
            async with cluster.network.attach(Address("10.9.9.9", 1)) as rogue:
                for junk in (b"", b"\x00" * 7, b"garbage" * 50, bytes(range(256))):
                    await rogue.send_datagram(junk, target.address)
                # a well-formed packet carrying a store delta that is not a delta
                packet = PacketCodec(None).seal(encode_compound([StoreDelta(b"\xc1junk")]))
                await rogue.send_datagram(packet, target.address)
                stream = await rogue.connect(target.address, timeout=5)
                await stream.send_all(b"\xff" * 64)
                await stream.aclose()
                await trio.sleep(2)
            after = target.stats()
            assert after.wire.dropped >= before.wire.dropped + 4
            assert after.store_deltas_bad == before.store_deltas_bad + 1
            assert after.runner.streams_bad_first_frame >= before.runner.streams_bad_first_frame + 1
            assert after.runner.core_errors == 0
            # the node is unharmed and its state uncorrupted
            cluster.node("n0").kv.put("still", "works")
            await cluster.wait_for(lambda: target.kv.get("still") == "works")
            assert target.stats().store.owners == 2
