"""Plain-text tables for the benchmark scripts (one place, one format)."""

from __future__ import annotations

import math
import sys
from typing import Any

Row = dict[str, Any]


def fmt(value: Any) -> str:
    """A cell: floats with 3 decimals (none from 100 up), NaN and None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def print_table(title: str, rows: list[Row]) -> None:
    """Print *rows* (dicts with the same keys) under a ``== title`` line."""
    print(f"\n== {title}")
    if not rows:
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(fmt(r.get(c)).ljust(widths[c]) for c in cols))
    sys.stdout.flush()
