"""Headless Chromium for dashboard tests: load a page, let its scripts run, dump the DOM and take a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium() -> str:
    """The Chromium binary, or skip."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium not found (apt-get install chromium)")


def render(url: str, workdir: Path, screenshot: Path, wait_ms: int = 4000, size: str = "1280,900") -> str:
    """The DOM of ``url`` after ``wait_ms`` of virtual time (scripts ran), and a PNG screenshot of it."""
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    base = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={wait_ms}"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=60, check=True).stdout
    subprocess.run(
        [*base, f"--window-size={size}", f"--screenshot={screenshot}", url],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return dom
