"""Where ``flame demo`` runs the SF endpoints: the process VIM (the default without root) or the docker VIM on a
private dockerd the demo owns (``--vim docker``; ``--vim auto`` picks docker when :func:`unavailable` says nothing).

Docker (ORCH-6, SFEMC-6): a dockerd started as TESTBED.md says (``--data-root``, ``--exec-root``, socket and pidfile
in a short fresh temp dir, since unix socket paths are limited to 108 bytes; ``--iptables=false --ip6tables=false
--bridge=none``; overlay2, falling back to vfs) as a child of the demo's process group, so the watchdog notices its
crash and teardown stops it by PID (its containerd is a child in the same process group). The busybox-static media
image is imported with the demo's assets: for every service's asset the playlist and the 10 segments its players
fetch, and the ``?size=`` variants the demo asks for (the image's CGI serves ``seg<N>.ts?size=S`` from the file of
that name; see :func:`flame_control.vim.docker_vim.default_media_files`). It is registered with the SFEMC as
:data:`IMAGE` (vim ``docker``) and every endpoint of the demo's templates runs it (``vim: docker``, port 0: the driver
picks a free host port per container; host networking, so the NAPs in front of the compute sites reach it on
127.0.0.1).

Cleanup, also after Ctrl-C or a crash of a component: containers labelled ``flame.managed=true`` are removed (the
SFEMC deletes its own when the services are deleted; what is left is removed through the API), dockerd is stopped with
the rest of the group, then anything still running from its root (dockerd, containerd, shims and their container
processes) is killed by PID, the mounts under the root (``<exec-root>/netns/default``, overlay mounts) are unmounted
and the root removed. :meth:`DockerVimSetup.left_running` reports what could not be removed.

The dockerd recipe (:func:`dockerd_argv`, :func:`ping`, :func:`unmount_below`) is shared with tests/support/dockerd.py.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from flame_control.demo import scenario as sc
from flame_control.demo.procs import Proc, ProcessGroup, StartError, kill_pid, pid_alive

#: Name the media image is registered under with the SFEMC (the demo's templates name it).
IMAGE = "vod-busybox"
BUSYBOX = Path("/bin/busybox")
#: Docker API version the readiness ping uses (dockerd 20.10 and later).
API_VERSION = "1.41"
#: Segments per asset the players cycle through (clients.Player's default).
SEGMENTS = 10
MANAGED = {"label": ["flame.managed=true"]}


def unavailable() -> str | None:
    """Why ``--vim docker`` cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (dockerd)"
    if shutil.which("dockerd") is None:
        return "dockerd not found (apt-get install -y docker.io)"
    if not BUSYBOX.is_file():
        return f"{BUSYBOX} not found (apt-get install -y busybox-static)"
    if b"ld-linux" in BUSYBOX.read_bytes()[:65536]:
        return f"{BUSYBOX} is dynamically linked (apt-get install -y busybox-static)"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "docker SDK not installed (a runtime dependency of flame-control: reinstall it)"
    return None


# -- the dockerd recipe (shared with tests/support/dockerd.py) ------------------------------------------------------
def dockerd_argv(binary: str, root: Path, storage_driver: str = "overlay2") -> list[str]:
    """dockerd with every path under ``root`` (socket ``root/docker.sock``), no iptables, no bridge."""
    return [
        binary,
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"),
        "-H", f"unix://{root / 'docker.sock'}",
        "--pidfile", str(root / "dockerd.pid"),
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--storage-driver={storage_driver}",
    ]  # fmt: skip


