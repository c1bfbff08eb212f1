"""Roles benchmark: takeover latency, duplicate-holder time and ``allocate()`` cost.

One cluster of N nodes on the in-memory network (`beethoven.testing.open_cluster`,
seed discovery, the ``lan`` membership preset unless ``--preset``), declaring
count-1 and count-2 roles whose tasks record where they run. In order:

1. ``allocate()`` (and two other local reads) on the converged cluster, in
   wall-clock microseconds: median of many calls, best of several runs.
2. Crashes only: repeatedly crash the holder of a random role, measure the time
   from the crash to the first survivor seeing it offline (alert callbacks) and to
   the new holder's role task running, then restart the victim and let the
   cluster settle. Duplicate holders are integrated over the whole phase (the
   target is zero: without partitions a role never runs twice).
3. Partitions: cut the cluster 1/3 vs 2/3 for T seconds, heal, wait until every
   role has exactly ``count`` holders again; duplicate-holder seconds are reported
   per event, split into "during the cut" (by design each side fills its roles:
   availability over exclusivity) and "after the heal" (the clean-up cost).

Duplicate-holder seconds integrate, every 0.1 s, the excess holders
``Σ_role max(0, running − count)`` taken from the role tasks' own running sets
(not from the published holdings); missing-holder seconds integrate the
shortfall the same way.

Latencies and durations are VIRTUAL time under ``trio.testing.MockClock``: the
protocol's own timers, free of CPU noise. Runs are seeded but not bit-for-bit
replayable, because the store's hybrid logical clock and the published scores
read the wall clock. Only the ``allocate()`` figures are wall clock.

Usage::

    python -m benchmarks.roles --quick               # N = 20, about 15 s
    python -m benchmarks.roles --json roles.json     # N = 100, about 5 minutes
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import attrs
import trio
import trio.testing

from beethoven.core import NodeStatus, NodeUpdate
from beethoven.node import Node
from beethoven.roles import Role, RoleContext
from beethoven.testing import Cluster, open_cluster
from benchmarks.tables import Row, print_table

#: Seconds of virtual time between two samples of the running sets.
SAMPLE_STEP = 0.1


@attrs.frozen
class Settings:
    """What one benchmark run does."""

    n: int
    crashes: int
    partition_seconds: tuple[float, ...]
    roles: int = 12
    preset: str = "lan"
    seed: int = 1
    calls: int = 2000
    runs: int = 5
    cooperative: bool = True


def quick_settings(seed: int) -> Settings:
    return Settings(n=20, crashes=30, partition_seconds=(10.0, 30.0, 60.0), seed=seed)


def full_settings(seed: int) -> Settings:
    return Settings(
        n=100, crashes=40, partition_seconds=(10.0, 30.0, 60.0, 10.0, 30.0, 60.0), seed=seed
    )


# --- instrumentation ----------------------------------------------------------------


class Hosting:
    """Role functions that record where they run and when they started."""

    def __init__(self, counts: dict[str, int], *, cooperative: bool = True) -> None:
        self.counts = counts
        self.cooperative = cooperative
        self.running: dict[str, set[str]] = defaultdict(set)
        self.starts: list[tuple[float, str, str]] = []  # (time, role, node)

    def roles(self) -> list[Role]:
        async def run(ctx: RoleContext) -> None:
            self.running[ctx.role].add(ctx.node)
            self.starts.append((trio.current_time(), ctx.role, ctx.node))
            try:
                if self.cooperative:
                    await ctx.stopping.wait()  # a well-behaved task returns when asked
                else:
                    await trio.sleep_forever()  # cancelled only after the grace period
            finally:
                self.running[ctx.role].discard(ctx.node)

        return [Role(name, count, run) for name, count in self.counts.items()]

    def held_by(self, node: str) -> list[str]:
        return sorted(role for role, nodes in self.running.items() if node in nodes)

    def excess(self) -> int:
        return sum(max(0, len(self.running[r]) - c) for r, c in self.counts.items())

    def missing(self) -> int:
        return sum(max(0, c - len(self.running[r])) for r, c in self.counts.items())


@attrs.define
class Tally:
    """Holder-seconds integrated over one phase."""

    excess_s: float = 0.0
    missing_s: float = 0.0
    peak_excess: int = 0
    seconds: float = 0.0


class Meter:
    """Integrates excess and missing holders over virtual time, into the current phase."""

    def __init__(self, hosting: Hosting) -> None:
        self.hosting = hosting
        self.tally = Tally()
        #: (time, role, holders) whenever a role runs more than ``count`` times.
        self.sightings: list[tuple[float, str, list[str]]] = []

    def begin(self) -> Tally:
        """Start a new phase; returns its (live) tally."""
        self.tally = Tally()
        return self.tally

    async def run(self) -> None:
        while True:
            await trio.sleep(SAMPLE_STEP)
            excess = self.hosting.excess()
            tally = self.tally
            tally.excess_s += excess * SAMPLE_STEP
            tally.missing_s += self.hosting.missing() * SAMPLE_STEP
            tally.peak_excess = max(tally.peak_excess, excess)
            tally.seconds += SAMPLE_STEP
            if excess:
                now = trio.current_time()
                for role, count in self.hosting.counts.items():
                    if len(self.hosting.running[role]) > count:
                        self.sightings.append((now, role, sorted(self.hosting.running[role])))


class Detector:
    """Records when each observer first sees the current victim go offline."""

    def __init__(self) -> None:
        self.victim: str | None = None
        self.seen: dict[str, float] = {}
        #: (time, observer, node) of every offline update any watched node saw.
        self.offline: list[tuple[float, str, str]] = []

    def watch(self, node: Node) -> None:
        observer = node.name

        def on_update(update: NodeUpdate) -> None:
            if update.status is NodeStatus.OFFLINE:
                self.offline.append((trio.current_time(), observer, update.node))
            if (
                update.node == self.victim
                and update.status is NodeStatus.OFFLINE
                and observer not in self.seen
            ):
                self.seen[observer] = trio.current_time()

        node.add_alert_callback(on_update)

    def arm(self, victim: str) -> None:
        self.victim = victim
        self.seen = {}


def settled(cluster: Cluster, hosting: Hosting) -> bool:
    """Converged membership, exactly ``count`` holders per role, and everyone agrees."""
    if not cluster.converged():
        return False
    online = set(cluster.running())
    nodes = cluster.nodes()
    for role, count in hosting.counts.items():
        hosts = hosting.running[role]
        if len(hosts) != count or not hosts <= online:
            return False
        if any(set(node.whois_hosting(role)) != hosts for node in nodes):
            return False
    return True


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --- sections -----------------------------------------------------------------------


def bench_local_reads(cluster: Cluster, settings: Settings) -> list[Row]:
    """Wall-clock µs per call of ``allocate()`` and friends (no awaits: the cluster is still)."""
    nodes = cluster.nodes()
    role = next(iter(nodes[0].config.roles)).name
    probes: dict[str, Callable[[Node], object]] = {
        "allocate()": lambda node: node.allocate(),
        "whois_hosting(role)": lambda node: node.whois_hosting(role),
        "get_roles()": lambda node: node.get_roles(),
    }
    rows = []
    clock = time.perf_counter_ns
    for label, probe in probes.items():
        medians = []
        p99s = []
        for r in range(settings.runs):
            node = nodes[r % len(nodes)]
            for _ in range(50):  # warm caches
                probe(node)
            samples = []
            for _ in range(settings.calls):
                t0 = clock()
                probe(node)
                samples.append((clock() - t0) / 1000)
            medians.append(statistics.median(samples))
            p99s.append(percentile(samples, 0.99))
        rows.append(
            {
                "call": label,
                "N": len(nodes),
                "median_us": min(medians),
                "median_worst_run_us": max(medians),
                "p99_us": min(p99s),
                "calls_x_runs": f"{settings.calls}x{settings.runs}",
            }
        )
    return rows


async def crash_one(
    cluster: Cluster, hosting: Hosting, detector: Detector, victim: str, k: int
) -> tuple[list[Row], Row]:
    """Crash *victim*, time detection and takeover, restart it, wait until settled."""
    held = hosting.held_by(victim)
    detector.arm(victim)
    crashed_at = trio.current_time()
    await cluster.crash(victim)
    first_start: dict[str, float] = {}

    def taken_over() -> bool:
        for t, r, node in reversed(hosting.starts):
            if t < crashed_at:
                break
            if r in held and node != victim:
                first_start[r] = min(t, first_start.get(r, math.inf))
        return bool(detector.seen) and all(r in first_start for r in held)

    with trio.fail_after(120):
        await cluster.wait_for(taken_over, step=0.05)
        survivors = len(cluster.running())
        # Let every survivor see the death too (for the "all detected" column).
        with trio.move_on_after(30):
            await cluster.wait_for(lambda: len(detector.seen) >= survivors, step=0.1)
    detected = min(detector.seen.values()) - crashed_at
    detected_all = (
        max(detector.seen.values()) - crashed_at if len(detector.seen) >= survivors else math.nan
    )
    samples = [
        {
            "crash": k,
            "victim": victim,
            "role": r,
            "count": hosting.counts[r],
            "detect_s": detected,
            "takeover_s": first_start[r] - crashed_at,
            "over_detect_s": first_start[r] - crashed_at - detected,
        }
        for r in held
    ]
    restarted_at = trio.current_time()
    node = await cluster.start(victim)
    detector.watch(node)
    with trio.fail_after(300):
        await cluster.wait_for(lambda: settled(cluster, hosting), step=0.25)
    event = {
        "crash": k,
        "victim": victim,
        "roles_held": len(held),
        "detect_first_s": detected,
        "detect_all_s": detected_all,
        "takeover_max_s": max(first_start.values()) - crashed_at,
        "rejoin_settle_s": trio.current_time() - restarted_at,
    }
    return samples, event


async def bench_crashes(
    cluster: Cluster,
    hosting: Hosting,
    meter: Meter,
    detector: Detector,
    settings: Settings,
    rng: random.Random,
) -> tuple[list[Row], list[Row], Tally]:
    """Crash role holders one at a time; returns (samples, per-crash rows, phase tally)."""
    samples: list[Row] = []
    events: list[Row] = []
    tally = meter.begin()
    roles = sorted(hosting.counts)
    for k in range(settings.crashes):
        # n0 is every node's only seed: restarted, it would boot standalone and host
        # every role until membership merges it back (a split brain, not a crash).
        role = rng.choice([r for r in roles if hosting.running[r] - {"n0"}])
        victim = rng.choice(sorted(hosting.running[role] - {"n0"}))
        dup_before = tally.excess_s
        crash_samples, event = await crash_one(cluster, hosting, detector, victim, k)
        event["dup_s"] = tally.excess_s - dup_before
        samples += crash_samples
        events.append(event)
        print(
            f"  crash {k:2d}: {victim:>4} held {event['roles_held']} role(s); "
            f"detect {event['detect_first_s']:.2f} s, "
            f"takeover ≤ {event['takeover_max_s']:.2f} s, "
            f"rejoin+settle {event['rejoin_settle_s']:.1f} s, "
            f"duplicate-holder {event['dup_s']:.1f} s",
            flush=True,
        )
        await trio.sleep(rng.uniform(1.0, 3.0))
    return samples, events, tally


async def bench_partitions(
    cluster: Cluster,
    hosting: Hosting,
    meter: Meter,
    detector: Detector,
    settings: Settings,
    rng: random.Random,
) -> list[Row]:
    """Cut 1/3 of the cluster off for T seconds, heal, wait until settled; per event."""
    rows = []
    for k, seconds in enumerate(settings.partition_seconds):
        members = sorted(cluster.running())
        side = sorted(rng.sample(members, len(members) // 3))
        rest = sorted(set(members) - set(side))
        label = f"cut{k}"
        during = meter.begin()
        cut_at = trio.current_time()
        cluster.partition(label, side, rest)
        await trio.sleep(seconds)
        cluster.heal(label)
        side_set = set(side)
        split_seen = [
            t - cut_at
            for t, observer, node in detector.offline
            if t >= cut_at and (observer in side_set) != (node in side_set)
        ]
        after = meter.begin()
        healed_at = trio.current_time()
        no_dup_at = math.nan
        with trio.fail_after(600):
            while not settled(cluster, hosting):
                if math.isnan(no_dup_at) and hosting.excess() == 0:
                    no_dup_at = trio.current_time()
                await trio.sleep(0.25)
        if math.isnan(no_dup_at):
            no_dup_at = trio.current_time()
        settle = trio.current_time() - healed_at
        rows.append(
            {
                "event": k,
                "cut_s": seconds,
                "sides": f"{len(side)}/{len(rest)}",
                "split_seen_s": min(split_seen, default=math.nan),
                "dup_s_during": during.excess_s,
                "peak_dup": max(during.peak_excess, after.peak_excess),
                "dup_s_after_heal": after.excess_s,
                "dup_s_total": during.excess_s + after.excess_s,
                "heal_to_no_dup_s": no_dup_at - healed_at,
                "heal_to_settled_s": settle,
                "missing_s": during.missing_s + after.missing_s,
            }
        )
        print_table(f"partition event {k}", rows[-1:])
        await trio.sleep(rng.uniform(2.0, 5.0))
    return rows


# --- driver -------------------------------------------------------------------------


def role_counts(settings: Settings) -> dict[str, int]:
    """Alternating count-1 and count-2 roles."""
    return {f"role{i:02d}": 1 + i % 2 for i in range(settings.roles)}


async def run_all(settings: Settings) -> dict[str, Any]:
    """Every section on one cluster (call under ``MockClock(autojump_threshold=0)``)."""
    rng = random.Random(settings.seed)
    hosting = Hosting(role_counts(settings), cooperative=settings.cooperative)
    meter = Meter(hosting)
    detector = Detector()
    result: dict[str, Any] = {}
    wall: dict[str, float] = {}
    t0 = time.perf_counter()
    async with open_cluster(
        settings.n, roles=hosting.roles(), seed=settings.seed, preset=settings.preset
    ) as cluster, trio.open_nursery() as nursery:  # fmt: skip
        nursery.start_soon(meter.run)
        boot = meter.begin()
        with trio.fail_after(600):
            await cluster.wait_ready()
            await cluster.wait_for(lambda: settled(cluster, hosting), step=0.25)
        for node in cluster.nodes():
            detector.watch(node)
        per_node: dict[str, int] = defaultdict(int)
        for nodes in hosting.running.values():
            for name in nodes:
                per_node[name] += 1
        result["boot"] = {
            "virtual_s": trio.current_time(),
            "wall_s": time.perf_counter() - t0,
            "dup_s": boot.excess_s,
            "peak_dup": boot.peak_excess,
            "nodes_hosting": len(per_node),
            "max_roles_on_one_node": max(per_node.values()),
        }
        print_table("boot (until settled)", [result["boot"]])
        wall["boot"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        result["local_reads"] = bench_local_reads(cluster, settings)
        print_table("local reads, wall clock", result["local_reads"])
        wall["local_reads"] = time.perf_counter() - t1

        t1, v1 = time.perf_counter(), trio.current_time()
        print(f"\n== crashes ({settings.crashes}, one at a time, victim restarted after)")
        samples, events, crash_tally = await bench_crashes(
            cluster, hosting, meter, detector, settings, rng
        )
        result["takeover"] = summarize_takeover(samples)
        result["takeover_samples"] = samples
        result["crash_events"] = events
        result["crash_phase"] = {
            "crashes": settings.crashes,
            "virtual_s": trio.current_time() - v1,
            "dup_s": crash_tally.excess_s,
            "peak_dup": crash_tally.peak_excess,
            "missing_s": crash_tally.missing_s,
        }
        print_table("takeover (virtual time)", result["takeover"])
        print_table("crash phase: duplicates without partitions", [result["crash_phase"]])
        wall["crashes"] = time.perf_counter() - t1

        t1, v1 = time.perf_counter(), trio.current_time()
        result["partitions"] = await bench_partitions(
            cluster, hosting, meter, detector, settings, rng
        )
        wall["partitions"] = time.perf_counter() - t1
        result["partition_phase_virtual_s"] = trio.current_time() - v1
        result["virtual_s"] = trio.current_time()
        result["duplicate_episodes"] = episodes(meter.sightings)
        nursery.cancel_scope.cancel()
    wall["total"] = time.perf_counter() - t0
    result["wall_s"] = wall
    return result


def episodes(sightings: list[tuple[float, str, list[str]]]) -> list[Row]:
    """Merge consecutive duplicate sightings of one role and holder set into intervals."""
    open_: dict[tuple[str, tuple[str, ...]], list[float]] = {}
    out: list[Row] = []
    for t, role, nodes in sightings:
        key = (role, tuple(nodes))
        span = open_.get(key)
        if span is not None and t - span[1] <= SAMPLE_STEP * 1.5:
            span[1] = t
        else:
            if span is not None:
                out.append({"role": role, "holders": list(key[1]), "from": span[0], "to": span[1]})
            open_[key] = [t, t]
    for (role, holders), (t0, t1) in open_.items():
        out.append({"role": role, "holders": list(holders), "from": t0, "to": t1})
    return sorted(out, key=lambda e: (e["from"], e["role"]))


def summarize_takeover(samples: list[Row]) -> list[Row]:
    rows = []
    for label, chosen in (
        ("all", samples),
        ("count=1", [s for s in samples if s["count"] == 1]),
        ("count=2", [s for s in samples if s["count"] == 2]),
    ):
        detect = [s["detect_s"] for s in chosen]
        take = [s["takeover_s"] for s in chosen]
        over = [s["over_detect_s"] for s in chosen]
        rows.append(
            {
                "roles": label,
                "samples": len(chosen),
                "detect_p50_s": percentile(detect, 0.5),
                "detect_p99_s": percentile(detect, 0.99),
                "takeover_p50_s": percentile(take, 0.5),
                "takeover_p99_s": percentile(take, 0.99),
                "takeover_max_s": max(take, default=math.nan),
                "minus_detect_p50_s": percentile(over, 0.5),
                "minus_detect_p99_s": percentile(over, 0.99),
            }
        )
    return rows


def verdicts(result: dict[str, Any]) -> list[Row]:
    """The issue's three targets, checked against the measured figures."""
    allrow = result["takeover"][0]
    alloc = result["local_reads"][0]
    return [
        {
            "target": "takeover ≤ detection + 1 s at p99",
            "measured": f"p99(takeover − detection) = {allrow['minus_detect_p99_s']:.2f} s; "
            f"p99 takeover {allrow['takeover_p99_s']:.2f} s vs p99 detection "
            f"{allrow['detect_p99_s']:.2f} s",
            "ok": allrow["minus_detect_p99_s"] <= 1.0,
        },
        {
            "target": "zero duplicates without partitions",
            "measured": f"{result['crash_phase']['dup_s']:.1f} duplicate-holder s over "
            f"{result['crash_phase']['crashes']} crashes "
            f"(boot: {result['boot']['dup_s']:.1f} s)",
            "ok": result["crash_phase"]["dup_s"] == 0,
        },
        {
            "target": "allocate() under 20 µs",
            "measured": f"median {alloc['median_us']:.1f} µs at N = {alloc['N']}",
            "ok": alloc["median_us"] < 20.0,
        },
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="N = 20, about 15 s (default: N = 100, about 5 min)"
    )
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--preset", default="lan", help="membership preset (default lan)")
    ap.add_argument("-n", type=int, help="override the number of nodes")
    ap.add_argument("--crashes", type=int, help="override the number of crash events")
    ap.add_argument(
        "--partitions",
        help="override the partition lengths, comma-separated seconds (empty: none)",
    )
    ap.add_argument(
        "--ignore-stopping",
        action="store_true",
        help="role tasks ignore ctx.stopping (each release then waits out the 5 s grace)",
    )
    args = ap.parse_args(argv)
    settings = quick_settings(args.seed) if args.quick else full_settings(args.seed)
    settings = attrs.evolve(settings, preset=args.preset, cooperative=not args.ignore_stopping)
    if args.n is not None:
        settings = attrs.evolve(settings, n=args.n)
    if args.crashes is not None:
        settings = attrs.evolve(settings, crashes=args.crashes)
    if args.partitions is not None:
        lengths = tuple(float(x) for x in args.partitions.split(",") if x.strip())
        settings = attrs.evolve(settings, partition_seconds=lengths)
    print(
        f"roles benchmark: N = {settings.n}, preset = {settings.preset!r}, "
        f"{settings.roles} roles (count 1 and 2 alternating), seed = {settings.seed}, "
        f"role tasks {'return on' if settings.cooperative else 'ignore'} ctx.stopping\n"
        "latencies and holder-seconds are VIRTUAL time (trio MockClock: the protocol's own "
        "timers; seeded, not bit-replayable: the store's HLC reads the wall clock); "
        "allocate() is wall clock",
        flush=True,
    )
    result = trio.run(run_all, settings, clock=trio.testing.MockClock(autojump_threshold=0))
    result["settings"] = attrs.asdict(settings)
    result["quick"] = args.quick
    result["verdicts"] = verdicts(result)
    print_table("takeover (virtual time)", result["takeover"])
    print_table("duplicates without partitions (crash phase)", [result["crash_phase"]])
    print_table("duplicate-holder seconds per partition event", result["partitions"])
    print_table("local reads, wall clock µs", result["local_reads"])
    print(
        "(median: best of the runs; p99 on a shared machine mostly shows the process being "
        "descheduled, not the call)"
    )
    print_table("targets", result["verdicts"])
    wall = result["wall_s"]
    print("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in wall.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
