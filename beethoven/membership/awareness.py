"""Lifeguard's local health multiplier (LHM): how much this node distrusts itself.

A node that misses its own acks, gets no nacks from its relays, has to refute
accusations about itself, or notices that its own timers fire late is probably the
slow one. Its score rises, and its probe interval and timeouts are scaled by
``score + 1`` so that it accuses others less eagerly. A successful probe lowers it.
"""

from __future__ import annotations

__all__ = ["Awareness"]


class Awareness:
    """A saturating health score in ``0 .. max_multiplier - 1``.

    Args:
        max_multiplier: ceiling of the timeout multiplier (``score + 1``).
        enabled: when false the score stays 0 and `scale` is always 1.
    """

    __slots__ = ("_enabled", "_max", "_score")

    def __init__(self, max_multiplier: int, *, enabled: bool = True) -> None:
        self._max = max_multiplier
        self._score = 0
        self._enabled = enabled

    @property
    def score(self) -> int:
        """The current health score (0 is healthy)."""
        return self._score

    @property
    def enabled(self) -> bool:
        """Whether local health is in effect."""
        return self._enabled

    def apply(self, delta: int) -> int:
        """Add *delta* to the score, clamped to ``0 .. max_multiplier - 1``; return it."""
        if not self._enabled or delta == 0:
            return self._score
        score = self._score + delta
        if score < 0:
            score = 0
        elif score > self._max - 1:
            score = self._max - 1
        self._score = score
        return score

    def scale(self, timeout: float) -> float:
        """Scale *timeout* by ``score + 1``."""
        return timeout * (self._score + 1)