def ping(base_url: str) -> bool:
    """True when the daemon at ``base_url`` (``unix://PATH``) answers ``/_ping``."""
    import docker

    path = base_url.removeprefix("unix://")
    if base_url.startswith("unix://") and not os.path.exists(path):
        return False
    try:
        client = docker.APIClient(base_url=base_url, version=API_VERSION, timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def unmount_below(root: Path) -> None:
    """Unmount ``<exec-root>/netns/default`` and every other mount under ``root``, deepest first."""
    prefix = str(root.resolve())
    mounts = []
    with contextlib.suppress(OSError), open("/proc/self/mounts") as table:
        for line in table:
            target = line.split()[1].replace("\\040", " ")
            if target == prefix or target.startswith(prefix + "/"):
                mounts.append(target)
    for target in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def mounts_below(root: Path) -> list[str]:
    """Mount points under ``root`` still in the mount table."""
    prefix = str(root.resolve())
    with contextlib.suppress(OSError), open("/proc/self/mounts") as table:
        return [t for t in (line.split()[1] for line in table) if t == prefix or t.startswith(prefix + "/")]
    return []


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def processes_of(root: Path) -> list[int]:
    """Live processes whose command line names ``root`` (dockerd, containerd, shims), with their descendants
    (the container processes under a shim), deepest first."""
    needle = str(root.resolve()).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes() and pid_alive(int(entry.name)):
                    found.append(int(entry.name))
    kids, out, todo = _children(), [], list(found)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.append(pid)
            todo.extend(kids.get(pid, []))
    return [p for p in reversed(out) if pid_alive(p)]


# -- the demo's VIM ------------------------------------------------------------------------------------------------
class DemoVim(Protocol):
    """What the platform and runner need from the VIM the demo runs its endpoints on."""

    kind: str

    def prepare(self, group: ProcessGroup, workdir: Path) -> None:
        """Start what the VIM needs (before the control plane)."""

    def sfemc_vims(self) -> dict[str, Any]:
        """``services.sfemc.vims``."""

    def control_plane_started(self, sfemc: Any) -> None:
        """Register what the templates need with the SFEMC (``sfemc`` is its stub)."""

    def template(self, text: str) -> str:
        """The demo's template of one service as deployed on this VIM."""

    def remove_instances(self) -> None:
        """Remove endpoint instances left after the services were deleted (or could not be)."""

    def close(self) -> None:
        """Stop and remove everything :meth:`prepare` made (after the process group was stopped)."""

    def left_running(self) -> list[dict[str, Any]]:
        """What :meth:`close` could not remove."""

    def describe(self) -> dict[str, Any]:
        """For the summary."""


class ProcessVimSetup:
    """The process VIM (embedded default): the SFEMC runs the built-in media server as processes; nothing to set up."""

    kind = "process"

    def __init__(self, note: str = "") -> None:
        self.note = note

    def prepare(self, group: ProcessGroup, workdir: Path) -> None:
        return None

    def sfemc_vims(self) -> dict[str, Any]:
        return {"process": {}}

    def control_plane_started(self, sfemc: Any) -> None:
        return None

    def template(self, text: str) -> str:
        return text

    def remove_instances(self) -> None:
        return None

    def close(self) -> None:
        return None

    def left_running(self) -> list[dict[str, Any]]:
        return []

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "image": "vod-media-server (builtin:media-server)", "note": self.note}


def media_files(services: list[str]) -> dict[str, bytes]:
    """Files of the demo's media image: per service's asset its playlist, :data:`SEGMENTS` segments and the
    ``?size=`` variants the demo requests (the F3.2 probe's small segments)."""
    from flame_control.vim.docker_vim import default_media_files

    sizes = [sc.PROBE_SIZE]
    files: dict[str, bytes] = {}
    for svc in services:
        files.update(default_media_files(sc.asset_of(svc), SEGMENTS, sizes))
    return files


def docker_template(text: str, image: str = IMAGE) -> str:
    """Every endpoint of a demo template on the docker VIM with ``image`` (no port: one free port per container)."""
    if text.count("image: vod-media-server\n") != 3:
        raise ValueError("vod template changed: expected 3 x 'image: vod-media-server'")
    return text.replace("image: vod-media-server\n", f"image: {image}\n        vim: docker\n")


