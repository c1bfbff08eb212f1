"""Leaving is graceful on real sockets, and Ctrl-C stops every command cleanly.

In one process: nodes on real UDP/TCP on 127.0.0.7x; cancelling the scope around
one node's ``async with open_node`` block makes the others see it ``left`` — not
suspect, then dead, after failure detection. As processes: ``beethoven demo``,
``status`` and ``sim`` sent SIGINT stop cleanly, with exit code 130, one line on
stderr and no traceback (the demo prints its summary so far).
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO

import pytest
import trio

from beethoven.address import Address
from beethoven.config import Config
from beethoven.membership.api import MemberEventKind
from beethoven.node import Node, open_node
from beethoven.roles import Role
from beethoven.testing import idle_role
from beethoven.transport.udp_tcp import open_udp_tcp_transport
from beethoven.wire.security import generate_key, key_to_string

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
HOSTS = [f"127.0.0.{70 + i}" for i in range(3)]


async def free_port(host: str) -> int:
    async with open_udp_tcp_transport(Address(host, 0)) as probe:
        return probe.local_address.port


async def poll(condition: Callable[[], bool]) -> None:
    """Wait for a predicate over live state; callers bound it with fail_after."""
    while not condition():  # noqa: ASYNC110 - a predicate over live state
        await trio.sleep(0.05)


async def test_cancelling_the_scope_around_a_real_node_makes_peers_see_it_left() -> None:
    port = await free_port(HOSTS[0])
    key = key_to_string(generate_key())
    nodes: dict[str, Node] = {}
    scopes: dict[str, trio.CancelScope] = {}
    exited: dict[str, trio.Event] = {}

    def config(i: int) -> Config:
        return Config(name=f"g{i}", bind=HOSTS[i], port=port, cluster="graceful-real",
                      cluster_net=("127.0.0.64/27",), keys=(key,), preset="local",
                      resweep_interval=2.0, hwmon_interval=1.0,
                      roles=(Role("solo", 1, idle_role),))  # fmt: skip

    async def run(i: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        name = f"g{i}"
        exited[name] = trio.Event()
        try:
            with trio.CancelScope() as scope:
                scopes[name] = scope
                async with open_node(config(i)) as node:
                    nodes[name] = node
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            exited[name].set()

    seen: list[str] = []

    async def watch(observer: Node, member: str) -> None:
        async with observer._runner.subscribe() as events:
            async for event in events:
                if event.member.name == member:
                    seen.append(event.kind)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(3):
                await nursery.start(run, i)
            names = sorted(nodes)
            await poll(
                lambda: all(n.get_active_cluster_nodes() == names for n in nodes.values())
                and all(len(n.whois_hosting("solo")) == 1 for n in nodes.values())
            )
            (holder,) = nodes["g0"].whois_hosting("solo")
            observer = next(n for name, n in nodes.items() if name != holder)
            nursery.start_soon(watch, observer, holder)
            await trio.sleep(0.2)  # the watcher subscribed (a subscription sees no history)
            scopes[holder].cancel()
            await exited[holder].wait()
            await poll(
                lambda: MemberEventKind.LEFT in seen or MemberEventKind.DEAD in seen
            )
            assert seen[0] == MemberEventKind.LEFT, seen  # not suspect, then dead
            # and its role moved to a live node without waiting for failure detection
            await poll(lambda: observer.whois_hosting("solo") not in ([], [holder]))
            nursery.cancel_scope.cancel()


# --- Ctrl-C, as processes ---------------------------------------------------------------


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def _interrupt_when(
    args: list[str], ready: Callable[[str], bool], *, timeout: float = 60
) -> tuple[int, str, str]:
    """Run ``beethoven *args*``; send SIGINT once *ready* holds for an output line.

    Returns:
        The exit code, stdout and stderr.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "beethoven", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        # a runner that ignores SIGINT (a background job) must not hide the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True),
        threading.Thread(target=lambda: err.extend(proc.stderr or ()), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        while True:
            line = lines.get(timeout=timeout)
            out.append(line)
            if ready(line):
                break
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    for reader in readers:
        reader.join(timeout=10)
    while not lines.empty():
        out.append(lines.get_nowait())
    return code, "".join(out), "".join(err)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_ctrl_c_in_demo_prints_the_summary_so_far_and_exits_130_without_traceback() -> None:
    code, out, err = _interrupt_when(
        ["demo", "--nodes", "3", "--duration", "60"], lambda line: "cluster ready" in line
    )
    assert code == 130, (out, err)
    assert "Traceback" not in err
    assert err.strip().splitlines() == ["beethoven: interrupted by SIGINT"], err
    assert "Summary (interrupted" in out
    assert "cluster ready after" in out
    assert "result                INTERRUPTED" in out


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_ctrl_c_in_a_query_and_in_sim_exits_130_without_traceback() -> None:
    # a query waiting on an agent that never answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        accepted: list[socket.socket] = []

        def accept() -> None:
            accepted.append(silent.accept()[0])

        acceptor = threading.Thread(target=accept, daemon=True)
        acceptor.start()
        proc = subprocess.Popen(
            [sys.executable, "-m", "beethoven", "status", "--address", address,
             "--timeout", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        try:
            acceptor.join(timeout=30)
            assert accepted, "the query never connected"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            for conn in accepted:
                conn.close()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["beethoven: interrupted by SIGINT"], err

    # a long simulation (it prints progress on stderr for 1000 nodes and more)
    proc = subprocess.Popen(
        [sys.executable, "-m", "beethoven", "sim", "-n", "1000", "--seconds", "3600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        first = proc.stderr.readline()  # the first progress line: it runs
        assert "virtual s" in first, first
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "beethoven: interrupted by SIGINT", err
