"""The docker VIM (ORCH-6) against a real private dockerd, with the busybox-static media image built by
``docker import`` (SFEMC-6: no registry): lifecycle with a byte-exact segment over host networking, labels and adoption
by a restarted controller, crash detection, image missing -> PLACEMENT, daemon stopped -> CONTROL_PLANE, and delete
leaving no container behind."""

from __future__ import annotations

import socket
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
from flame_control.vim.docker_vim import (
    DockerVim,
    container_name,
    default_media_files,
    import_busybox_media_image,
)
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
    # which surrogate answered, as the process VIM's media server says it (the image's CGI for *.ts and *.m3u8)
    assert headers["x-flame-endpoint"] == "vod/edge-1" and headers["content-type"] == "video/mp2t"
    status, headers, body = http_get(running.address, "/vod/demo/index.m3u8")
    assert (status, body, headers["x-flame-endpoint"]) == (200, playlist("demo", 5), "vod/edge-1")
    assert int(headers["content-length"]) == len(body)
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


def raw_exchange(address: str, request: bytes, head_only: bool = False) -> tuple[bytes, bytes, bool]:
    """One request on a raw socket: (response head, body, True when the server closed right after the body)."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        length = 0 if head_only else int(fields.get(b"Content-Length", b"0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, (head, len(body))
            body += chunk
        sock.settimeout(2)
        closed = sock.recv(1) == b""
    return head, body, closed


def test_media_image_cgi_sends_the_endpoint_header_content_length_and_sized_variants(
    dockerd: Dockerd, vim: DockerVim, client: docker.DockerClient
) -> None:
    """busybox httpd runs /bin/media-cgi for *.ts and *.m3u8 (interpreter mapping in /etc/httpd.conf): status line
    from httpd, then the CGI's Content-Type, Content-Length and X-Flame-Endpoint and nothing else (no ``Connection:
    close``, so a NAP in front keeps its user's connection alive; httpd still closes its own after each response);
    ``?size=S`` serves the file ``seg<N>.ts?size=S`` byte-exact; an unknown size or a query with '/' is a 404 from
    the CGI (with the header), a missing file httpd's own 404; HEAD has the headers and no body."""
    tag = "flame/media-busybox:sized"
    import_busybox_media_image(client, tag, default_media_files("film", 3, sizes=(1024, 4096)))
    running = vim.start(vim.create(_spec(tag, node="edge-s")).instance_id)
    addr = running.address
    get = b"GET %s HTTP/1.1\r\nHost: vod.example\r\n\r\n"
    for path, expected in (
        (b"/vod/film/seg2.ts", expected_segment("film", 2)),
        (b"/vod/film/seg2.ts?size=1024", expected_segment("film", 2, 1024)),
        (b"/vod/film/seg0.ts?size=4096", expected_segment("film", 0, 4096)),
    ):
        head, body, closed = raw_exchange(addr, get % path)
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 200 OK", head
        assert sorted(lines[1:]) == sorted(
            [b"Content-Type: video/mp2t", b"Content-Length: %d" % len(expected), b"X-Flame-Endpoint: vod/edge-s"]
        ), head
        assert body == expected and closed
    head, body, _ = raw_exchange(addr, get % b"/vod/film/index.m3u8")
    assert b"Content-Type: application/vnd.apple.mpegurl" in head and body == playlist("film", 3)
    for path in (b"/vod/film/seg1.ts?size=2048", b"/vod/film/seg1.ts?size=/../../seg1.ts"):
        head, body, _ = raw_exchange(addr, get % path)
        assert head.startswith(b"HTTP/1.1 404 ") and b"X-Flame-Endpoint: vod/edge-s" in head, head
        assert body == b"not found\n"
    assert http_get(addr, "/vod/film/seg9.ts")[0] == 404  # no such file: httpd itself
    head, body, closed = raw_exchange(addr, b"HEAD /vod/film/seg1.ts HTTP/1.1\r\nHost: vod.example\r\n\r\n", True)
    assert b"Content-Length: %d" % (256 * 1024) in head and body == b"" and closed
    assert http_get(addr, "/endpoint")[2] == b"vod/edge-s\n"  # the static files are unchanged
    vim.delete(running.instance_id)
    client.images.remove(tag, force=True)


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
