"""A skewed clock on real sockets: three `open_node`s on 127.0.0.x, one clock 5 s fast.

Before the fix the fast node's ``kv.put`` returned as if it had worked while both
peers refused the write, and ``beethoven status`` said nothing about clocks.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from beethoven.address import Address
from beethoven.cli import query_agent
from beethoven.config import Config
from beethoven.errors import StoreError
from beethoven.node import Node, open_node
from beethoven.transport.udp_tcp import open_udp_tcp_transport
from beethoven.wire.security import generate_key, key_to_string

HOSTS = ("127.0.0.91", "127.0.0.92", "127.0.0.93")


async def free_port(host: str) -> int:
    async with open_udp_tcp_transport(Address(host, 0)) as probe:
        return probe.local_address.port


def busy_sampler() -> Callable[[], tuple[float, float]]:
    """A CPU reading that changes at every sample, so scores (and clock samples) flow."""
    loads = itertools.cycle((10.0, 60.0))
    return lambda: (next(loads), 30.0)


def offset_clock(skew: float) -> Callable[[], float]:
    """The real wall clock, *skew* seconds off."""
    return lambda: time.time() + skew


async def poll(condition: Callable[[], bool]) -> None:
    """Wait for a node-state predicate; callers bound it with fail_after."""
    while not condition():  # noqa: ASYNC110 - a predicate over live state
        await trio.sleep(0.05)


@asynccontextmanager
async def real_nodes(skews: list[float], key: str) -> AsyncIterator[list[Node]]:
    port = await free_port(HOSTS[0])
    async with AsyncExitStack() as stack:
        nodes = []
        for i, skew in enumerate(skews):
            config = Config(
                name=f"c{i}",
                bind=HOSTS[i],
                port=port,
                cluster="clock-test",
                cluster_net=f"{HOSTS[i]}/32",
                seeds=tuple(f"{h}:{port}" for h in HOSTS[:i]),
                keys=key,
                preset="local",
                hwmon_interval=0.5,
            )
            nodes.append(
                await stack.enter_async_context(
                    open_node(
                        config,
                        hw_sampler=busy_sampler(),
                        clock=offset_clock(skew),
                    )
                )
            )
        yield nodes


async def test_a_real_node_5s_fast_is_told_in_status_logs_and_kv_put(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="beethoven.clock_offset")
    key = key_to_string(generate_key())
    with trio.fail_after(60):
        async with real_nodes([0.0, 5.0, 0.0], key) as (c0, fast, c2):
            everyone = (c0, fast, c2)
            await poll(lambda: all(n.stats().clock.peers == 2 for n in everyone))
            await poll(lambda: fast.stats().clock.skewed)
            assert fast.stats().clock.offset == pytest.approx(5.0, abs=0.5)
            assert not c0.stats().clock.skewed
            assert not c2.stats().clock.skewed

            # what `beethoven status` prints, over the wire from the agent
            status = await query_agent(str(fast.address), "status", key=key, timeout=5)
            assert status["clock_skewed"] is True
            assert status["clock_offset"] == pytest.approx(5.0, abs=0.5)
            assert status["clock_bound"] == 0.5
            healthy = await query_agent(str(c0.address), "status", key=key, timeout=5)
            assert healthy["clock_skewed"] is False

            with pytest.raises(StoreError, match=r"this node's clock is ahead of its peers' by"):
                fast.kv.put("k", "never arrives")
            c0.kv.put("k", "from c0")
            await poll(lambda: all(n.kv.get("k") == "from c0" for n in everyone))
            fast_warnings = [
                r.getMessage() for r in caplog.records if r.getMessage().startswith("node c1:")
            ]
            assert len(fast_warnings) == 1
            assert "ahead of its peers'" in fast_warnings[0]