class DockerVimSetup:
    """A private dockerd with the demo's media image; see the module docstring."""

    kind = "docker"

    def __init__(self, services: list[str], note: str = "") -> None:
        self.services = services
        self.note = note
        self.root: Path | None = None
        self.proc: Proc | None = None
        self.storage_driver = ""
        self.tag = f"flame/demo-media:{uuid.uuid4().hex[:8]}"
        self.image_id = ""
        self.timings: dict[str, float] = {}
        self.removed: list[str] = []
        self.killed: list[int] = []
        self._left: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        assert self.root is not None
        return f"unix://{self.root / 'docker.sock'}"

    def prepare(self, group: ProcessGroup, workdir: Path) -> None:
        binary = shutil.which("dockerd")
        if binary is None:
            raise StartError("dockerd not found (apt-get install -y docker.io)")
        t0 = time.monotonic()
        errors = []
        for driver in ("overlay2", "vfs"):
            self.root = Path(tempfile.mkdtemp(prefix="fdk-", dir="/tmp"))
            argv = dockerd_argv(binary, self.root, driver)
            try:
                self.proc = group.start(f"dockerd-{driver}", argv, ready=functools.partial(ping, self.base_url))
                self.storage_driver = driver
                break
            except StartError as exc:
                errors.append(f"{driver}: {str(exc)[-600:]}")
                failed = group.procs[-1]
                failed.expected_exit = True  # not a crash: vfs is tried next
                group.stop(failed, grace=10)
                self._clean_root()
        else:
            raise StartError("dockerd did not start with overlay2 nor vfs:\n" + "\n".join(errors))
        self.timings["dockerd_ready_s"] = round(time.monotonic() - t0, 3)
        t1 = time.monotonic()
        import docker

        from flame_control.vim.docker_vim import import_busybox_media_image

        client = docker.DockerClient(base_url=self.base_url, timeout=120)
        try:
            self.image_id = import_busybox_media_image(client, self.tag, media_files(self.services), BUSYBOX)
        finally:
            client.close()
        self.timings["image_import_s"] = round(time.monotonic() - t1, 3)

    def sfemc_vims(self) -> dict[str, Any]:
        return {"process": {}, "docker": {"docker_url": self.base_url}}

    def control_plane_started(self, sfemc: Any) -> None:
        from flame_control.api.flame.sfemc.v1 import sfemc_pb2

        image = sfemc_pb2.EndpointImage(name=IMAGE, vim="docker", reference=self.tag)
        sfemc.RegisterEndpointImage(
            sfemc_pb2.RegisterEndpointImageRequest(request_id=uuid.uuid4().hex, image=image), timeout=10
        )

    def template(self, text: str) -> str:
        return docker_template(text)

    def remove_instances(self) -> None:
        if self.root is None or self.proc is None or not self.proc.running():
            return
        import docker

        with contextlib.suppress(Exception):
            client = docker.DockerClient(base_url=self.base_url, timeout=30)
            try:
                for container in client.containers.list(all=True, filters=MANAGED):
                    with contextlib.suppress(Exception):
                        container.remove(force=True)
                        self.removed.append(str(container.name))
            finally:
                client.close()

    def close(self) -> None:
        """After the group was stopped: kill by PID what still runs from the root, unmount, remove the root."""
        if self.proc is not None and pid_alive(self.proc.pid):
            kill_pid(self.proc.pid, 15)
        if self.root is not None:
            for pid in processes_of(self.root):
                self.killed.append(pid)
                kill_pid(pid, 3)
            self._clean_root()

    def _clean_root(self) -> None:
        if self.root is None:
            return
        unmount_below(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
        left: list[dict[str, Any]] = [{"name": "docker process", "pid": p} for p in processes_of(self.root)]
        left += [{"name": f"mount {m}", "pid": 0} for m in mounts_below(self.root)]
        if self.root.exists():
            left.append({"name": f"dir {self.root}", "pid": 0})
        self._left = left

    def left_running(self) -> list[dict[str, Any]]:
        return list(self._left)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "note": self.note,
            "dockerd_pid": self.proc.pid if self.proc is not None else None,
            "root": str(self.root) if self.root is not None else "",
            "storage_driver": self.storage_driver,
            "image": IMAGE,
            "image_tag": self.tag,
            "image_id": self.image_id,
            "timings": self.timings,
            "containers_removed_at_cleanup": self.removed,
            "killed_at_cleanup": self.killed,
            "left": self._left,
        }
