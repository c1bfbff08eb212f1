"""Conformance suite for store backends, reusable by third-party packages.

Subclass :class:`BackendContract` in a pytest module and implement
:meth:`BackendContract.open` (and set ``durable``)::

    from beethoven_store.testing import BackendContract

    class TestLMDB(BackendContract):
        durable = True

        def open(self, path):
            return LMDBBackend.from_url(urllib.parse.urlsplit(f"lmdb://{path}/db"))

Every ``test_*`` method then runs against the backend: atomic and idempotent
batches, meta handling, point reads and scans, reopen (for durable backends), and
equivalence with the reference ``memory`` backend over a pseudo-random batch
sequence, plus a full :class:`~beethoven_store.store.Store` round trip.
Requires pytest (the ``tmp_path`` fixture).
"""

from __future__ import annotations

import pathlib
import random

from beethoven.errors import StoreError
from beethoven_store.backends.base import SPACE_LWW, SPACE_OWNED, Backend, Batch, Row
from beethoven_store.backends.memory import MemoryBackend

__all__ = ["BackendContract", "random_batches"]


def _row(space: int, owner: str, key: bytes, version: int, value: bytes | None = b"v") -> Row:
    return Row(
        space,
        owner,
        key,
        version,
        version << 16,
        "" if space else owner,
        value,
        None if value is not None else version << 16,
    )


def random_batches(seed: int, n: int = 30) -> list[Batch]:
    """Return a deterministic pseudo-random batch sequence over a small key space.

    Args:
        seed: The generator seed.
        n: Number of batches.
    """
    rnd = random.Random(seed)
    out: list[Batch] = []
    version = 0
    for _ in range(n):
        ups: list[Row] = []
        dels: list[tuple[int, str, bytes]] = []
        meta: dict[str, bytes | None] = {}
        for _ in range(rnd.randint(0, 6)):
            version += 1
            space = rnd.choice((SPACE_OWNED, SPACE_LWW))
            owner = rnd.choice(("a", "b")) if space == SPACE_OWNED else ""
            key = bytes([0x91, 0xA1, 0x61 + rnd.randint(0, 3)])
            value = None if rnd.random() < 0.2 else rnd.randbytes(rnd.randint(0, 12))
            ups.append(_row(space, owner, key, version, value))
        for _ in range(rnd.randint(0, 2)):
            dels.append(
                (
                    rnd.choice((0, 1)),
                    rnd.choice(("a", "b", "")),
                    bytes([0x91, 0xA1, 0x61 + rnd.randint(0, 3)]),
                )
            )
        for _ in range(rnd.randint(0, 2)):
            k = f"m/{rnd.randint(0, 3)}"
            meta[k] = None if rnd.random() < 0.3 else rnd.randbytes(4)
        # A batch never upserts and deletes the same row (the store never does).
        up_ids = {(r.space, r.owner, r.key) for r in ups}
        dels = [d for d in dels if d not in up_ids]
        # Keep one upsert per row id (the last), as the store does.
        last: dict[tuple[int, str, bytes], Row] = {}
        for r in ups:
            last[(r.space, r.owner, r.key)] = r
        out.append(Batch(list(last.values()), dels, meta))
    return out


