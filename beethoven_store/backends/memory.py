"""``memory://``: the default backend — dicts only, nothing survives the process.

The store does not persist through it at all (``durable = False``) and starts a
new owner generation on every open. It still implements the whole protocol so
that it passes :class:`beethoven_store.testing.BackendContract` and serves as the
reference in the backend-equivalence tests.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Iterator
from types import TracebackType
from typing import ClassVar

from beethoven.errors import StoreError
from beethoven_store.backends.base import BackendStats, Batch, Row, RowId, Snapshot

__all__ = ["MemoryBackend"]

logger = logging.getLogger(__name__)


def _check_row(r: object) -> None:
    ok = (
        isinstance(r, tuple)
        and len(r) == 8
        and type(r[0]) is int
        and type(r[1]) is str
        and type(r[2]) is bytes
        and type(r[3]) is int
        and type(r[4]) is int
        and type(r[5]) is str
        and (r[6] is None or type(r[6]) is bytes)
        and (r[7] is None or type(r[7]) is int)
    )
    if not ok:
        raise StoreError(f"malformed row {r!r}")


class MemoryBackend:
    """A backend in process memory (see the module docstring)."""

    scheme: ClassVar[str] = "memory"
    durable: ClassVar[bool] = False

    def __init__(self) -> None:
        self._rows: dict[RowId, Row] = {}
        self._meta: dict[str, bytes] = {}
        self._batches = 0
        self._last_ms = 0.0
        self._total_ms = 0.0
        self._closed = False

    @classmethod
    def from_url(cls, url: urllib.parse.SplitResult, **options: str) -> MemoryBackend:
        """Open a fresh, empty memory backend.

        Raises:
            StoreError: If the URL has a path or any option.
        """
        if options:
            raise StoreError(f"memory:// takes no options, got {sorted(options)}")
        if url.netloc or url.path not in ("", "/"):
            raise StoreError(f"memory:// takes no path, got {urllib.parse.urlunsplit(url)!r}")
        return cls()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("memory backend is closed")

    def load(self) -> Snapshot:
        """Return a copy of everything applied so far."""
        self._check_open()
        return Snapshot(dict(self._meta), [self._rows[k] for k in sorted(self._rows)])

    def apply(self, batch: Batch) -> None:
        """Apply a batch (atomic: validated before any change)."""
        self._check_open()
        t0 = time.perf_counter()
        for r in batch.upserts:
            _check_row(r)
        for rid in batch.deletes:
            self._rows.pop(rid, None)
        for r in batch.upserts:
            self._rows[(r.space, r.owner, r.key)] = r
        for k, v in batch.meta.items():
            if v is None:
                self._meta.pop(k, None)
            else:
                self._meta[k] = v
        self._batches += 1
        self._last_ms = (time.perf_counter() - t0) * 1000
        self._total_ms += self._last_ms

    def read(self, space: int, owner: str, key: bytes) -> Row | None:
        """Return one row, or ``None``."""
        self._check_open()
        return self._rows.get((space, owner, key))

    def scan(self, space: int | None = None, owner: str | None = None) -> Iterator[Row]:
        """Iterate over rows in primary-key order."""
        self._check_open()
        for rid in sorted(self._rows):
            if (space is None or rid[0] == space) and (owner is None or rid[1] == owner):
                yield self._rows[rid]

    def stats(self) -> BackendStats:
        """Return the backend's counters."""
        return BackendStats(
            scheme=self.scheme,
            durable=False,
            durability="none",
            rows=len(self._rows),
            batches=self._batches,
            last_apply_ms=self._last_ms,
            total_apply_ms=self._total_ms,
        )

    def close(self) -> None:
        """Mark closed (idempotent)."""
        self._closed = True

    def __enter__(self) -> MemoryBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
