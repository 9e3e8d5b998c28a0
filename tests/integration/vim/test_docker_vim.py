"""The docker VIM (ORCH-6) against a real private dockerd, with the busybox-static media image built by
``docker import`` (SFEMC-6: no registry): lifecycle with a byte-exact segment over host networking, labels and adoption
by a restarted controller, crash detection, image missing -> PLACEMENT, daemon stopped -> CONTROL_PLANE, and delete
leaving no container behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from flame_control.vim.base import (
    LABEL_ENDPOINT,
    LABEL_MEDIA_SERVICE,
    InstanceSpec,
    InstanceStatus,
    VimDriver,
    VimError,
    VimErrorKind,
)
from flame_control.vim.docker_vim import DockerVim, container_name, import_busybox_media_image
from flame_control.vim.media_server import expected_segment, playlist
from tests.integration.vim.helpers import http_get
from tests.support.dockerd import Dockerd, start_dockerd
from tests.support.procs import ProcessGroup, port_open

pytestmark = pytest.mark.docker

MANAGED = {"label": ["flame.managed=true"]}


def _spec(image: str, node: str = "edge-1", **kw: object) -> InstanceSpec:
    return InstanceSpec(endpoint_id=f"vod/{node}", media_service="vod", image=image, **kw)  # type: ignore[arg-type]


@pytest.fixture
def client(dockerd: Dockerd) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=dockerd.base_url, timeout=30)
    try:
        yield c
    finally:
        for container in c.containers.list(all=True, filters=MANAGED):
            container.remove(force=True)
        c.close()


@pytest.fixture
def vim(dockerd: Dockerd, client: docker.DockerClient) -> Iterator[DockerVim]:
    driver = DockerVim(dockerd.base_url, timeout_s=20, stop_grace_s=3)
    try:
        yield driver
    finally:
        driver.close()


def test_docker_vim_implements_the_driver_protocol(vim: DockerVim) -> None:
    assert isinstance(vim, VimDriver) and vim.name == "docker"


def test_lifecycle_serves_byte_exact_segments_over_host_networking_and_delete_leaves_nothing(
    vim: DockerVim, client: docker.DockerClient, media_image: str
) -> None:
    created = vim.create(_spec(media_image, cpus=0.5, memory_mb=64))
    assert created.status is InstanceStatus.CREATED and created.address == ""
    container = client.containers.get(created.instance_id)
    assert container.name == container_name("vod/edge-1")
    assert container.labels[LABEL_ENDPOINT] == "vod/edge-1" and container.labels[LABEL_MEDIA_SERVICE] == "vod"
    assert container.labels["flame.managed"] == "true"
    host_config = container.attrs["HostConfig"]
    assert host_config["NetworkMode"] == "host"
    assert host_config["NanoCpus"] == 500_000_000 and host_config["Memory"] == 64 * 1024 * 1024
    assert vim.create(_spec(media_image)).instance_id == created.instance_id  # idempotent: no duplicate

    running = vim.start(created.instance_id)
    assert running.status is InstanceStatus.RUNNING
    assert http_get(running.address, "/health")[:3:2] == (200, b"ok")
    assert http_get(running.address, "/endpoint")[2] == b"vod/edge-1\n"
    status, headers, body = http_get(running.address, "/vod/demo/seg3.ts")
    assert status == 200 and body == expected_segment("demo", 3)  # the same bytes as the process VIM's endpoint
    assert int(headers["content-length"]) == 256 * 1024
    assert http_get(running.address, "/vod/demo/index.m3u8")[2] == playlist("demo", 5)
    assert http_get(running.address, "/missing")[0] == 404
    assert vim.start(created.instance_id).address == running.address  # idempotent

    stopped = vim.stop(created.instance_id)
    assert stopped.status is InstanceStatus.CREATED
    assert not port_open(int(running.address.rsplit(":", 1)[1]))
    assert vim.get(created.instance_id).status is InstanceStatus.CREATED  # type: ignore[union-attr]
    assert vim.stop(created.instance_id).status is InstanceStatus.CREATED
    assert vim.start(created.instance_id).address == running.address

    vim.delete(created.instance_id)
    assert client.containers.list(all=True, filters={"label": [f"{LABEL_ENDPOINT}=vod/edge-1"]}) == []
    assert vim.get(created.instance_id) is None and vim.list() == []
    vim.delete(created.instance_id)  # idempotent


def test_restarted_controller_adopts_by_label_without_duplicates(
    dockerd: Dockerd, vim: DockerVim, client: docker.DockerClient, media_image: str
) -> None:
    a = vim.start(vim.create(_spec(media_image, "edge-1")).instance_id)
    b = vim.create(_spec(media_image, "edge-2"))
    vim.stop(a.instance_id)
    vim.start(a.instance_id)
    vim.close()

    restarted = DockerVim(dockerd.base_url, timeout_s=20)
    try:
        found = {i.endpoint_id: i for i in restarted.list("vod")}
        assert set(found) == {"vod/edge-1", "vod/edge-2"}
        assert found["vod/edge-1"].status is InstanceStatus.RUNNING and found["vod/edge-1"].address == a.address
        assert found["vod/edge-2"].status is InstanceStatus.CREATED
        assert restarted.create(_spec(media_image, "edge-2")).instance_id == b.instance_id
        assert restarted.list("other") == []
        assert len(client.containers.list(all=True, filters=MANAGED)) == 2
        for inst in restarted.list():
            restarted.delete(inst.instance_id)
        assert client.containers.list(all=True, filters=MANAGED) == []
    finally:
        restarted.close()


def test_stopped_by_driver_is_created_but_killed_container_is_exited(
    dockerd: Dockerd, vim: DockerVim, client: docker.DockerClient, media_image: str
) -> None:
    inst = vim.start(vim.create(_spec(media_image)).instance_id)
    client.containers.get(inst.instance_id).kill()
    crashed = vim.get(inst.instance_id)
    assert crashed is not None and crashed.status is InstanceStatus.EXITED and "exit code 137" in crashed.detail
    vim.stop(inst.instance_id)
    assert DockerVim(dockerd.base_url).get(inst.instance_id).status is InstanceStatus.CREATED  # type: ignore[union-attr]


def test_missing_image_is_a_placement_error_with_a_hint(vim: DockerVim, client: docker.DockerClient) -> None:
    with pytest.raises(VimError) as err:
        vim.create(_spec("flame/not-registered:1"))
    assert err.value.kind is VimErrorKind.PLACEMENT
    assert "flame/not-registered:1 not found on the daemon; register it" in str(err.value)
    assert client.containers.list(all=True, filters=MANAGED) == []


def test_container_exiting_at_boot_is_a_boot_error_with_its_logs(
    vim: DockerVim, client: docker.DockerClient, media_image: str
) -> None:
    broken_cmd = ["sh", "-c", "echo httpd: cannot read /etc/httpd.conf >&2; exit 3"]
    image = "flame/media-busybox:broken"
    import_busybox_media_image(client, image, segments={}, command=broken_cmd)
    inst = vim.create(_spec(image))
    with pytest.raises(VimError) as err:
        vim.start(inst.instance_id)
    assert err.value.kind is VimErrorKind.BOOT
    assert "exited with code 3" in str(err.value) and "cannot read /etc/httpd.conf" in str(err.value)
    assert vim.get(inst.instance_id).status is InstanceStatus.EXITED  # type: ignore[union-attr]
    vim.delete(inst.instance_id)
    assert client.containers.list(all=True, filters=MANAGED) == []


def test_unknown_instance(vim: DockerVim) -> None:
    assert vim.get("0" * 64) is None
    with pytest.raises(VimError) as err:
        vim.start("0" * 64)
    assert err.value.kind is VimErrorKind.NOT_FOUND
    vim.delete("0" * 64)


def test_daemon_stopped_is_a_control_plane_error(tmp_path: Path, media_image: str) -> None:
    group = ProcessGroup(tmp_path)
    daemon = start_dockerd(group)
    driver = DockerVim(daemon.base_url, timeout_s=5)
    try:
        assert driver.list() == []
        daemon.stop()
        for call in (lambda: driver.list(), lambda: driver.create(_spec(media_image)), lambda: driver.get("abc")):
            with pytest.raises(VimError) as err:
                call()
            assert err.value.kind is VimErrorKind.CONTROL_PLANE, err.value
        never_connected = DockerVim(daemon.base_url, timeout_s=5)
        with pytest.raises(VimError) as err:
            never_connected.list()
        assert err.value.kind is VimErrorKind.CONTROL_PLANE and "unreachable" in str(err.value)
    finally:
        driver.close()
        daemon.stop()
        group.stop_all()
