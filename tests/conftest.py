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


@pytest.fixture(autouse=True)
def _isolated_authenticator() -> Iterator[None]:
    """A server started in-process installs the process-wide authenticator; restore it after each test so a later
    test calling a servicer directly does not meet a previous test's token rules (an order-dependent failure)."""
    from flame_control.runtime import auth

    before = auth.current()
    yield
    auth.install_or_clear(before)
