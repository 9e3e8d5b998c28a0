"""Shared pytest fixtures. Fixture libraries for real components live in tests/support/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import ProcessGroup


def require_root(reason: str) -> None:
    """Skip the calling test with a clear reason unless running as root."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {reason}")


def require_binary(name: str, hint: str) -> str:
    """Return the path of ``name`` or skip with an install hint."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found ({hint})")
    return path


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcessGroup]:
    """Processes started by one test, stopped by PID afterwards."""
    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.stop_all()
