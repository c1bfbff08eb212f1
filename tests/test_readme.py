"""Every command in the README's console blocks is run here, so the README cannot rot.

A command the README shows and this file does not know fails the test. Three commands
cannot run inside the test suite and are checked against ``.ci/run`` instead, which CI
runs on every submission: the installs, ``mypy`` and ``python -m pytest`` itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from beethoven.wire.security import key_from_string

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def readme_commands() -> list[str]:
    blocks = re.findall(r"```console\n(.*?)```", README, flags=re.S)
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def run(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    argv = command.split()
    if argv[0] == "beethoven":
        argv = [sys.executable, "-m", "beethoven", *argv[1:]]
    elif argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENV, check=False
    )


def check_in_ci(command: str) -> None:
    assert command in CI, f"README command {command!r} is not what .ci/run runs"


def check_demo(command: str) -> None:
    result = run(command + " --json", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["ok"]
    assert summary["max_schedulers_at_once"] == 1


def check_example(command: str) -> None:
    result = run(command, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "now runs billing" in result.stdout
    assert "done" in result.stdout


def check_keygen(command: str) -> None:
    result = run(command, timeout=30)
    assert result.returncode == 0
    assert len(key_from_string(result.stdout.strip())) == 32


def check_sim(command: str) -> None:
    result = run(command, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "join_propagation_s" in result.stdout


def check_bench_extra(command: str) -> None:
    # Installing needs the package index; check instead that the extra exists and names
    # the comparison's peer (tests/test_bench_suite.py runs the comparison itself).
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r"^bench = \[.*swim-protocol", pyproject, flags=re.M)


def check_bench_suite(command: str, tmp: Path | None = None) -> None:
    # The whole --quick suite takes minutes: run the same command on its cheapest
    # benchmark (the runner's other paths are covered by tests/test_bench_suite.py).
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"readme-bench-{os.getpid()}"
    result = run(f"{command} --only wire --out {out}", timeout=300)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    assert (out / "RESULTS.md").exists()


def check_ruff(command: str) -> None:
    if shutil.which("ruff") is None:
        pytest.skip("ruff is in the dev extra, not installed here")
    check_in_ci(command)
    result = subprocess.run(
        command.split(), capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:]


HANDLERS = {
    "python -m pip install -e '.[test]'": check_in_ci,
    "python -m pip install -e '.[test,dev]'": lambda c: check_in_ci(c),
    "python -m pytest": check_in_ci,
    "mypy": check_in_ci,
    "ruff check .": check_ruff,
    "beethoven demo": check_demo,
    "python examples/embed.py": check_example,
    "beethoven keygen": check_keygen,
    "beethoven sim -n 1000 --scenario join --seconds 30": check_sim,
    "python -m pip install -e '.[bench]'": check_bench_extra,
    "python -m benchmarks --quick": check_bench_suite,
}


def test_the_readme_starts_with_install_demo_and_test() -> None:
    assert readme_commands()[:3] == [
        "python -m pip install -e '.[test]'",
        "beethoven demo",
        "python -m pytest",
    ]


def test_every_readme_command_is_covered() -> None:
    unknown = [c for c in readme_commands() if c not in HANDLERS]
    assert not unknown, f"README commands with no test: {unknown}"


@pytest.mark.parametrize("command", sorted(set(readme_commands())))
def test_readme_command(command: str) -> None:
    HANDLERS[command](command)
