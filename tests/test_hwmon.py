from __future__ import annotations

import tracemalloc

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from beethoven.hwmon import HwMon, MetricHistory, Sample, psutil_sampler


@given(capacity=st.integers(1, 20), values=st.lists(st.floats(0, 100), max_size=60))
def test_history_keeps_the_newest_capacity_samples(capacity: int, values: list[float]) -> None:
    history = MetricHistory(capacity)
    for i, value in enumerate(values):
        history.append(float(i), value)
    model = [Sample(float(i), v) for i, v in enumerate(values)][-capacity:]
    assert len(history) == len(model)
    assert history.last(capacity) == model
    assert history.latest() == (model[-1] if model else None)
    for t in range(-1, len(values) + 1):
        assert history.since(float(t)) == [s for s in model if s.time >= t]


def test_history_memory_is_constant() -> None:
    history = MetricHistory(100_000)
    for i in range(100_000):
        history.append(float(i), 1.0)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(200_000):
        history.append(float(i), 2.0)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert after - before < 10_000
    assert len(history) == 100_000


def test_real_psutil_reading_is_a_percentage() -> None:
    cpu, ram = psutil_sampler()
    assert 0.0 <= cpu <= 100.0 * 1024
    assert 0.0 < ram <= 100.0


async def test_samples_every_interval_and_survives_sampler_errors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script: list[tuple[float, float] | Exception] = [
        (10.0, 20.0),
        RuntimeError("sensor gone"),
        (30.0, 40.0),
        (50.0, 60.0),
    ]
    readings = iter(script)

    def sampler() -> tuple[float, float]:
        item = next(readings)
        if isinstance(item, Exception):
            raise item
        return item

    seen: list[tuple[float, float]] = []
    mon = HwMon(
        5.0, sampler=sampler, clock=trio.current_time, on_sample=lambda c, r: seen.append((c, r))
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(mon.run)
            assert mon.cpu.latest() == Sample(0.0, 10.0)  # sampled before started()
            await trio.sleep(16)
            nursery.cancel_scope.cancel()
    assert seen == [(10.0, 20.0), (30.0, 40.0), (50.0, 60.0)]
    assert mon.stats().errors == 1
    assert [s.time for s in mon.ram.last(10)] == [0.0, 10.0, 15.0]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        HwMon(0)
    with pytest.raises(ValueError):
        MetricHistory(0)
    with pytest.raises(KeyError):
        HwMon().history("disk")
