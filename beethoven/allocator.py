"""Allocator: named load signals, this node's score, and the least-busy choice.

A signal has a name, a weight and a type, as in the Elixir original:

* ``count`` — incremented and decremented, never below 0; contributes ``value × weight``;
* ``percent`` — a utilisation in percent; contributes ``exp(0.05 × value) × weight``
  (a busy node's score climbs steeply);
* ``pre_processed`` — a score computed by the caller; contributes ``value`` (weight
  is ignored).

A node's score is the sum over its signals; lower means less busy. Each node
publishes its score in its own keyspace of the replicated store, and
`choose_least_busy` picks, among online nodes, the one with the lowest score —
never an offline node (the original could return a dead one), with scores older
than a staleness bound counted as unknown and ranked after every known score.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping

import attrs

from beethoven.errors import ConfigError

__all__ = [
    "Allocator",
    "PublishedScore",
    "Signal",
    "SignalType",
    "choose_least_busy",
    "signal_score",
]


class SignalType(enum.StrEnum):
    """How a signal's value turns into score."""

    COUNT = "count"
    PERCENT = "percent"
    PRE_PROCESSED = "pre_processed"


@attrs.frozen
class Signal:
    """A registered signal: its *name*, *weight* and *type*."""

    name: str
    weight: float
    type: SignalType


def signal_score(signal: Signal, value: float) -> float:
    """The contribution of *signal* at *value* to the node's score."""
    if signal.type is SignalType.COUNT:
        return max(0.0, value) * signal.weight
    if signal.type is SignalType.PERCENT:
        return math.exp(0.05 * value) * signal.weight
    return value


class Allocator:
    """This node's signals and score.

    Built-in signals (registered by the node): ``cpu`` and ``ram`` as percent with
    weight 1.0 (fed by HwMon) and ``roles`` as a count with weight 0.1.
    """

    def __init__(self) -> None:
        self._signals: dict[str, Signal] = {}
        self._values: dict[str, float] = {}
        self.version = 0  # bumped on every change, so publishers can skip no-ops

    def register(self, name: str, weight: float = 1.0, type: SignalType | str = "count") -> Signal:
        """Register a signal (idempotent for the same weight and type).

        Raises:
            ConfigError: the name is taken with another weight or type, or the
                weight or type is invalid.
        """
        try:
            kind = SignalType(type)
        except ValueError:
            known = ", ".join(t.value for t in SignalType)
            raise ConfigError(f"signal {name!r}: unknown type {type!r} (one of {known})") from None
        if not isinstance(name, str) or not name:
            raise ConfigError("signal name must be a non-empty string")
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"signal {name!r}: weight must be a finite number >= 0")
        signal = Signal(name, float(weight), kind)
        existing = self._signals.get(name)
        if existing is not None:
            if existing != signal:
                raise ConfigError(
                    f"signal {name!r} is already registered as {existing.type.value} with "
                    f"weight {existing.weight}; cannot re-register it as {kind.value} "
                    f"with weight {weight}"
                )
            return existing
        self._signals[name] = signal
        self._values[name] = 0.0
        self.version += 1
        return signal

    def _get(self, name: str) -> Signal:
        try:
            return self._signals[name]
        except KeyError:
            raise KeyError(f"signal {name!r} is not registered") from None

    def set(self, name: str, value: float) -> None:
        """Set a signal's value (a count is clamped at 0)."""
        signal = self._get(name)
        if not math.isfinite(value):
            raise ValueError(f"signal {name!r}: value must be finite, got {value!r}")
        if signal.type is SignalType.COUNT:
            value = max(0.0, value)
        if self._values[name] != value:
            self._values[name] = float(value)
            self.version += 1

    def increment(self, name: str, by: float = 1.0) -> None:
        """Add *by* to a count signal."""
        if self._get(name).type is not SignalType.COUNT:
            raise TypeError(f"signal {name!r} is not a count")
        self.set(name, self._values[name] + by)

    def decrement(self, name: str, by: float = 1.0) -> None:
        """Subtract *by* from a count signal (never below 0)."""
        self.increment(name, -by)

    def value(self, name: str) -> float:
        """A signal's current value."""
        self._get(name)
        return self._values[name]

    def signals(self) -> list[Signal]:
        """Every registered signal."""
        return list(self._signals.values())

    def values(self) -> dict[str, float]:
        """Every signal's current value."""
        return dict(self._values)

    def score(self) -> float:
        """This node's score: the sum of every signal's contribution."""
        return sum(signal_score(s, self._values[s.name]) for s in self._signals.values())


@attrs.frozen
class PublishedScore:
    """A node's score as read from the store, with when it was published (seconds)."""

    score: float
    published_at: float


def choose_least_busy(
    scores: Mapping[str, PublishedScore],
    online: Iterable[str],
    *,
    now: float,
    stale_after: float,
) -> str | None:
    """Pick the online node with the lowest fresh score.

    Args:
        scores: node name → its last published score.
        online: names of the nodes that are online now; only these are candidates.
        now: the current time, on the same clock as ``published_at``.
        stale_after: a score older than this many seconds counts as unknown.

    Returns:
        The chosen node name, or ``None`` when no node is online. Nodes with an
        unknown (missing or stale) score rank after every node with a known one;
        ties are broken by name, so every node makes the same choice.
    """
    best: tuple[int, float, str] | None = None
    for name in online:
        published = scores.get(name)
        if published is None or now - published.published_at > stale_after:
            key = (1, 0.0, name)
        else:
            key = (0, published.score, name)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]
