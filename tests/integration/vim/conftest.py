"""Fixtures of the VIM driver tests (ORCH-6): a private dockerd per session and the busybox media image in it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.dockerd import Dockerd, start_dockerd
from tests.support.procs import ProcessGroup

#: Tag of the busybox media image the docker tests run.
MEDIA_IMAGE = "flame/media-busybox:test"


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    """A private dockerd for the session (skips when not root, dockerd or the docker SDK missing)."""
    group = ProcessGroup(tmp_path_factory.mktemp("dockerd-logs"))
    daemon = start_dockerd(group)
    try:
        yield daemon
    finally:
        daemon.stop()
        group.stop_all()


@pytest.fixture(scope="session")
def media_image(dockerd: Dockerd) -> str:
    """The busybox-static media image imported into ``dockerd`` (skips when /bin/busybox is missing); its tag."""
    import docker

    from flame_control.vim.docker_vim import import_busybox_media_image

    try:
        client = docker.DockerClient(base_url=dockerd.base_url, timeout=60)
    except docker.errors.DockerException as exc:
        pytest.fail(f"docker SDK cannot reach the test dockerd: {exc}")
    try:
        import_busybox_media_image(client, MEDIA_IMAGE)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    finally:
        client.close()
    return MEDIA_IMAGE
