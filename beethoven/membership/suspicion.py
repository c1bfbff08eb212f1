"""Lifeguard's dynamic suspicion timeout.

A suspicion starts at the maximum timeout and shrinks, logarithmically, as
independent accusers confirm it; with *k* confirmations it reaches the minimum::

    timeout(c) = max(min, max − (max − min)·log(c + 1)/log(k + 1))

measured from the moment the suspicion started locally. ``k = 0`` means the minimum
applies at once (used when the cluster is too small to expect confirmations).
"""

from __future__ import annotations

import math

__all__ = ["Suspicion", "suspicion_deadline"]


def suspicion_deadline(
    start: float, confirmations: int, k: int, min_timeout: float, max_timeout: float
) -> float:
    """The absolute deadline of a suspicion with *confirmations* of *k* expected.

    Args:
        start: driver time the suspicion started locally.
        confirmations: independent accusers heard besides the first one.
        k: confirmations needed to reach the minimum timeout.
        min_timeout: the floor, in seconds.
        max_timeout: the starting timeout, in seconds.
    """
    if k < 1 or confirmations >= k:
        return start + min_timeout
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    timeout = max_timeout - frac * (max_timeout - min_timeout)
    return start + max(min_timeout, timeout)


class Suspicion:
    """The live state of one suspicion: who accused, and when it expires.

    Args:
        accuser: name of the first accuser (does not count as a confirmation).
        start: driver time the suspicion started locally.
        k: confirmations needed to reach the minimum.
        min_timeout: floor in seconds.
        max_timeout: starting timeout in seconds.
    """

    __slots__ = ("_accusers", "deadline", "extended", "k", "max_timeout", "min_timeout", "start")

    def __init__(
        self, accuser: str, start: float, k: int, min_timeout: float, max_timeout: float
    ) -> None:
        self._accusers = {accuser}
        self.start = start
        self.k = k
        self.min_timeout = min_timeout
        self.max_timeout = max(max_timeout, min_timeout)
        self.deadline = suspicion_deadline(start, 0, k, min_timeout, self.max_timeout)
        #: Set once the stall guard has postponed this suspicion's expiry.
        self.extended = False

    @property
    def confirmations(self) -> int:
        """Independent confirmations so far (accusers besides the first)."""
        return len(self._accusers) - 1

    def confirm(self, accuser: str) -> bool:
        """Record *accuser*; return True when it is new and counted (may shrink `deadline`)."""
        if accuser in self._accusers or self.confirmations >= self.k:
            return False
        self._accusers.add(accuser)
        self.deadline = suspicion_deadline(
            self.start, self.confirmations, self.k, self.min_timeout, self.max_timeout
        )
        return True
