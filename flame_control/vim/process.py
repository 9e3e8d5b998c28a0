"""The ``process`` VIM (ORCH-6, embedded default): SF endpoints as local processes, one state directory each.

Layout: ``state_dir/<instance id>/`` holds ``spec.json`` (labels, image, requested and assigned port, environment),
``run.json`` while the driver considers the instance started (pid, argv), ``instance.log`` (stdout and stderr of the
process) and nothing else. The instance id is the directory name, derived from the endpoint id (sanitised plus a short
hash), so ``create`` for an endpoint that already has a directory returns it instead of making a duplicate.

Image references: ``builtin:media-server`` runs :mod:`flame_control.vim.media_server`; anything else is an argv template
(``shlex``-split, no shell) with ``{port}``, ``{host}`` and ``{name}`` placeholders, e.g.
``"python3 -m http.server {port} --bind {host}"``. The process also gets ``PORT``, ``HOST`` and ``FLAME_ENDPOINT``.

Identity (issue 14): an instance is its processes, not a command line. ``run.json`` records the leader's PID, its start
time (``/proc/PID/stat`` field 22, so a reused PID is never mistaken for it) and its process group; every process of
the instance also carries the label ``FLAME_VIM_INSTANCE=<driver label>/<instance id>`` in its environment, which
descendants inherit across ``fork``, ``exec`` and ``setsid``. States: no ``run.json`` -> CREATED; the leader alive with
its recorded start time, or any live process carrying the label -> RUNNING (an image that execs or daemonises is
adopted); ``run.json`` but none of them left -> EXITED (it died by itself). A restarted or second driver on the same
``state_dir`` therefore adopts running instances from the directories and ``/proc`` alone and never starts a
duplicate; stop and delete signal the process group and every labelled process, and wait until none is left.

A missing executable is a PLACEMENT error
(the "image" does not exist, like a docker image missing from the daemon); a process that exits or never listens is a
BOOT error with its log tail.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flame_control
from flame_control.vim.base import (
    LABEL_ENDPOINT,
    LABEL_MEDIA_SERVICE,
    Instance,
    InstanceSpec,
    InstanceStatus,
    VimError,
    VimErrorKind,
)
from flame_control.vim.ports import accepts, free_port

#: Image reference of the built-in media server.
BUILTIN_MEDIA_SERVER = "builtin:media-server"
#: Label every platform-made instance carries.
LABEL_MANAGED = "flame.managed"
_SPEC = "spec.json"
_RUN = "run.json"
_LOG = "instance.log"
_PLACEHOLDERS = {"port", "host", "name"}
_Argv = list[str]


def instance_id_for(endpoint_id: str) -> str:
    """Directory-safe, deterministic instance id of an endpoint (sanitised id plus 8 hex digits of its hash)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", endpoint_id).strip("-.")[:48] or "endpoint"
    return f"{safe}-{hashlib.blake2b(endpoint_id.encode(), digest_size=4).hexdigest()}"


def _valid_id(instance_id: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_.-]+", instance_id) is not None and instance_id.strip(".") != ""


