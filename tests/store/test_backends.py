"""Backends: the conformance suite on both built-ins, equivalence, URLs, errors, plugins."""

from __future__ import annotations

import logging
import pathlib
import sqlite3
import sys
import tempfile
import textwrap
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beethoven.errors import StoreError
from beethoven_store import available_backends, open_store
from beethoven_store.backends import load_backend, open_backend
from beethoven_store.backends.base import Backend, Batch, Row
from beethoven_store.backends.memory import MemoryBackend
from beethoven_store.backends.sqlite import SQLiteBackend
from beethoven_store.testing import BackendContract

pytestmark = pytest.mark.timeout(60)


class TestMemoryContract(BackendContract):
    durable = False

    def open(self, path: pathlib.Path) -> Backend:
        return open_backend("memory://")


class TestSQLiteContract(BackendContract):
    durable = True

    def open(self, path: pathlib.Path) -> Backend:
        return open_backend(f"sqlite://{path}/store.db")


class TestSQLiteFullSyncContract(TestSQLiteContract):
    def open(self, path: pathlib.Path) -> Backend:
        return open_backend(f"sqlite://{path}/store.db?synchronous=full")


rows = st.builds(
    Row,
    st.sampled_from([0, 1]),
    st.sampled_from(["", "a", "b"]),
    st.sampled_from([b"\x91\x01", b"\x91\x02", b"\x91\x03"]),
    st.integers(0, 1 << 40),
    st.integers(0, 1 << 60),
    st.sampled_from(["", "w"]),
    st.none() | st.binary(max_size=6),
    st.none() | st.integers(0, 1 << 60),
)
batches = st.builds(
    Batch,
    st.lists(rows, max_size=5, unique_by=lambda r: (r.space, r.owner, r.key)),
    st.lists(
        st.tuples(st.sampled_from([0, 1]), st.sampled_from(["", "a"]), st.just(b"\x91\x01")),
        max_size=2,
    ),
    st.dictionaries(
        st.sampled_from(["m1", "m2", "m3"]), st.none() | st.binary(max_size=4), max_size=3
    ),
)


