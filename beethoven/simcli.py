"""``beethoven sim``: run a membership scenario in the simulator and print its metrics.

Scenarios (all on one virtual clock, replayable from ``--seed``):

* ``join`` — a stable cluster of ``--nodes``; new nodes join one at a time; measures
  how long each join takes to reach every member.
* ``crash`` — a stable cluster; nodes are killed one at a time (kill -9); measures
  how long every survivor takes to see each death.
* ``steady`` — a stable cluster; measures bytes per second per node and false
  suspicions/deaths under ``--loss``.

Prints progress on stderr for long runs, the metrics on stdout, optionally writes
JSON (``--json``) and a PNG (``--plot``, needs matplotlib: ``pip install
'beethoven[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from beethoven.errors import BeethovenError, ConfigError
from beethoven.membership.api import MemberEventKind
from beethoven.membership.params import SwimParams
from beethoven.sim import Simulator, percentile

__all__ = ["run_scenario", "run_sim"]

_PROGRESS_STEP = 10.0  # virtual seconds between progress lines


def _advance(sim: Simulator, until: float, *, progress: bool) -> None:
    started = time.perf_counter()
    while sim.now < until:
        sim.run_until(min(until, sim.now + _PROGRESS_STEP))
        if progress and time.perf_counter() - started > 2.0:
            print(
                f"  t={sim.now:7.1f}/{until:.0f} virtual s, "
                f"{time.perf_counter() - started:6.1f} s wall",
                file=sys.stderr,
            )


def _dist(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0.0}
    return {
        "count": float(len(values)),
        "p50": percentile(values, 0.50),
        "p99": percentile(values, 0.99),
        "max": max(values),
    }


def run_scenario(
    scenario: str,
    *,
    nodes: int,
    seconds: float,
    loss: float,
    preset: str,
    seed: int,
    progress: bool = False,
) -> dict[str, Any]:
    """Run one scenario and return its metrics (JSON-ready).

    Raises:
        ConfigError: an unknown scenario or preset.
    """
    params = SwimParams.preset(preset)
    sim = Simulator(params=params, seed=seed, loss=loss)
    sim.bootstrap(nodes)
    warmup = 5.0
    _advance(sim, warmup, progress=progress)
    samples: list[float] = []
    wall = time.perf_counter()
    if scenario == "join":
        gap = 5.0
        joiners: list[tuple[str, float, set[str]]] = []
        t = warmup
        while t + gap <= warmup + seconds:
            node = sim.add_node([0, 1, 2], at=t)
            # Observers: every node already running when this one joins.
            observers = {n.name for n in sim.running()} | {name for name, _, _ in joiners}
            joiners.append((node.name, t, observers))
            t += gap
        _advance(sim, warmup + seconds + 10.0, progress=progress)
        for name, at, observers in joiners:
            seen = sim.first_seen(MemberEventKind.JOINED, name)
            times = [seen[o] - at for o in observers if o in seen]
            if len(times) == len(observers):
                samples.append(max(times))
    elif scenario == "crash":
        gap = max(20.0, 4 * params.probe_interval * 6)
        victims: list[tuple[str, float]] = []
        t = warmup
        index = nodes - 1
        while t + gap <= warmup + seconds and index > 2:
            sim.crash(index, at=t)
            victims.append((sim.node(index).name, t))
            index -= 1
            t += gap
        _advance(sim, warmup + seconds, progress=progress)
        for name, at in victims:
            samples.extend(v - at for v in sim.first_seen(MemberEventKind.DEAD, name).values())
    elif scenario == "steady":
        before = sum(sim.bytes_sent().values())
        _advance(sim, warmup + seconds, progress=progress)
        after = sum(sim.bytes_sent().values())
        samples = [(after - before) / seconds / max(1, nodes)]
    else:
        raise ConfigError(f"unknown scenario {scenario!r}; expected join, crash or steady")
    wall = time.perf_counter() - wall
    summary = sim.summary()
    result: dict[str, Any] = {
        "scenario": scenario,
        "nodes": nodes,
        "virtual_seconds": seconds,
        "loss": loss,
        "preset": preset,
        "seed": seed,
        "wall_seconds": round(wall, 3),
        "speed_virtual_per_wall": round(seconds / wall, 2) if wall > 0 else None,
        "false_suspicions": summary["false_suspicions"],
        "false_deaths": summary["false_deaths"],
        "samples": samples,
    }
    if scenario == "steady":
        result["bytes_per_second_per_node"] = round(samples[0], 1)
    else:
        key = "join_propagation_s" if scenario == "join" else "detection_s"
        result[key] = _dist(samples)
    return result


def _plot(result: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BeethovenError("--plot needs matplotlib: pip install 'beethoven[bench]'") from None
    samples = result["samples"]
    fig, ax = plt.subplots(figsize=(7, 4))
    label = {
        "join": "join propagation to all (s)",
        "crash": "detection time per observer (s)",
        "steady": "bytes/s per node",
    }
    ax.hist(samples, bins=min(40, max(5, len(samples) // 3 or 1)))
    ax.set_xlabel(label[result["scenario"]])
    ax.set_ylabel("count")
    ax.set_title(
        f"{result['scenario']}: N={result['nodes']}, loss={result['loss']}, "
        f"preset={result['preset']}"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_sim(args: argparse.Namespace) -> int:
    """The ``beethoven sim`` subcommand; returns the exit code."""
    result = run_scenario(
        args.scenario,
        nodes=args.nodes,
        seconds=args.seconds,
        loss=args.loss,
        preset=args.preset,
        seed=args.seed,
        progress=sys.stderr.isatty() or args.nodes >= 1000,
    )
    shown = {k: v for k, v in result.items() if k != "samples"}
    width = max(len(k) for k in shown)
    for key, value in shown.items():
        print(f"{key.ljust(width)}  {json.dumps(value)}")
    if args.json_path is not None:
        args.json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.plot is not None:
        _plot(result, args.plot)
    return 0
