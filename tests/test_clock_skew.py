"""A skewed clock is detected and told: on the memory network under virtual time.

Three nodes share a network; one runs 5 s fast, one 20 s slow. Before the fix the
fast node's ``kv.put`` reported success while every peer refused the write, the
slow node refused everyone else's, and nothing was logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing

from beethoven.config import Config
from beethoven.errors import StoreError
from beethoven.node import Node, open_node
from beethoven.testing import EPOCH
from beethoven.transport.memory import MemoryNetwork

PORT = 33000


def skewed_clock(skews: dict[str, float], name: str) -> Callable[[], float]:
    """The virtual wall clock, off by ``skews[name]`` seconds (changeable at run time)."""
    return lambda: EPOCH + trio.current_time() + skews[name]


@asynccontextmanager
async def skewed_cluster(skews: dict[str, float]) -> AsyncIterator[dict[str, Node]]:
    """One node per entry of *skews* (n0 first), joined through n0."""
    net = MemoryNetwork(seed=11)
    names = list(skews)
    hosts = {name: f"10.0.0.{i + 1}" for i, name in enumerate(names)}
    nodes: dict[str, Node] = {}
    async with AsyncExitStack() as stack:
        for i, name in enumerate(names):
            seeds = tuple(f"{hosts[m]}:{PORT}" for m in names[:i])[:2]
            config = Config(
                name=name,
                bind=hosts[name],
                port=PORT,
                cluster_net=f"{hosts[name]}/32",
                seeds=seeds,
                hwmon_interval=1.0,
            )
            nodes[name] = await stack.enter_async_context(
                open_node(
                    config,
                    network=net,
                    seed=i,
                    hw_sampler=lambda: (10.0, 30.0),
                    clock=skewed_clock(skews, name),
                )
            )
        yield nodes


async def poll(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - a predicate over node state
        await trio.sleep(0.1)


def warnings_of(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and r.name == "beethoven.clock_offset"
        and r.getMessage().startswith(f"node {name}:")
    ]


async def test_a_fast_clocks_kv_put_is_refused_and_both_skews_are_warned_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="beethoven.clock_offset")
    skews = {"n0": 0.0, "fast": 5.0, "slow": -20.0}
    with trio.fail_after(300):
        async with skewed_cluster(skews) as nodes:
            n0, fast, slow = nodes["n0"], nodes["fast"], nodes["slow"]
            await poll(lambda: all(len(n.get_active_cluster_nodes()) == 3 for n in nodes.values()))
            await poll(lambda: all(n.stats().clock.peers == 2 for n in nodes.values()))

            # every node sampled both peers; a majority view blames the odd ones out
            fast_clock, slow_clock, n0_clock = (n.stats().clock for n in (fast, slow, n0))
            assert fast_clock.offset == pytest.approx(5.0, abs=0.05)
            assert fast_clock.skewed
            assert fast_clock.bound == 0.5
            assert slow_clock.offset == pytest.approx(-20.0, abs=0.05)
            assert slow_clock.skewed
            assert n0_clock.offset == 0.0
            assert not n0_clock.skewed

            status = fast.describe("status")
            assert status["clock_skewed"] is True
            assert status["clock_offset"] == pytest.approx(5.0, abs=0.05)
            assert status["clock_bound"] == 0.5
            assert n0.describe("status")["clock_skewed"] is False

            with pytest.raises(StoreError, match=r"kv.put refused: this node's clock is ahead"):
                fast.kv.put("k", "from the fast node")
            with pytest.raises(StoreError, match=r"over the store's bound of 0.500 s"):
                fast.kv.delete("k")
            n0.kv.put("k", "from n0")  # a clock within the majority writes as before
            slow.kv.put("k2", "from the slow node")  # behind: peers accept its writes

            # a few more score pushes: each skew is still logged exactly once
            await trio.sleep(60)
            fast_warnings = warnings_of(caplog, "fast")
            slow_warnings = warnings_of(caplog, "slow")
            assert len(fast_warnings) == 1
            assert "5.0" in fast_warnings[0]
            assert "ahead of its peers'" in fast_warnings[0]
            assert "peers refuse its writes" in fast_warnings[0]
            assert len(slow_warnings) == 1
            assert "behind its peers'" in slow_warnings[0]
            assert "it refuses their writes" in slow_warnings[0]
            # n0 met the fast node before the slow one: as a pair, n0 *was* over the
            # bound (2 s of being one of two); once three, it is back within
            n0_warnings = warnings_of(caplog, "n0")
            assert not n0_warnings or "back within" in n0_warnings[-1]
            assert fast.stats().clock.warnings == 1

            # the fast clock is fixed: one more warning says so, and writes go through
            # (once its hybrid clock, 5 s ahead, is within the bound again)
            skews["fast"] = 0.0
            await poll(lambda: not fast.stats().clock.skewed)
            assert len(warnings_of(caplog, "fast")) == 2
            assert "back within the store's bound" in warnings_of(caplog, "fast")[1]
            await trio.sleep(5)
            fast.kv.put("k3", "fixed")
            await poll(lambda: all(n.kv.get("k3") == "fixed" for n in nodes.values()))


async def test_a_clock_stepped_back_refuses_kv_put_while_its_hlc_runs_ahead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The store stamps writes with max(last HLC + 1, clock): peers judge that stamp."""
    skews = {"n0": 0.0, "n1": 0.0, "n2": 0.0}
    with trio.fail_after(300):
        async with skewed_cluster(skews) as nodes:
            await poll(lambda: all(n.stats().clock.peers == 2 for n in nodes.values()))
            node = nodes["n1"]
            node.kv.put("k", "before the step")
            skews["n1"] = -3.0  # e.g. NTP stepped a fast clock back
            with pytest.raises(StoreError, match=r"its HLC leads its clock by 3.0"):
                node.kv.put("k", "during the step")
            await trio.sleep(4)  # the clock overtook the HLC again
            node.kv.put("k", "after the step")
            await poll(lambda: all(n.kv.get("k") == "after the step" for n in nodes.values()))


