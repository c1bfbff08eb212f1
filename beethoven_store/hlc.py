"""Hybrid logical clock (Kulkarni et al. 2014) with an injected physical clock.

A timestamp is one integer ``wall_ms << 16 | logical``: 48 bits of wall-clock
milliseconds and a 16-bit logical counter. Packed big-endian into 8 bytes, byte
order equals time order, and plain integer comparison equals tuple comparison.

The clock is pure: it never reads the system time itself. The caller injects a
physical clock returning milliseconds (``time.time_ns() // 1_000_000`` in
production, ``int(trio.current_time() * 1000)`` in simulation).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

import attrs

from beethoven.errors import StoreError

__all__ = [
    "HLC",
    "LOGICAL_BITS",
    "MAX_WALL_MS",
    "ClockStats",
    "HybridClock",
    "hlc_logical",
    "hlc_pack",
    "hlc_unpack",
    "hlc_wall",
    "make_hlc",
]

logger = logging.getLogger(__name__)

#: Type alias: an HLC timestamp is a plain non-negative int below 2**64.
HLC = int

#: Bits of the logical counter.
LOGICAL_BITS = 16
#: Largest representable wall-clock millisecond value.
MAX_WALL_MS = (1 << 48) - 1
_LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
_MAX_HLC = (1 << 64) - 1
_PACK = struct.Struct(">Q")


def make_hlc(wall_ms: int, logical: int = 0) -> HLC:
    """Build a timestamp from its two components.

    Args:
        wall_ms: Wall-clock milliseconds, 0 ≤ wall_ms < 2**48.
        logical: Logical counter, 0 ≤ logical < 2**16.

    Returns:
        The packed integer timestamp.

    Raises:
        StoreError: If a component is out of range.
    """
    if not 0 <= wall_ms <= MAX_WALL_MS or not 0 <= logical <= _LOGICAL_MASK:
        raise StoreError(f"HLC component out of range: wall_ms={wall_ms} logical={logical}")
    return (wall_ms << LOGICAL_BITS) | logical


def hlc_wall(ts: HLC) -> int:
    """Return the wall-clock milliseconds of a timestamp."""
    return ts >> LOGICAL_BITS


def hlc_logical(ts: HLC) -> int:
    """Return the logical counter of a timestamp."""
    return ts & _LOGICAL_MASK


def hlc_pack(ts: HLC) -> bytes:
    """Encode a timestamp as 8 big-endian bytes (byte order equals time order).

    Raises:
        StoreError: If ``ts`` is not a valid timestamp.
    """
    if not 0 <= ts <= _MAX_HLC:
        raise StoreError(f"invalid HLC timestamp {ts}")
    return _PACK.pack(ts)


def hlc_unpack(data: bytes) -> HLC:
    """Decode 8 big-endian bytes produced by :func:`hlc_pack`.

    Raises:
        StoreError: If ``data`` is not exactly 8 bytes long.
    """
    if len(data) != 8:
        raise StoreError(f"an HLC timestamp is 8 bytes, got {len(data)}")
    value: int = _PACK.unpack(data)[0]
    return value


@attrs.frozen
class ClockStats:
    """Counters of a :class:`HybridClock`.

    Attributes:
        last: The most recent timestamp issued or observed.
        refused: Remote timestamps refused for being too far ahead.
        backward_jumps: Backward physical-clock steps larger than ``max_offset_ms / 10``.
        max_offset_ms: The configured maximum tolerated offset.
    """

    last: HLC
    refused: int
    backward_jumps: int
    max_offset_ms: int


class HybridClock:
    """A hybrid logical clock over an injected physical clock.

    ``now()`` is strictly increasing whatever the physical clock does; ``update()``
    merges a remote timestamp (the receive rule) unless it is more than
    ``max_offset_ms`` ahead of the local physical time, in which case it is
    refused and counted.

    Args:
        physical_ms: Callable returning the physical time in integer milliseconds.
            Negative values are clamped to 0.
        max_offset_ms: Largest tolerated lead of a remote wall time over the local
            physical time. Must be positive (a zero offset refuses every peer whose
            clock is a millisecond ahead).
        start: Lowest timestamp to resume from (e.g. a persisted high-water mark);
            every timestamp issued is strictly greater.

    Raises:
        StoreError: If ``max_offset_ms`` is not positive.
    """

    __slots__ = ("_backward", "_last", "_last_pt", "_max_offset", "_physical", "_refused")

    def __init__(
        self,
        physical_ms: Callable[[], int],
        *,
        max_offset_ms: int = 500,
        start: HLC = 0,
    ) -> None:
        if max_offset_ms <= 0:
            raise StoreError(f"max_offset_ms must be positive, got {max_offset_ms}")
        self._physical = physical_ms
        self._max_offset = max_offset_ms
        self._last: HLC = start
        self._last_pt = 0
        self._refused = 0
        self._backward = 0

    @property
    def last(self) -> HLC:
        """The most recent timestamp issued or merged."""
        return self._last

    @property
    def max_offset_ms(self) -> int:
        """The configured maximum tolerated offset in milliseconds."""
        return self._max_offset

    def physical(self) -> int:
        """Read the physical clock (ms), clamped to the representable range.

        Backward steps larger than a tenth of ``max_offset_ms`` are counted and
        logged at warning level once per step.
        """
        pt = int(self._physical())
        if pt < 0:
            pt = 0
        elif pt > MAX_WALL_MS:
            pt = MAX_WALL_MS
        if self._last_pt - pt > self._max_offset // 10:
            self._backward += 1
            logger.warning("physical clock stepped back by %d ms", self._last_pt - pt)
        self._last_pt = pt
        return pt

    def now(self) -> HLC:
        """Issue a timestamp for a local event (the send rule).

        Returns:
            A timestamp strictly greater than every one issued or merged before and
            at least the current physical time. When the logical counter would
            overflow, the wall component advances by one millisecond instead.
        """
        ts = max(self._last + 1, self.physical() << LOGICAL_BITS)
        self._last = ts
        return ts

    def update(self, remote: HLC) -> HLC | None:
        """Merge a remote timestamp (the receive rule).

        Args:
            remote: The timestamp carried by a received message.

        Returns:
            The new local timestamp, strictly greater than ``remote`` and than the
            previous local timestamp; or ``None`` if ``remote`` was refused because
            its wall time leads the local physical time by more than
            ``max_offset_ms`` (the refusal is counted).
        """
        pt = self.physical()
        if (remote >> LOGICAL_BITS) - pt > self._max_offset:
            self._refused += 1
            logger.debug("refused remote HLC %d: %d ms ahead", remote, (remote >> 16) - pt)
            return None
        ts = max(self._last + 1, remote + 1, pt << LOGICAL_BITS)
        self._last = ts
        return ts

    def acceptable(self, remote: HLC) -> bool:
        """Return whether ``remote`` is within ``max_offset_ms`` of physical time.

        Counts a refusal when it is not; does not advance the clock.
        """
        if (remote >> LOGICAL_BITS) - self.physical() > self._max_offset:
            self._refused += 1
            return False
        return True

    def observe(self, remote: HLC) -> None:
        """Advance the clock past an already accepted remote timestamp."""
        if remote >= self._last:
            self._last = remote + 1

    def stats(self) -> ClockStats:
        """Return the clock's counters."""
        return ClockStats(
            last=self._last,
            refused=self._refused,
            backward_jumps=self._backward,
            max_offset_ms=self._max_offset,
        )
