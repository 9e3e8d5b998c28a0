"""A private dockerd with the busybox media image in it, for docker-VIM orchestration tests and benchmarks (ORCH-6,
SFEMC-6).

``docker_media(workdir)`` is the small form: it starts dockerd (``tests/support/dockerd.py``: temp data and exec root,
``--bridge=none``, overlay2 falling back to vfs), imports the busybox-static media image serving the segments of
``asset`` (bytes from ``flame_control.vim.media_server.expected_segment``, the same bytes the process VIM's media
server sends), yields ``(docker_url, image_tag)`` and stops dockerd (by PID) on exit, removing every container
with it. Give the control plane ``vims={"docker": {"docker_url": docker_url}}`` and register the tag with the
SFEMC (``RegisterEndpointImage``, vim ``docker``).

``docker_media_env(workdir)`` yields a :class:`DockerMedia` that can also stop and restart the daemon on the same
data root (a VIM outage) and list the containers the platform created.

Skips (``pytest.skip``) when not root, or dockerd, the docker SDK or ``/bin/busybox`` (busybox-static) is missing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.dockerd import Dockerd, require_dockerd, start_dockerd
from tests.support.procs import ProcessGroup

#: Tag of the media image the helper imports.
MEDIA_TAG = "flame/media-busybox:orch"
#: Asset whose segments the image serves (``/vod/<asset>/seg<N>.ts`` and ``index.m3u8``).
ASSET = "film"
SEGMENTS = 5
#: The platform's container label.
MANAGED_FILTER = {"label": "flame.managed=true"}


@dataclass
class DockerMedia:
    """A running private dockerd holding the media image ``tag``."""

    daemon: Dockerd
    tag: str
    binary: str
    #: Seconds from spawning dockerd to its first ping, and to the image being imported.
    ready_s: float = 0.0
    import_s: float = 0.0

    @property
    def docker_url(self) -> str:
        return self.daemon.base_url

    def client(self, timeout: int = 30) -> Any:
        """A docker SDK client for the daemon (close it after use)."""
        import docker

        return docker.DockerClient(base_url=self.docker_url, timeout=timeout)

    def managed_containers(self) -> list[Any]:
        """Every container carrying ``flame.managed=true`` (running or not)."""
        client = self.client()
        try:
            return list(client.containers.list(all=True, filters=MANAGED_FILTER))
        finally:
            client.close()

    def stop_daemon(self) -> None:
        """Stop dockerd (and its containerd) by PID, keeping its data root: images and containers survive."""
        proc = self.daemon.proc
        if proc is not None:
            self.daemon.procs.stop(proc, grace=15)
            with contextlib.suppress(ValueError):
                self.daemon.procs.procs.remove(proc)
            self.daemon.proc = None

    def start_daemon(self) -> None:
        """Start dockerd again on the same data root, socket and storage driver."""
        if self.daemon.proc is None:
            self.daemon.start(self.binary)


def _import(daemon: Dockerd, tag: str, asset: str, segments: int) -> None:
    import docker

    from flame_control.vim.docker_vim import default_media_files, import_busybox_media_image

    client = docker.DockerClient(base_url=daemon.base_url, timeout=60)
    try:
        import_busybox_media_image(client, tag, default_media_files(asset, segments))
    except FileNotFoundError as exc:  # /bin/busybox missing
        pytest.skip(str(exc))
    finally:
        client.close()


@contextlib.contextmanager
def docker_media_env(
    workdir: Path, *, tag: str = MEDIA_TAG, asset: str = ASSET, segments: int = SEGMENTS
) -> Iterator[DockerMedia]:
    """Start a private dockerd (logs under ``workdir``), import the media image; stop and clean up on exit."""
    binary = require_dockerd()
    logs = workdir / "dockerd"
    logs.mkdir(parents=True, exist_ok=True)
    group = ProcessGroup(logs)
    daemon: Dockerd | None = None
    try:
        daemon = start_dockerd(group)
        t0 = time.monotonic()
        _import(daemon, tag, asset, segments)
        yield DockerMedia(daemon, tag, binary, ready_s=daemon.ready_s, import_s=time.monotonic() - t0)
    finally:
        if daemon is not None:
            daemon.stop()
        group.stop_all()


@contextlib.contextmanager
def docker_media(group_workdir: Path, *, tag: str = MEDIA_TAG, asset: str = ASSET) -> Iterator[tuple[str, str]]:
    """``(docker_url, image_tag)`` of a private dockerd holding the busybox media image; see the module docstring."""
    with docker_media_env(group_workdir, tag=tag, asset=asset) as env:
        yield env.docker_url, env.tag
