"""HwMon: samples CPU and RAM utilisation with psutil into bounded histories.

Each metric keeps its last ``capacity`` samples (default 100 000) in two
``array('d')`` ring buffers — timestamps and values — so memory is constant
(16 bytes a sample) however long the node runs. A sampling error is logged and
counted, and the next sample is tried at the next tick: it is never fatal (the
Elixir original's HwMon crashed the whole node on current Erlang on Linux).

A reading that is not a finite percentage (NaN, infinite, outside 0..100, not a
number) is rejected and counted: it is not stored, the metric keeps its last good
value, and the first rejection is logged at WARNING (later ones at debug), so a
broken sampler can never turn the node's allocator score into NaN or overflow it.
"""

from __future__ import annotations

import logging
import math
import time
from array import array
from collections.abc import Callable
from typing import NoReturn

import attrs
import psutil
import trio

__all__ = ["HwMon", "HwMonStats", "MetricHistory", "Sample", "psutil_sampler"]

logger = logging.getLogger(__name__)

CPU = "cpu"
RAM = "ram"


@attrs.frozen
class Sample:
    """One reading: wall-clock *time* (seconds since the epoch) and *value* (percent)."""

    time: float
    value: float


class MetricHistory:
    """A fixed-capacity ring of samples, oldest overwritten first."""

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._times = array("d", bytes(8 * capacity))
        self._values = array("d", bytes(8 * capacity))
        self._next = 0  # index of the slot the next sample goes to
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, when: float, value: float) -> None:
        """Add a sample, overwriting the oldest one when full."""
        self._times[self._next] = when
        self._values[self._next] = value
        self._next = (self._next + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def latest(self) -> Sample | None:
        """The newest sample, or ``None`` before the first one."""
        if self._size == 0:
            return None
        i = (self._next - 1) % self.capacity
        return Sample(self._times[i], self._values[i])

    def last(self, n: int) -> list[Sample]:
        """The newest *n* samples (fewer if not yet taken), oldest first."""
        n = max(0, min(n, self._size))
        start = (self._next - n) % self.capacity
        return [
            Sample(
                self._times[(start + k) % self.capacity], self._values[(start + k) % self.capacity]
            )
            for k in range(n)
        ]

    def since(self, t: float) -> list[Sample]:
        """Every sample taken at or after wall-clock time *t*, oldest first."""
        # Samples are appended in time order, so binary-search the logical sequence.
        lo, hi = 0, self._size
        first = (self._next - self._size) % self.capacity
        while lo < hi:
            mid = (lo + hi) // 2
            if self._times[(first + mid) % self.capacity] < t:
                lo = mid + 1
            else:
                hi = mid
        return self.last(self._size - lo)


@attrs.frozen
class HwMonStats:
    """Counters of a `HwMon`.

    Attributes:
        samples: Readings stored whole (both metrics good).
        errors: Sampler calls that raised.
        cpu_samples_kept: CPU samples in the history.
        ram_samples_kept: RAM samples in the history.
        rejected: Values refused for not being a finite percentage in 0..100 (one
            per bad value; the metric kept its last good value).
    """

    samples: int
    errors: int
    cpu_samples_kept: int
    ram_samples_kept: int
    rejected: int


#: A sampler returns ``(cpu_percent, ram_percent)``; it may raise.
Sampler = Callable[[], tuple[float, float]]


def psutil_sampler() -> tuple[float, float]:
    """Real CPU utilisation (not load average) and RAM in use, both in percent.

    CPU is measured over the time since the previous call (psutil's non-blocking
    mode), which is the sampling interval once the monitor runs.
    """
    return float(psutil.cpu_percent(interval=None)), float(psutil.virtual_memory().percent)


class HwMon:
    """Samples CPU and RAM every *interval* seconds into bounded histories.

    Args:
        interval: seconds between samples (the config key ``hwmon_interval``).
        capacity: samples kept per metric.
        sampler: the reading function; psutil by default (tests inject a fake).
        clock: wall-clock time for the samples' timestamps.
        on_sample: called with ``(cpu, ram)`` after every sample that stored a
            value, with each metric's latest good value (the allocator's built-in
            signals hang here); its errors are logged.
    """

    def __init__(
        self,
        interval: float = 5.0,
        *,
        capacity: int = 100_000,
        sampler: Sampler = psutil_sampler,
        clock: Callable[[], float] = time.time,
        on_sample: Callable[[float, float], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.cpu = MetricHistory(capacity)
        self.ram = MetricHistory(capacity)
        self._sampler = sampler
        self._clock = clock
        self.on_sample = on_sample
        self._samples = 0
        self._errors = 0
        self._rejected = 0

    def history(self, metric: str) -> MetricHistory:
        """The history of ``"cpu"`` or ``"ram"``."""
        if metric == CPU:
            return self.cpu
        if metric == RAM:
            return self.ram
        raise KeyError(f"unknown metric {metric!r}; expected 'cpu' or 'ram'")

    def sample_once(self) -> bool:
        """Take one sample now; return False (logged, counted) if it failed.

        A value that is not a finite percentage is rejected (counted, logged at
        WARNING the first time) and its metric keeps its last good value; a good
        value of the other metric is still stored and passed on.
        """
        try:
            cpu, ram = self._sampler()
        except Exception as exc:
            self._errors += 1
            logger.warning("hardware sampling failed (will retry): %r", exc)
            return False
        now = self._clock()
        stored = 0
        for metric, history, value in ((CPU, self.cpu, cpu), (RAM, self.ram, ram)):
            if _is_percent(value):
                history.append(now, float(value))
                stored += 1
            else:
                self._reject(metric, value)
        if stored == 0:
            return False
        if stored == 2:
            self._samples += 1
        cpu_now, ram_now = self.cpu.latest(), self.ram.latest()
        if self.on_sample is not None and cpu_now is not None and ram_now is not None:
            try:
                self.on_sample(cpu_now.value, ram_now.value)  # a rejected one: its last good
            except Exception:
                logger.exception("HwMon on_sample callback failed")
        return stored == 2

    def _reject(self, metric: str, value: object) -> None:
        self._rejected += 1
        kept = self.history(metric).latest()
        log = logger.warning if self._rejected == 1 else logger.debug
        log(
            "hardware sample rejected: %s = %r is not a percentage in 0..100 "
            "(keeping the last good value %s; further rejections are counted in "
            "HwMonStats.rejected)",
            metric,
            value,
            "none yet" if kept is None else kept.value,
        )

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Sample forever: once at start (so the allocator has data), then every interval."""
        if self._sampler is psutil_sampler:
            psutil.cpu_percent(interval=None)  # prime: psutil's first reading is meaningless
            await trio.sleep(min(0.1, self.interval))
        self.sample_once()
        task_status.started()
        next_at = trio.current_time() + self.interval
        while True:
            await trio.sleep_until(next_at)
            next_at += self.interval
            if next_at < trio.current_time():  # fell behind (loop blocked): don't burst
                next_at = trio.current_time() + self.interval
            self.sample_once()

    def stats(self) -> HwMonStats:
        """Current counters."""
        return HwMonStats(
            samples=self._samples,
            errors=self._errors,
            cpu_samples_kept=len(self.cpu),
            ram_samples_kept=len(self.ram),
            rejected=self._rejected,
        )


def _is_percent(value: object) -> bool:
    """A finite real number within 0..100 (bools and strings are not readings)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 100.0
    )
