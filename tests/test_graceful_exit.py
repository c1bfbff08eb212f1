"""Leaving is graceful however the ``async with open_node`` block ends (virtual time).

A node "x" holds a role in a cluster of four on the memory network; its block ends
by a cancellation from outside, an exception (in the body or beside it), a
KeyboardInterrupt-like ``BaseException`` (in the body or in the caller's nursery), or
`Cluster.stop`. Every way, each peer must see x ``left`` — never suspect, never dead —
within about one gossip round, x's role task must be stopped (not cancelled) and its
holding withdrawn, and the role must move before failure detection could even have
suspected x.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import beethoven.testing
from beethoven.address import Address
from beethoven.config import Config
from beethoven.errors import ConfigError
from beethoven.membership.api import MemberEventKind
from beethoven.membership.params import SwimParams
from beethoven.node import FLUSH_TIMEOUT, JOIN_SETTLE, LEAVE_TIMEOUT, Node, open_node
from beethoven.roles import Role, RoleContext
from beethoven.testing import Cluster, idle_role, open_cluster
from beethoven.transport.memory import MemoryNetwork

LAN = SwimParams.preset("lan")  # the default preset
#: "About one gossip round": the Leave goes out with the next gossip tick, plus delivery.
ONE_ROUND = 2 * LAN.gossip_interval
X = Address("10.0.9.9", 33000)


class FakeInterrupt(BaseException):
    """Stands in for KeyboardInterrupt (a real one escaping would stop pytest)."""


def _wall() -> float:
    return 1_700_000_000.0 + trio.current_time()


class Solo:
    """The role "solo": where it runs, and which of its tasks were stopped gracefully."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.stopped_gracefully: list[str] = []

    async def run(self, ctx: RoleContext) -> None:
        self.running.add(ctx.node)
        try:
            await ctx.stopping.wait()
            self.stopped_gracefully.append(ctx.node)
        finally:
            self.running.discard(ctx.node)

    def role(self) -> Role:
        return Role("solo", 1, self.run)


class Seen:
    """Membership events about one member, as every observer saw them, with times."""

    def __init__(self, member: str) -> None:
        self.member = member
        self.events: dict[str, list[tuple[float, str]]] = {}

    async def watch(self, observer: Node) -> None:
        seen = self.events.setdefault(observer.name, [])
        async with observer._runner.subscribe() as events:
            async for event in events:
                if event.member.name == self.member:
                    seen.append((trio.current_time(), event.kind))

    def gone_everywhere(self) -> bool:
        """Every observer saw the member leave, or die (then the assertions say so)."""
        gone = {MemberEventKind.LEFT, MemberEventKind.DEAD}
        return all(any(k in gone for _, k in e) for e in self.events.values())

    def assert_left_within_a_round_of(self, t0: float) -> None:
        for observer, events in self.events.items():
            kinds = [k for _, k in events]
            assert MemberEventKind.SUSPECT not in kinds, (observer, events)
            assert MemberEventKind.DEAD not in kinds, (observer, events)
            (left_at,) = [t for t, k in events if k == MemberEventKind.LEFT]
            assert left_at - t0 <= ONE_ROUND, (observer, events, t0)


async def wait_until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - a predicate over cluster state; callers bound it
        await trio.sleep(0.01)


@attrs.define
class Scene:
    net: MemoryNetwork
    solo: Solo
    seen: Seen
    config: Config
    joined: trio.Event = attrs.field(factory=trio.Event)
    cluster: Cluster | None = None

    @asynccontextmanager
    async def open_x(self) -> AsyncIterator[Node]:
        async with open_node(self.config, network=self.net, seed=9, clock=_wall) as x:
            yield x

    async def x_settled(self, x: Node) -> None:
        """x holds the role, the cluster joined it and agrees, the observers watch x."""
        await x.wait_ready()
        await wait_until(lambda: x.whois_hosting("solo") == ["x"])
        self.joined.set()  # the cluster now joins through x
        await wait_until(lambda: self.cluster is not None and len(self.seen.events) == 3)
        assert self.cluster is not None
        cluster = self.cluster
        everyone = sorted([*cluster.running(), "x"])
        await wait_until(
            lambda: all(
                n.get_active_cluster_nodes() == everyone and n.whois_hosting("solo") == ["x"]
                for n in [x, *cluster.nodes()]
            )
        )
        assert self.solo.running == {"x"}
        await trio.sleep(JOIN_SETTLE)  # the joiners may take roles from now on

    def check_graceful(self, t0: float, moved_at: float) -> None:
        assert self.cluster is not None
        self.seen.assert_left_within_a_round_of(t0)
        assert self.solo.stopped_gracefully == ["x"]  # stopped, not cancelled
        (holder,) = self.solo.running
        assert all(n.whois_hosting("solo") == [holder] for n in self.cluster.nodes())
        # Failure detection needs a failed probe at the very least: the role moved sooner.
        assert moved_at - t0 < LAN.probe_interval + LAN.probe_timeout


