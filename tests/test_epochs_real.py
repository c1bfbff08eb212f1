"""Fencing epochs on real agents: a scripted hand-off, crash and restart (issue #10, item 2).

Three ``beethoven agent`` processes on 127.0.0.x host a count-1 role whose task
appends every fencing token it is given to a file. On the original code a graceful
hand-off gave the next holder the same epoch (agent3 e1 → agent2 e1 → agent3 e1).
"""

from __future__ import annotations

import itertools
import os
import signal
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

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

BASE = 120  # agents bind 127.0.0.120 … 127.0.0.123

PROBE = '''
import os
import trio


async def record(ctx):
    """Append every (epoch, node) token this holding is given to $EPOCH_LOG."""
    epoch = 0
    while True:
        if ctx.epoch != epoch:
            epoch = ctx.epoch
            with open(os.environ["EPOCH_LOG"], "a", encoding="utf-8") as log:
                log.write(f"{epoch} {ctx.node}\\n")
        await trio.sleep(0.1)
'''


async def free_port(host: str) -> int:
    async with open_udp_tcp_transport(Address(host, 0)) as probe:
        return probe.local_address.port


class Agents:
    def __init__(self, directory: Path, port: int, key: str) -> None:
        self.directory = directory
        self.port = port
        self.key = key
        self.log = directory / "epochs.log"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        (directory / "epochs_probe.py").write_text(PROBE, encoding="utf-8")

    def host(self, name: str) -> str:
        return f"127.0.0.{BASE + int(name[1:])}"

    def spawn(self, name: str) -> None:
        config = self.directory / f"{name}.toml"
        config.write_text(
            f'name = "{name}"\nbind = "{self.host(name)}"\nport = {self.port}\n'
            f'cluster = "epochs-real"\ncluster_net = ["127.0.0.{BASE}/30"]\n'
            f'keys = ["{self.key}"]\npreset = "local"\nresweep_interval = 2.0\n'
            'hwmon_interval = 1.0\n[[roles]]\nname = "fenced"\nrun = "epochs_probe:record"\n',
            encoding="utf-8",
        )
        path = os.pathsep.join([str(self.directory), *sys.path])
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "beethoven", "agent", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path, "EPOCH_LOG": str(self.log)},
        )

    def stop(self, name: str, sig: signal.Signals) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def tokens(self) -> list[tuple[int, str]]:
        if not self.log.exists():
            return []
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return [(int(epoch), node) for epoch, node in (line.split() for line in lines)]

    async def statuses(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in self.procs:
            with suppress(BeethovenError):
                out[name] = await query_agent(
                    f"{self.host(name)}:{self.port}", "status", key=self.key, timeout=1.0
                )
        return out

    async def wait_holder(self, *, tokens: int, not_on: str | None = None) -> str:
        """Wait until every running agent is ready and online with the others, one of
        them (not *not_on*) hosts the role, and *tokens* tokens were recorded."""
        names = sorted(self.procs)
        while True:
            status = await self.statuses()
            hosting = [n for n, s in status.items() if "fenced" in s["hosting"]]
            if (
                sorted(status) == names
                and all(s["ready"] and sorted(s["online"]) == names for s in status.values())
                and len(hosting) == 1
                and hosting[0] != not_on
                and len(self.tokens()) >= tokens
                and self.tokens()[-1][1] == hosting[0]
            ):
                return hosting[0]
            await trio.sleep(0.2)

    def close(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


async def test_real_agents_hand_off_crash_and_restart_never_reuse_an_epoch(
    tmp_path: Path,
) -> None:
    port = await free_port(f"127.0.0.{BASE}")
    agents = Agents(tmp_path, port, key_to_string(generate_key()))
    try:
        with trio.fail_after(240):
            for i in range(3):
                agents.spawn(f"a{i}")
            holder = await agents.wait_holder(tokens=1)
            # 1. graceful hand-off: the holder leaves (Ctrl-C), then comes back
            agents.stop(holder, signal.SIGINT)
            moved = await agents.wait_holder(tokens=2, not_on=holder)
            agents.spawn(holder)
            await agents.wait_holder(tokens=2)
            # 2. crash: the holder is SIGKILLed, then comes back
            agents.stop(moved, signal.SIGKILL)
            crashed_over = await agents.wait_holder(tokens=3, not_on=moved)
            agents.spawn(moved)
            await agents.wait_holder(tokens=3)
            # 3. restart under the same name at once (kill -9, start again)
            agents.stop(crashed_over, signal.SIGKILL)
            agents.spawn(crashed_over)
            await agents.wait_holder(tokens=4)
            # 4. one more graceful hand-off after all that
            last = await agents.wait_holder(tokens=4)
            agents.stop(last, signal.SIGINT)
            await agents.wait_holder(tokens=5, not_on=last)
    finally:
        agents.close()
    tokens = agents.tokens()
    print("epoch sequence:", " → ".join(f"({e}, {n})" for e, n in tokens))
    assert len(tokens) == 5, tokens
    assert all(a < b for a, b in itertools.pairwise(tokens)), tokens
    assert all(a[0] < b[0] for a, b in itertools.pairwise(tokens)), tokens
