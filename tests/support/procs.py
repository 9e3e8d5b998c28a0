"""Start real processes for tests and always clean them up by PID.

``ProcessGroup`` is the one way tests start servers (flame up, tansu, influxd, dockerd, ovsdb-server...). Each process
runs in its own session, so stopping kills the whole process tree; logs go to files under the test's temp dir and are
printed when a start times out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true or raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


@dataclass
class Proc:
    """A started process and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """Everything the process printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class ProcessGroup:
    """Processes started for one test (or session); ``stop_all`` terminates each tree by PID, then kills it."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        ready: Callable[[], bool] | None = None,
        timeout: float = 20.0,
    ) -> Proc:
        """Start ``argv``; when ``ready`` is given, wait until it returns true (or fail with the process log)."""
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        if ready is not None:
            deadline = time.monotonic() + timeout
            while not ready():
                if popen.poll() is not None:
                    raise RuntimeError(f"{name} exited with {popen.returncode}:\n{proc.output()[-4000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready after {timeout}s:\n{proc.output()[-4000:]}")
                time.sleep(0.05)
        return proc

    def stop(self, proc: Proc, sig: int = signal.SIGTERM, grace: float = 10.0) -> int | None:
        """Signal the process group of ``proc``; kill it if it is still there after ``grace`` seconds."""
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, sig)
            try:
                proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(5)
        # Children that outlived their leader in the same group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        return proc.popen.returncode

    def stop_all(self) -> None:
        """Stop every process, newest first."""
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


@contextlib.contextmanager
def process_group(workdir: Path) -> Iterator[ProcessGroup]:
    """Context manager form of :class:`ProcessGroup`."""
    group = ProcessGroup(workdir)
    try:
        yield group
    finally:
        group.stop_all()