async def run_scenario(
    ends: Callable[[Scene, trio.Event], Awaitable[None]],
) -> tuple[Scene, float, float]:
    """x takes the role alone; a cluster of three joins it; *ends* ends x's block.

    Checks that x left gracefully (`Scene.check_graceful`) before the cluster closes.

    Returns:
        The scene, when x's block began to end, and when the role ran elsewhere.
    """
    solo = Solo()
    config = Config(name="x", bind=X.host, port=X.port, cluster_net=(f"{X.host}/32",),
                    roles=(solo.role(),), sweeps=1)  # fmt: skip
    s = Scene(MemoryNetwork(seed=11), solo, Seen("x"), config)
    go = trio.Event()
    done = trio.Event()
    times: dict[str, float] = {}

    async def run_x() -> None:
        try:
            await ends(s, go)
        finally:
            done.set()

    async def conduct() -> None:
        await go.wait()
        times["t0"] = trio.current_time()
        await wait_until(lambda: bool(s.solo.running - {"x"}))
        times["moved"] = trio.current_time()

    async with trio.open_nursery() as outer:
        outer.start_soon(run_x)
        outer.start_soon(conduct)
        await s.joined.wait()
        async with open_cluster(3, network=s.net, roles=[solo.role()], seeds=(str(X),)) as c:
            async with trio.open_nursery() as watchers:
                for observer in c.nodes():
                    watchers.start_soon(s.seen.watch, observer)
                s.cluster = c
                await done.wait()
                assert trio.current_time() - times["t0"] <= LEAVE_TIMEOUT + FLUSH_TIMEOUT
                await wait_until(lambda: "moved" in times and s.seen.gone_everywhere())
                watchers.cancel_scope.cancel()
            await c.wait_converged()
            s.check_graceful(times["t0"], times["moved"])  # before the cluster stops too
    return s, times["t0"], times["moved"]


async def test_cancelling_the_scope_around_open_node_leaves_gracefully(
    autojump_clock: trio.testing.MockClock,
) -> None:
    after_block: list[str] = []
    caught: list[bool] = []

    async def ends(s: Scene, go: trio.Event) -> None:
        with trio.CancelScope() as scope:
            async with s.open_x() as x:
                await s.x_settled(x)
                go.set()
                scope.cancel()  # the cancel reaches x's services as well as the body
                await trio.sleep(3600)
            after_block.append("ran")  # a cancelled scope stays cancelled after the leave
        caught.append(scope.cancelled_caught)

    with trio.fail_after(120):
        await run_scenario(ends)
    assert after_block == []
    assert caught == [True]


