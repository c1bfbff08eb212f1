"""Store benchmarks: merge throughput, delta sizes, reconciliation bytes, SQLite batch latency.

    python -m benchmarks.store                 # print the table
    python -m benchmarks.store --json out.json # also write the figures as JSON

Targets (issue 7): reconciling 1 000 owners × 10 keys when 1 % differ sends at most
5 % of the full state's bytes; merge ≥ 100 000 entries/s in memory; SQLite applies
a 1 000-entry batch in ≤ 20 ms.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

from beethoven_store import Store, StoreConfig, open_store
from beethoven_store.backends.base import Batch, Row
from beethoven_store.backends.sqlite import SQLiteBackend

OWNERS = 1000
KEYS = 10
CFG = StoreConfig(budget_bytes=0)


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def _mem(owner: str, clock: Clock) -> Store:
    return open_store("memory://", owner=owner, clock=clock, config=CFG)


def build_cluster_state(clock: Clock) -> tuple[list[Store], bytes]:
    """1 000 owners with 10 keys each (a node record, signals, scores); their full state."""
    owners = []
    agg = _mem("agg", clock)
    for i in range(OWNERS):
        s = _mem(f"10.0.{i // 250}.{i % 250}:33000", clock)
        s.put_own(("node",), {"addr": f"10.0.{i // 250}.{i % 250}", "port": 33000, "tags": ["web"]})
        for k in range(KEYS - 1):
            s.put_own(("sig", f"m{k}"), round(random.random(), 4), volatile=True)
        owners.append(s)
        agg.merge(s.full_state())
    return owners, agg.full_state()


def reconcile_bytes(a: Store, b: Store) -> int:
    """Run the reconcile protocol opened by ``a``; return every byte exchanged."""
    total = 0
    msg = a.digest()
    total += len(msg)
    reply = b.reconcile(msg)
    to, other = a, b
    for _ in range(10):
        total += len(reply.delta) + len(reply.digest)
        if reply.delta:
            to.merge(reply.delta)
        if not reply.digest:
            break
        reply = to.reconcile(reply.digest)
        to, other = other, to
    return total


def bench_reconcile(owners: list[Store], full: bytes, clock: Clock) -> dict[str, Any]:
    out: dict[str, Any] = {"full_state_bytes": len(full)}
    for label, mode in (("owners_1pct", "owners"), ("entries_1pct", "entries")):
        a, b = _mem("a", clock), _mem("b", clock)
        a.merge(full)
        b.merge(full)
        # Bring both to the same base (their own empty keyspaces included).
        reconcile_bytes(a, b)
        reconcile_bytes(b, a)
        assert a.full_state() == b.full_state()
        rnd = random.Random(7)
        if mode == "owners":
            # 1 % of the owners wrote one key since b last synced.
            for s in rnd.sample(owners, OWNERS // 100):
                a.merge(s.put_own(("sig", "m0"), 0.5, volatile=True))
        else:
            # 1 % of all entries changed, spread over random owners.
            for _ in range(OWNERS * KEYS // 100):
                s = rnd.choice(owners)
                a.merge(s.put_own(("sig", f"m{rnd.randrange(KEYS - 1)}"), 0.7, volatile=True))
        used = reconcile_bytes(a, b)
        assert a.full_state() == b.full_state(), "reconcile did not converge"
        flat = len(b.full_digest())
        out[label] = {
            "bytes": used,
            "pct_of_full": 100 * used / len(full),
            "flat_digest_pct": 100 * flat / len(full),
        }
    return out


def bench_merge(full: bytes, owners: list[Store], clock: Clock) -> dict[str, Any]:
    entries = OWNERS * KEYS
    rates = []
    for _ in range(5):
        s = _mem("m", clock)
        t0 = time.perf_counter()
        s.merge(full)
        rates.append(entries / (time.perf_counter() - t0))
    # Many small gossip deltas (one entry each), pre-encoded.
    deltas = [o.put_own(("sig", "m1"), 0.25, volatile=True).payload for o in owners]
    small = []
    for _ in range(5):
        s = _mem("m", clock)
        s.merge(full)
        t0 = time.perf_counter()
        for d in deltas:
            s.merge(d)
        small.append(len(deltas) / (time.perf_counter() - t0))
    single = owners[0].put_own(("sig", "m2"), 0.125, volatile=True).payload
    return {
        "full_state_entries_per_s": max(rates),
        "gossip_deltas_per_s": max(small),
        "single_write_delta_bytes": len(single),
        "full_state_bytes": len(full),
    }


def bench_sqlite(tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sync in ("normal", "full"):
        b = SQLiteBackend(str(tmp / f"b-{sync}.db"), synchronous=sync)
        times = []
        for n in range(30):
            rows = [
                Row(
                    0,
                    f"o{j % 100}",
                    msgpack.packb(("sig", j)),
                    n,
                    n << 16,
                    "",
                    b"\xcb" + bytes(8),
                    None,
                )
                for j in range(1000)
            ]
            batch = Batch(rows, [], {"hlc_high": msgpack.packb(n)})
            t0 = time.perf_counter()
            b.apply(batch)
            times.append((time.perf_counter() - t0) * 1000)
        b.close()
        # Through the Store: 1 000 merged durable entries, one group commit.
        st = open_store(f"sqlite://{tmp}/s-{sync}.db?synchronous={sync}", owner="s")
        src = [_mem(f"n{i}", Clock()) for i in range(100)]
        flush_ms = []
        for r in range(10):
            for i, s in enumerate(src):
                for k in range(10):
                    st.merge(s.put_own(("k", k), r * 1000 + i))
            t0 = time.perf_counter()
            st.flush_sync()
            flush_ms.append((time.perf_counter() - t0) * 1000)
        st.close()
        out[sync] = {
            "apply_1000_rows_ms_median": statistics.median(times),
            "apply_1000_rows_ms_p90": sorted(times)[int(len(times) * 0.9)],
            "store_flush_1000_entries_ms_median": statistics.median(flush_ms),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    random.seed(1)
    clock = Clock()
    owners, full = build_cluster_state(clock)
    rec = bench_reconcile(owners, full, clock)
    mer = bench_merge(full, owners, clock)
    with tempfile.TemporaryDirectory() as d:
        sq = bench_sqlite(Path(d))
    rows = [
        ("full state, 1 000 owners × 10 keys", f"{len(full):,} B", ""),
        ("single-write delta", f"{mer['single_write_delta_bytes']} B", ""),
        (
            "reconcile, 1 % of owners differ",
            f"{rec['owners_1pct']['bytes']:,} B = {rec['owners_1pct']['pct_of_full']:.2f} %",
            "≤ 5 %",
        ),
        (
            "reconcile, 1 % of entries differ",
            f"{rec['entries_1pct']['bytes']:,} B = {rec['entries_1pct']['pct_of_full']:.2f} %",
            "≤ 5 %",
        ),
        ("  (flat owner digest alone)", f"{rec['owners_1pct']['flat_digest_pct']:.2f} %", ""),
        ("merge, full state", f"{mer['full_state_entries_per_s']:,.0f} entries/s", "≥ 100 000"),
        ("merge, 1-entry gossip deltas", f"{mer['gossip_deltas_per_s']:,.0f} deltas/s", ""),
    ]
    for sync in ("normal", "full"):
        r = sq[sync]
        rows.append(
            (
                f"SQLite apply 1 000 rows ({sync})",
                f"{r['apply_1000_rows_ms_median']:.2f} ms (p90 {r['apply_1000_rows_ms_p90']:.2f})",
                "≤ 20 ms",
            )
        )
        rows.append(
            (
                f"Store flush of 1 000 merged entries ({sync})",
                f"{r['store_flush_1000_entries_ms_median']:.2f} ms",
                "",
            )
        )
    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    sys.stdout.write(f"{'measure':<{w}}  {'result':<{v}}  target\n")
    for name, val, target in rows:
        sys.stdout.write(f"{name:<{w}}  {val:<{v}}  {target}\n")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "reconcile": rec,
                    "merge": mer,
                    "sqlite": sq,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
