"""The lint-stage check of issue 11: a module-level third-party import that a plain `pip install .` does not install
fails it (scripts/check_runtime_imports.py, run by scripts/test.sh), and the project itself passes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CHECK = ROOT / "scripts" / "check_runtime_imports.py"


def run_check(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK)], cwd=cwd, capture_output=True, text=True, timeout=120)


def make_project(tmp_path: Path, module: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["PyYAML>=6"]\n'
        '[tool.setuptools.packages.find]\ninclude = ["flame_control*"]\n'
    )
    (tmp_path / "flame_control").mkdir()
    (tmp_path / "flame_control" / "mod.py").write_text(module)
    return tmp_path


def test_a_module_level_import_of_a_test_only_package_fails_the_check(tmp_path: Path) -> None:
    # hypothesis is installed in the dev venv, but only through the test extra.
    result = run_check(make_project(tmp_path, "import yaml\nimport hypothesis\n"))
    assert result.returncode == 1
    assert "flame_control/mod.py:2: imports 'hypothesis'" in result.stdout
    assert "yaml" not in result.stdout


def test_imports_inside_functions_or_guarded_are_not_counted(tmp_path: Path) -> None:
    module = (
        "import yaml\n"
        "try:\n    import hypothesis\nexcept ImportError:\n    hypothesis = None\n"
        "def f() -> None:\n    import pytest\n"
    )
    assert run_check(make_project(tmp_path, module)).returncode == 0


def test_the_project_imports_only_runtime_dependencies_at_module_level() -> None:
    result = run_check(ROOT)
    assert result.returncode == 0, result.stdout
