"""Large values benchmark: how long a 1 MiB ``kv.put`` takes to reach every node.

N real nodes (default 5) on loopback, each its own OS process running ``open_node``
on real UDP/TCP sockets at 127.0.0.176 + i, with a cluster key and the ``local``
membership preset. Node 0 is the writer. Once all N see each other, the writer puts
a value of ``--size`` bytes (1 MiB encoded by default: too big for any datagram,
so it travels by store sync, cut and sent alone) under a fresh key, ``--reps``
times; every other node reports the wall-clock moment it first reads the whole
value (it polls every 2 ms, the resolution of the figures). The replication time
of a write is the time until the *last* node has it.

Usage::

    python -m benchmarks.large_values                  # 5 nodes, 1 MiB, 5 writes
    python -m benchmarks.large_values --quick --json large_values.json
    python -m benchmarks.large_values --nodes 8 --size 70000

Each node prints JSON lines on stdout (``{"t": time.time(), ...}``; one wall clock
on one machine, so the parent compares lines of different processes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.tables import print_table

BASE = 176  # nodes bind 127.0.0.176 and up
MAX_VALUE = 1_048_576
#: Seconds a run may take before it is abandoned (the figures would be meaningless).
DEADLINE = 120.0


def emit(**fields: Any) -> None:
    """Print one JSON line stamped with the wall clock."""
    sys.stdout.write(json.dumps({"t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


def value_for(key: str, size: int) -> bytes:
    """The value written under *key*: *size* bytes encoded (msgpack bin header included)."""
    header = 2 if size - 2 < 256 else 3 if size - 3 < 65536 else 5
    seed = hashlib.blake2b(key.encode(), digest_size=16).digest()
    return (seed * ((size - header) // len(seed) + 1))[: size - header]


def run_node(index: int, n: int, port: int, key: str, reps: int, size: int) -> None:
    """One node: join, report ``ready`` once all *n* are online, then report arrivals."""
    import trio

    from beethoven.config import Config
    from beethoven.node import open_node

    config = Config(
        name=f"lv{index}",
        bind=f"127.0.0.{BASE + index}",
        port=port,
        cluster="large-values-bench",
        cluster_net=(f"127.0.0.{BASE}/28",),
        seeds=() if index == 0 else (f"127.0.0.{BASE}:{port}",),
        keys=(key,),
        preset="local",
    )

    async def main() -> None:
        async with open_node(config) as node:
            while len(node.get_active_cluster_nodes()) < n:  # noqa: ASYNC110 - live state
                await trio.sleep(0.05)
            emit(node=node.name, ready=True)
            if index == 0:
                await write(node)
            else:
                await watch(node)
            await trio.sleep_forever()

    async def write(node: Any) -> None:
        for rep in range(reps):
            # The parent tells the writer when to go (after the previous write reached all).
            line = await trio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                return
            k = f"bench{rep}"
            value = value_for(k, size)
            t0 = time.time()
            node.kv.put(k, value)
            emit(node=node.name, wrote=k, at=t0, put_s=time.time() - t0)

    async def watch(node: Any) -> None:
        for rep in range(reps):
            k = f"bench{rep}"
            expected = value_for(k, size)
            while node.kv.get(k) != expected:  # noqa: ASYNC110 - live state
                await trio.sleep(0.002)
            stats = node.stats()
            emit(
                node=node.name,
                got=k,
                sync_ok=stats.store_sync_ok,
                exchange_errors=stats.runner.exchange_errors,
            )

    trio.run(main)


class Proc:
    """A node subprocess whose JSON lines are read by a thread into a queue."""

    def __init__(self, index: int, argv: list[str]) -> None:
        self.index = index
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                continue

    def next(self, deadline: float) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0 or self.popen.poll() is not None:
            raise SystemExit(f"node {self.index} exited or timed out (rc {self.popen.poll()})")
        try:
            return self.lines.get(timeout=left)
        except queue.Empty:
            raise SystemExit(f"node {self.index}: no report within the deadline") from None

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((f"127.0.0.{BASE}", 0))
        port: int = s.getsockname()[1]
    return port


def bench(n: int, reps: int, size: int) -> dict[str, Any]:
    """Start *n* node processes, write *reps* values on node 0, return the figures."""
    from beethoven.wire.security import generate_key, key_to_string

    port = free_port()
    key = key_to_string(generate_key())
    me = [sys.executable, "-m", "benchmarks.large_values"]
    procs = [
        Proc(i, [*me, "--node", str(i), str(n), str(port), key, str(reps), str(size)])
        for i in range(n)
    ]
    try:
        deadline = time.monotonic() + DEADLINE
        for p in procs:
            while "ready" not in p.next(deadline):
                pass
        writer = procs[0]
        assert writer.popen.stdin is not None
        runs: list[dict[str, Any]] = []
        for rep in range(reps):
            writer.popen.stdin.write("go\n")
            writer.popen.stdin.flush()
            wrote = writer.next(deadline)
            arrivals: dict[str, float] = {}
            errors = 0
            for p in procs[1:]:
                line = p.next(deadline)
                arrivals[line["node"]] = line["t"] - wrote["at"]
                errors += line["exchange_errors"]
            runs.append(
                {
                    "write": rep,
                    "put_ms": wrote["put_s"] * 1000,
                    "first_ms": min(arrivals.values()) * 1000,
                    "median_ms": statistics.median(arrivals.values()) * 1000,
                    "all_ms": max(arrivals.values()) * 1000,
                    "exchange_errors": errors,
                }
            )
        for p in procs:
            if p.popen.poll() is not None:
                raise SystemExit(f"node {p.index} exited (rc {p.popen.returncode})")
        return {
            "nodes": n,
            "value_bytes": size,
            "runs": runs,
            "all_ms_median": statistics.median(r["all_ms"] for r in runs),
            "all_ms_max": max(r["all_ms"] for r in runs),
        }
    finally:
        for p in procs:
            p.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=5, help="real nodes, the writer included")
    ap.add_argument("--size", type=int, default=MAX_VALUE, help="encoded value size, bytes")
    ap.add_argument("--reps", type=int, default=5, help="values written, one after another")
    ap.add_argument("--quick", action="store_true", help="3 writes instead of --reps")
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    ap.add_argument("--node", nargs=6, help=argparse.SUPPRESS)  # internal: run one node
    args = ap.parse_args(argv)
    if args.node:
        i, n, port, key, reps, size = args.node
        run_node(int(i), int(n), int(port), key, int(reps), int(size))
        return 0
    if not 2 <= args.nodes <= 14 or not 16 <= args.size <= MAX_VALUE:
        ap.error("--nodes must be 2..14 and --size 16..1048576")
    reps = 3 if args.quick else args.reps
    figures = bench(args.nodes, reps, args.size)
    print_table(
        f"{args.size:,}-byte kv.put on 1 of {args.nodes} real nodes (loopback, sealed)",
        figures["runs"],
    )
    print(
        f"\nreplication to all {args.nodes} nodes: median {figures['all_ms_median']:.0f} ms,"
        f" max {figures['all_ms_max']:.0f} ms over {reps} writes"
    )
    if args.json:
        figures["python"] = platform.python_version()
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
