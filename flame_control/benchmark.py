"""The benchmark result format shared by every `flame bench <area>` (one JSON object per run).

A benchmark module ``tests/bench/bench_<area>.py`` defines ``run(quick: bool) -> list[Figure]`` and may define
``CONDITIONS: str`` (what it ran on). It is never a test: tests hold generous bounds, benchmarks report figures.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One measured figure. ``goal`` is a comparison such as ``">= 5"`` or ``"< 100"`` (or None when only reported);
    ``baseline`` is the side-by-side reference value measured in the same run (or None)."""

    id: str
    value: float
    unit: str
    baseline: float | None = None
    goal: str | None = None
    conditions: str = ""

    def meets_goal(self) -> bool | None:
        """True/False against ``goal``; None when there is no goal."""
        if self.goal is None:
            return None
        op, _, rhs = self.goal.strip().partition(" ")
        target = float(rhs)
        checks = {
            ">=": self.value >= target,
            ">": self.value > target,
            "<=": self.value <= target,
            "<": self.value < target,
        }
        if op not in checks:
            raise ValueError(f"goal {self.goal!r} must look like '>= 5' or '< 100'")
        return checks[op]


def median(samples: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(samples))


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[rank])


def result_document(area: str, quick: bool, figures: Sequence[Figure]) -> dict[str, Any]:
    """The JSON object of one run: ``{"area", "quick", "host": {"cpus", "python"}, "figures": [...]}``."""
    return {
        "area": area,
        "quick": quick,
        "host": {"cpus": os.cpu_count() or 1, "python": platform.python_version()},
        "figures": [asdict(f) for f in figures],
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write a result document as pretty JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def format_table(figures: Sequence[Figure]) -> str:
    """A plain-text table of figures for the terminal and the .md beside the JSON."""
    rows = [("id", "value", "unit", "baseline", "goal", "met")]
    for f in figures:
        met = f.meets_goal()
        rows.append(
            (
                f.id,
                f"{f.value:.4g}",
                f.unit,
                "" if f.baseline is None else f"{f.baseline:.4g}",
                f.goal or "",
                "" if met is None else ("yes" if met else "NO"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
