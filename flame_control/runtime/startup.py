"""Start-up checks shared by ``flame up`` and ``flame-nap`` (issue 11): every problem found before a process serves
is a :class:`StartupError` whose message is one line, printed as ``<prog>: <message>`` with exit code 2.

- TLS and token files are readable, and TLS has a certificate and key when it is on;
- nothing listens beyond loopback with authentication off unless ``listen.allow_insecure`` says so (then a warning
  is logged at every start);
- a service's state belongs to one running process: :class:`StateLock` holds ``<state_dir>/<service>.lock`` for every
  service the process serves, with ``flock`` and the owner's PID, and a second process serving any of them gives up
  before it starts anything. Processes serving different services may share a state directory (a split deployment:
  ``flame up --services orchestrator`` beside ``flame up --services sfemc,pce,clmc`` on one config file);
- the ports a process is about to serve on are free (named by service and config key);
- state is private: the process umask is 077 and the state directory tree is 0700 / files 0600.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import socket
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flame_control.runtime.config import FlameConfig

#: Lock file of a service inside a state directory: ``<service>.lock``.
LOCK_SUFFIX = ".lock"


class StartupError(Exception):
    """A problem that keeps a process from starting; ``str()`` is one line for the operator."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def one_line(text: str) -> str:
    """``text`` on one line: line breaks become ``; `` and runs of spaces one space."""
    parts = [" ".join(line.split()) for line in str(text).splitlines()]
    return "; ".join(p for p in parts if p)


# -- configuration checks -------------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def authenticated(config: FlameConfig) -> bool:
    """True when callers must prove who they are: bearer tokens, or mutual TLS (a client certificate is required)."""
    return config.auth.enabled or (config.tls.enabled and config.tls.client_ca is not None)


def listen_warning(config: FlameConfig) -> str | None:
    """Refuse a listener beyond loopback without authentication (StartupError) unless ``listen.allow_insecure``;
    then return the warning to log at every start. None when the listener is safe."""
    host = config.listen.host
    if is_loopback(host) or authenticated(config):
        return None
    where = host or "all addresses"
    if not config.listen.allow_insecure:
        raise StartupError(
            f"refusing to listen on {where} with authentication off: anyone who reaches these ports could control "
            "the platform; turn on auth.enabled (tokens) or mutual TLS (tls.client_ca), listen on 127.0.0.1, "
            "or set listen.allow_insecure: true to accept the risk"
        )
    return (
        f"listening on {where} with authentication off (listen.allow_insecure: true): anyone who reaches these "
        "ports can control the platform"
    )


def _readable(setting: str, path: Path | None) -> None:
    if path is None:
        return
    try:
        with Path(path).open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise StartupError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None


def check_files(config: FlameConfig) -> None:
    """TLS needs a certificate and key; every file the config names must be readable."""
    tls = config.tls
    if tls.enabled and (tls.cert is None or tls.key is None):
        missing = " and ".join(k for k, v in (("tls.cert", tls.cert), ("tls.key", tls.key)) if v is None)
        verb = "are" if tls.cert is None and tls.key is None else "is"
        raise StartupError(f"tls.enabled is true but {missing} {verb} not set (flame certs init DIR makes a test CA)")
    if tls.enabled:
        for name in ("cert", "key", "client_ca", "server_ca", "client_cert", "client_key"):
            _readable(f"tls.{name}", getattr(tls, name))
    if config.auth.enabled:
        _readable("auth.tokens_file", config.auth.tokens_file)
    _readable("auth.client_token_file", config.auth.client_token_file)


def preflight(config: FlameConfig) -> list[str]:
    """Every check that needs no side effect; returns warnings to log (StartupError on a problem)."""
    check_files(config)
    warning = listen_warning(config)
    return [warning] if warning else []


# -- ports ----------------------------------------------------------------------------------------------------------
def check_port_free(host: str, port: int, what: str) -> None:
    """StartupError naming ``what`` when ``host:port`` (TCP) cannot be bound right now; port 0 is always free."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise StartupError(f"{what}: cannot resolve listen address {host!r}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT leftovers do not count
        try:
            s.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"{what} {host}:{port} is already in use by another process") from None
            raise StartupError(f"{what} {host}:{port}: cannot listen: {exc.strerror or exc}") from None


def os_error_line(exc: OSError) -> str:
    """One line for an OSError raised while a service started: its own words (bind failures from asyncio and from
    the services name the address in them), without the ``[Errno N]`` prefix."""
    text = exc.strerror if exc.errno and exc.strerror else str(exc)
    if exc.filename:
        text = f"{exc.filename}: {text}"
    return one_line(text)


# -- private state --------------------------------------------------------------------------------------------------
def private_umask() -> None:
    """Files and directories this process (and its children) create are its owner's only: 0600 / 0700."""
    os.umask(0o077)


def make_private(state_dir: Path) -> None:
    """Create ``state_dir`` 0700 and take group/other bits off everything already in it (older installs)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for root, dirs, files in os.walk(state_dir):
        for name in [*dirs, *files, ""]:
            path = os.path.join(root, name) if name else root
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                    os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)


@dataclass
class StateLock:
    """An exclusive ``flock`` on ``<state_dir>/<service>.lock`` for each service of the process, for its life; each
    file holds the owner's PID and program. The kernel drops the locks when the owner dies, so a stale file from a
    dead PID is taken over."""

    paths: list[Path]
    fds: list[int]
    #: PID recorded in a lock file whose owner is gone (None when the files were new or empty).
    took_over_from: int | None = None

    @classmethod
    def acquire(cls, state_dir: Path, program: str, services: Sequence[str]) -> StateLock:
        """Lock the state of ``services`` in ``state_dir`` for this process or raise StartupError naming the running
        owner (nothing stays locked then)."""
        lock = cls([], [])
        try:
            make_private(state_dir)
        except OSError as exc:
            raise StartupError(f"state directory {state_dir}: {exc.strerror or exc}") from None
        for service in sorted(set(services)):
            path = state_dir / f"{service}{LOCK_SUFFIX}"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                lock.release()
                raise StartupError(f"state directory {state_dir}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid, owner = _read_owner(fd)
                os.close(fd)
                lock.release()
                raise StartupError(
                    f"state directory {state_dir} is in use by a running {owner or 'flame process'}"
                    f"{f' (pid {pid})' if pid else ''} serving {service}: stop it first or pass another --state-dir"
                ) from None
            previous, _ = _read_owner(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{program}\n".encode(), 0)
            os.fsync(fd)
            lock.paths.append(path)
            lock.fds.append(fd)
            if previous and previous != os.getpid() and lock.took_over_from is None:
                lock.took_over_from = previous
        return lock

    def release(self) -> None:
        """Drop the locks (the files stay; their PID is then stale and the next process takes them over)."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


def _read_owner(fd: int) -> tuple[int | None, str]:
    raw = os.pread(fd, 256, 0).decode(errors="replace").split("\n")
    pid = int(raw[0]) if raw and raw[0].strip().isdigit() else None
    return pid, raw[1].strip() if len(raw) > 1 else ""
