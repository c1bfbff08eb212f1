"""Side-by-side on loopback with the PyPI package ``swim-protocol``: join, detection, CPU.

Usage::

    python -m benchmarks.peers --quick                 # 6 members, 15 s CPU window
    python -m benchmarks.peers [--nodes 24] [--probe-interval 1.0] [--json out.json]

Both implementations run in the same invocation, one after the other, with the same N
and probe interval, each member in its own OS process (``benchmarks/peer_node.py``) on
its own address 127.0.0.2, 127.0.0.3, ... (never anything but 127.0.0.x). Per cluster:

1. start the seed, then every other member at once with the seed as its only contact;
2. **join convergence**: from the moment the last member reports it serves until every
   member sees all N members alive (max over members; the median is shown too);
3. **CPU per member**: after a short settle, CPU seconds per wall second of each member
   process (psutil, user + system, all threads) over a fixed window; suspicions raised
   in that window are counted too (there should be none);
4. **crash detection**: SIGKILL one non-seed member; time until each survivor marks it
   dead (Beethoven ``dead``, swim-protocol ``OFFLINE``); median and max over survivors.

Every wait has a deadline and every child is killed and reaped on the way out.
Settings the two designs cannot share (suspicion timeout, dissemination) are listed in
the output.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import queue
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from beethoven.membership.params import SwimParams, suspicion_timeout
from beethoven.wire.security import generate_key, key_to_string
from benchmarks.machine import REPO, machine_facts

BEETHOVEN = "beethoven"
SWIM = "swim-protocol"
IMPLS = (BEETHOVEN, SWIM)
_NODE_ARG = {BEETHOVEN: "beethoven", SWIM: "swim"}

START_TIMEOUT = 30.0  # one member process up and serving
SETTLE = 2.0  # default pause after convergence, before the CPU window
DETECT_TIMEOUT = 60.0

Line = dict[str, Any]


class ChildDied(RuntimeError):
    """A member process exited on its own."""


@dataclass
class Child:
    """One member process and what it has reported."""

    name: str
    proc: subprocess.Popen[str]
    stderr: IO[str]
    started: float | None = None
    view: dict[str, str] = field(default_factory=dict)
    complete_at: float | None = None
    events: list[tuple[float, str, str]] = field(default_factory=list)

    def stderr_tail(self, lines: int = 15) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return "".join(self.stderr.readlines()[-lines:])


def free_port(hosts: Sequence[str], *, attempts: int = 100) -> int:
    """A port that is free for TCP and UDP on every host (below the ephemeral range)."""
    rng = random.Random()
    for _ in range(attempts):
        port = rng.randrange(20000, 32000)
        socks: list[socket.socket] = []
        try:
            for host in hosts:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return port
    raise RuntimeError(f"no port free on all of {len(hosts)} loopback addresses")


class Cluster:
    """N member processes of one implementation, and the lines they print."""

    def __init__(self, impl: str, names: list[str], probe_interval: float) -> None:
        self.impl = impl
        self.names = names
        self.probe_interval = probe_interval
        self.secret = key_to_string(generate_key())
        self.children: list[Child] = []
        self.lines: queue.Queue[tuple[int, Line | None]] = queue.Queue()
        self.killed: set[int] = set()

    def spawn(self, index: int, seeds: list[str]) -> None:
        argv = [
            sys.executable,
            "-m",
            "benchmarks.peer_node",
            _NODE_ARG[self.impl],
            self.names[index],
            str(self.probe_interval),
            self.secret,
            *seeds,
        ]
        err = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (closed in close())
        proc = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1
        )
        self.children.append(Child(self.names[index], proc, err))
        threading.Thread(target=self._read, args=(index, proc), daemon=True).start()

    def _read(self, index: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                self.lines.put((index, json.loads(raw)))
            except ValueError:
                continue
        self.lines.put((index, None))

    def _handle(self, index: int, line: Line) -> None:
        child = self.children[index]
        t = float(line["t"])
        if "started" in line:
            child.started = t
            child.view[child.name] = "alive"
            return
        member, state = str(line["m"]), str(line["s"])
        child.events.append((t, member, state))
        if state == "reaped":
            child.view.pop(member, None)
        else:
            child.view[member] = state
        if child.complete_at is None and all(child.view.get(n) == "alive" for n in self.names):
            child.complete_at = t

    def pump(self, until: Callable[[], bool], timeout: float) -> bool:
        """Process lines until *until()* holds (True) or *timeout* seconds pass (False).

        Raises:
            ChildDied: a member we did not kill exited.
        """
        deadline = time.monotonic() + timeout
        while not until():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                index, line = self.lines.get(timeout=min(remaining, 0.25))
            except queue.Empty:
                continue
            if line is not None:
                self._handle(index, line)
            elif index not in self.killed:
                child = self.children[index]
                child.proc.wait(timeout=5)
                raise ChildDied(
                    f"{self.impl} member {child.name} exited with {child.proc.returncode}:\n"
                    + child.stderr_tail()
                )
        return True

    def kill(self, index: int) -> float:
        """SIGKILL member *index*; return the monotonic time just before the signal."""
        self.killed.add(index)
        t = time.monotonic()
        self.children[index].proc.send_signal(signal.SIGKILL)
        return t

    def close(self) -> None:
        """Kill and reap every member process."""
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.kill()
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL: not expected
                child.proc.wait(timeout=10)
            if child.proc.stdout is not None:
                child.proc.stdout.close()
            child.stderr.close()


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "max": None}
    return {"median": statistics.median(values), "max": max(values)}


def measure(
    impl: str, n: int, probe_interval: float, window: float, settle: float = SETTLE
) -> dict[str, Any]:
    """Run one N-member cluster of *impl* through join, steady state and one crash."""
    hosts = [f"127.0.0.{2 + i}" for i in range(n)]
    port = free_port(hosts)
    names = [f"{h}:{port}" for h in hosts]
    cluster = Cluster(impl, names, probe_interval)
    result: dict[str, Any] = {"port": port, "notes": []}
    notes: list[str] = result["notes"]
    try:
        # swim-protocol needs a peer on every member (with none, its failure detector dies
        # at once), so its first member is told about the second; Beethoven's needs none.
        cluster.spawn(0, [names[1]] if impl == SWIM else [])
        children = cluster.children
        if not cluster.pump(lambda: children[0].started is not None, START_TIMEOUT):
            raise ChildDied(f"{impl} seed did not start in {START_TIMEOUT} s")
        for i in range(1, n):
            cluster.spawn(i, [names[0]])
        all_started = cluster.pump(
            lambda: all(c.started is not None for c in children), START_TIMEOUT + n
        )
        if not all_started:
            raise ChildDied(f"{impl}: not every member started within {START_TIMEOUT + n} s")
        last_start = max(c.started for c in children if c.started is not None)
        result["start_spread_s"] = last_start - min(
            c.started for c in children if c.started is not None
        )

        # Join convergence.
        join_timeout = 30.0 + 2.0 * n * probe_interval
        converged = cluster.pump(
            lambda: all(c.complete_at is not None for c in children), join_timeout
        )
        joins = [max(0.0, c.complete_at - last_start) for c in children if c.complete_at]
        result["join_convergence_s"] = max(joins) if converged else None
        result["join_convergence_median_s"] = statistics.median(joins) if joins else None
        if not converged:
            notes.append(
                f"join did not converge within {join_timeout:.0f} s "
                f"({len(joins)}/{n} members saw everyone alive)"
            )

        # Steady state: CPU per member and stray suspicions.
        cluster.pump(lambda: False, settle)
        before = {c.proc.pid: _cpu_seconds(c.proc.pid) for c in children}
        w0 = time.monotonic()
        cluster.pump(lambda: False, window)
        after = {c.proc.pid: _cpu_seconds(c.proc.pid) for c in children}
        w1 = time.monotonic()
        cpu = [(after[pid] - before[pid]) / (w1 - w0) for pid in before]
        result["cpu_per_member"] = {**_summary(cpu), "mean": statistics.fmean(cpu)}
        result["cpu_window_s"] = w1 - w0
        result["suspicions_in_window"] = sum(
            1
            for c in children
            for t, _m, s in c.events
            if w0 <= t <= w1 and s in ("suspect", "dead")
        )

        # Crash detection: SIGKILL the last member (never the seed).
        victim = n - 1
        victim_name = names[victim]
        survivors = [c for i, c in enumerate(children) if i != victim]
        t_kill = cluster.kill(victim)

        def first(child: Child, states: tuple[str, ...]) -> float | None:
            for t, m, s in child.events:
                if m == victim_name and s in states and t >= t_kill:
                    return t - t_kill
            return None

        detected = cluster.pump(
            lambda: all(first(c, ("dead",)) is not None for c in survivors), DETECT_TIMEOUT
        )
        dead = [d for c in survivors if (d := first(c, ("dead",))) is not None]
        suspect = [d for c in survivors if (d := first(c, ("suspect", "dead"))) is not None]
        result["detection_s"] = _summary(dead)
        result["detected_by"] = f"{len(dead)}/{len(survivors)}"
        result["first_suspicion_s"] = _summary(suspect)
        if not detected:
            notes.append(
                f"only {len(dead)}/{len(survivors)} survivors marked the victim dead "
                f"within {DETECT_TIMEOUT:.0f} s"
            )
            result["detection_s"]["max"] = None
    except ChildDied as exc:
        result["error"] = str(exc)
    finally:
        cluster.close()
    return result


def config_notes(n: int, probe_interval: float) -> dict[str, Any]:
    """What each side runs with, and what could not be aligned."""
    p = SwimParams.lan()
    s_min = suspicion_timeout(p.suspicion_mult, n, probe_interval)
    return {
        BEETHOVEN: {
            "preset": "SwimParams.lan() with probe_interval set",
            "probe_interval_s": probe_interval,
            "probe_timeout_s": p.probe_timeout,
            "indirect_checks": p.indirect_checks,
            "suspicion_timeout_s": f"{s_min:.2f} .. {s_min * p.suspicion_max_mult:.2f} "
            f"(Lifeguard: shrinks with {p.suspicion_confirmations} confirmations)",
            "dissemination": f"piggyback + gossip to {p.gossip_nodes} members "
            f"every {p.gossip_interval} s",
            "security": "ChaCha20-Poly1305 sealed datagrams (cluster key)",
            "transport": "UDP + TCP (push-pull join, TCP fallback probe)",
        },
        SWIM: {
            "version": _swim_version(),
            "probe_interval_s": probe_interval,
            "probe_timeout_s": 0.4,
            "indirect_checks": 3,
            "suspicion_timeout_s": "5.0 (fixed, package default)",
            "dissemination": "gossip to 1 member every 0.5 s (package default)",
            "security": "HMAC-signed packets (shared secret)",
            "transport": "UDP",
            "contacts": "every member is given the first member as peer; the first "
            "member is given the second (swim-protocol requires at least one peer)",
        },
        "not_aligned": [
            "suspicion timeout: Beethoven's is Lifeguard-dynamic, swim-protocol's a fixed "
            "5 s; each keeps its own default",
            "dissemination: different designs (Beethoven piggybacks and gossips to 3 "
            "members per 0.2 s; swim-protocol syncs with 1 member per 0.5 s); defaults kept",
            "security: Beethoven encrypts and authenticates, swim-protocol signs only",
        ],
    }


def _swim_version() -> str | None:
    try:
        return importlib.metadata.version("swim-protocol")
    except importlib.metadata.PackageNotFoundError:
        return None


ROWS: list[tuple[str, Callable[[dict[str, Any]], float | None], str]] = [
    ("join convergence, s (all see all alive)", lambda r: r.get("join_convergence_s"), "{:.2f}"),
    ("join convergence, s (median member)", lambda r: r.get("join_convergence_median_s"), "{:.2f}"),
    ("crash detection, s (median survivor)", lambda r: r.get("detection_s", {}).get("median"),
     "{:.2f}"),
    ("crash detection, s (max survivor)", lambda r: r.get("detection_s", {}).get("max"), "{:.2f}"),
    ("first suspicion, s (median survivor)",
     lambda r: r.get("first_suspicion_s", {}).get("median"), "{:.2f}"),
    ("CPU per member, % of a core (mean)",
     lambda r: _pct(r.get("cpu_per_member", {}).get("mean")), "{:.2f}"),
    ("CPU per member, % of a core (max)",
     lambda r: _pct(r.get("cpu_per_member", {}).get("max")), "{:.2f}"),
    ("suspicions in the steady window", lambda r: r.get("suspicions_in_window"), "{:.0f}"),
    ("start spread, s (first to last member serving)", lambda r: r.get("start_spread_s"),
     "{:.2f}"),
]  # fmt: skip


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def table(result: dict[str, Any]) -> list[list[str]]:
    """Rows of the comparison (header first): measure, each side, swim/beethoven ratio."""
    res = result["results"]
    rows = [["measure", BEETHOVEN, SWIM, "swim-protocol / beethoven"]]
    for label, get, fmt in ROWS:
        b = get(res.get(BEETHOVEN, {}))
        s = get(res.get(SWIM, {}))
        ratio = f"{s / b:.2f}×" if b and s is not None else "-"
        rows.append(
            [
                label,
                "-" if b is None else fmt.format(b),
                "-" if s is None else fmt.format(s),
                ratio,
            ]
        )
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The comparison as a Markdown section body (table, settings, notes)."""
    st = result["settings"]
    out = [
        f"N = {st['nodes']} members per cluster, probe interval {st['probe_interval_s']} s, "
        f"CPU window {st['cpu_window_s']} s (resolution "
        f"{st['cpu_resolution_pct_of_core']} % of a core per member), addresses "
        f"{st['addresses']}, one OS process per member, both clusters in one run on the "
        "same machine.",
        "",
    ]
    rows = table(result)
    out.append("| " + " | ".join(rows[0]) + " |")
    out.append("|" + " --- |" * len(rows[0]))
    out.extend("| " + " | ".join(r) + " |" for r in rows[1:])
    out.append("")
    for impl in IMPLS:
        r = result["results"].get(impl, {})
        for key in ("skipped", "error"):
            if key in r:
                out.append(f"- **{impl} {key}:** {r[key]}")
        for note in r.get("notes", []):
            out.append(f"- {impl}: {note}")
    out.append("")
    out.append("Settings:")
    out.append("")
    for impl in IMPLS:
        cfg = result["config"][impl]
        out.append(f"- **{impl}**: " + "; ".join(f"{k} {v}" for k, v in cfg.items()))
    out.append("")
    out.append("Not aligned (each side keeps its own default):")
    out.append("")
    out.extend(f"- {x}" for x in result["config"]["not_aligned"])
    return "\n".join(out) + "\n"


