"""``sqlite:///path/to/file.db``: the durable backend (WAL mode, one transaction per batch).

URL forms: ``sqlite:///abs/path.db`` (absolute), ``sqlite://rel/path.db``
(relative to the working directory). Query options:

* ``synchronous=normal`` (default) survives a crash of the process at any instant
  (SIGKILL) but may lose the last commits on power loss; ``synchronous=full``
  also survives power loss if the disk honours fsync, at a higher commit latency.
* ``busy_timeout=<ms>`` (default 5000).

Each :meth:`SQLiteBackend.apply` runs ``BEGIN IMMEDIATE; deletes; upserts; meta;
COMMIT``, so after a crash the file holds a prefix of the applied batches.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from types import TracebackType
from typing import Any, ClassVar

from beethoven.errors import StoreError
from beethoven_store.backends.base import BackendStats, Batch, Row, Snapshot

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SQLiteBackend"]

logger = logging.getLogger(__name__)

#: ``PRAGMA application_id`` of a beethoven store ("BTHV").
APPLICATION_ID = 0x42544856
#: ``PRAGMA user_version`` of the current schema.
SCHEMA_VERSION = 1

_HEADER = b"SQLite format 3\x00"
_SYNC = {"normal": "NORMAL", "full": "FULL", "off": "OFF"}
_DURABILITY = {"normal": "process-crash", "full": "power-loss", "off": "none"}

_SCHEMA = """
CREATE TABLE rows (
    space INTEGER NOT NULL,
    owner TEXT NOT NULL,
    key BLOB NOT NULL,
    version INTEGER NOT NULL,
    hlc INTEGER NOT NULL,
    writer TEXT NOT NULL,
    value BLOB,
    deleted_hlc INTEGER,
    PRIMARY KEY (space, owner, key)
) WITHOUT ROWID;
CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;
"""


def _path_of(url: urllib.parse.SplitResult) -> str:
    path = urllib.parse.unquote(url.netloc + url.path)
    if not path or path == "/":
        raise StoreError(f"sqlite URL needs a file path: {urllib.parse.urlunsplit(url)!r}")
    return path


class SQLiteBackend:
    """A SQLite file in WAL mode (see the module docstring).

    Args:
        path: The database file (created if missing; its directory must exist).
        synchronous: ``"normal"``, ``"full"`` or ``"off"``.
        busy_timeout_ms: How long to wait for a lock held by another connection.

    Raises:
        StoreError: If the file cannot be opened, is not a SQLite file, or is a
            SQLite file of something else.
    """

    scheme: ClassVar[str] = "sqlite"
    durable: ClassVar[bool] = True

    def __init__(
        self, path: str, *, synchronous: str = "normal", busy_timeout_ms: int = 5000
    ) -> None:
        sync = synchronous.lower()
        if sync not in _SYNC:
            raise StoreError(f"synchronous must be one of {sorted(_SYNC)}, got {synchronous!r}")
        self.path = path
        self.synchronous = sync
        self._lock = threading.Lock()
        self._batches = 0
        self._last_ms = 0.0
        self._total_ms = 0.0
        self._closed = False
        self._conn = self._open(path, sync, busy_timeout_ms)

    @classmethod
    def from_url(cls, url: urllib.parse.SplitResult, **options: str) -> SQLiteBackend:
        """Open ``sqlite:///path.db?synchronous=normal|full&busy_timeout=ms``.

        Raises:
            StoreError: For a bad path, an unknown option, or a foreign file.
        """
        path = _path_of(url)
        unknown = set(options) - {"synchronous", "busy_timeout"}
        if unknown:
            raise StoreError(f"unknown sqlite option(s) {sorted(unknown)}")
        try:
            busy = int(options.get("busy_timeout", "5000"))
        except ValueError:
            raise StoreError(
                f"busy_timeout must be an integer: {options['busy_timeout']!r}"
            ) from None
        return cls(path, synchronous=options.get("synchronous", "normal"), busy_timeout_ms=busy)

    @staticmethod
    def _open(path: str, sync: str, busy_ms: int) -> sqlite3.Connection:
        if os.path.isdir(path):
            raise StoreError(f"cannot open store {path!r}: it is a directory")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StoreError(f"cannot open store {path!r}: directory {parent!r} does not exist")
        if os.path.exists(path):
            try:
                with open(path, "rb") as f:
                    head = f.read(len(_HEADER))
            except OSError as exc:
                raise StoreError(f"cannot open store {path!r}: {exc.strerror}") from exc
            if head and head != _HEADER:
                raise StoreError(f"{path!r} is not a SQLite file")
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path!r}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if app_id == 0 and tables == 0:
                conn.execute("BEGIN IMMEDIATE")
                conn.executescript(
                    f"PRAGMA application_id = {APPLICATION_ID};"
                    f"PRAGMA user_version = {SCHEMA_VERSION};" + _SCHEMA
                )
                # executescript commits the open transaction itself.
            elif app_id != APPLICATION_ID:
                raise StoreError(f"{path!r} is a SQLite file but not a beethoven store")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"{path!r} has store schema {version}, this version reads {SCHEMA_VERSION}"
                )
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot switch {path!r} to WAL mode (got {mode})")
            conn.execute(f"PRAGMA synchronous = {_SYNC[sync]}")
        except StoreError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{path!r} is not a SQLite file ({exc})") from exc
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"sqlite backend {self.path!r} is closed")

    def load(self) -> Snapshot:
        """Read the meta map and every row."""
        with self._lock:
            self._check_open()
            try:
                meta = {k: bytes(v) for k, v in self._conn.execute("SELECT k, v FROM meta")}
                rows = [
                    Row(*r)
                    for r in self._conn.execute(
                        "SELECT space, owner, key, version, hlc, writer, value, deleted_hlc "
                        "FROM rows ORDER BY space, owner, key"
                    )
                ]
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read store {self.path!r}: {exc}") from exc
            return Snapshot(meta, rows)

    def apply(self, batch: Batch) -> None:
        """Apply a batch in one ``BEGIN IMMEDIATE … COMMIT`` transaction.

        Raises:
            StoreError: If the transaction fails (it is rolled back).
        """
        with self._lock:
            self._check_open()
            t0 = time.perf_counter()
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if batch.deletes:
                        conn.executemany(
                            "DELETE FROM rows WHERE space = ? AND owner = ? AND key = ?",
                            batch.deletes,
                        )
                    if batch.upserts:
                        conn.executemany(
                            "INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            batch.upserts,
                        )
                    sets = [(k, v) for k, v in batch.meta.items() if v is not None]
                    dels = [(k,) for k, v in batch.meta.items() if v is None]
                    if sets:
                        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", sets)
                    if dels:
                        conn.executemany("DELETE FROM meta WHERE k = ?", dels)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OverflowError, TypeError, ValueError) as exc:
                raise StoreError(f"cannot apply batch to {self.path!r}: {exc}") from exc
            self._batches += 1
            self._last_ms = (time.perf_counter() - t0) * 1000
            self._total_ms += self._last_ms

    def read(self, space: int, owner: str, key: bytes) -> Row | None:
        """Return one row, or ``None``."""
        with self._lock:
            self._check_open()
            r = self._conn.execute(
                "SELECT space, owner, key, version, hlc, writer, value, deleted_hlc FROM rows "
                "WHERE space = ? AND owner = ? AND key = ?",
                (space, owner, key),
            ).fetchone()
            return None if r is None else Row(*r)

    def scan(self, space: int | None = None, owner: str | None = None) -> Iterator[Row]:
        """Iterate over rows in primary-key order (materialised under the lock)."""
        sql = "SELECT space, owner, key, version, hlc, writer, value, deleted_hlc FROM rows"
        cond: list[str] = []
        args: list[Any] = []
        if space is not None:
            cond.append("space = ?")
            args.append(space)
        if owner is not None:
            cond.append("owner = ?")
            args.append(owner)
        if cond:
            sql += " WHERE " + " AND ".join(cond)
        sql += " ORDER BY space, owner, key"
        with self._lock:
            self._check_open()
            rows = [Row(*r) for r in self._conn.execute(sql, args)]
        return iter(rows)

    def integrity_check(self) -> str:
        """Run ``PRAGMA integrity_check`` and return its first line (``"ok"``)."""
        with self._lock:
            self._check_open()
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def stats(self) -> BackendStats:
        """Return the backend's counters."""
        rows = 0
        with self._lock:
            if not self._closed:
                rows = self._conn.execute("SELECT count(*) FROM rows").fetchone()[0]
        return BackendStats(
            scheme=self.scheme,
            durable=True,
            durability=_DURABILITY[self.synchronous],
            rows=rows,
            batches=self._batches,
            last_apply_ms=self._last_ms,
            total_apply_ms=self._total_ms,
        )

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> SQLiteBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
