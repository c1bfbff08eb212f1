"""The roles benchmark still runs (tiny N): it must not rot between releases.

No figures are asserted (they are virtual-time protocol figures and wall-clock
micro-timings); only that every section ran and reported.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import roles


@pytest.mark.timeout(60)
def test_roles_benchmark_quick_mode_runs_at_tiny_n(tmp_path: Path) -> None:
    out = tmp_path / "roles.json"
    argv = ["--quick", "-n", "5", "--crashes", "2", "--partitions", "5", "--json", str(out)]
    assert roles.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["n"] == 5
    assert result["settings"]["preset"] == "lan"
    assert len(result["crash_events"]) == 2
    assert result["takeover_samples"]
    assert {row["roles"] for row in result["takeover"]} == {"all", "count=1", "count=2"}
    assert len(result["partitions"]) == 1
    assert result["local_reads"][0]["call"] == "allocate()"
    assert len(result["verdicts"]) == 3