def run(
    *,
    nodes: int,
    probe_interval: float,
    window: float,
    impls: Sequence[str] = IMPLS,
    settle: float = SETTLE,
) -> dict[str, Any]:
    """Measure each implementation in turn; return settings, config, results, machine."""
    results: dict[str, Any] = {}
    for impl in IMPLS:
        if impl not in impls:
            results[impl] = {"skipped": "not selected (--impl)"}
        elif impl == SWIM and importlib.util.find_spec("swimprotocol") is None:
            results[impl] = {
                "skipped": "swim-protocol is not installed (pip install -e '.[bench]')"
            }
        else:
            t0 = time.monotonic()
            results[impl] = measure(impl, nodes, probe_interval, window, settle)
            results[impl]["wall_s"] = time.monotonic() - t0
    return {
        "settings": {
            "nodes": nodes,
            "probe_interval_s": probe_interval,
            "cpu_window_s": window,
            # psutil reads /proc CPU times in 10 ms ticks
            "cpu_resolution_pct_of_core": round(1.0 / window, 3),
            "settle_s": settle,
            "addresses": f"127.0.0.2 .. 127.0.0.{nodes + 1}",
            "victim": "the last member started (not the seed), SIGKILL",
            "order": "beethoven first, then swim-protocol",
        },
        "config": config_notes(nodes, probe_interval),
        "results": results,
        "machine": machine_facts(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="6 members, 15 s CPU window")
    ap.add_argument("--nodes", type=int, help="members per cluster (default 24; quick 6)")
    ap.add_argument("--probe-interval", type=float, default=1.0, metavar="S")
    ap.add_argument("--window", type=float, help="CPU window in s (default 30; quick 15)")
    ap.add_argument("--settle", type=float, default=SETTLE, metavar="S", help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=[*IMPLS, "both"], default="both")
    ap.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    args = ap.parse_args(argv)
    nodes = args.nodes or (6 if args.quick else 24)
    window = args.window or (15.0 if args.quick else 30.0)
    if not 3 <= nodes <= 250:
        ap.error("--nodes must be between 3 and 250 (127.0.0.2 .. 127.0.0.251)")
    impls = IMPLS if args.impl == "both" else (args.impl,)
    result = run(
        nodes=nodes,
        probe_interval=args.probe_interval,
        window=window,
        impls=impls,
        settle=args.settle,
    )
    rows = table(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(
        f"N={nodes}, probe interval {args.probe_interval} s, CPU window {window} s, "
        f"loopback 127.0.0.x, one process per member"
    )
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    failed = False
    for impl in IMPLS:
        r = result["results"][impl]
        for key in ("skipped", "error"):
            if key in r:
                print(f"{impl} {key}: {r[key]}")
                failed = failed or key == "error"
        for note in r.get("notes", []):
            print(f"{impl}: {note}")
    print("not aligned: " + "; ".join(result["config"]["not_aligned"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