@settings(max_examples=25)
@given(st.lists(batches, max_size=12))
def test_sqlite_equals_memory_and_survives_reopen(seq: list[Batch]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/s.db"
        mem = MemoryBackend()
        sq = SQLiteBackend(path)
        for b in seq:
            # A batch may delete and upsert one row: the delete applies first on both.
            mem.apply(b)
            sq.apply(b)
        assert list(sq.load().rows) == list(mem.load().rows)
        assert dict(sq.load().meta) == dict(mem.load().meta)
        before = sq.load()
        sq.close()
        with SQLiteBackend(path) as again:
            after = again.load()
            assert again.integrity_check() == "ok"
        assert list(after.rows) == list(before.rows)
        assert dict(after.meta) == dict(before.meta)


def test_builtins_are_registered() -> None:
    found = available_backends()
    assert found["memory"] == "beethoven_store.backends.memory:MemoryBackend"
    assert found["sqlite"] == "beethoven_store.backends.sqlite:SQLiteBackend"
    assert load_backend("MEMORY") is MemoryBackend


def test_unknown_scheme_names_installed_ones() -> None:
    with pytest.raises(
        StoreError, match=r"unknown store scheme 'nope'; installed: .*memory.*sqlite"
    ):
        open_store("nope://x", owner="a")


def test_url_without_scheme() -> None:
    with pytest.raises(StoreError, match="store URL"):
        open_store("/tmp/x.db", owner="a")


def test_bad_paths(tmp_path: pathlib.Path) -> None:
    with pytest.raises(StoreError, match=r"cannot open store .* does not exist"):
        open_store(f"sqlite://{tmp_path}/missing/dir/x.db", owner="a")
    with pytest.raises(StoreError, match="is a directory"):
        open_store(f"sqlite://{tmp_path}", owner="a")
    with pytest.raises(StoreError, match="needs a file path"):
        open_store("sqlite://", owner="a")


def test_not_a_sqlite_file(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "junk.db"
    p.write_bytes(b"this is not a database at all" * 10)
    with pytest.raises(StoreError, match="is not a SQLite file"):
        open_store(f"sqlite://{p}", owner="a")


def test_foreign_sqlite_database(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "other.db"
    conn = sqlite3.connect(p)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a beethoven store"):
        open_store(f"sqlite://{p}", owner="a")


def test_store_of_another_node(tmp_path: pathlib.Path) -> None:
    url = f"sqlite://{tmp_path}/n.db"
    open_store(url, owner="a").close()
    with pytest.raises(StoreError, match="belongs to node 'a'"):
        open_store(url, owner="b")


def test_options(tmp_path: pathlib.Path) -> None:
    with pytest.raises(StoreError, match="unknown sqlite option"):
        open_store(f"sqlite://{tmp_path}/o.db?fast=1", owner="a")
    with pytest.raises(StoreError, match="synchronous must be"):
        open_store(f"sqlite://{tmp_path}/o.db?synchronous=sometimes", owner="a")
    with pytest.raises(StoreError, match="takes no options"):
        open_store("memory://?x=1", owner="a")
    with pytest.raises(StoreError, match="takes no path"):
        open_store("memory://somewhere", owner="a")
    s = open_store(f"sqlite://{tmp_path}/o.db?synchronous=full", owner="a")
    assert s.stats().backend.durability == "power-loss"
    s.close()
    s = open_store(f"sqlite://{tmp_path}/o.db", owner="a")
    assert s.stats().backend.durability == "process-crash"
    s.close()


def test_relative_sqlite_url(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    open_store("sqlite://rel.db", owner="a").close()
    assert (tmp_path / "rel.db").exists()


TINY = '''
"""A tiny third-party backend for the plugin test."""
from beethoven_store.backends.memory import MemoryBackend


class TinyBackend(MemoryBackend):
    scheme = "tiny"
'''


def _dist(root: pathlib.Path, name: str, entry_points: str, module: str | None = None) -> None:
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    if module is not None:
        (root / f"{name}.py").write_text(module)


def test_third_party_backend_via_entry_point(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dist(tmp_path, "tiny_backend", "[beethoven.stores]\ntiny = tiny_backend:TinyBackend\n", TINY)
    with pytest.raises(StoreError, match="unknown store scheme 'tiny'"):
        open_store("tiny://", owner="a")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "tiny" in available_backends()
    with open_store("tiny://", owner="a") as s:
        assert type(s.backend).__name__ == "TinyBackend"
        s.put_own(("k",), 1)
        assert s.get_own(("k",)) == 1
    with pytest.raises(StoreError, match=r"installed: memory, sqlite, tiny"):
        open_store("nope://", owner="a")
    monkeypatch.delitem(sys.modules, "tiny_backend", raising=False)


def test_duplicate_entry_points_first_wins(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    same = tmp_path / "same"
    _dist(
        same,
        "dup_same",
        "[beethoven.stores]\nmemory = beethoven_store.backends.memory:MemoryBackend\n",
    )
    other = tmp_path / "other"
    _dist(other, "dup_other", "[beethoven.stores]\nsqlite = elsewhere:Nope\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(same), str(other)])
    with caplog.at_level(logging.WARNING, logger="beethoven_store.backends"):
        found = available_backends()
    assert found["memory"] == "beethoven_store.backends.memory:MemoryBackend"
    assert found["sqlite"] == "beethoven_store.backends.sqlite:SQLiteBackend"
    msgs = [r.getMessage() for r in caplog.records]
    assert any("'sqlite' registered twice" in m for m in msgs)
    assert not any("'memory' registered twice" in m for m in msgs)


def test_broken_entry_point(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dist(tmp_path, "broken_be", "[beethoven.stores]\nbroken = no_such_module_xyz:Thing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(StoreError, match="cannot load store backend 'broken'"):
        open_store("broken://", owner="a")


def test_url_parsing_keeps_path() -> None:
    parts = urllib.parse.urlsplit("sqlite:///var/lib/x.db")
    assert parts.netloc + parts.path == "/var/lib/x.db"
