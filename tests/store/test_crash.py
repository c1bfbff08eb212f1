"""A real crash test: a subprocess applies batches to SQLite and is SIGKILLed at random.

Every batch ``n`` rewrites the same 50 rows with version ``n`` and sets meta
``n``; after each kill the file must pass ``PRAGMA integrity_check`` and hold
exactly one batch's rows (a prefix of the batch sequence: never a torn batch),
at least as far as the child acknowledged. ``BEETHOVEN_CRASH_KILLS`` raises the
number of kills (default 12); ``BEETHOVEN_CRASH_SEED`` replays a run.
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

from beethoven_store.backends.sqlite import SQLiteBackend

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL"),
]

ROWS = 50

CHILD = r"""
import sys
import msgpack
from beethoven_store.backends.base import Batch, Row
from beethoven_store.backends.sqlite import SQLiteBackend

path, start = sys.argv[1], int(sys.argv[2])
b = SQLiteBackend(path, synchronous=sys.argv[3])
n = start
while True:
    rows = [Row(0, "o", msgpack.packb(("k", j)), n, n << 16, "", b"v" * 40, None)
            for j in range(ROWS)]
    b.apply(Batch(rows, [], {"n": msgpack.packb(n)}))
    sys.stdout.write(f"{n}\n")
    sys.stdout.flush()
    n += 1
""".replace("ROWS", str(ROWS))


def _check(path: pathlib.Path) -> int:
    import msgpack

    with SQLiteBackend(str(path)) as b:
        assert b.integrity_check() == "ok"
        snap = b.load()
    if "n" not in snap.meta:
        assert list(snap.rows) == []
        return 0
    n = msgpack.unpackb(snap.meta["n"])
    versions = {r.version for r in snap.rows}
    assert len(snap.rows) == ROWS, f"torn batch: {len(snap.rows)} rows"
    assert versions == {n}, f"torn batch: versions {sorted(versions)[:5]} with meta n={n}"
    return int(n)


@pytest.mark.parametrize("synchronous", ["normal"])
def test_sigkill_leaves_a_prefix_of_batches(tmp_path: pathlib.Path, synchronous: str) -> None:
    kills = int(os.environ.get("BEETHOVEN_CRASH_KILLS", "12"))
    seed = int(os.environ.get("BEETHOVEN_CRASH_SEED", str(time.time_ns() % 10**9)))
    rnd = random.Random(seed)
    path = tmp_path / "crash.db"
    SQLiteBackend(str(path)).close()  # create the schema once
    done = 0
    for kill in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(done + 1), synchronous],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        acked = done
        # Let it commit a few batches, then kill at a random instant.
        want = rnd.randint(1, 5)
        while acked < done + want:
            line = proc.stdout.readline()
            if not line:
                break
            acked = int(line)
        time.sleep(rnd.random() * 0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # Drain acknowledgements written before the kill.
        for line in proc.stdout:
            acked = max(acked, int(line))
        proc.stdout.close()
        n = _check(path)
        assert n >= acked, f"seed {seed}, kill {kill}: acknowledged {acked} but found {n}"
        assert n >= done
        done = n
    assert done >= kills
