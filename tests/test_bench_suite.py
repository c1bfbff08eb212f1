"""The benchmark runner's machinery (``python -m benchmarks``) and the peers comparison.

Real subprocesses with short deadlines: a crashing, a hanging and a missing benchmark
are recorded and reaped, one cheap benchmark goes through the whole runner into
RESULTS.md, and ``benchmarks.peers`` runs at N = 3 (the swim-protocol side only when the
``bench`` extra is installed).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from benchmarks import peers
from benchmarks.__main__ import Outcome, bench_command, render_json, render_report, run_one
from benchmarks.machine import REPO

PY = sys.executable


def test_failing_benchmark_is_recorded_with_its_stderr_tail(tmp_path: Path) -> None:
    cmd = [PY, "-c", "import sys; sys.stderr.write('boom: no figures\\n'); sys.exit(3)"]
    out = run_one("crashy", cmd, json_path=tmp_path / "crashy.json", out=tmp_path, timeout=30)
    assert out.status == "failed (exit 3)"
    assert "boom: no figures" in out.stderr_tail
    assert out.json_path is None


def test_nonzero_exit_with_figures_keeps_the_figures(tmp_path: Path) -> None:
    target = tmp_path / "missed.json"
    code = f"import json, sys; open({str(target)!r}, 'w').write('{{\"x\": 1}}'); sys.exit(1)"
    out = run_one("missed", [PY, "-c", code], json_path=target, out=tmp_path, timeout=30)
    assert out.status == "exit 1"
    assert out.json_path == str(target)


def test_hanging_benchmark_times_out_and_its_process_group_is_reaped(tmp_path: Path) -> None:
    # The hanging benchmark starts a grandchild; both must be gone afterwards.
    pidfile = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(120)\n"
    )
    t0 = time.monotonic()
    out = run_one("hang", [PY, "-c", code], json_path=tmp_path / "h.json", out=tmp_path, timeout=2)
    assert out.status.startswith("timeout")
    assert time.monotonic() - t0 < 20
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_missing_benchmark_is_recorded_not_fatal(tmp_path: Path) -> None:
    assert bench_command("no_such_bench", quick=True, json_path=tmp_path / "x.json") is None
    out = run_one("no_such_bench", None, json_path=tmp_path / "x.json", out=tmp_path, timeout=1)
    assert out.status == "missing"
    report = render_report([out], facts={"cpu": "test"}, argv=["--quick"], wall_s=0.0)
    assert "| no_such_bench | missing |" in report


def test_quick_flags_follow_what_each_benchmark_accepts(tmp_path: Path) -> None:
    j = tmp_path / "x.json"
    assert bench_command("wire", quick=True, json_path=j) == [
        PY, "-m", "benchmarks.wire", "--json", str(j)
    ]  # fmt: skip
    assert bench_command("discovery", quick=True, json_path=j) == [
        PY, "-m", "benchmarks.discovery", "--repeat", "1", "--json", str(j)
    ]  # fmt: skip
    assert bench_command("peers", quick=True, json_path=j) == [
        PY, "-m", "benchmarks.peers", "--quick", "--json", str(j)
    ]  # fmt: skip


def test_generic_rendering_flattens_keys_and_tabulates_record_lists() -> None:
    data = {"codec": {"ping": {"bytes": 36, "us": 0.239}}, "runs": [{"n": 1, "t": {"a": 2.5}}]}
    text = "\n".join(render_json(data))
    assert "| codec.ping.bytes | 36 |" in text
    assert "| codec.ping.us | 0.239 |" in text
    assert "| n | t.a |" in text
    assert "| 1 | 2.50 |" in text


@pytest.mark.timeout(120)
def test_suite_runs_one_benchmark_into_results_md(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PY, "-m", "benchmarks", "--quick", "--only", "wire", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    report = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    suite = json.loads((tmp_path / "suite.json").read_text(encoding="utf-8"))
    [wire] = suite["benchmarks"]
    # wire exits 1 when a speed target is missed (a loaded machine): still a result.
    assert wire["status"] in ("ok", "exit 1"), proc.stdout + proc.stderr
    assert proc.returncode == (0 if wire["status"] == "ok" else 1)
    assert "## Machine" in report
    assert "| commit |" in report
    assert "## wire" in report
    assert "| codec.ping.body_bytes |" in report


@pytest.mark.timeout(150)
def test_peers_comparison_at_tiny_n(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    cmd = [PY, "-m", "benchmarks.peers", "--nodes", "3", "--window", "1", "--settle", "0"]
    proc = subprocess.run(
        [*cmd, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    impls = [peers.BEETHOVEN]
    if importlib.util.find_spec("swimprotocol") is not None:
        impls.append(peers.SWIM)
    else:
        assert "not installed" in result["results"][peers.SWIM]["skipped"]
    for impl in impls:
        r = result["results"][impl]
        assert r["join_convergence_s"] is not None, r
        assert r["detected_by"] == "2/2", r
        assert r["detection_s"]["max"] is not None
        assert r["cpu_per_member"]["mean"] >= 0
        # every member process was reaped
        port = f":{r['port']}"
        leftovers = [
            p.pid
            for p in psutil.process_iter(["cmdline"])
            if "benchmarks.peer_node" in (p.info["cmdline"] or [])
            and any(port in arg for arg in p.info["cmdline"])
        ]
        assert leftovers == []
    md = peers.markdown(result)
    assert "| crash detection, s (median survivor) |" in md
    outcome = Outcome("peers", "ok", 1.0, [PY, "-m", "benchmarks.peers"], str(out), "")
    assert "## Side-by-side with swim-protocol" in render_report(
        [outcome], facts={}, argv=[], wall_s=1.0
    )
