"""The ``docker`` VIM (ORCH-6): SF endpoints as containers on a real dockerd, through the docker SDK (docker>=7).

Containers carry the labels ``flame.endpoint``, ``flame.media_service``, ``flame.managed=true`` and ``flame.port``;
``list`` filters on them, so a restarted controller adopts what it created. Names are ``flame-<sanitised endpoint>-
<hash>``, unique per endpoint. The port the endpoint serves on (``spec.port``, or a free host port) reaches the
container as ``PORT`` (with ``HOST`` and ``FLAME_ENDPOINT``); images declare their own command and read ``$PORT``
through ``sh -c`` (see :func:`import_busybox_media_image`, SFEMC-6). Networking is ``host`` by default: dockerd runs
with ``--bridge=none`` here and the NAP on this machine reaches the endpoint at ``host:PORT``; with another
``network_mode`` the port is published on ``host``.

States: docker ``created`` -> CREATED; ``running`` -> RUNNING (``start`` returns only once the port accepts TCP);
``exited``/``dead`` -> CREATED when this driver stopped it, else EXITED (it died by itself). Labels cannot change after
create, so "stopped by the driver" is a marker file ``/.flame-state`` written into the container with the archive API
(``started`` before start, ``stopped`` after stop); it survives a controller restart. Errors: image missing or a bad
create request -> PLACEMENT; the container exiting or not listening within ``timeout_s`` -> BOOT with its last log
lines; daemon unreachable or failing (5xx) -> CONTROL_PLANE; unknown id -> NOT_FOUND.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from flame_control.vim.base import (
    LABEL_ENDPOINT,
    LABEL_MEDIA_SERVICE,
    LABEL_PORT,
    Instance,
    InstanceSpec,
    InstanceStatus,
    VimError,
    VimErrorKind,
)
from flame_control.vim.media_server import expected_segment, playlist
from flame_control.vim.ports import accepts, free_port
from flame_control.vim.process import LABEL_MANAGED, instance_id_for

#: Command of the busybox media image: the port comes from the container's environment.
BUSYBOX_MEDIA_CMD = [
    "sh",
    "-c",
    'echo "$FLAME_ENDPOINT" > /www/endpoint; '
    'exec httpd -f -p "${HOST:-127.0.0.1}:${PORT:-8080}" -h /www -c /etc/httpd.conf',
]
#: busybox httpd's config in the media image: segments and playlists go through :data:`MEDIA_CGI` (an interpreter
#: mapping: httpd runs ``/bin/media-cgi <file>`` in the file's directory, as CGI).
BUSYBOX_HTTPD_CONF = "*.ts:/bin/media-cgi\n*.m3u8:/bin/media-cgi\n"
#: The interpreter busybox httpd runs for ``*.ts`` and ``*.m3u8`` (it has already answered 404 for a missing file):
#: CGI headers ``Content-Type``, ``Content-Length`` and ``X-Flame-Endpoint`` (so a client can tell which surrogate
#: answered, as with the process VIM's media server), a blank line, then the file. httpd adds the status line
#: (``HTTP/1.1 200 OK``; ``Status: 404 ...`` becomes ``HTTP/1.1 404 ...``) and no ``Connection: close``, so a NAP
#: keeps its user's connection alive although httpd closes its own after every response. A query string selects
#: the file named ``<file>?<query>`` (``seg3.ts?size=1024``: see :func:`default_media_files`); one that names no
#: file, or holds a ``/``, is 404. HEAD gets the headers only.
MEDIA_CGI = r"""#!/bin/sh
f="$1"
case "$QUERY_STRING" in
  "") ;;
  */*) f="" ;;
  *) f="$1?$QUERY_STRING" ;;
esac
ep="$FLAME_ENDPOINT"
[ -n "$ep" ] || read -r ep < /www/endpoint
if [ -z "$f" ] || [ ! -f "$f" ]; then
  printf 'Status: 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nX-Flame-Endpoint: %s\r\n\r\n' "$ep"
  [ "$REQUEST_METHOD" = HEAD ] || printf 'not found\n'
  exit 0
fi
case "$f" in *.m3u8) type=application/vnd.apple.mpegurl ;; *) type=video/mp2t ;; esac
printf 'Content-Type: %s\r\nContent-Length: %s\r\nX-Flame-Endpoint: %s\r\n\r\n' "$type" "$(wc -c < "$f")" "$ep"
[ "$REQUEST_METHOD" = HEAD ] || exec cat "$f"
"""
_MARKER = ".flame-state"
_Containers = list[Any]


def container_name(endpoint_id: str) -> str:
    """Docker name of an endpoint's container (``[a-zA-Z0-9][a-zA-Z0-9_.-]*``, unique per endpoint id)."""
    return f"flame-{instance_id_for(endpoint_id)}"


@contextlib.contextmanager
def _api(what: str, client_error: VimErrorKind) -> Iterator[None]:
    """Map docker SDK failures onto the VIM taxonomy: 4xx -> ``client_error``, 5xx and transport -> CONTROL_PLANE."""
    try:
        yield
    except VimError:
        raise
    except docker.errors.NotFound as exc:
        raise VimError(VimErrorKind.NOT_FOUND, f"{what}: {exc.explanation or exc}") from exc
    except docker.errors.APIError as exc:
        status = exc.status_code or 500
        kind = VimErrorKind.CONTROL_PLANE if status >= 500 and client_error is VimErrorKind.PLACEMENT else client_error
        raise VimError(kind, f"{what}: docker API {status}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise VimError(VimErrorKind.CONTROL_PLANE, f"{what}: docker daemon unreachable: {exc}") from exc


class DockerVim:
    """SF endpoints as docker containers; see the module docstring for labels, states and errors."""

    name = "docker"

    def __init__(
        self,
        base_url: str,
        network_mode: str = "host",
        host: str = "127.0.0.1",
        timeout_s: float = 30,
        *,
        stop_grace_s: int = 5,
        init: bool = True,
    ) -> None:
        self.base_url = base_url
        self.network_mode = network_mode
        self.host = host
        self.timeout_s = timeout_s
        self.stop_grace_s = stop_grace_s
        #: Run docker-init as PID 1 so SIGTERM reaches the endpoint (busybox httpd ignores it as PID 1).
        self.init = init
        self._docker: Any = None

    # -- VimDriver -------------------------------------------------------------------------------------------------

    def create(self, spec: InstanceSpec) -> Instance:
        client = self._client()
        with _api(f"create {spec.endpoint_id}", VimErrorKind.PLACEMENT):
            existing = self._containers({LABEL_ENDPOINT: spec.endpoint_id})
            if existing:
                return self._instance(existing[0])
            port = spec.port or free_port(self.host)
            labels = {
                LABEL_ENDPOINT: spec.endpoint_id,
                LABEL_MEDIA_SERVICE: spec.media_service,
                LABEL_MANAGED: "true",
                LABEL_PORT: str(port),
            }
            env = {**spec.environment, "PORT": str(port), "HOST": self.host, "FLAME_ENDPOINT": spec.endpoint_id}
            kwargs: dict[str, Any] = {
                "name": container_name(spec.endpoint_id),
                "labels": labels,
                "environment": env,
                "network_mode": self.network_mode,
                "init": self.init,
            }
            if spec.cpus > 0:
                kwargs["nano_cpus"] = int(spec.cpus * 1e9)
            if spec.memory_mb > 0:
                kwargs["mem_limit"] = f"{spec.memory_mb}m"
            if self.network_mode != "host":
                kwargs["ports"] = {f"{port}/tcp": (self.host, port)}
            try:
                container = client.containers.create(spec.image, **kwargs)
            except docker.errors.ImageNotFound as exc:
                raise VimError(
                    VimErrorKind.PLACEMENT,
                    f"image {spec.image} not found on the daemon; register it first (docker import/load, "
                    f"or flame_control.vim.docker_vim.import_busybox_media_image): {exc.explanation or exc}",
                ) from exc
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                container = client.containers.get(container_name(spec.endpoint_id))  # lost a race: adopt it
            return self._instance(container)

    def start(self, instance_id: str) -> Instance:
        with _api(f"start {instance_id}", VimErrorKind.BOOT):
            container = self._container_or_raise(instance_id)
            port = int(container.labels.get(LABEL_PORT, "0"))
            if container.status != "running":
                if accepts(self.host, port):
                    raise VimError(VimErrorKind.BOOT, f"{instance_id}: port {self.host}:{port} is already in use")
                self._mark(container, "started")
                container.start()
            self._wait_listening(container, port)
            return self._instance(container)

    def stop(self, instance_id: str) -> Instance:
        with _api(f"stop {instance_id}", VimErrorKind.BOOT):
            container = self._container_or_raise(instance_id)
            if container.status in ("running", "restarting", "paused", "exited", "dead"):
                if container.status != "exited":
                    container.stop(timeout=self.stop_grace_s)
                self._mark(container, "stopped")
                container.reload()
            return self._instance(container)

    def delete(self, instance_id: str) -> None:
        with _api(f"delete {instance_id}", VimErrorKind.CONTROL_PLANE):
            try:
                container = self._client().containers.get(instance_id)
                if container.labels.get(LABEL_MANAGED) != "true":
                    return
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                    return
                raise

    def get(self, instance_id: str) -> Instance | None:
        with _api(f"get {instance_id}", VimErrorKind.CONTROL_PLANE):
            try:
                container = self._client().containers.get(instance_id)
            except docker.errors.NotFound:
                return None
            if container.labels.get(LABEL_MANAGED) != "true":
                return None
            return self._instance(container)

    def list(self, media_service: str | None = None) -> list[Instance]:
        labels = {LABEL_MEDIA_SERVICE: media_service} if media_service is not None else {}
        with _api("list", VimErrorKind.CONTROL_PLANE):
            return [self._instance(c) for c in self._containers(labels)]

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()
            self._docker = None

    # -- helpers ---------------------------------------------------------------------------------------------------

    def client(self) -> Any:
        """The docker SDK client (created on first use)."""
        return self._client()

    def _client(self) -> Any:
        if self._docker is None:
            with _api(f"connect {self.base_url}", VimErrorKind.CONTROL_PLANE):
                self._docker = docker.DockerClient(base_url=self.base_url, timeout=int(self.timeout_s))
        return self._docker

    def _containers(self, labels: Mapping[str, str]) -> _Containers:
        selectors = [f"{LABEL_MANAGED}=true", *(f"{k}={v}" for k, v in labels.items())]
        found = self._client().containers.list(all=True, filters={"label": selectors})
        return sorted(found, key=lambda c: c.attrs.get("Created", ""))

    def _container_or_raise(self, instance_id: str) -> Any:
        try:
            container = self._client().containers.get(instance_id)
        except docker.errors.NotFound:
            container = None
        if container is None or container.labels.get(LABEL_MANAGED) != "true":
            raise VimError(VimErrorKind.NOT_FOUND, f"no FLAME container {instance_id!r} on {self.base_url}")
        return container

    def _mark(self, container: Any, state: str) -> None:
        data = state.encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(_MARKER)
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
        with contextlib.suppress(docker.errors.APIError):  # read-only rootfs: stopped containers read as EXITED
            container.put_archive("/", buf.getvalue())

    def _marker(self, container: Any) -> str:
        try:
            chunks, _ = container.get_archive(f"/{_MARKER}")
            with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
                member = tar.extractfile(_MARKER)
                return member.read().decode(errors="replace") if member is not None else ""
        except (docker.errors.APIError, tarfile.TarError, KeyError):
            return ""

    def _logs(self, container: Any, lines: int = 20) -> str:
        try:
            return bytes(container.logs(tail=lines)).decode(errors="replace").rstrip()
        except docker.errors.APIError:
            return ""

    def _wait_listening(self, container: Any, port: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                raise VimError(
                    VimErrorKind.BOOT,
                    f"container {container.name} exited with code {code} before listening on {self.host}:{port}; "
                    f"last log lines:\n{self._logs(container)}",
                )
            if container.status == "running" and accepts(self.host, port):
                return
            if time.monotonic() > deadline:
                container.stop(timeout=self.stop_grace_s)
                self._mark(container, "stopped")
                raise VimError(
                    VimErrorKind.BOOT,
                    f"container {container.name} did not accept connections on {self.host}:{port} within "
                    f"{self.timeout_s:.0f}s; last log lines:\n{self._logs(container)}",
                )
            time.sleep(0.02)

    def _instance(self, container: Any) -> Instance:
        labels = container.labels
        endpoint, media_service = labels.get(LABEL_ENDPOINT, ""), labels.get(LABEL_MEDIA_SERVICE, "")
        state = container.attrs.get("State", {})
        if container.status == "running":
            address = f"{self.host}:{labels.get(LABEL_PORT, '0')}"
            return Instance(container.id, endpoint, media_service, InstanceStatus.RUNNING, address, container.name)
        if container.status in ("created", "paused"):
            return Instance(container.id, endpoint, media_service, InstanceStatus.CREATED, "", container.status)
        if container.status == "exited" and self._marker(container) == "stopped":
            return Instance(container.id, endpoint, media_service, InstanceStatus.CREATED, "", "stopped")
        last = self._logs(container, 1)
        detail = f"{container.status}, exit code {state.get('ExitCode')}; last log line: {last}"
        if state.get("OOMKilled"):
            detail += " (OOM killed)"
        return Instance(container.id, endpoint, media_service, InstanceStatus.EXITED, "", detail)


def _split_tag(tag: str) -> tuple[str, str]:
    repository, sep, version = tag.rpartition(":")
    if not sep or "/" in version:
        return tag, "latest"
    return repository, version


def default_media_files(asset: str = "demo", segments: int = 5, sizes: Iterable[int] = ()) -> dict[str, bytes]:
    """The files served by the busybox media image (paths under /www): segments ``seg<N>.ts`` and the playlist
    ``index.m3u8`` of ``asset``, and for each of ``sizes`` the file ``seg<N>.ts?size=<S>`` that the image's CGI serves
    for that query (busybox httpd knows no parameters: the request target is the file name)."""
    files = {f"vod/{asset}/seg{n}.ts": expected_segment(asset, n) for n in range(segments)}
    for size in sizes:
        files.update({f"vod/{asset}/seg{n}.ts?size={size}": expected_segment(asset, n, size) for n in range(segments)})
    files[f"vod/{asset}/index.m3u8"] = playlist(asset, segments)
    return files


def import_busybox_media_image(
    client: Any,
    tag: str,
    segments: dict[str, bytes] | None = None,
    busybox: Path = Path("/bin/busybox"),
    command: list[str] | None = None,
) -> str:
    """Build a busybox-static rootfs serving media files and ``docker import`` it as ``tag`` (SFEMC-6); the image id.

    The rootfs: ``/bin/busybox`` (must be static: Debian package busybox-static) with ``sh``, ``httpd``, ``cat`` and
    ``wc`` applet links, ``/etc/httpd.conf`` (:data:`BUSYBOX_HTTPD_CONF`) and ``/bin/media-cgi`` (:data:`MEDIA_CGI`:
    ``*.ts`` and ``*.m3u8`` answered with ``Content-Length`` and ``X-Flame-Endpoint``), ``/www/health`` (``ok``) and
    ``segments`` (paths under /www -> bytes; default :func:`default_media_files`, made by
    :func:`~flame_control.vim.media_server.expected_segment` so the bytes match the process VIM's endpoint). Its
    command is ``command``, by default :data:`BUSYBOX_MEDIA_CMD` (``httpd`` on ``$HOST:$PORT``; ``/www/endpoint``
    holds ``$FLAME_ENDPOINT``). No registry is involved: ``import_image_from_data`` with ``changes`` sets CMD and ENV.
    """
    if not busybox.is_file():
        raise FileNotFoundError(f"{busybox} not found (apt-get install -y busybox-static)")
    binary = busybox.read_bytes()
    if b"ld-linux" in binary[:65536]:
        raise ValueError(f"{busybox} is dynamically linked; the image needs busybox-static")
    files = default_media_files() if segments is None else segments
    with tempfile.TemporaryDirectory(prefix="flame-rootfs-") as tmp:
        root = Path(tmp)
        for sub in ("bin", "www", "tmp", "etc", "proc", "sys", "dev"):
            (root / sub).mkdir()
        (root / "bin" / "busybox").write_bytes(binary)
        (root / "bin" / "busybox").chmod(0o755)
        for applet in ("sh", "httpd", "cat", "wc"):
            (root / "bin" / applet).symlink_to("busybox")
        (root / "bin" / "media-cgi").write_text(MEDIA_CGI)
        (root / "bin" / "media-cgi").chmod(0o755)
        (root / "etc" / "httpd.conf").write_text(BUSYBOX_HTTPD_CONF)
        (root / "www" / "health").write_bytes(b"ok")
        for rel, data in files.items():
            target = (root / "www" / rel).resolve()
            if not target.is_relative_to(root / "www"):
                raise ValueError(f"segment path {rel!r} leaves /www")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path in sorted(root.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    repository, version = _split_tag(tag)
    changes = [f"CMD {json.dumps(command or BUSYBOX_MEDIA_CMD)}", "ENV PATH=/bin", "LABEL flame.image=busybox-media"]
    with _api(f"import image {tag}", VimErrorKind.PLACEMENT):
        client.api.import_image_from_data(buf.getvalue(), repository=repository, tag=version, changes=changes)
        return str(client.images.get(tag).id)
