"""Nodes on real UDP/TCP sockets on 127.0.0.x: in one process, and as separate processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import trio

from beethoven.address import Address
from beethoven.cli import query_agent
from beethoven.config import Config
from beethoven.core import NodeStatus, NodeUpdate
from beethoven.errors import BeethovenError
from beethoven.node import Node, NodeMode, open_node
from beethoven.roles import Role
from beethoven.testing import idle_role
from beethoven.transport.udp_tcp import open_udp_tcp_transport
from beethoven.wire.security import generate_key, key_to_string

ROLES = (Role("solo", 1, idle_role), Role("pair", 2, idle_role))


async def free_port(host: str) -> int:
    async with open_udp_tcp_transport(Address(host, 0)) as probe:
        return probe.local_address.port


async def poll(condition: Callable[[], bool]) -> None:
    """Wait for a cluster-state predicate; callers bound it with fail_after."""
    while not condition():  # noqa: ASYNC110 - a predicate over live state
        await trio.sleep(0.05)


class RealCluster:
    def __init__(self, nursery: trio.Nursery, port: int, key: str) -> None:
        self.nursery = nursery
        self.port = port
        self.key = key
        self.nodes: dict[str, Node] = {}
        self.scopes: dict[str, trio.CancelScope] = {}

    def config(self, i: int) -> Config:
        return Config(
            name=f"r{i}",
            bind=f"127.0.0.{50 + i}",
            port=self.port,
            cluster="real-test",
            cluster_net=("127.0.0.48/28",),
            keys=(self.key,),
            preset="local",
            resweep_interval=2.0,
            hwmon_interval=1.0,
            roles=ROLES,
        )

    async def start(self, i: int) -> Node:
        config = self.config(i)

        async def run(*, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                self.scopes[config.node_name] = scope
                async with open_node(config) as node:
                    self.nodes[node.name] = node
                    task_status.started(node)
                    try:
                        await trio.sleep_forever()
                    finally:
                        del self.nodes[node.name]

        node: Node = await self.nursery.start(run)
        return node

    def kill(self, name: str) -> None:
        self.nodes[name].kill()
        self.scopes[name].cancel()

    def hosting(self, role: str) -> set[str]:
        return {n.name for n in self.nodes.values() if role in n.describe("status")["hosting"]}

    def settled(self) -> bool:
        names = sorted(self.nodes)
        return (
            all(n.get_active_cluster_nodes() == names for n in self.nodes.values())
            and len(self.hosting("solo")) == 1
            and len(self.hosting("pair")) == 2
            and all(
                set(n.whois_hosting(r)) == self.hosting(r)
                for n in self.nodes.values()
                for r in ("solo", "pair")
            )
        )


@asynccontextmanager
async def real_cluster(n: int) -> AsyncIterator[RealCluster]:
    port = await free_port("127.0.0.50")
    async with trio.open_nursery() as nursery:
        cluster = RealCluster(nursery, port, key_to_string(generate_key()))
        for i in range(n):
            await cluster.start(i)
        yield cluster
        nursery.cancel_scope.cancel()


async def test_five_real_nodes_converge_host_roles_and_fail_over() -> None:
    with trio.fail_after(90):
        async with real_cluster(5) as cluster:
            await poll(cluster.settled)
            observer = cluster.nodes["r0"]
            updates: list[NodeUpdate] = []
            observer.add_alert_callback(updates.append)
            (holder,) = cluster.hosting("solo")
            if holder == "r0":  # keep the observer alive
                observer = cluster.nodes["r1"]
                observer.add_alert_callback(updates.append)
            cluster.kill(holder)
            killed_at = trio.current_time()
            detected: list[float] = []
            moved: list[float] = []

            async def watch_detection() -> None:
                await poll(lambda: NodeUpdate(holder, NodeStatus.OFFLINE) in updates)
                detected.append(trio.current_time() - killed_at)

            async def watch_takeover() -> None:
                await poll(lambda: len(cluster.hosting("solo") - {holder}) == 1)
                moved.append(trio.current_time() - killed_at)

            async with trio.open_nursery() as watchers:
                watchers.start_soon(watch_detection)
                watchers.start_soon(watch_takeover)
            assert moved[0] <= detected[0] + 1.0
            await poll(cluster.settled)
            # the killed node returns: online again, and no role runs twice
            index = int(holder[1:])
            await cluster.start(index)
            await poll(lambda: NodeUpdate(holder, NodeStatus.ONLINE) in updates)
            await poll(cluster.settled)
            for _ in range(30):
                assert len(cluster.hosting("solo")) == 1
                await trio.sleep(0.1)


async def test_allocate_follows_signals_on_real_sockets() -> None:
    with trio.fail_after(60):
        async with real_cluster(3) as cluster:
            await poll(cluster.settled)
            for name, node in cluster.nodes.items():
                node.signal("queue", 100.0, "count").set(0 if name == "r2" else 10)
            await poll(lambda: all(n.allocate() == "r2" for n in cluster.nodes.values()))
            cluster.kill("r2")
            await poll(lambda: "r2" not in cluster.nodes["r0"].get_active_cluster_nodes())
            assert cluster.nodes["r0"].allocate() in {"r0", "r1"}


async def test_standalone_then_clustered_on_real_sockets() -> None:
    with trio.fail_after(60):
        port = await free_port("127.0.0.50")
        async with trio.open_nursery() as nursery:
            cluster = RealCluster(nursery, port, key_to_string(generate_key()))
            first = await cluster.start(0)
            assert await first.until_ready(timeout=20)
            assert first.get_node_status() == NodeMode.STANDALONE
            await cluster.start(1)
            await poll(lambda: first.get_node_status() == NodeMode.CLUSTERED)
            nursery.cancel_scope.cancel()


# --- separate processes ------------------------------------------------------------------


def write_config(path: Path, i: int, port: int, key: str) -> None:
    path.write_text(
        f'name = "p{i}"\nbind = "127.0.0.{60 + i}"\nport = {port}\ncluster = "proc-test"\n'
        f'cluster_net = ["127.0.0.56/29", "127.0.0.64/29"]\nkeys = ["{key}"]\npreset = "local"\n'
        "resweep_interval = 2.0\nhwmon_interval = 1.0\n"
        '[[roles]]\nname = "solo"\nrun = "beethoven.testing:idle_role"\n'
        '[[roles]]\nname = "pair"\ncount = 2\nrun = "beethoven.testing:idle_role"\n',
        encoding="utf-8",
    )


def spawn(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "beethoven", "agent", "-c", str(config), "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


async def statuses(port: int, key: str, names: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        i = int(name[1:])
        with suppress(BeethovenError):
            out[name] = await query_agent(
                f"127.0.0.{60 + i}:{port}", "status", key=key, timeout=1.0
            )
    return out


def settled(status: dict[str, dict[str, Any]], names: list[str]) -> bool:
    if sorted(status) != sorted(names):
        return False
    solo = [n for n, s in status.items() if "solo" in s["hosting"]]
    pair = [n for n, s in status.items() if "pair" in s["hosting"]]
    return (
        all(s["ready"] and sorted(s["online"]) == sorted(names) for s in status.values())
        and len(solo) == 1
        and len(pair) == 2
    )


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
async def test_sigkilled_agent_process_role_moves_and_returning_node_does_not_double_host(
    tmp_path: Path,
) -> None:
    port = await free_port("127.0.0.60")
    key = key_to_string(generate_key())
    names = [f"p{i}" for i in range(5)]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with trio.fail_after(120):
            for i, name in enumerate(names):
                write_config(tmp_path / f"{name}.toml", i, port, key)
                procs[name] = spawn(tmp_path / f"{name}.toml")
            status: dict[str, dict[str, Any]] = {}
            while not settled(status, names):
                await trio.sleep(0.2)
                status = await statuses(port, key, names)
            (holder,) = [n for n, s in status.items() if "solo" in s["hosting"]]
            procs[holder].send_signal(signal.SIGKILL)
            procs[holder].wait(timeout=10)
            killed = time.monotonic()
            survivors = [n for n in names if n != holder]
            detected = moved = None
            while detected is None or moved is None:
                status = await statuses(port, key, survivors)
                now = time.monotonic() - killed
                if detected is None and any(holder not in s["online"] for s in status.values()):
                    detected = now
                if moved is None and any("solo" in s["hosting"] for s in status.values()):
                    moved = now
                await trio.sleep(0.05)
            assert moved <= detected + 1.0
            procs[holder] = spawn(tmp_path / f"{holder}.toml")
            while not settled(status, names):
                await trio.sleep(0.2)
                status = await statuses(port, key, names)
            for _ in range(10):
                status = await statuses(port, key, names)
                assert sum("solo" in s["hosting"] for s in status.values()) <= 1
                await trio.sleep(0.2)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