async def test_move_on_after_around_open_node_leaves_gracefully(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The pattern from the issue: ``with trio.move_on_after(T): async with open_node``."""

    async def ends(s: Scene, go: trio.Event) -> None:
        with trio.move_on_after(30) as deadline:
            async with s.open_x() as x:
                await s.x_settled(x)
                await trio.sleep_until(deadline.deadline - 0.001)
                go.set()
                await trio.sleep_forever()
        assert deadline.cancelled_caught

    with trio.fail_after(120):
        await run_scenario(ends)


async def test_an_exception_in_or_beside_the_block_still_leaves_gracefully(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def in_body(s: Scene, go: trio.Event) -> None:
        async def block() -> None:
            async with s.open_x() as x:
                await s.x_settled(x)
                go.set()
                raise KeyError("mine")

        with pytest.raises(KeyError, match="mine"):  # unwrapped
            await block()

    async def beside(s: Scene, go: trio.Event) -> None:
        # A sibling task fails: its nursery cancels the task that runs the node.
        async def sibling() -> None:
            await go.wait()
            raise KeyError("sibling")

        async def node() -> None:
            async with s.open_x() as x:
                await s.x_settled(x)
                go.set()
                await trio.sleep_forever()

        async def both() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node)
                nursery.start_soon(sibling)

        with pytest.raises(ExceptionGroup) as info:
            await both()
        assert [repr(e) for e in info.value.exceptions] == ["KeyError('sibling')"]

    for ends in (in_body, beside):
        with trio.fail_after(120):
            await run_scenario(ends)


async def test_a_keyboard_interrupt_in_or_around_the_block_still_leaves_gracefully(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def in_body(s: Scene, go: trio.Event) -> None:
        async def block() -> None:
            async with s.open_x() as x:
                await s.x_settled(x)
                go.set()
                raise FakeInterrupt

        with pytest.raises(FakeInterrupt):  # unwrapped
            await block()

    async def in_the_callers_nursery(s: Scene, go: trio.Event) -> None:
        # Where trio delivers a Ctrl-C: the main task, here the parent of the node's task.
        async def node(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with s.open_x() as x:
                await s.x_settled(x)
                task_status.started()
                await trio.sleep_forever()

        async def main_task() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(node)
                go.set()
                raise FakeInterrupt

        with pytest.raises(BaseExceptionGroup) as info:
            await main_task()
        assert [type(e) for e in info.value.exceptions] == [FakeInterrupt]

    for ends in (in_body, in_the_callers_nursery):
        with trio.fail_after(120):
            await run_scenario(ends)


async def test_cluster_stop_is_graceful_peers_see_left_and_the_role_moves_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    solo = Solo()
    with trio.fail_after(120):
        async with open_cluster(4, roles=[solo.role()]) as cluster:
            await cluster.wait_converged()
            (holder,) = solo.running
            seen = Seen(holder)
            async with trio.open_nursery() as watchers:
                for observer in cluster.nodes():
                    if observer.name != holder:
                        watchers.start_soon(seen.watch, observer)
                await trio.sleep(1)
                t0 = trio.current_time()
                await cluster.stop(holder)
                assert trio.current_time() - t0 <= LEAVE_TIMEOUT + FLUSH_TIMEOUT
                await wait_until(lambda: bool(solo.running) and seen.gone_everywhere())
                moved = trio.current_time()
                watchers.cancel_scope.cancel()
            seen.assert_left_within_a_round_of(t0)
            assert solo.stopped_gracefully == [holder]
            assert moved - t0 < LAN.probe_interval + LAN.probe_timeout
            await cluster.wait_converged()
            assert holder not in cluster.node(cluster.running()[0]).get_active_cluster_nodes()


async def test_a_keyboard_interrupt_inside_a_service_comes_out_as_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Not as "BeethovenError: a service failed": an interrupt is not a node's failure."""
    calls: list[int] = []

    def sampler() -> tuple[float, float]:
        calls.append(1)
        if len(calls) == 3:
            raise FakeInterrupt
        return 10.0, 20.0

    config = Config(name="s", bind="10.0.0.1", cluster_net=("10.0.0.1/32",), hwmon_interval=1.0)
    with trio.fail_after(60), pytest.raises(FakeInterrupt):
        async with open_node(config, network=MemoryNetwork(seed=2), hw_sampler=sampler):
            await trio.sleep_forever()


async def test_open_node_with_a_config_and_an_unknown_key_raises_config_error_naming_it() -> None:
    net = MemoryNetwork(seed=3)
    with pytest.raises(ConfigError, match=r"unknown configuration key 'unknown_key'.*known keys"):
        async with open_node(Config(bind="10.0.0.1"), network=net, unknown_key=1):
            pytest.fail("the node must not start")
    with pytest.raises(ConfigError, match="did you mean 'cluster'"):
        async with open_node(Config(bind="10.0.0.1"), network=net, clustre="x"):
            pytest.fail("the node must not start")
    assert net.attached() == []


async def test_wait_ready_is_per_node_and_wait_converged_means_everyone_agrees(
    autojump_clock: trio.testing.MockClock,
) -> None:
    roles = [Role("solo", 1, idle_role), Role("pair", 2, idle_role)]
    with trio.fail_after(120):
        async with open_cluster(5, roles=roles, discovery="sweep") as cluster:
            await cluster.wait_converged()
            nodes = cluster.nodes()
            assert all(n.is_ready() for n in nodes)
            assert cluster.converged()
            (solo,) = nodes[0].whois_hosting("solo")
            pair = nodes[0].whois_hosting("pair")
            assert len(pair) == 2
            for node in nodes:
                assert node.whois_hosting("solo") == [solo]
                assert node.whois_hosting("pair") == pair
            hosting = {n.name: {r.role for r in n.role_status()} for n in nodes}
            assert {name for name, r in hosting.items() if "solo" in r} == {solo}
            assert {name for name, r in hosting.items() if "pair" in r} == set(pair)
            # after a crash the survivors agree again, without the dead node
            await cluster.crash(solo)
            await cluster.wait_converged()
            (again,) = cluster.nodes()[0].whois_hosting("solo")
            assert again != solo
            assert all(solo not in n.get_active_cluster_nodes() for n in cluster.nodes())


def test_the_testing_docstring_example_runs_as_written() -> None:
    """It unpacked ``whois_hosting`` right after ``wait_ready``: ValueError."""
    doc = beethoven.testing.__doc__
    assert doc is not None
    code = textwrap.dedent(doc.split("::\n", 1)[1].split("\n\n`", 1)[0])
    namespace: dict[str, Any] = {}
    exec(
        "import trio\nfrom beethoven import Role\nfrom beethoven.testing import *\n" + code,
        namespace,
    )
    trio.run(namespace["test_failover"], None, clock=trio.testing.MockClock(autojump_threshold=0))
