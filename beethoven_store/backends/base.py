"""The backend protocol: a dumb, atomic row store under the replicated store.

All lattice logic stays in the pure core (``beethoven_store.crdt``); a backend only
stores rows and a small meta map and applies batches atomically. That keeps
third-party backends small and unable to break convergence. A backend is found
by URL scheme through the ``beethoven.stores`` entry-point group (see
``beethoven_store.backends``) and must pass :class:`beethoven_store.testing.BackendContract`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import ClassVar, NamedTuple, Protocol, runtime_checkable

import attrs

__all__ = [
    "SPACE_LWW",
    "SPACE_OWNED",
    "Backend",
    "BackendStats",
    "Batch",
    "Row",
    "RowId",
    "Snapshot",
]

#: Row space of the per-owner versioned map.
SPACE_OWNED = 0
#: Row space of the LWW map (``owner`` is ``""``, ``version`` is the writer's seq).
SPACE_LWW = 1


class Row(NamedTuple):
    """One stored entry.

    Attributes:
        space: :data:`SPACE_OWNED` or :data:`SPACE_LWW`.
        owner: The owning node (``""`` in the LWW space).
        key: The encoded key (msgpack array).
        version: Owner version, or the writer's sequence number in the LWW space.
        hlc: The HLC of the write.
        writer: The LWW writer (``""`` in the owned space).
        value: The encoded value; ``None`` for a tombstone.
        deleted_hlc: The deletion HLC of a tombstone, else ``None``.
    """

    space: int
    owner: str
    key: bytes
    version: int
    hlc: int
    writer: str
    value: bytes | None
    deleted_hlc: int | None


#: The primary key of a row: ``(space, owner, key)``.
RowId = tuple[int, str, bytes]


def _frozen_mapping(value: Mapping[str, bytes | None]) -> Mapping[str, bytes | None]:
    return dict(value)


@attrs.frozen
class Batch:
    """One atomic unit of persistence.

    Attributes:
        upserts: Rows to insert or replace (by ``(space, owner, key)``).
        deletes: Row ids to delete (missing ones are ignored).
        meta: Meta entries to set; a ``None`` value deletes the entry.
    """

    upserts: Sequence[Row] = ()
    deletes: Sequence[RowId] = ()
    meta: Mapping[str, bytes | None] = attrs.field(factory=dict, converter=_frozen_mapping)

    def __len__(self) -> int:
        return len(self.upserts) + len(self.deletes) + len(self.meta)


@attrs.frozen
class Snapshot:
    """Everything a backend holds, as loaded at open.

    Attributes:
        meta: The meta map.
        rows: Every row, in ``(space, owner, key)`` order.
    """

    meta: Mapping[str, bytes]
    rows: Sequence[Row]


@attrs.frozen
class BackendStats:
    """Counters of a backend.

    Attributes:
        scheme: The URL scheme.
        durable: Whether data survives the process.
        durability: A short description (``"none"``, ``"process-crash"``, ``"power-loss"``).
        rows: Rows currently stored.
        batches: Batches applied since open.
        last_apply_ms: Duration of the last :meth:`Backend.apply`.
        total_apply_ms: Total time spent in :meth:`Backend.apply`.
    """

    scheme: str
    durable: bool
    durability: str
    rows: int
    batches: int
    last_apply_ms: float
    total_apply_ms: float


@runtime_checkable
class Backend(Protocol):
    """What the store needs from storage.

    Implementations must make :meth:`apply` atomic (all of a batch or nothing, also
    across a crash of the process) and idempotent for a replayed batch, and apply
    batches in call order. The store calls :meth:`load` once at open, then only
    :meth:`apply` (from one thread at a time, possibly not the opening thread),
    :meth:`stats` and :meth:`close`; :meth:`read` and :meth:`scan` serve tools and
    tests.

    Attributes:
        scheme: The URL scheme this backend registers under.
        durable: Whether the store should persist through it at all; a
            non-durable backend gets a new generation on every open.
    """

    scheme: ClassVar[str]
    durable: ClassVar[bool]

    @classmethod
    def from_url(cls, url: urllib.parse.SplitResult, **options: str) -> Backend:
        """Open the backend named by ``url``; ``options`` come from the URL query.

        Raises:
            beethoven.errors.StoreError: For a bad path, a file that is not a
                store, or an unknown option.
        """
        ...

    def load(self) -> Snapshot:
        """Return everything stored."""
        ...

    def apply(self, batch: Batch) -> None:
        """Apply ``batch`` atomically; return once it is as durable as declared."""
        ...

    def read(self, space: int, owner: str, key: bytes) -> Row | None:
        """Return one row, or ``None``."""
        ...

    def scan(self, space: int | None = None, owner: str | None = None) -> Iterator[Row]:
        """Iterate over rows (optionally of one space and owner) in primary-key order."""
        ...

    def stats(self) -> BackendStats:
        """Return the backend's counters."""
        ...

    def close(self) -> None:
        """Release resources; idempotent."""
        ...

    def __enter__(self) -> Backend: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
