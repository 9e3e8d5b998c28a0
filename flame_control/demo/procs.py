"""Child processes of ``flame demo``: each in its own session (so stopping kills its whole tree), output to a log
file under the state directory, stopped by PID (SIGTERM, then SIGKILL after a grace period)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live process (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` is gone; False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_pid(pid: int, grace: float = 5.0) -> None:
    """SIGTERM ``pid``, SIGKILL it after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
        if not wait_gone(pid, grace):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 2.0)


class StartError(RuntimeError):
    """A child did not become ready."""


@dataclass
class Proc:
    """A started child process."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    #: Set when the demo ended it on purpose (a NAP killed by ``--kill-nap``), so its exit is no crash.
    expected_exit: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        """The end of its output."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def exit_report(self, what: str) -> str:
        """``<name> <what>: <its last error line, whole>`` on the first line, then where its log is and its tail
        (issue 11: the demo's summary shows the first line in full)."""
        tail = self.tail()
        return f"{self.name} {what}: {last_line(tail) or '(no output)'}\n(log: {self.log})\n{tail}"


def last_line(text: str) -> str:
    """The last non-blank line of a process's output: a Python traceback's exception, a FLAME start-up failure's
    one-line reason."""
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


@dataclass
class ProcessGroup:
    """Every child of one demo run; :meth:`stop_all` ends each tree by PID, newest first."""

    logdir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        ready: Callable[[], bool] | None = None,
        timeout: float = 30.0,
    ) -> Proc:
        """Start ``argv``; with ``ready``, wait until it returns true (StartError with the log tail otherwise)."""
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = self.logdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        if ready is not None:
            self.wait_ready(proc, ready, timeout)
        return proc

    def wait_ready(self, proc: Proc, ready: Callable[[], bool], timeout: float) -> None:
        """Wait until ``ready()``; StartError when the process exits or the time is up."""
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.popen.poll() is not None:
                raise StartError(proc.exit_report(f"exited with {proc.popen.returncode}"))
            if time.monotonic() > deadline:
                raise StartError(proc.exit_report(f"not ready after {timeout:.0f}s"))
            time.sleep(0.05)

    def crashed(self) -> list[Proc]:
        """Children that exited although nobody asked them to."""
        return [p for p in self.procs if not p.expected_exit and p.popen.poll() is not None]

    def stop(self, proc: Proc, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        """Signal the process group of ``proc``; SIGKILL it if it is still there after ``grace`` seconds."""
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, sig)
            try:
                proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(5)
        # Children that outlived their leader in the same session/group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)

    def kill(self, proc: Proc) -> None:
        """SIGKILL ``proc`` on purpose (a component failure the demo injects)."""
        proc.expected_exit = True
        self.stop(proc, signal.SIGKILL, 5.0)

    def stop_many(self, procs: Sequence[Proc], grace: float = 10.0) -> None:
        """SIGTERM every process group of ``procs`` at once, wait up to ``grace`` seconds, SIGKILL what is left."""
        for proc in procs:
            proc.expected_exit = True
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            self.stop(proc, signal.SIGKILL, 5.0)

    def stop_all(self, grace: float = 10.0) -> None:
        """Stop every child, newest first."""
        self.stop_many(list(reversed(self.procs)), grace)

    def left_running(self) -> list[dict[str, object]]:
        """Children (by PID) still alive."""
        return [{"name": p.name, "pid": p.pid} for p in self.procs if pid_alive(p.pid)]
