"""Run the whole benchmark suite and write a Markdown report.

Usage::

    python -m benchmarks --quick                      # a few minutes
    python -m benchmarks                              # the full suite (about an hour)
    python -m benchmarks --only wire peers --out DIR  # a subset, elsewhere

Each benchmark runs as its own subprocess (``python -m benchmarks.NAME [--quick] --json
DIR/NAME.json``), so one that crashes, hangs (a per-benchmark deadline) or does not exist
yet is recorded as such and the suite goes on. Standard output and error of each go to
``DIR/NAME.log`` and ``DIR/NAME.stderr.log``. ``DIR/RESULTS.md`` then gets the machine
facts, a summary, one table per benchmark rendered from its JSON and the side-by-side with
``swim-protocol`` (``benchmarks/peers.py``); ``DIR/suite.json`` has the same summary as
JSON. DIR defaults to ``benchmarks/results`` (git-ignored).

Exit status: 0 when every selected benchmark exited 0 and wrote its JSON, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import peers
from benchmarks.machine import REPO, machine_facts

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results"
SUITE = ("wire", "membership", "store", "large_values", "discovery", "roles", "peers")
QUICK_TIMEOUT = 900.0
FULL_TIMEOUT = 4 * 3600.0
STDERR_TAIL_LINES = 20


@dataclass
class Outcome:
    """How one benchmark run ended."""

    name: str
    status: str  # ok | exit N (JSON written) | failed (exit N) | timeout | missing
    wall_s: float
    command: list[str]
    json_path: str | None
    stderr_tail: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def bench_command(name: str, *, quick: bool, json_path: Path) -> list[str] | None:
    """The command that runs benchmark *name*, or None if ``benchmarks/NAME.py`` is missing.

    In quick mode ``--quick`` is passed to the benchmarks that take it; ``--repeat 1`` to
    those that only take a repeat count (discovery); the others are quick already.
    """
    source = BENCH_DIR / f"{name}.py"
    if not source.is_file():
        return None
    text = source.read_text(encoding="utf-8")
    command = [sys.executable, "-m", f"benchmarks.{name}"]
    if quick:
        if '"--quick"' in text:
            command.append("--quick")
        elif '"--repeat"' in text:
            command += ["--repeat", "1"]
    return [*command, "--json", str(json_path)]


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_one(
    name: str, command: list[str] | None, *, json_path: Path, out: Path, timeout: float
) -> Outcome:
    """Run *command* in its own process group with a deadline; never raises for its failures.

    Whatever the outcome, the whole process group (the benchmark and anything it started)
    is killed and the benchmark reaped before this returns.
    """
    json_path.unlink(missing_ok=True)  # a stale file must not pass for this run's figures
    if command is None:
        return Outcome(name, "missing", 0.0, [], None, f"benchmarks/{name}.py does not exist")
    log_path = out / f"{name}.log"
    err_path = out / f"{name}.stderr.log"
    t0 = time.monotonic()
    rc: int | None = None
    with open(log_path, "w", encoding="utf-8") as log, open(err_path, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            command, cwd=REPO, stdout=log, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            _kill_group(proc.pid)  # the benchmark on timeout or Ctrl-C; its orphans always
            proc.wait(timeout=30)
    wall = time.monotonic() - t0
    has_json = json_path.is_file()
    if rc is None:
        status = f"timeout after {timeout:.0f} s"
    elif rc == 0 and has_json:
        status = "ok"
    elif has_json:
        status = f"exit {rc}"
    else:
        status = f"failed (exit {rc})"
    return Outcome(
        name,
        status,
        wall,
        command,
        str(json_path) if has_json else None,
        _tail(err_path) if status != "ok" else "",
    )


# --- rendering ----------------------------------------------------------------------


def fmt(value: Any) -> str:
    """A JSON value as a Markdown table cell."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, dict | list):
        value = json.dumps(value, separators=(",", ":"), default=str)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _flatten(obj: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            _flatten(value, f"{path}.{key}" if path else str(key), out)
    else:
        out[path] = obj


def render_json(data: Any) -> list[str]:
    """Markdown for any benchmark's JSON: a key/value table of the scalars (dotted keys)
    and one table per list of records (columns = the union of their flattened keys)."""
    scalars: list[tuple[str, Any]] = []
    tables: list[tuple[str, list[dict[str, Any]]]] = []

    def walk(obj: Any, path: str) -> None:
        if isinstance(obj, dict) and obj:
            for key, value in obj.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
            tables.append((path, obj))
        elif isinstance(obj, list):
            scalars.append((path, ", ".join(fmt(x) for x in obj)))
        else:
            scalars.append((path, obj))

    walk(data, "")
    lines: list[str] = []
    if scalars:
        lines += ["| key | value |", "| --- | --- |"]
        lines += [f"| {fmt(k or '(value)')} | {fmt(v)} |" for k, v in scalars]
        lines.append("")
    for path, records in tables:
        flat: list[dict[str, Any]] = []
        for record in records:
            row: dict[str, Any] = {}
            _flatten(record, "", row)
            flat.append(row)
        columns = list(dict.fromkeys(k for row in flat for k in row))
        if path:
            lines += [f"**{path}**", ""]
        lines.append("| " + " | ".join(fmt(c) for c in columns) + " |")
        lines.append("|" + " --- |" * len(columns))
        lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in flat]
        lines.append("")
    return lines