#: Environment variable naming the instance a process belongs to (inherited by every descendant).
LABEL_ENV = "FLAME_VIM_INSTANCE"


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is field 3, the state), None when there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) process in clock ticks since boot (/proc/PID/stat field 22), or None."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def labelled_processes(label: str) -> list[int]:
    """Live processes whose environment carries ``FLAME_VIM_INSTANCE=<label>`` exactly."""
    needle = f"{LABEL_ENV}={label}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env.split(b"\0") and start_time(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class ProcessVim:
    """SF endpoints as local processes under ``state_dir``; see the module docstring for layout and states."""

    name = "process"

    def __init__(
        self,
        state_dir: Path,
        python: str = sys.executable,
        host: str = "127.0.0.1",
        *,
        boot_timeout_s: float = 10.0,
        stop_grace_s: float = 5.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.python = python
        self.host = host
        self.boot_timeout_s = boot_timeout_s
        self.stop_grace_s = stop_grace_s
        self.state_dir.mkdir(parents=True, exist_ok=True)
        #: Prefix of this driver's instance labels: the same for every driver on the same ``state_dir``.
        self.label_prefix = hashlib.blake2b(str(self.state_dir.resolve()).encode(), digest_size=6).hexdigest()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        #: Children this driver spawned (reaped on poll so they do not linger as zombies).
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # -- VimDriver -------------------------------------------------------------------------------------------------

    def create(self, spec: InstanceSpec) -> Instance:
        iid = instance_id_for(spec.endpoint_id)
        with self._lock(iid):
            existing = _read_json(self._dir(iid) / _SPEC)
            if existing is not None:
                return self._instance(iid, existing)
            self._argv(spec.image, spec.port or 1, spec.endpoint_id)  # PLACEMENT error for a bad or missing command
            record = {
                "labels": {
                    LABEL_ENDPOINT: spec.endpoint_id,
                    LABEL_MEDIA_SERVICE: spec.media_service,
                    LABEL_MANAGED: "true",
                },
                "endpoint_id": spec.endpoint_id,
                "media_service": spec.media_service,
                "image": spec.image,
                "requested_port": spec.port,
                "port": spec.port,
                "environment": dict(spec.environment),
                "cpus": spec.cpus,
                "memory_mb": spec.memory_mb,
                "site": spec.site,
            }
            self._dir(iid).mkdir(parents=True, exist_ok=True)
            _write_json(self._dir(iid) / _SPEC, record)
            return self._instance(iid, record)

    def start(self, instance_id: str) -> Instance:
        with self._lock(instance_id):
            record = self._spec_or_raise(instance_id)
            current = self._instance(instance_id, record)
            if current.status is InstanceStatus.RUNNING:
                return current
            (self._dir(instance_id) / _RUN).unlink(missing_ok=True)  # EXITED: start afresh
            port = int(record["port"])
            if port == 0 or (int(record["requested_port"]) == 0 and accepts(self.host, port)):
                port = free_port(self.host)
                record["port"] = port
                _write_json(self._dir(instance_id) / _SPEC, record)
            elif accepts(self.host, port):
                raise VimError(VimErrorKind.BOOT, f"{instance_id}: port {self.host}:{port} is already in use")
            argv = self._argv(str(record["image"]), port, str(record["endpoint_id"]))
            popen = self._spawn(instance_id, record, argv, port)
            run = {
                "pid": popen.pid,
                "start_time": start_time(popen.pid) or 0,
                "pgid": popen.pid,
                "label": self._label(instance_id),
                "argv": argv,
                "started_at": time.time(),
            }
            _write_json(self._dir(instance_id) / _RUN, run)
            self._wait_listening(instance_id, popen, port)
            return self._instance(instance_id, record)

    def stop(self, instance_id: str) -> Instance:
        with self._lock(instance_id):
            record = self._spec_or_raise(instance_id)
            self._terminate(instance_id)
            return self._instance(instance_id, record)

    def delete(self, instance_id: str) -> None:
        with self._lock(instance_id):
            if not _valid_id(instance_id) or not self._dir(instance_id).is_dir():
                return
            self._terminate(instance_id)
            shutil.rmtree(self._dir(instance_id), ignore_errors=True)

    def get(self, instance_id: str) -> Instance | None:
        record = self._spec(instance_id)
        return None if record is None else self._instance(instance_id, record)

    def list(self, media_service: str | None = None) -> list[Instance]:
        found = []
        for child in sorted(self.state_dir.iterdir()):
            record = _read_json(child / _SPEC)
            if record is None or record.get("labels", {}).get(LABEL_MANAGED) != "true":
                continue
            if media_service is not None and record.get("media_service") != media_service:
                continue
            found.append(self._instance(child.name, record))
        return found

    def close(self) -> None:
        """Nothing to release: instances keep running and a new driver on ``state_dir`` adopts them."""

    # -- helpers ---------------------------------------------------------------------------------------------------

    def pid_of(self, instance_id: str) -> int | None:
        """PID of the instance's leader process while it runs (else of another labelled process; None when none
        runs)."""
        run = _read_json(self._dir(instance_id) / _RUN)
        if run is None:
            return None
        if self._leader_alive(run):
            return int(run["pid"])
        members = labelled_processes(str(run.get("label", "")))
        return members[0] if members else None

    def _label(self, instance_id: str) -> str:
        return f"{self.label_prefix}/{instance_id}"

    def log_tail(self, instance_id: str, lines: int = 20) -> str:
        """Last lines of the instance's output."""
        try:
            text = (self._dir(instance_id) / _LOG).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def _dir(self, instance_id: str) -> Path:
        return self.state_dir / instance_id

    @contextlib.contextmanager
    def _lock(self, instance_id: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(instance_id, threading.Lock())
        with lock:
            yield

    def _spec(self, instance_id: str) -> dict[str, Any] | None:
        if not _valid_id(instance_id):
            return None
        return _read_json(self._dir(instance_id) / _SPEC)

    def _spec_or_raise(self, instance_id: str) -> dict[str, Any]:
        record = self._spec(instance_id)
        if record is None:
            raise VimError(VimErrorKind.NOT_FOUND, f"no process instance {instance_id!r} under {self.state_dir}")
        return record

    def _argv(self, image: str, port: int, name: str) -> _Argv:
        if image == BUILTIN_MEDIA_SERVER:
            return [self.python, "-m", "flame_control.vim.media_server", "--port", str(port), "--name", name,
                    "--host", self.host]  # fmt: skip
        try:
            parts = shlex.split(image)
        except ValueError as exc:
            raise VimError(VimErrorKind.PLACEMENT, f"image {image!r} is not a valid command line: {exc}") from exc
        if not parts:
            raise VimError(VimErrorKind.PLACEMENT, "image is an empty command line")
        try:
            argv = [part.format(port=port, host=self.host, name=name) for part in parts]
        except (KeyError, IndexError, ValueError) as exc:
            raise VimError(
                VimErrorKind.PLACEMENT,
                f"image {image!r}: bad placeholder {exc} (allowed: {', '.join(sorted(_PLACEHOLDERS))}; "
                "write {{ and }} for literal braces)",
            ) from exc
        if shutil.which(argv[0]) is None:
            raise VimError(
                VimErrorKind.PLACEMENT,
                f"image {image!r}: executable {argv[0]!r} not found or not executable on this host "
                f"(install it, or use {BUILTIN_MEDIA_SERVER})",
            )
        return argv

    def _spawn(self, instance_id: str, record: dict[str, Any], argv: _Argv, port: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, **{str(k): str(v) for k, v in record.get("environment", {}).items()}}
        env.update(PORT=str(port), HOST=self.host, FLAME_ENDPOINT=str(record["endpoint_id"]))
        env[LABEL_ENV] = self._label(instance_id)
        if record["image"] == BUILTIN_MEDIA_SERVER:
            package_root = str(Path(flame_control.__file__).resolve().parent.parent)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        log = self._dir(instance_id) / _LOG
        with log.open("ab") as out:
            out.write(f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(argv)}\n".encode())
            out.flush()
            try:
                popen = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=self._dir(instance_id),
                    start_new_session=True,
                )
            except OSError as exc:
                kind = VimErrorKind.PLACEMENT if isinstance(exc, FileNotFoundError) else VimErrorKind.BOOT
                raise VimError(kind, f"{instance_id}: cannot run {argv[0]!r}: {exc}") from exc
        self._children[popen.pid] = popen
        return popen

    def _wait_listening(self, instance_id: str, popen: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + self.boot_timeout_s
        while True:
            code = popen.poll()
            if code is not None and not labelled_processes(self._label(instance_id)):
                raise VimError(
                    VimErrorKind.BOOT,
                    f"{instance_id} exited with code {code} before listening on {self.host}:{port}; "
                    f"log tail:\n{self.log_tail(instance_id)}",
                )
            if accepts(self.host, port):
                return
            if time.monotonic() > deadline:
                self._terminate(instance_id)
                raise VimError(
                    VimErrorKind.BOOT,
                    f"{instance_id} did not accept connections on {self.host}:{port} within {self.boot_timeout_s:.1f}s"
                    f"; log tail:\n{self.log_tail(instance_id)}",
                )
            time.sleep(0.02)

    def _leader_alive(self, run: dict[str, Any]) -> bool:
        """Is the recorded leader process (PID and start time) still running?"""
        pid = int(run.get("pid", 0))
        if pid <= 0:
            return False
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            return False  # our own child exited (and is reaped now)
        recorded = int(run.get("start_time", 0))
        now = start_time(pid)
        if now is None:
            return False
        if not recorded:  # a run record from before issue 14: trust the PID only while it carries our label
            return pid in labelled_processes(str(run.get("label", "")))
        return now == recorded

    def _alive(self, run: dict[str, Any]) -> bool:
        """Does any process of the instance run: its leader, or anything carrying its label (forks, daemons)?"""
        return self._leader_alive(run) or bool(labelled_processes(str(run.get("label", "")) or "-"))

    def _signal_all(self, run: dict[str, Any], sig: int) -> None:
        """Send ``sig`` to the leader's process group (when the leader is still ours) and to every labelled
        process."""
        if self._leader_alive(run):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(run.get("pgid") or run["pid"]), sig)
        for pid in labelled_processes(str(run.get("label", "")) or "-"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _terminate(self, instance_id: str) -> None:
        """SIGTERM every process of the instance, SIGKILL after the grace; then forget the run (-> CREATED)."""
        run_file = self._dir(instance_id) / _RUN
        run = _read_json(run_file)
        if run is not None:
            run.setdefault("label", self._label(instance_id))
            if self._alive(run):
                self._signal_all(run, signal.SIGTERM)
                if not self._wait_gone(run, self.stop_grace_s):
                    self._signal_all(run, signal.SIGKILL)
                    self._wait_gone(run, 5.0)
            self._children.pop(int(run.get("pid", 0)), None)
        run_file.unlink(missing_ok=True)

    def _wait_gone(self, run: dict[str, Any], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._alive(run):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _instance(self, instance_id: str, record: dict[str, Any]) -> Instance:
        run = _read_json(self._dir(instance_id) / _RUN)
        endpoint, media_service = str(record["endpoint_id"]), str(record["media_service"])
        if run is None:
            return Instance(instance_id, endpoint, media_service, InstanceStatus.CREATED)
        run.setdefault("label", self._label(instance_id))
        if self._alive(run):
            address = f"{self.host}:{record['port']}"
            return Instance(instance_id, endpoint, media_service, InstanceStatus.RUNNING, address, f"pid {run['pid']}")
        child = self._children.get(int(run.get("pid", 0)))
        code = child.poll() if child is not None else None
        last = self.log_tail(instance_id, 1)
        detail = f"exited with code {code}" if code is not None else "process gone"
        return Instance(
            instance_id, endpoint, media_service, InstanceStatus.EXITED, "", f"{detail}; last log line: {last}"
        )
