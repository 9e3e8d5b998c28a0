#!/usr/bin/env python3
"""Check that every third-party module the runtime imports at module level is installed by a plain `pip install .`.

Run with the project's venv python from the repository root:
    .venv/bin/python scripts/check_runtime_imports.py
Exit 1 and one line per offending import when a module-level import comes from a distribution that is neither a
runtime dependency in pyproject.toml nor required (transitively) by one. Imports inside functions, under
`if TYPE_CHECKING:`, or guarded by `try/except ImportError` are not counted (they are optional by construction).

A copy of ../shared/tools/check_runtime_imports.py kept in the repository (issue 11) so that `scripts/test.sh` runs it
on a fresh clone too; scripts/test.sh also runs the shared one when it is present beside the clone, as in CI.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def req_name(req: str) -> str:
    return norm(re.split(r"[\s;<>=!~\[(]", req.strip(), maxsplit=1)[0])


def closure(roots: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in reqs:
            if "extra ==" in r.replace("extra==", "extra =="):
                continue
            todo.append(req_name(r))
    return seen


def module_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, ast.Import):
                out.extend((node.lineno, a.name.split(".")[0]) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                out.append((node.lineno, node.module.split(".")[0]))
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if "TYPE_CHECKING" not in test:
                    visit(node.body)
                    visit(node.orelse)
            elif isinstance(node, ast.Try):
                guarded = any(
                    h.type is not None and any(n in ast.unparse(h.type) for n in ("ImportError", "ModuleNotFoundError"))
                    for h in node.handlers
                )
                if not guarded:
                    visit(node.body)

    visit(tree.body)
    return out


def main() -> int:
    root = Path.cwd()
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    deps = {req_name(r) for r in meta.get("project", {}).get("dependencies", [])}
    allowed = closure(deps)
    pkgs = meta.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {}).get("include", [])
    first_party = {p.rstrip("*").rstrip(".").split(".")[0] for p in pkgs}
    first_party = first_party or {"flame_control", "pce", "nap_agent", "clmc"}
    dists = md.packages_distributions()
    problems = []
    for top in sorted(first_party):
        for path in sorted((root / top).rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(), str(path))
            except SyntaxError as e:
                problems.append(f"{path.relative_to(root)}: cannot parse: {e}")
                continue
            for line, mod in module_level_imports(tree):
                if mod in sys.stdlib_module_names or mod in first_party or mod == "__future__":
                    continue
                owners = {norm(d) for d in dists.get(mod, [])}
                if not owners:
                    problems.append(
                        f"{path.relative_to(root)}:{line}: imports {mod!r}, which no installed distribution provides"
                    )
                elif not owners & allowed:
                    problems.append(
                        f"{path.relative_to(root)}:{line}: imports {mod!r} (from {', '.join(sorted(owners))}) "
                        "at module level, but a plain `pip install .` does not install it"
                    )
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