async def test_a_clock_within_the_bound_is_not_reported(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Just inside the bound: nothing is logged and writes replicate."""
    caplog.set_level(logging.WARNING, logger="beethoven.clock_offset")
    skews = {"n0": 0.0, "n1": 0.3, "n2": -0.3}
    with trio.fail_after(300):
        async with skewed_cluster(skews) as nodes:
            await poll(lambda: all(n.stats().clock.peers == 2 for n in nodes.values()))
            for name, node in nodes.items():
                assert not node.stats().clock.skewed, name
            nodes["n1"].kv.put("k", 1)
            await poll(lambda: all(n.kv.get("k") == 1 for n in nodes.values()))
            assert [r for r in caplog.records if r.name == "beethoven.clock_offset"] == []


async def test_two_nodes_apart_by_more_than_the_bound_both_warn(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With one peer there is no majority to side with: the fast one is refused."""
    caplog.set_level(logging.WARNING, logger="beethoven.clock_offset")
    skews = {"n0": 0.0, "n1": 0.7}
    with trio.fail_after(300):
        async with skewed_cluster(skews) as nodes:
            await poll(lambda: all(n.stats().clock.skewed for n in nodes.values()))
            assert nodes["n1"].stats().clock.offset == pytest.approx(0.7, abs=0.05)
            assert nodes["n0"].stats().clock.offset == pytest.approx(-0.7, abs=0.05)
            with pytest.raises(StoreError, match=r"ahead of its peers' by 0\.7"):
                nodes["n1"].kv.put("k", 1)
            nodes["n0"].kv.put("k", 1)
            assert len(warnings_of(caplog, "n0")) == len(warnings_of(caplog, "n1")) == 1
