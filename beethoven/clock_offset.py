"""This node's wall-clock offset to its peers, estimated from the timestamps they send.

The store refuses a write whose HLC leads the receiver's clock by more than its
bound (``max_offset_ms``, 500 ms by default), so a node whose clock runs ahead has
every write refused by its peers, and a node whose clock runs behind refuses
theirs. This module turns timestamps the peers already send into an estimate the
node can act on: warn the operator, report it in ``stats()`` and refuse a
``kv.put`` that the peers would drop.

A *sample* is ``peer wall time - local wall time`` at the moment a message sent
straight from that peer arrives (the node uses the ``t`` of a peer's score
record, pushed directly by its owner every few seconds). It reads the peer's
offset minus the one-way delay, so a fast clock looks a delay *less* fast.

The estimate is robust by construction:

* only the latest sample of each peer counts, and only while it is fresh
  (``max_age`` seconds of the caller's monotonic time);
* it is a majority order statistic, not a mean: the node is ``x`` seconds *ahead*
  when a majority of its peers (more than half) trail it by at least ``x``, and
  ``x`` seconds *behind* when a majority lead it by at least ``x``. Both cannot
  hold at once; when neither does the offset is 0. One wildly wrong peer moves
  nobody else's estimate: in a cluster with one node 20 s behind, only that node
  finds itself off, the others read 0.

The module is pure: no clock, no I/O; the caller passes the times.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Container, Iterable

import attrs

__all__ = ["ClockOffsetStats", "ClockOffsets", "majority_offset"]

logger = logging.getLogger(__name__)


def majority_offset(peer_offsets: Iterable[float]) -> float | None:
    """This node's clock minus its peers', as a majority sees it.

    Args:
        peer_offsets: One sample per peer: ``peer clock - this node's clock``, seconds.

    Returns:
        ``x > 0`` when more than half of the peers trail this node by at least ``x``
        (this node is ahead), ``-x < 0`` when more than half lead it by at least
        ``x`` (it is behind), ``0.0`` otherwise; ``None`` without samples.
    """
    offsets = sorted(o for o in peer_offsets if math.isfinite(o))
    n = len(offsets)
    if n == 0:
        return None
    k = n // 2 + 1  # a majority of the peers
    # The k-th largest lead (me - peer) and the k-th largest peer offset (peer - me).
    ahead = -offsets[k - 1]
    behind = offsets[n - k]
    if ahead > 0:
        return ahead
    if behind > 0:
        return -behind
    return 0.0


@attrs.frozen
class ClockOffsetStats:
    """The clock-offset estimate of a node (``NodeStats.clock``).

    Attributes:
        offset: This node's clock minus its peers' clocks in seconds, as a majority
            of the peers with a fresh sample sees it (positive: ahead, so peers
            refuse this node's writes beyond ``bound``; negative: behind, so this
            node refuses theirs); ``None`` until a peer was sampled.
        bound: The store's clock bound in seconds (``max_offset_ms / 1000``).
        skewed: ``abs(offset) > bound``.
        peers: Peers with a fresh sample.
        samples: Samples taken since start.
        warnings: Times the offset went over the bound (each logged once).
    """

    offset: float | None
    bound: float
    skewed: bool
    peers: int
    samples: int
    warnings: int


class ClockOffsets:
    """Latest offset sample per peer, the majority estimate, and the over-bound warning.

    Args:
        name: This node's name (for the log lines).
        bound: Largest offset in seconds the store tolerates (its ``max_offset_ms``).
        max_age: Seconds (of the caller's monotonic clock) a sample stays usable.
    """

    def __init__(self, name: str, *, bound: float, max_age: float) -> None:
        if not bound > 0 or not max_age > 0:
            raise ValueError(f"bound and max_age must be positive, got {bound}, {max_age}")
        self._name = name
        self._bound = bound
        self._max_age = max_age
        self._latest: dict[str, tuple[float, float]] = {}  # peer -> (offset, taken at)
        self._samples = 0
        self._warnings = 0
        self._skewed = False

    @property
    def bound(self) -> float:
        """The store's clock bound in seconds."""
        return self._bound

    def observe(self, peer: str, offset: float, at: float) -> None:
        """Record a sample: *peer*'s clock minus this node's, taken at monotonic time *at*.

        Non-finite samples are ignored.
        """
        if math.isfinite(offset):
            self._latest[peer] = (offset, at)
            self._samples += 1

    def forget(self, peer: str) -> None:
        """Drop *peer*'s sample (it left or died)."""
        self._latest.pop(peer, None)

    def _fresh(self, now: float, peers: Container[str] | None) -> list[float]:
        horizon = now - self._max_age
        stale = [p for p, (_, at) in self._latest.items() if at < horizon]
        for p in stale:
            del self._latest[p]
        return [o for p, (o, _) in self._latest.items() if peers is None or p in peers]

    def offset(
        self, now: float, peers: Container[str] | None = None, *, lead: float = 0.0
    ) -> float | None:
        """The current estimate (see `majority_offset`), over fresh samples of *peers*.

        Args:
            now: The caller's monotonic time, in the unit of ``observe``'s *at*.
            peers: Count only these peers (the online members); ``None``: all.
            lead: Seconds a timestamp to judge leads this node's clock (a hybrid
                clock that stays ahead after the wall clock stepped back); the
                result is then that timestamp's offset to the peers' clocks.
        """
        return majority_offset(o - lead for o in self._fresh(now, peers))

    def evaluate(self, now: float, peers: Container[str] | None = None) -> float | None:
        """Update the over-bound state; log a WARNING when it changes.

        Logs once when the offset goes over the bound and once when it comes back
        within, not on every sample.

        Returns:
            The current estimate.
        """
        offset = self.offset(now, peers)
        skewed = offset is not None and abs(offset) > self._bound
        if skewed and not self._skewed:
            self._warnings += 1
            assert offset is not None
            if offset > 0:
                logger.warning(
                    "node %s: this node's clock is %.3f s ahead of its peers' (over the "
                    "store's bound of %.3f s): peers refuse its writes; fix the clock (NTP)",
                    self._name,
                    offset,
                    self._bound,
                )
            else:
                logger.warning(
                    "node %s: this node's clock is %.3f s behind its peers' (over the "
                    "store's bound of %.3f s): it refuses their writes; fix the clock (NTP)",
                    self._name,
                    -offset,
                    self._bound,
                )
        elif self._skewed and not skewed:
            logger.warning(
                "node %s: clock offset to peers back within the store's bound of %.3f s (now %s)",
                self._name,
                self._bound,
                "unknown" if offset is None else f"{offset:+.3f} s",
            )
        self._skewed = skewed
        return offset

    def stats(self, now: float, peers: Container[str] | None = None) -> ClockOffsetStats:
        """The estimate and counters (does not log)."""
        fresh = self._fresh(now, peers)
        offset = majority_offset(fresh)
        return ClockOffsetStats(
            offset=offset,
            bound=self._bound,
            skewed=offset is not None and abs(offset) > self._bound,
            peers=len(fresh),
            samples=self._samples,
            warnings=self._warnings,
        )
