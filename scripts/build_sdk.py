#!/usr/bin/env python3
"""Build the client SDK wheel ``flame-control-api`` (sdk/python/) from the committed generated stubs.

Usage: python scripts/build_sdk.py [--out DIR]

Stages ``sdk/python/{pyproject.toml,README.md}`` and ``flame_control/api/`` (without ``flame_control/__init__.py``:
in an SDK-only environment ``flame_control`` is a namespace package holding just ``api``) in a temp dir and builds a
wheel there with pip (no network: build isolation off, setuptools and wheel from this environment).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "sdk" / "python"
STUBS = ROOT / "flame_control" / "api"


def build(out: Path) -> Path:
    """Build the wheel into ``out``; returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "flame-control-api"
        stage.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(SDK / name, stage / name)
        shutil.copytree(STUBS, stage / "flame_control" / "api", ignore=shutil.ignore_patterns("__pycache__"))
        before = set(out.glob("flame_control_api-*.whl"))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                str(out),
                str(stage),
            ],
            check=True,
        )
    built = sorted(set(out.glob("flame_control_api-*.whl")) - before) or sorted(out.glob("flame_control_api-*.whl"))
    return built[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the wheel goes (default dist/)")
    print(build(parser.parse_args().out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
