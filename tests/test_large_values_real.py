"""Large kv values on real UDP/TCP sockets on 127.0.0.x, where the user meets them.

A 70 000-byte ``kv.put`` on one node of three used to make every node exit: the
value does not fit a datagram, so it travels by store sync, whose chunk cutting
raised ``IndexError`` and took the node's nursery down. Now every value up to
``max_value`` reaches every node, and a larger one is refused at ``put``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from beethoven.address import Address
from beethoven.config import FRAME_OVERHEAD, Config
from beethoven.errors import ConfigError, StoreError
from beethoven.node import Node, open_node
from beethoven.testing import open_cluster
from beethoven.transport.udp_tcp import open_udp_tcp_transport
from beethoven.wire.security import generate_key, key_to_string

pytestmark = pytest.mark.timeout(180)

BASE = 160  # nodes bind 127.0.0.160 and up


async def free_port(host: str) -> int:
    async with open_udp_tcp_transport(Address(host, 0)) as probe:
        return probe.local_address.port


async def poll(condition: Callable[[], bool]) -> None:
    """Wait for a cluster-state predicate; callers bound it with fail_after."""
    while not condition():  # noqa: ASYNC110 - a predicate over live state
        await trio.sleep(0.05)


class Nodes:
    """Nodes run by ``open_node`` on real sockets; ``exited`` lists those whose block ended."""

    def __init__(self, nursery: trio.Nursery, port: int, key: str) -> None:
        self.nursery = nursery
        self.port = port
        self.key = key
        self.nodes: dict[str, Node] = {}
        self.exited: list[str] = []
        self.stopping = False

    def config(self, i: int) -> Config:
        return Config(
            name=f"big{i}",
            bind=f"127.0.0.{BASE + i}",
            port=self.port,
            cluster="large-values",
            cluster_net=(f"127.0.0.{BASE}/28",),
            seeds=() if i == 0 else (f"127.0.0.{BASE}:{self.port}",),
            keys=(self.key,),
            preset="local",
            hwmon_interval=1.0,
        )

    async def start(self, i: int) -> Node:
        config = self.config(i)

        async def run(*, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                async with open_node(config) as node:
                    self.nodes[node.name] = node
                    task_status.started(node)
                    await trio.sleep_forever()
            finally:
                self.exited.append(config.node_name)
                if not self.stopping:
                    # However it ended (an error, or a bare Cancelled), a node that
                    # stops by itself fails the test instead of ending it quietly.
                    raise AssertionError(f"{config.node_name}: the open_node block ended by itself")

        node: Node = await self.nursery.start(run)
        return node

    def clustered(self) -> bool:
        names = sorted(self.nodes)
        return all(n.get_active_cluster_nodes() == names for n in self.nodes.values())


@asynccontextmanager
async def real_nodes(n: int) -> AsyncIterator[Nodes]:
    port = await free_port(f"127.0.0.{BASE}")
    async with trio.open_nursery() as nursery:
        nodes = Nodes(nursery, port, key_to_string(generate_key()))
        for i in range(n):
            await nodes.start(i)
        yield nodes
        nodes.stopping = True
        nursery.cancel_scope.cancel()


SIZES = {"1k": 1024, "60k": 60 * 1024, "70k": 70_000, "1m": 1_048_576 - 5}


async def test_oversized_value_does_not_kill_cluster_and_reaches_every_node() -> None:
    """1 KiB, 60 KiB, 70 KiB and 1 MiB (encoded) values written on one node reach all."""
    with trio.fail_after(120):
        async with real_nodes(3) as cluster:
            await poll(cluster.clustered)
            writer = cluster.nodes["big0"]
            values = {key: bytes([i + 1]) * size for i, (key, size) in enumerate(SIZES.items())}
            for key, value in values.items():
                writer.kv.put(key, value)

            def everywhere() -> bool:
                return all(
                    n.kv.get(key) == value
                    for n in cluster.nodes.values()
                    for key, value in values.items()
                )

            await poll(everywhere)
            # Nobody left, everyone still sees everyone, and nothing was contained.
            assert cluster.exited == []
            assert cluster.clustered()
            for node in cluster.nodes.values():
                assert node.stats().runner.exchange_errors == 0
            # A later small write still replicates (the nodes are healthy, not just up).
            cluster.nodes["big2"].kv.put("after", "ok")
            await poll(lambda: all(n.kv.get("after") == "ok" for n in cluster.nodes.values()))


async def test_value_above_max_value_is_refused_at_put_on_a_real_node() -> None:
    with trio.fail_after(60):
        async with real_nodes(1) as cluster:
            node = cluster.nodes["big0"]
            node.kv.put("edge", b"x" * (1_048_576 - 5))  # exactly max_value encoded
            with pytest.raises(StoreError, match=r"1048576 bytes.*max_value"):
                node.kv.put("over", b"x" * (1_048_576 - 4))
            assert "over" not in node.kv
            assert cluster.exited == []


async def test_max_value_is_configurable_per_node() -> None:
    with trio.fail_after(60):
        port = await free_port(f"127.0.0.{BASE}")
        config = Config(bind=f"127.0.0.{BASE}", port=port, name="small", max_value=1000)
        async with open_node(config, cluster_net=(f"127.0.0.{BASE}/30",)) as node:
            node.kv.put("fits", b"x" * 997)  # + a 3-byte bin16 header = 1000
            with pytest.raises(StoreError, match="limit of 1000 bytes"):
                node.kv.put("over", b"x" * 998)


def test_max_frame_too_small_for_max_value_is_a_config_error() -> None:
    Config(max_value=2**20, max_frame=2**20 + FRAME_OVERHEAD)
    with pytest.raises(ConfigError, match=r"max_frame.*max_value"):
        Config(max_value=2**20, max_frame=2**20 + FRAME_OVERHEAD - 1)
    with pytest.raises(ConfigError, match="max_value"):
        Config(max_value=0)


async def test_value_too_large_for_a_datagram_reaches_every_node_without_anti_entropy(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the memory network: the push (a sync with 3 members) and its relays alone.

    With 6 nodes the writer pushes to 3 of its 5 peers; the other 2 get the value
    only because news a sync brings is relayed, as a datagram's is.
    """
    with trio.fail_after(120):
        async with open_cluster(6, preset="local") as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(cluster.converged)
            monkeypatch.setattr("beethoven.node.STORE_SYNC_INTERVAL", 1e6)
            await trio.sleep(10)  # let the anti-entropy loops fall asleep for good
            value = b"v" * 70_000
            cluster.node("n0").kv.put("big", value)
            with trio.fail_after(5):
                await cluster.wait_for(
                    lambda: all(n.kv.get("big") == value for n in cluster.nodes())
                )


def test_one_mib_value_reaches_every_node_process(tmp_path: Path) -> None:
    """Separate OS processes (``benchmarks/large_values.py``): 1 MiB from one of 3 to all."""
    out = tmp_path / "lv.json"
    cmd = [sys.executable, "-m", "benchmarks.large_values", "--nodes", "3", "--reps", "2"]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [*cmd, "--json", str(out)], cwd=root, capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["value_bytes"] == 1_048_576
    assert len(figures["runs"]) == 2
    assert all(run["exchange_errors"] == 0 for run in figures["runs"])
