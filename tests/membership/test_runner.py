"""The trio runner driving the SWIM core: memory network, real sockets, real processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from beethoven.address import Address
from beethoven.membership.api import MemberEvent, MemberEventKind
from beethoven.membership.params import SwimParams
from beethoven.membership.runner import MembershipRunner
from beethoven.membership.swim import SwimCore
from beethoven.transport.base import Transport
from beethoven.transport.memory import MemoryNetwork
from beethoven.transport.udp_tcp import open_udp_tcp_transport
from beethoven.wire.codec import encoded_size
from beethoven.wire.messages import MemberStatus, StoreDelta, UserMessage
from beethoven.wire.packet import PacketCodec
from beethoven.wire.security import Keyring, generate_key, key_to_string

HERE = Path(__file__).parent


def make_runner(
    transport: Transport, name: str, *, keyring: Keyring | None, params: SwimParams
) -> MembershipRunner:
    core = SwimCore(
        name=name,
        addr=transport.local_address,
        generation=1,
        rng=random.Random(name),
        size_of=encoded_size,
        params=params,
        cluster="test",
    )
    return MembershipRunner(core, transport, PacketCodec(keyring), keyring=keyring)


def view(runner: MembershipRunner) -> dict[str, int]:
    return {m.name: m.status for m in runner.members()}


async def wait_until(condition: Callable[[], bool], *, step: float = 0.1) -> None:
    """Poll a view condition; callers bound it with fail_after (virtual time mostly)."""
    while not condition():  # noqa: ASYNC110 - a state predicate, not an event
        await trio.sleep(step)


async def test_memory_cluster_converges_and_detects_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=7, default_latency=0.002)
    addrs = [Address(f"10.0.0.{i + 1}", 7000) for i in range(10)]
    runners: list[MembershipRunner] = []
    scopes: list[trio.CancelScope] = []
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            for i, addr in enumerate(addrs):
                scope = trio.CancelScope()
                scopes.append(scope)

                async def node(
                    addr: Address = addr,
                    i: int = i,
                    scope: trio.CancelScope = scope,
                    *,
                    task_status: trio.TaskStatus[MembershipRunner] = trio.TASK_STATUS_IGNORED,
                ) -> None:
                    with scope:
                        async with net.attach(addr) as transport, trio.open_nursery() as inner:
                            runner = make_runner(
                                transport, f"n{i}", keyring=None, params=SwimParams.lan()
                            )
                            await inner.start(runner.run)
                            task_status.started(runner)

                runners.append(await nursery.start(node))
            for runner in runners[1:]:
                assert await runner.join([addrs[0]])
            everyone = {f"n{i}": MemberStatus.ALIVE for i in range(10)}
            await wait_until(lambda: all(view(r) == everyone for r in runners))
            # kill -9 node 3: silence on the network, then its tasks stop
            net.crash(addrs[3])
            scopes[3].cancel()
            start = trio.current_time()
            others = runners[:3] + runners[4:]
            await wait_until(lambda: all(view(r)["n3"] == MemberStatus.DEAD for r in others))
            assert trio.current_time() - start < 30
            assert all(
                status == MemberStatus.ALIVE
                for r in others
                for name, status in view(r).items()
                if name != "n3"
            )
            nursery.cancel_scope.cancel()


async def test_events_reach_subscribers_and_datagram_handlers_divert(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=1)
    a_addr, b_addr = Address("10.0.0.1", 1), Address("10.0.0.2", 1)
    got: list[tuple[Address, object]] = []
    events: list[MemberEvent] = []
    with trio.fail_after(120):
        async with (
            net.attach(a_addr) as ta,
            net.attach(b_addr) as tb,
            trio.open_nursery() as nursery,
        ):
            a = make_runner(ta, "a", keyring=None, params=SwimParams.lan())
            b = make_runner(tb, "b", keyring=None, params=SwimParams.lan())
            b.add_datagram_handler(StoreDelta, lambda src, msg: got.append((src, msg)))

            async def collect() -> None:
                async with a.subscribe() as sub:
                    async for event in sub:
                        events.append(event)

            await nursery.start(a.run)
            await nursery.start(b.run)
            nursery.start_soon(collect)
            await trio.sleep(0.1)
            assert await b.join([a_addr])
            await wait_until(lambda: any(e.member.name == "b" for e in events))
            a.send(b_addr, [StoreDelta(b"delta"), UserMessage(b"x")])
            await wait_until(lambda: bool(got))
            assert got == [(a_addr, StoreDelta(b"delta"))]
            reply = await a.request(b_addr, UserMessage(b"?"))  # core answers nothing
            assert reply is None
            nursery.cancel_scope.cancel()
    kinds = [(e.kind, e.member.name) for e in events]
    assert (MemberEventKind.JOINED, "b") in kinds


async def test_join_through_nobody_returns_false(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=2)
    with trio.fail_after(60):
        async with net.attach(Address("10.0.0.1", 1)) as t, trio.open_nursery() as nursery:
            runner = make_runner(t, "alone", keyring=None, params=SwimParams.lan())
            await nursery.start(runner.run)
            assert not await runner.join([Address("10.0.0.9", 1)])
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def real_cluster(
    n: int, keyring: Keyring
) -> AsyncIterator[tuple[list[MembershipRunner], list[trio.CancelScope]]]:
    """n runners on 127.0.0.2.. with one shared port, under real time."""
    async with open_udp_tcp_transport(Address("127.0.0.2", 0)) as first:
        port = first.local_address.port
        runners: list[MembershipRunner] = []
        scopes: list[trio.CancelScope] = []
        async with trio.open_nursery() as nursery:
            for i in range(n):

                async def node(
                    i: int = i,
                    *,
                    task_status: trio.TaskStatus[
                        tuple[MembershipRunner, trio.CancelScope]
                    ] = trio.TASK_STATUS_IGNORED,
                ) -> None:
                    with trio.CancelScope() as scope:

                        async def serve(transport: Transport) -> None:
                            runner = make_runner(
                                transport, f"r{i}", keyring=keyring, params=SwimParams.local()
                            )
                            async with trio.open_nursery() as inner:
                                await inner.start(runner.run)
                                task_status.started((runner, scope))

                        if i == 0:
                            await serve(first)
                        else:
                            async with open_udp_tcp_transport(
                                Address(f"127.0.0.{i + 2}", port)
                            ) as transport:
                                await serve(transport)

                runner, scope = await nursery.start(node)
                runners.append(runner)
                scopes.append(scope)
            yield runners, scopes
            nursery.cancel_scope.cancel()


async def test_ten_real_nodes_on_loopback_converge_and_detect_a_crash() -> None:
    keyring = Keyring(generate_key())
    with trio.fail_after(60):
        async with real_cluster(10, keyring) as (runners, scopes):
            seed = runners[0].transport.local_address
            for runner in runners[1:]:
                assert await runner.join([seed])
            names = {f"r{i}" for i in range(10)}
            await wait_until(
                lambda: all(
                    {n for n, s in view(r).items() if s == MemberStatus.ALIVE} == names
                    for r in runners
                )
            )
            scopes[5].cancel()  # the node's sockets close: it goes silent
            others = runners[:5] + runners[6:]
            await wait_until(lambda: all(view(r)["r5"] == MemberStatus.DEAD for r in others))
            assert all(r.packets.stats().dropped == 0 for r in others)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
async def test_a_sigkilled_process_is_detected_by_all_others() -> None:
    key = generate_key()
    keyring = Keyring(key)
    procs: list[subprocess.Popen[str]] = []
    with trio.fail_after(90):
        async with real_cluster(2, keyring) as (runners, _):
            seed = runners[0].transport.local_address
            await runners[1].join([seed])
            try:
                for i in range(3):
                    proc = subprocess.Popen(  # noqa: ASYNC220 - fork/exec only, no wait
                        [
                            sys.executable,
                            str(HERE / "runner_node.py"),
                            f"p{i}",
                            f"127.0.0.{20 + i}",
                            str(seed.port),
                            key_to_string(key),
                            str(seed),
                        ],
                        stdout=subprocess.PIPE,
                        text=True,
                        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                    )
                    procs.append(proc)
                for proc in procs:
                    assert proc.stdout is not None
                    line = await trio.to_thread.run_sync(proc.stdout.readline)
                    assert line.strip() == "ready"
                everyone = {"r0", "r1", "p0", "p1", "p2"}
                await wait_until(
                    lambda: all(
                        {n for n, s in view(r).items() if s == MemberStatus.ALIVE} == everyone
                        for r in runners
                    )
                )
                procs[1].send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                await wait_until(
                    lambda: all(view(r).get("p1") == MemberStatus.DEAD for r in runners)
                )
                assert time.monotonic() - killed_at < 30
                assert all(view(r)["p0"] == MemberStatus.ALIVE for r in runners)
            finally:
                for proc in procs:
                    proc.kill()
                    proc.wait(timeout=10)
