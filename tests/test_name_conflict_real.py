"""A node name belongs to one live node: real ``beethoven agent`` processes on 127.0.0.x.

Regression for issue #10 §3: ``beethoven agent --name agent1`` started on another
address while agent1 ran took the name over (agent1 lost its role), and after it
left every peer listed agent1 offline for as long as 17 minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import trio

from beethoven.address import Address
from beethoven.cli import query_agent
from beethoven.errors import BeethovenError
from beethoven.transport.udp_tcp import open_udp_tcp_transport
from beethoven.wire.security import generate_key, key_to_string

pytestmark = pytest.mark.timeout(180)

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
HOSTS = {"agent1": "127.0.0.97", "agent2": "127.0.0.98", "impostor": "127.0.0.99"}


async def free_port(host: str) -> int:
    async with open_udp_tcp_transport(Address(host, 0)) as probe:
        return probe.local_address.port


def write_config(path: Path, name: str, host: str, port: int, key: str) -> Path:
    path.write_text(
        f'name = "{name}"\nbind = "{host}"\nport = {port}\ncluster = "name-conflict-test"\n'
        f'cluster_net = ["127.0.0.96/29"]\nkeys = ["{key}"]\npreset = "local"\n'
        "resweep_interval = 2.0\n"
        '[[roles]]\nname = "solo"\nrun = "beethoven.testing:idle_role"\n',
        encoding="utf-8",
    )
    return path


def spawn(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "beethoven", "agent", "-c", str(config), "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )


async def ask(host: str, port: int, key: str, kind: str) -> Any:
    with suppress(BeethovenError):
        return await query_agent(f"{host}:{port}", kind, key=key, timeout=1.0)
    return None


def agent1_row(members: Any) -> dict[str, Any] | None:
    rows = [m for m in members or [] if m["node"] == "agent1"]
    return rows[0] if rows else None


async def test_impostor_agent_exits_1_naming_the_holder_and_agent1_keeps_its_name(
    tmp_path: Path,
) -> None:
    port = await free_port(HOSTS["agent1"])
    key = key_to_string(generate_key())
    holder = f"{HOSTS['agent1']}:{port}"
    procs = [
        spawn(write_config(tmp_path / f"{name}.toml", name, HOSTS[name], port, key))
        for name in ("agent1", "agent2")
    ]
    try:
        with trio.fail_after(60):
            while True:
                s1 = await ask(HOSTS["agent1"], port, key, "status")
                s2 = await ask(HOSTS["agent2"], port, key, "status")
                if (
                    s1 and s2 and s1["ready"] and s2["ready"]
                    and sorted(s2["online"]) == ["agent1", "agent2"]
                    and len(s1["hosting"]) + len(s2["hosting"]) == 1
                ):  # fmt: skip
                    break
                await trio.sleep(0.2)
        roles_before = await ask(HOSTS["agent2"], port, key, "roles")
        hosting_before = s1["hosting"]

        impostor = write_config(tmp_path / "impostor.toml", "agent1", HOSTS["impostor"], port, key)
        command = [sys.executable, "-m", "beethoven", "agent", "-c", str(impostor)]
        result = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [*command, "--log-level", "ERROR"],
                capture_output=True,
                text=True,
                timeout=60,
                env=ENV,
                check=False,
            )
        )
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert holder in lines[0]
        assert "agent1" in lines[0]
        # At the default log level too: the log lines, then that one error line.
        result = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                command, capture_output=True, text=True, timeout=60, env=ENV, check=False
            )
        )
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("beethoven: "), result.stderr
        assert holder in last

        # agent1 is still agent1, online at its address, with its role, in both views;
        # watched over many suspicion timeouts of the local preset, not sampled once.
        with trio.fail_after(60):
            for _ in range(40):
                for host in (HOSTS["agent1"], HOSTS["agent2"]):
                    members = await ask(host, port, key, "members")
                    row = agent1_row(members)
                    assert row is not None, members
                    assert (row["status"], row["address"]) == ("online", holder), members
                s1 = await ask(HOSTS["agent1"], port, key, "status")
                assert s1 is not None
                assert s1["hosting"] == hosting_before
                assert await ask(HOSTS["agent2"], port, key, "roles") == roles_before
                await trio.sleep(0.25)
        assert all(proc.poll() is None for proc in procs)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