class BackendContract:
    """Base class of the backend conformance suite (see the module docstring).

    Attributes:
        durable: Whether the backend keeps data across :meth:`open` calls on the
            same path.
    """

    durable: bool = True

    def open(self, path: pathlib.Path) -> Backend:
        """Open (or reopen) the backend stored under directory ``path``."""
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers

    def _fresh(self, tmp_path: pathlib.Path) -> Backend:
        return self.open(tmp_path)

    # ---------------------------------------------------------------- tests

    def test_protocol(self, tmp_path: pathlib.Path) -> None:
        """The backend satisfies the runtime-checkable protocol and declares a scheme."""
        with self._fresh(tmp_path) as b:
            assert isinstance(b, Backend)
            assert isinstance(type(b).scheme, str)
            assert type(b).scheme
            assert type(b).durable is self.durable

    def test_empty_load(self, tmp_path: pathlib.Path) -> None:
        """A new backend loads nothing."""
        with self._fresh(tmp_path) as b:
            snap = b.load()
            assert list(snap.rows) == []
            assert dict(snap.meta) == {}

    def test_apply_load_read_scan(self, tmp_path: pathlib.Path) -> None:
        """Applied rows and meta come back from load, read and scan in key order."""
        with self._fresh(tmp_path) as b:
            rows = [
                _row(SPACE_OWNED, "b", b"\x91\x01", 2),
                _row(SPACE_OWNED, "a", b"\x91\x02", 1, None),
                _row(SPACE_LWW, "", b"\x91\x03", 7),
            ]
            b.apply(Batch(rows, [], {"k": b"v"}))
            snap = b.load()
            assert list(snap.rows) == sorted(rows)
            assert dict(snap.meta) == {"k": b"v"}
            assert b.read(SPACE_OWNED, "a", b"\x91\x02") == rows[1]
            assert b.read(SPACE_OWNED, "a", b"\x91\x09") is None
            assert list(b.scan(SPACE_OWNED)) == sorted(rows[:2])
            assert list(b.scan(SPACE_OWNED, "b")) == [rows[0]]
            assert list(b.scan()) == sorted(rows)

    def test_upsert_replaces_and_delete(self, tmp_path: pathlib.Path) -> None:
        """An upsert replaces by primary key; deletes of missing rows are ignored."""
        with self._fresh(tmp_path) as b:
            b.apply(Batch([_row(0, "a", b"k", 1)], [], {}))
            b.apply(Batch([_row(0, "a", b"k", 2, b"w")], [(0, "a", b"missing")], {}))
            assert list(b.load().rows) == [_row(0, "a", b"k", 2, b"w")]
            b.apply(Batch([], [(0, "a", b"k")], {}))
            assert list(b.load().rows) == []

    def test_meta_set_and_delete(self, tmp_path: pathlib.Path) -> None:
        """Meta values are set, replaced and deleted (``None``)."""
        with self._fresh(tmp_path) as b:
            b.apply(Batch([], [], {"a": b"1", "b": b"2"}))
            b.apply(Batch([], [], {"a": b"3", "b": None, "c": None}))
            assert dict(b.load().meta) == {"a": b"3"}

    def test_replayed_batch_is_idempotent(self, tmp_path: pathlib.Path) -> None:
        """Applying the same batch twice equals applying it once."""
        with self._fresh(tmp_path) as b:
            batch = random_batches(7, 1)[0]
            b.apply(batch)
            once = b.load()
            b.apply(batch)
            twice = b.load()
            assert list(once.rows) == list(twice.rows)
            assert dict(once.meta) == dict(twice.meta)

    def test_bad_batch_is_atomic(self, tmp_path: pathlib.Path) -> None:
        """A batch with a malformed row raises StoreError and applies nothing."""
        with self._fresh(tmp_path) as b:
            b.apply(Batch([_row(0, "a", b"k", 1)], [], {"m": b"1"}))
            bad = Row(0, "a", b"j", 2, 2, "", object(), None)  # type: ignore[arg-type]
            try:
                b.apply(Batch([_row(0, "a", b"k", 5, b"new"), bad], [], {"m": b"2"}))
            except StoreError:
                pass
            else:
                raise AssertionError("a malformed row must raise StoreError")
            snap = b.load()
            assert list(snap.rows) == [_row(0, "a", b"k", 1)]
            assert dict(snap.meta) == {"m": b"1"}

    def test_equivalent_to_memory(self, tmp_path: pathlib.Path) -> None:
        """A batch sequence gives the same snapshot as the reference memory backend."""
        ref = MemoryBackend()
        with self._fresh(tmp_path) as b:
            for batch in random_batches(11, 40):
                ref.apply(batch)
                b.apply(batch)
                assert list(b.load().rows) == list(ref.load().rows)
            assert dict(b.load().meta) == dict(ref.load().meta)

    def test_reopen_preserves_state(self, tmp_path: pathlib.Path) -> None:
        """A durable backend shows the same snapshot after close and reopen."""
        if not self.durable:
            return
        b = self._fresh(tmp_path)
        for batch in random_batches(3, 20):
            b.apply(batch)
        before = b.load()
        b.close()
        b.close()  # idempotent
        with self.open(tmp_path) as b2:
            after = b2.load()
        assert list(after.rows) == list(before.rows)
        assert dict(after.meta) == dict(before.meta)

    def test_stats(self, tmp_path: pathlib.Path) -> None:
        """Stats count rows and batches and state durability."""
        with self._fresh(tmp_path) as b:
            b.apply(Batch([_row(0, "a", b"k", 1), _row(1, "", b"k", 1)], [], {}))
            st = b.stats()
            assert st.rows == 2
            assert st.batches == 1
            assert st.durable is self.durable
            assert st.scheme == type(b).scheme

    def test_closed_backend_refuses(self, tmp_path: pathlib.Path) -> None:
        """After close, apply raises StoreError; close stays idempotent."""
        b = self._fresh(tmp_path)
        b.close()
        b.close()
        try:
            b.apply(Batch([], [], {"a": b"1"}))
        except StoreError:
            pass
        else:
            raise AssertionError("apply on a closed backend must raise StoreError")

    def test_store_round_trip(self, tmp_path: pathlib.Path) -> None:
        """A Store over the backend keeps its data across close and reopen."""
        from beethoven_store.store import Store

        if not self.durable:
            return
        s = Store(self.open(tmp_path), owner="n1")
        s.put_own(("node",), {"port": 1})
        s.put_own(("sig", "cpu"), 0.5, volatile=True)
        s.put(("role", "web"), {"count": 2})
        other = Store(MemoryBackend(), owner="n2")
        s.merge(other.put_own(("node",), {"port": 2}))
        s.close()
        with Store(self.open(tmp_path), owner="n1") as s2:
            assert s2.get_own(("node",)) == {"port": 1}
            assert s2.get_own(("sig", "cpu")) is None  # volatile: never persisted
            assert s2.get(("role", "web")) == {"count": 2}
            assert s2.get_owned("n2", ("node",)) == {"port": 2}
