"""Multi-host discovery: node processes in separate network namespaces find each other.

The test builds its own little LAN: one namespace holding a bridge, and one namespace
per node joined to the bridge by a veth pair. Addresses come from 10.213.7.0/24 and
exist only inside those namespaces (no route leads anywhere else), so the sweep cannot
contact anything outside them. Everything is removed in ``finally``, even on failure.
Skipped, with the reason, when not root or when ``ip`` is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from beethoven.wire.security import generate_key, key_to_string

NODES = 4
SUBNET = "10.213.7"
PORT = 33007
SCRIPT = Path(__file__).with_name("netns_node.py")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _skip_reason() -> str | None:
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"btp-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create a network namespace here: {exc}"
    with contextlib.suppress(subprocess.CalledProcessError, OSError):
        _ip("netns", "del", probe)
    return None


class Lan:
    """A bridge namespace and NODES node namespaces, torn down by `close`."""

    def __init__(self, subnet: str = SUBNET) -> None:
        self.subnet = subnet
        tag = uuid.uuid4().hex[:6]
        self.bridge_ns = f"btb-{tag}"
        self.node_ns = [f"btn-{tag}-{i}" for i in range(NODES)]
        self.created: list[str] = []

    def build(self) -> None:
        _ip("netns", "add", self.bridge_ns)
        self.created.append(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "set", "lo", "up")
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, ns in enumerate(self.node_ns):
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # The veth is created inside the bridge namespace with its peer moved
            # straight into the node namespace: nothing touches the host's namespace.
            _ip(
                "-n", self.bridge_ns, "link", "add", f"v{i}", "type", "veth",
                "peer", "name", "eth0", "netns", ns,
            )  # fmt: skip
            _ip("-n", self.bridge_ns, "link", "set", f"v{i}", "master", "br0")
            _ip("-n", self.bridge_ns, "link", "set", f"v{i}", "up")
            _ip("-n", ns, "addr", "add", f"{self.subnet}.{i + 1}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def close(self) -> None:
        for ns in reversed(self.created):
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                _ip("netns", "del", ns)


async def test_nodes_in_separate_network_namespaces_find_each_other_by_sweeping() -> None:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    lan = Lan()
    key = key_to_string(generate_key())
    results: list[dict[str, Any]] = []

    async def node(i: int, ns: str) -> None:
        cmd = [
            "ip", "netns", "exec", ns, sys.executable, str(SCRIPT),
            "--name", f"n{i}", "--bind", f"{SUBNET}.{i + 1}", "--port", str(PORT),
            "--net", f"{SUBNET}.0/24", "--key", key,
            "--duration", "3", "--resweep", "0.5",
        ]  # fmt: skip
        # trio kills the process if the test is cancelled (timeout, failure).
        done = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        results.append(json.loads(done.stdout.decode().strip().splitlines()[-1]))

    try:
        await trio.to_thread.run_sync(lan.build)
        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:
                for i, ns in enumerate(lan.node_ns):
                    nursery.start_soon(node, i, ns)
    finally:
        lan.close()
    assert len(results) == NODES
    names = {f"n{i}" for i in range(NODES)}
    for result in results:
        me = result["name"]
        assert set(result["found"]) == names - {me}, result
        assert result["status"] == "clustered"
        # Every contact stayed inside the namespaces' own /24, never its own address.
        for addr in result["joined_through"]:
            host = addr.rsplit(":", 1)[0]
            assert host.startswith(f"{SUBNET}.")
            assert host != f"{SUBNET}.{int(me[1:]) + 1}"
        assert result["stats"]["contacted"] >= 253
    assert sum(r["beacon"]["answered"] for r in results) >= NODES * (NODES - 1)
    assert all(r["beacon"]["auth_failures"] == 0 for r in results)


AGENT_SUBNET = "10.213.8"


def _agent_config(path: Path, i: int, key: str) -> None:
    path.write_text(
        f'name = "a{i}"\nbind = "{AGENT_SUBNET}.{i + 1}"\nport = {PORT}\n'
        f'cluster = "netns"\ncluster_net = ["{AGENT_SUBNET}.0/24"]\nkeys = ["{key}"]\n'
        'preset = "local"\nresweep_interval = 1.0\n'
        '[[roles]]\nname = "solo"\nrun = "beethoven.testing:idle_role"\n',
        encoding="utf-8",
    )


async def _status(ns: str, i: int, key: str) -> dict[str, Any] | None:
    cmd = [
        "ip", "netns", "exec", ns, sys.executable, "-m", "beethoven", "status",
        "--address", f"{AGENT_SUBNET}.{i + 1}:{PORT}", "--key", key, "--json", "--timeout", "2",
    ]  # fmt: skip
    done = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
    if done.returncode != 0:
        return None
    body: dict[str, Any] = json.loads(done.stdout)
    return body


async def test_full_agents_in_separate_network_namespaces_form_one_cluster(
    tmp_path: Path,
) -> None:
    """Real `beethoven agent` processes, one per namespace, find each other and share roles."""
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    lan = Lan(AGENT_SUBNET)
    key = key_to_string(generate_key())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    agents: list[subprocess.Popen[bytes]] = []
    try:
        await trio.to_thread.run_sync(lan.build)
        for i, ns in enumerate(lan.node_ns):
            config = tmp_path / f"a{i}.toml"
            _agent_config(config, i, key)
            command = [
                "ip", "netns", "exec", ns, sys.executable, "-m", "beethoven", "agent",
                "-c", str(config), "--log-level", "WARNING",
            ]  # fmt: skip
            agents.append(
                subprocess.Popen(  # noqa: ASYNC220 - fork/exec only
                    command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                )
            )
        names = sorted(f"a{i}" for i in range(NODES))
        with trio.fail_after(60):
            while True:
                statuses = [await _status(ns, i, key) for i, ns in enumerate(lan.node_ns)]
                if all(
                    s is not None and s["ready"] and sorted(s["online"]) == names for s in statuses
                ):
                    break
                await trio.sleep(0.5)
        assert all(s is not None and s["mode"] == "clustered" for s in statuses)
        hosts = [s["name"] for s in statuses if s is not None and "solo" in s["hosting"]]
        assert len(hosts) == 1
    finally:
        for agent in agents:
            agent.terminate()
        for agent in agents:
            try:
                _, err = agent.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.communicate(timeout=5)
            else:
                assert agent.returncode == 0, err.decode(errors="replace")[-2000:]
        lan.close()
