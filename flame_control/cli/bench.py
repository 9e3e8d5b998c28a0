"""``flame bench AREA [--quick] [--json FILE]``: run a benchmark area from tests/bench/bench_<area>.py.

Benchmarks live with the tests (they need the source tree); run this from a checkout. Without ``--json`` the table is
printed only; with it, the JSON document is written too (docs/benchmarks/<area>.json for committed full runs).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

from flame_control.benchmark import Figure, format_table, result_document, write_json

AREAS = ("pce", "nap", "clmc", "orchestration", "http_parser")


def register(sub: Any) -> None:
    """Add the ``bench`` subcommand."""
    p = sub.add_parser("bench", help="run a benchmark area (from a source checkout)")
    p.add_argument("area", choices=AREAS)
    p.add_argument("--quick", action="store_true", help="smaller sizes, same figure ids, about a minute")
    p.add_argument("--json", type=Path, help="write the result document here")
    p.set_defaults(func=run)


def load_area(area: str) -> Any:
    """Import tests/bench/bench_<area>.py from the current checkout."""
    root = Path.cwd()
    if not (root / "tests" / "bench").is_dir():
        raise SystemExit("flame bench: run it from a source checkout (tests/bench/ not found here)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        return importlib.import_module(f"tests.bench.bench_{area}")
    except ModuleNotFoundError as exc:
        raise SystemExit(f"flame bench: no benchmark for area {area!r} yet ({exc})") from exc


def run(args: argparse.Namespace) -> int:
    """Run one area and report its figures."""
    module = load_area(args.area)
    started = time.monotonic()
    figures: list[Figure] = module.run(args.quick)
    print(format_table(figures))
    print(f"\n{args.area}: {len(figures)} figures in {time.monotonic() - started:.1f}s (quick={args.quick})")
    if args.json:
        write_json(args.json, result_document(args.area, args.quick, figures))
        print(f"wrote {args.json}")
    return 0
