"""Membership benchmark: the SWIM + Lifeguard core in the discrete-event simulator.

Measures join propagation, crash detection (default preset vs the memberlist
profile), false positives under loss and with a slow node (local health on/off),
steady-state bandwidth per node and the largest N simulated at real-time speed.

Usage::

    python -m benchmarks.membership --quick            # a few minutes
    python -m benchmarks.membership --json out.json    # full run

All figures are virtual-time measurements from `beethoven.sim`, seed-replayable.
Bytes are encoded message bytes (the simulator's msgpack size estimate), without
UDP/IP headers or the datagram's encryption overhead.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from collections.abc import Callable
from typing import Any

import attrs

from beethoven.membership.api import MemberEventKind
from beethoven.membership.params import SwimParams
from beethoven.sim import Simulator, percentile
from benchmarks.tables import Row, print_table


def bench_join(
    ns: list[int], losses: list[float], joins: int, seed: int, max_n_at_30: int
) -> list[Row]:
    rows = []
    for n in ns:
        for loss in losses:
            if (loss >= 0.3 and n > max_n_at_30) or (loss > 0 and n >= 10000):
                # Under loss SWIM raises (and refutes) suspicions at a rate ∝ N, each
                # gossiped to all N: simulation cost grows as N². At N = 10 000 and 10 %
                # loss one virtual second costs minutes of wall time on 2 cores.
                continue
            t0 = time.perf_counter()
            sim = Simulator(seed=seed, loss=loss, record={MemberEventKind.JOINED})
            sim.bootstrap(n)
            sim.run_until(3.0)
            pooled: list[float] = []
            full: list[float] = []
            unreached = 0
            for j in range(joins):
                start = sim.now
                seeds = sim.rng.sample(range(n), 3)
                node = sim.add_node(seeds, at=start)
                sim.run_until(start + 8.0)
                seen = sim.first_seen(MemberEventKind.JOINED, node.name)
                times = [t - start for t in seen.values()]
                pooled += times
                unreached += n + j - len(times)
                full.append(max(times) if len(times) >= n + j else math.inf)
                sim.log.clear()
            rows.append(
                {
                    "N": n,
                    "loss": loss,
                    "joins": joins,
                    "p50_s": percentile(pooled, 0.5),
                    "p99_s": percentile(pooled, 0.99),
                    "all_reached_max_s": max(full),
                    "unreached": unreached,
                    "wall_s": time.perf_counter() - t0,
                }
            )
            print_table(f"join N={n} loss={loss}", rows[-1:])
    return rows


def bench_detection(ns: list[int], crashes: dict[int, int], seed: int) -> list[Row]:
    rows = []
    for preset in ("lan", "memberlist"):
        for n in ns:
            t0 = time.perf_counter()
            sim = Simulator(
                seed=seed,
                params=SwimParams.preset(preset),
                record={MemberEventKind.DEAD},
            )
            sim.bootstrap(n)
            sim.run_until(10.0)
            pooled: list[float] = []
            missed = 0
            for c in range(crashes[n]):
                start = sim.now
                victim = 1 + c
                sim.crash(victim, at=start)
                # memberlist's suspicion may last 6·4·log10(N)·1 s = 72 s at N = 1000.
                sim.run_until(start + (40.0 if preset == "lan" else 90.0))
                seen = sim.first_seen(MemberEventKind.DEAD, f"n{victim}")
                pooled += [t - start for t in seen.values()]
                missed += len(sim.running()) - len(seen)
                sim.log.clear()
            rows.append(
                {
                    "preset": preset,
                    "N": n,
                    "crashes": crashes[n],
                    "median_s": percentile(pooled, 0.5),
                    "p99_s": percentile(pooled, 0.99),
                    "max_s": max(pooled),
                    "undetected": missed,
                    "false_deaths": sim.false_deaths,
                    "wall_s": time.perf_counter() - t0,
                }
            )
            print_table(f"detection {preset} N={n}", rows[-1:])
    return rows


def bench_loss(cases: list[tuple[int, float, float]], seed: int) -> list[Row]:
    rows = []
    for n, seconds, loss in cases:
        t0 = time.perf_counter()
        sim = Simulator(seed=seed, loss=loss, record=())
        sim.bootstrap(n)
        sim.run_until(seconds)
        hours = n * seconds / 3600
        raised = sum(x.core.stats().suspicions_raised for x in sim.nodes)
        deaths = len({(r.subject, round(r.time)) for r in sim.false_death_log})
        rows.append(
            {
                "N": n,
                "loss": loss,
                "node_hours": hours,
                "suspicions_raised_per_node_hour": raised / hours,
                "false_death_events": sim.false_deaths,
                "false_deaths_per_node_hour": deaths / hours,
                "wall_s": time.perf_counter() - t0,
            }
        )
        print_table(f"false positives under loss {loss}", rows[-1:])
    return rows


def bench_slow(n: int, seconds: float, seed: int) -> list[Row]:
    rows = []
    cases = [("loop", 5.0, 1.0), ("inbound", 5.0, 1.0), ("loop", 10.0, 3.0), ("inbound", 10.0, 3.0)]
    for mode, every, duration in cases:
        for lh in (True, False):
            t0 = time.perf_counter()
            params = attrs.evolve(SwimParams.lan(), local_health=lh)
            sim = Simulator(seed=seed, params=params, record=())
            sim.bootstrap(n)
            sim.slow(0, every=every, duration=duration, start=2.0, mode=mode)
            sim.run_until(seconds)
            hours = n * seconds / 3600
            by_slow = sim.nodes[0].core.stats().suspicions_raised
            healthy = sum(1 for r in sim.false_suspicion_log if r.subject != "n0")
            of_slow = sum(1 for r in sim.false_suspicion_log if r.subject == "n0")
            deaths_healthy = sum(1 for r in sim.false_death_log if r.subject != "n0")
            deaths_slow = len({round(r.time) for r in sim.false_death_log if r.subject == "n0"})
            rows.append(
                {
                    "stall": f"{mode} {duration:g}s/{every:g}s",
                    "local_health": "on" if lh else "off",
                    "susp_raised_by_slow": by_slow,
                    "susp_events_of_healthy": healthy,
                    "per_node_hour": healthy / hours,
                    "susp_events_of_slow": of_slow,
                    "healthy_declared_dead": deaths_healthy,
                    "slow_declared_dead": deaths_slow,
                    "wall_s": time.perf_counter() - t0,
                }
            )
            print_table("slow node", rows[-1:])
    return rows


def bench_bandwidth(n: int, warm: float, seconds: float, seed: int) -> list[Row]:
    t0 = time.perf_counter()
    sim = Simulator(seed=seed, record=())
    sim.bootstrap(n)
    sim.run_until(warm)
    before = sim.bytes_sent()
    dgrams0 = sim.datagrams
    sim.run_until(warm + seconds)
    after = sim.bytes_sent()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    total = sum(delta.values())
    row: Row = {
        "N": n,
        "seconds": seconds,
        "bytes_per_s_per_node": total / n / seconds,
        "datagrams_per_s_per_node": (sim.datagrams - dgrams0) / n / seconds,
        "wall_s": time.perf_counter() - t0,
    }
    for k, v in sorted(delta.items()):
        row[f"{k}_B/s"] = v / n / seconds
    print_table(f"steady-state bandwidth N={n}", [row])
    return [row]


def bench_speed(ns: list[int], seconds: float, seed: int) -> list[Row]:
    rows = []
    for n in ns:
        t0 = time.perf_counter()
        sim = Simulator(seed=seed, record=())
        sim.bootstrap(n)
        boot = time.perf_counter() - t0
        sim.run_until(2.0)
        speed = sim.measure_speed(seconds)
        rows.append(
            {
                "N": n,
                "virtual_s": seconds,
                "bootstrap_wall_s": boot,
                "speed_x_realtime": speed,
                "maxrss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
        print_table("simulator speed", rows[-1:])
        if speed < 1.0:
            break
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few minutes instead of an hour")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--only", help="comma-separated sections: join,detection,loss,slow,bandwidth,speed"
    )
    args = ap.parse_args(argv)
    quick = args.quick
    seed = args.seed
    sections: dict[str, Callable[[], list[Row]]] = {
        "join": lambda: bench_join(
            [100, 1000] if quick else [100, 1000, 10000],
            [0.0, 0.1, 0.3],
            3 if quick else 8,
            seed,
            100,
        ),
        "detection": lambda: bench_detection(
            [100, 1000], {100: 10 if quick else 40, 1000: 3 if quick else 10}, seed
        ),
        "loss": lambda: bench_loss(
            [(100, 3600.0, 0.1), (100, 600.0, 0.3)]
            if quick
            else [(100, 36000.0, 0.1), (1000, 1800.0, 0.1), (100, 3600.0, 0.3)],
            seed,
        ),
        "slow": lambda: bench_slow(50, 600.0 if quick else 3600.0, seed),
        "bandwidth": lambda: bench_bandwidth(1000, 30.0, 200.0 if quick else 600.0, seed),
        "speed": lambda: bench_speed(
            [1000, 2000, 4000] if quick else [1000, 2000, 4000, 8000, 10000],
            20.0 if quick else 60.0,
            seed,
        ),
    }
    chosen = list(sections) if not args.only else args.only.split(",")
    results: dict[str, Any] = {"quick": quick, "seed": seed, "params": attrs.asdict(SwimParams())}
    t0 = time.perf_counter()
    for name in chosen:
        results[name] = sections[name]()
    results["total_wall_s"] = time.perf_counter() - t0
    for name in chosen:
        print_table(name, results[name])
    print(f"\ntotal wall time {results['total_wall_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
