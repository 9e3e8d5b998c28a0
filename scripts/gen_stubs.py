#!/usr/bin/env python3
"""Regenerate the Python gRPC stubs (and mypy type stubs) from proto/ into flame_control/api/.

Usage: python scripts/gen_stubs.py [--check]

The protos live at proto/flame/<service>/v1/*.proto, so protoc emits modules named ``flame.<service>.v1.*``. We keep
every generated file under ``flame_control/api/`` and rewrite their imports to ``flame_control.api.flame...`` so that
the distribution ships a single top-level package for stubs. ``--check`` regenerates into a temp dir and fails if the
committed stubs differ (CI runs it).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "flame_control" / "api"
PREFIX = "flame_control.api."
# Module references to rewrite: `flame.<pkg>.v1` not preceded by a word char or a dot.
_MODULE_REF = re.compile(r"(?<![\w.])flame\.(?=\w+\.v1\b)")
_IMPORT_LINE = re.compile(r"^(from|import) flame\.", re.MULTILINE)


def _protos() -> list[str]:
    return sorted(str(p.relative_to(PROTO)) for p in (PROTO / "flame").rglob("*.proto"))


def _rewrite(path: Path) -> None:
    text = path.read_text()
    if path.suffix == ".pyi":
        text = _MODULE_REF.sub(PREFIX + "flame.", text)
    else:
        text = _IMPORT_LINE.sub(lambda m: f"{m.group(1)} {PREFIX}flame.", text)
    path.write_text(text)


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    wkt = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{wkt}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *_protos(),
    ]
    env_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env_path}"
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for pkg_dir in (out / "flame").rglob("*"):
        if pkg_dir.is_dir():
            (pkg_dir / "__init__.py").touch()
    (out / "flame" / "__init__.py").touch()
    for f in out.rglob("*.py*"):
        if f.suffix in (".py", ".pyi") and f.name != "__init__.py":
            _rewrite(f)
    (out / "__init__.py").write_text(
        '"""Generated gRPC/protobuf stubs. Regenerate with `python scripts/gen_stubs.py`."""\n'
    )
    (out / "py.typed").touch()


def _same_tree(a: Path, b: Path) -> list[str]:
    diffs: list[str] = []
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    diffs += [f"missing: {p}" for p in sorted(files_a - files_b)]
    diffs += [f"extra: {p}" for p in sorted(files_b - files_a)]
    diffs += [f"differs: {p}" for p in sorted(files_a & files_b) if not filecmp.cmp(a / p, b / p, shallow=False)]
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed stubs are stale")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gen = Path(tmp) / "api"
        gen.mkdir()
        generate(gen)
        if ns.check:
            diffs = _same_tree(gen, OUT)
            if diffs:
                print("generated stubs are stale; run `python scripts/gen_stubs.py`:", *diffs[:20], sep="\n  ")
                return 1
            print("generated stubs are current")
            return 0
        if OUT.exists():
            shutil.rmtree(OUT)
        shutil.copytree(gen, OUT)
    subprocess.run([sys.executable, "-c", "import flame_control.api.flame.common.v1.common_pb2"], cwd=ROOT, check=True)
    print(f"wrote stubs for {len(_protos())} proto files to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