def render_report(
    outcomes: Sequence[Outcome], *, facts: dict[str, str], argv: Sequence[str], wall_s: float
) -> str:
    """The whole RESULTS.md."""
    lines = [
        "# Beethoven benchmark results",
        "",
        f"`{' '.join(['python -m benchmarks', shlex.join(argv)]).strip()}` took {wall_s:.0f} s.",
        "",
        "## Machine",
        "",
        "| fact | value |",
        "| --- | --- |",
        *(f"| {k} | {fmt(v)} |" for k, v in facts.items()),
        "",
        "## Summary",
        "",
        "| benchmark | status | wall time, s |",
        "| --- | --- | --- |",
        *(f"| {o.name} | {fmt(o.status)} | {o.wall_s:.1f} |" for o in outcomes),
        "",
    ]
    for o in outcomes:
        title = "Side-by-side with swim-protocol" if o.name == "peers" else o.name
        lines += [f"## {title}", ""]
        if o.command:
            lines += [f"`{shlex.join(['python', *o.command[1:]])}` — {o.status}", ""]
        else:
            lines += [o.status, ""]
        if o.stderr_tail:
            lines += ["```text", o.stderr_tail, "```", ""]
        if o.json_path is None:
            continue
        try:
            data = json.loads(Path(o.json_path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            lines += [f"(unreadable JSON: {exc})", ""]
            continue
        if o.name == "peers":
            try:
                lines += [peers.markdown(data)]
                continue
            except (KeyError, TypeError):
                pass  # an unexpected shape: fall back to the generic rendering
        lines += render_json(data)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="the few-minute version of each")
    ap.add_argument("--only", nargs="+", choices=SUITE, metavar="NAME", help=", ".join(SUITE))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR")
    ap.add_argument("--timeout", type=float, metavar="S", help="deadline per benchmark")
    args = ap.parse_args(args_list)
    names = [n for n in SUITE if args.only is None or n in args.only]
    timeout = args.timeout or (QUICK_TIMEOUT if args.quick else FULL_TIMEOUT)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    outcomes: list[Outcome] = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ...", end=" ", flush=True)
        json_path = out / f"{name}.json"
        command = bench_command(name, quick=args.quick, json_path=json_path)
        outcome = run_one(name, command, json_path=json_path, out=out, timeout=timeout)
        outcomes.append(outcome)
        print(f"{outcome.status} ({outcome.wall_s:.1f} s)", flush=True)
    wall = time.monotonic() - t0
    facts = machine_facts()
    report = render_report(outcomes, facts=facts, argv=args_list, wall_s=wall)
    (out / "RESULTS.md").write_text(report, encoding="utf-8")
    summary = {
        "argv": args_list,
        "wall_s": wall,
        "machine": facts,
        "benchmarks": [asdict(o) for o in outcomes],
    }
    (out / "suite.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out / 'RESULTS.md'} in {wall:.0f} s")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
