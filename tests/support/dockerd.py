"""A private dockerd for tests (ORCH-6), started as TESTBED.md says and cleaned up by PID.

``dockerd --data-root D --exec-root E -H unix://SOCK --pidfile P --iptables=false --ip6tables=false --bridge=none
--storage-driver=overlay2`` with every path in a fresh short temp dir (unix socket paths are limited to 108 bytes);
when overlay2 does not come up, vfs. dockerd starts its own containerd as a child, in the same process group, so
``ProcessGroup.stop`` ends both. On stop the ``<exec-root>/netns/default`` bind mount (and any mount dockerd left under
the dir) is unmounted and the dir removed. Skips with a reason when not root or dockerd is missing. The recipe itself
(argv, ping, unmount) is ``flame_control.demo.docker``'s, which ``flame demo --vim docker`` uses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flame_control.demo.docker import dockerd_argv, ping, unmount_below
from tests.support.procs import Proc, ProcessGroup


def require_dockerd() -> str:
    """Path of dockerd, or skip the test with the reason."""
    if os.geteuid() != 0:
        pytest.skip("needs root: dockerd")
    binary = shutil.which("dockerd")
    if binary is None:
        pytest.skip("dockerd not found (apt-get install -y docker.io)")
    try:
        import docker  # noqa: F401
    except ImportError:
        pytest.skip("docker SDK not installed (a runtime dependency of flame-control: reinstall it)")
    return binary


@dataclass
class Dockerd:
    """A running private dockerd; ``base_url`` is what the docker SDK takes."""

    procs: ProcessGroup
    root: Path
    storage_driver: str = "overlay2"
    proc: Proc | None = None
    #: Seconds from spawn to the first successful ping.
    ready_s: float = 0.0
    _stopped: bool = field(default=False, repr=False)

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self.proc.popen.pid if self.proc is not None else None

    def ping(self) -> bool:
        return ping(self.base_url)

    def argv(self, binary: str) -> list[str]:
        return dockerd_argv(binary, self.root, self.storage_driver)

    def start(self, binary: str, timeout: float = 30.0) -> None:
        self.proc = self.procs.start(
            f"dockerd-{self.storage_driver}", self.argv(binary), ready=self.ping, timeout=timeout
        )

    def stop(self) -> None:
        """Stop dockerd (and its containerd) by PID; unmount what it left; remove its dirs. Safe to call twice."""
        if self.proc is not None:
            self.procs.stop(self.proc, grace=15)
            with contextlib.suppress(ValueError):
                self.procs.procs.remove(self.proc)
            self.proc = None
        if not self._stopped:
            self._stopped = True
            unmount_below(self.root)
            shutil.rmtree(self.root, ignore_errors=True)


def start_dockerd(procs: ProcessGroup) -> Dockerd:
    """Start a private dockerd (overlay2, falling back to vfs); skips when not root or dockerd is missing."""
    binary = require_dockerd()
    last_error: Exception | None = None
    for driver in ("overlay2", "vfs"):
        root = Path(tempfile.mkdtemp(prefix="fdk-", dir="/tmp"))
        daemon = Dockerd(procs, root, storage_driver=driver)
        try:
            t0 = time.monotonic()
            daemon.start(binary)
            daemon.ready_s = time.monotonic() - t0
            return daemon
        except (RuntimeError, TimeoutError) as exc:
            last_error = exc
            daemon.stop()
    raise RuntimeError(f"dockerd did not start with overlay2 nor vfs: {last_error}")
