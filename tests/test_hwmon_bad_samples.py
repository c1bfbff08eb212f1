"""A hardware reading that is not a finite percentage is rejected, counted and never scored.

Before the fix a NaN or out-of-range reading went into the history as is and on to
the allocator: NaN made ``on_sample`` raise on every tick, and a huge percentage
overflowed ``exp`` in the score, which ended the node's score publisher — and the node.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from beethoven.hwmon import HwMon
from beethoven.testing import open_cluster

NAN = float("nan")
INF = float("inf")


def scripted(readings: Sequence[tuple[object, object]]) -> Callable[[], tuple[float, float]]:
    """A sampler that returns *readings* in turn, then repeats the last one."""
    it: Iterator[tuple[object, object]] = iter(readings)
    last = readings[-1]

    def sample() -> tuple[float, float]:
        nonlocal last
        last = next(it, last)
        return last  # type: ignore[return-value]  # deliberately not always floats

    return sample


@pytest.mark.parametrize(
    "bad",
    [NAN, INF, -INF, 100.0001, -0.0001, 1e6, "50", True, None],
    ids=repr,
)
def test_a_bad_reading_is_not_stored_and_the_last_good_value_is_kept(
    bad: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="beethoven.hwmon")
    passed: list[tuple[float, float]] = []
    mon = HwMon(
        1.0,
        sampler=scripted([(12.5, 30.0), (bad, 31.0), (bad, 32.0)]),
        clock=iter(range(100)).__next__,
        on_sample=lambda cpu, ram: passed.append((cpu, ram)),
    )
    assert mon.sample_once()
    assert not mon.sample_once()
    assert not mon.sample_once()
    assert [s.value for s in mon.cpu.last(10)] == [12.5]
    assert [s.value for s in mon.ram.last(10)] == [30.0, 31.0, 32.0]  # the good metric goes on
    assert passed == [(12.5, 30.0), (12.5, 31.0), (12.5, 32.0)]
    stats = mon.stats()
    assert stats.rejected == 2
    assert stats.samples == 1
    assert stats.errors == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "cpu" in warnings[0].getMessage()
    assert "keeping the last good value 12.5" in warnings[0].getMessage()


@pytest.mark.parametrize("edge", [0, 0.0, 100, 100.0, 99.9999, 0.0001])
def test_a_reading_just_inside_0_to_100_is_stored(edge: float) -> None:
    mon = HwMon(1.0, sampler=scripted([(edge, edge)]), clock=lambda: 0.0)
    assert mon.sample_once()
    assert mon.cpu.latest() is not None
    assert mon.stats().rejected == 0


def test_bad_readings_before_any_good_one_reach_no_one() -> None:
    passed: list[tuple[float, float]] = []
    mon = HwMon(
        1.0,
        sampler=scripted([(NAN, NAN), (50.0, NAN), (50.0, 40.0)]),
        clock=lambda: 0.0,
        on_sample=lambda cpu, ram: passed.append((cpu, ram)),
    )
    assert not mon.sample_once()
    assert not mon.sample_once()  # cpu stored, but ram has no good value yet
    assert passed == []
    assert mon.sample_once()
    assert passed == [(50.0, 40.0)]
    assert mon.stats().rejected == 3


@given(st.lists(st.tuples(st.floats(), st.floats()), min_size=1, max_size=30))
def test_whatever_a_sampler_returns_the_history_holds_only_percentages(
    readings: list[tuple[float, float]],
) -> None:
    passed: list[tuple[float, float]] = []
    mon = HwMon(
        1.0,
        sampler=scripted(readings),
        clock=lambda: 0.0,
        on_sample=lambda cpu, ram: passed.append((cpu, ram)),
    )
    for _ in readings:
        mon.sample_once()
    for history in (mon.cpu, mon.ram):
        assert all(0 <= s.value <= 100 for s in history.last(len(readings)))
    assert all(0 <= v <= 100 for pair in passed for v in pair)
    bad = sum(not (0 <= v <= 100) for pair in readings for v in pair)  # NaN compares False
    assert mon.stats().rejected == bad


async def test_a_node_fed_nan_and_huge_readings_stays_up_and_publishes_a_finite_score(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # one sampler for both nodes: each takes one good reading at start, then only bad ones
    sampler = scripted([(20.0, 40.0), (20.0, 40.0), (NAN, 40.0), (1e6, 1e6), (INF, -5.0)])
    with trio.fail_after(120):
        async with open_cluster(2, hw_sampler=sampler, hwmon_interval=1.0) as cluster:
            await cluster.wait_ready()
            await trio.sleep(30)  # dozens of bad readings, several score publications
            for node in cluster.nodes():
                assert math.isfinite(node.score())
                assert node.describe("status")["score"] == round(node.score(), 4)
                assert node.stats().hwmon.rejected > 10
                cpu, ram = node.hwmon.cpu.latest(), node.hwmon.ram.latest()
                assert cpu is not None
                assert cpu.value == 20.0
                assert ram is not None
                assert ram.value == 40.0
                published = {n: s.score for n, s in node._published_scores().items()}
                assert set(published) == {"n0", "n1"}
                assert all(math.isfinite(s) for s in published.values())
