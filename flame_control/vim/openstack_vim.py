"""The ``openstack`` VIM (ORCH-6): SF endpoints as Nova servers, through openstacksdk's proxy layer.

Servers are named ``flame-<sanitised endpoint>-<hash>`` and carry the labels as server metadata (``flame.endpoint``,
``flame.media_service``, ``flame.managed=true``, ``flame.port``) plus ``flame.desired`` (``stopped``/``running``), the
driver's intent, which tells a server that was stopped by the driver (PLACED) from one that went down by itself.

Lifecycle (OpenStack boots a server as soon as it is created, there is no "created but never started" state):

- ``create``: find image (glance, name or id), flavor (``flavor_for(spec)`` names one, else the smallest flavor with
  enough vCPUs and RAM) and network (neutron, name or id), ``create_server`` with the metadata, wait while BUILD, then
  ``stop_server`` and wait for SHUTOFF -> CREATED (FLAME: placed). A server that goes to ERROR while building is
  deleted and reported as PLACEMENT with Nova's fault message (e.g. "No valid host was found").
- ``start``: ``start_server`` and wait for ACTIVE -> RUNNING at ``<first fixed IP on the network>:<port>``. The driver
  does not probe the port (the controller usually cannot reach tenant networks); the SFEMC's health check does.
- ``stop``: ``stop_server`` and wait for SHUTOFF -> CREATED. ``delete``: ``delete_server`` and wait until it is gone.

State mapping: ACTIVE -> RUNNING; SHUTOFF/PAUSED/SUSPENDED/SHELVED* -> CREATED when ``flame.desired`` is ``stopped``,
else EXITED; BUILD and transitional states (REBOOT, RESIZE, MIGRATING...) -> CREATED with the state as detail; ERROR and
UNKNOWN -> EXITED with the fault; DELETED/SOFT_DELETED -> gone. Errors: image, flavor or network missing, quota or bad
request (4xx) on create -> PLACEMENT with a hint; keystone or an API unreachable, 401 or 5xx -> CONTROL_PLANE; ERROR or
a timeout on start -> BOOT; unknown server -> NOT_FOUND. Every wait is bounded by ``timeout_s``.

Tested against openstacksdk's own request-level fixtures (``openstack.tests.unit.base.TestCase``: a keystone v3
catalogue and recorded nova, glance and neutron responses) because no OpenStack cloud runs here.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import keystoneauth1.exceptions
import openstack.connection
import openstack.exceptions
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
from flame_control.vim.process import LABEL_MANAGED, instance_id_for

#: Server metadata key holding the driver's intent: "stopped" (placed) or "running" (booted).
LABEL_DESIRED = "flame.desired"
_STOPPED_STATES = {"SHUTOFF", "STOPPED", "PAUSED", "SUSPENDED", "SHELVED", "SHELVED_OFFLOADED"}
_GONE_STATES = {"DELETED", "SOFT_DELETED"}
_FAILED_STATES = {"ERROR", "UNKNOWN"}
_Servers = list[Any]


def server_name(endpoint_id: str) -> str:
    """Nova name of an endpoint's server (unique per endpoint id)."""
    return f"flame-{instance_id_for(endpoint_id)}"


def _fault(server: Any) -> str:
    fault = getattr(server, "fault", None) or {}
    if isinstance(fault, dict):
        return str(fault.get("message") or fault.get("details") or "no fault message")
    return str(fault)


@contextlib.contextmanager
def _api(what: str, client_error: VimErrorKind) -> Iterator[None]:
    """Map openstacksdk/keystoneauth failures onto the VIM taxonomy."""
    try:
        yield
    except VimError:
        raise
    except openstack.exceptions.NotFoundException as exc:
        raise VimError(VimErrorKind.NOT_FOUND, f"{what}: {exc}") from exc
    except openstack.exceptions.HttpException as exc:
        status = int(exc.status_code or 500)
        kind = VimErrorKind.CONTROL_PLANE if status >= 500 or status == 401 else client_error
        raise VimError(kind, f"{what}: OpenStack API {status}: {exc.details or exc}") from exc
    except (keystoneauth1.exceptions.ClientException, openstack.exceptions.SDKException) as exc:
        raise VimError(VimErrorKind.CONTROL_PLANE, f"{what}: OpenStack unreachable: {exc}") from exc
    except (requests.exceptions.RequestException, OSError) as exc:
        raise VimError(VimErrorKind.CONTROL_PLANE, f"{what}: OpenStack unreachable: {exc}") from exc


class OpenStackVim:
    """SF endpoints as Nova servers; see the module docstring for the lifecycle, states and errors."""

    name = "openstack"

    def __init__(
        self,
        conn: openstack.connection.Connection,
        network: str,
        flavor_for: Callable[[InstanceSpec], str] | None = None,
        timeout_s: float = 300,
        *,
        poll_s: float = 2.0,
        default_port: int = 80,
    ) -> None:
        self.conn = conn
        self.network = network
        self.flavor_for = flavor_for
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.default_port = default_port

    # -- VimDriver -------------------------------------------------------------------------------------------------

    def create(self, spec: InstanceSpec) -> Instance:
        what = f"create server for {spec.endpoint_id}"
        with _api(what, VimErrorKind.PLACEMENT):
            existing = self._find(spec.endpoint_id)
            if existing is not None:
                if existing.status == "BUILD":
                    existing = self._wait(existing.id, {"ACTIVE", "SHUTOFF"}, what, VimErrorKind.PLACEMENT)
                return self._instance(existing)
            image = self.conn.image.find_image(spec.image, ignore_missing=True)
            if image is None:
                raise VimError(
                    VimErrorKind.PLACEMENT,
                    f"image {spec.image!r} not found in the image service; upload it first "
                    "(openstack image create --file IMAGE --disk-format qcow2 NAME)",
                )
            flavor = self._flavor(spec)
            network = self.conn.network.find_network(self.network, ignore_missing=True)
            if network is None:
                raise VimError(
                    VimErrorKind.PLACEMENT,
                    f"network {self.network!r} not found; create it or configure an existing one "
                    "(openstack network list)",
                )
            metadata = {
                LABEL_ENDPOINT: spec.endpoint_id,
                LABEL_MEDIA_SERVICE: spec.media_service,
                LABEL_MANAGED: "true",
                LABEL_PORT: str(spec.port or self.default_port),
                LABEL_DESIRED: "stopped",
            }
            server = self.conn.compute.create_server(
                name=server_name(spec.endpoint_id),
                image_id=image.id,
                flavor_id=flavor.id,
                networks=[{"uuid": network.id}],
                metadata=metadata,
            )
            try:
                server = self._wait(server.id, {"ACTIVE", "SHUTOFF"}, what, VimErrorKind.PLACEMENT)
            except VimError:
                with contextlib.suppress(Exception):
                    self.conn.compute.delete_server(server.id, ignore_missing=True)
                raise
            if server.status == "ACTIVE":
                self.conn.compute.stop_server(server.id)
                server = self._wait(server.id, {"SHUTOFF"}, what, VimErrorKind.PLACEMENT)
            return self._instance(server)

    def start(self, instance_id: str) -> Instance:
        what = f"start server {instance_id}"
        with _api(what, VimErrorKind.BOOT):
            server = self._server_or_raise(instance_id)
            if server.status == "ACTIVE":
                return self._instance(server)
            if server.status in _FAILED_STATES:
                raise VimError(VimErrorKind.BOOT, f"{what}: server is {server.status}: {_fault(server)}")
            if server.metadata.get(LABEL_DESIRED) != "running":
                self.conn.compute.set_server_metadata(server.id, **{LABEL_DESIRED: "running"})
            if server.status == "SHUTOFF":
                self.conn.compute.start_server(server.id)
            elif server.status in _STOPPED_STATES:
                raise VimError(
                    VimErrorKind.BOOT, f"{what}: server is {server.status}; unpause/resume/unshelve it to SHUTOFF first"
                )
            server = self._wait(server.id, {"ACTIVE"}, what, VimErrorKind.BOOT)
            return self._instance(server)

    def stop(self, instance_id: str) -> Instance:
        what = f"stop server {instance_id}"
        with _api(what, VimErrorKind.BOOT):
            server = self._server_or_raise(instance_id)
            if server.metadata.get(LABEL_DESIRED) != "stopped":
                self.conn.compute.set_server_metadata(server.id, **{LABEL_DESIRED: "stopped"})
                server.metadata[LABEL_DESIRED] = "stopped"
            if server.status == "ACTIVE":
                self.conn.compute.stop_server(server.id)
                server = self._wait(server.id, {"SHUTOFF"}, what, VimErrorKind.BOOT)
            return self._instance(server)

    def delete(self, instance_id: str) -> None:
        what = f"delete server {instance_id}"
        with _api(what, VimErrorKind.CONTROL_PLANE):
            try:
                server = self.conn.compute.get_server(instance_id)
            except openstack.exceptions.NotFoundException:
                return
            if server.metadata.get(LABEL_MANAGED) != "true":
                return
            self.conn.compute.delete_server(server.id, ignore_missing=True)
            deadline = time.monotonic() + self.timeout_s
            while True:
                try:
                    current = self.conn.compute.get_server(server.id)
                except openstack.exceptions.NotFoundException:
                    return
                if current.status in _GONE_STATES:
                    return
                if time.monotonic() > deadline:
                    raise VimError(
                        VimErrorKind.CONTROL_PLANE,
                        f"{what}: still {current.status} after {self.timeout_s:.0f}s",
                    )
                time.sleep(self.poll_s)

    def get(self, instance_id: str) -> Instance | None:
        with _api(f"get server {instance_id}", VimErrorKind.CONTROL_PLANE):
            try:
                server = self.conn.compute.get_server(instance_id)
            except openstack.exceptions.NotFoundException:
                return None
            if server.metadata.get(LABEL_MANAGED) != "true" or server.status in _GONE_STATES:
                return None
            return self._instance(server)

    def list(self, media_service: str | None = None) -> list[Instance]:
        with _api("list servers", VimErrorKind.CONTROL_PLANE):
            return [self._instance(s) for s in self._managed(media_service)]

    def close(self) -> None:
        self.conn.close()

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _managed(self, media_service: str | None = None, name: str | None = None) -> _Servers:
        query: dict[str, Any] = {"name": f"^{name}$"} if name else {}
        found = []
        for server in self.conn.compute.servers(details=True, **query):
            md = server.metadata or {}
            if md.get(LABEL_MANAGED) != "true" or server.status in _GONE_STATES:
                continue
            if media_service is not None and md.get(LABEL_MEDIA_SERVICE) != media_service:
                continue
            found.append(server)
        return found

    def _find(self, endpoint_id: str) -> Any:
        for server in self._managed(name=server_name(endpoint_id)):
            if server.metadata.get(LABEL_ENDPOINT) == endpoint_id:
                return server
        return None

    def _server_or_raise(self, instance_id: str) -> Any:
        try:
            server = self.conn.compute.get_server(instance_id)
        except openstack.exceptions.NotFoundException:
            server = None
        if server is None or server.metadata.get(LABEL_MANAGED) != "true" or server.status in _GONE_STATES:
            raise VimError(VimErrorKind.NOT_FOUND, f"no FLAME server {instance_id!r}")
        return server

    def _flavor(self, spec: InstanceSpec) -> Any:
        if self.flavor_for is not None:
            wanted = self.flavor_for(spec)
            flavor = self.conn.compute.find_flavor(wanted, ignore_missing=True)
            if flavor is None:
                raise VimError(VimErrorKind.PLACEMENT, f"flavor {wanted!r} not found (openstack flavor list)")
            return flavor
        cpus = max(1, math.ceil(spec.cpus))
        fitting = [
            f
            for f in self.conn.compute.flavors(details=True)
            if not getattr(f, "is_disabled", False) and f.vcpus >= cpus and f.ram >= spec.memory_mb
        ]
        if not fitting:
            raise VimError(
                VimErrorKind.PLACEMENT,
                f"no flavor with at least {cpus} vCPU and {spec.memory_mb} MiB RAM; ask for less or add a flavor",
            )
        return min(fitting, key=lambda f: (f.vcpus, f.ram, f.disk or 0, f.name))

    def _wait(self, server_id: str, targets: set[str], what: str, failure: VimErrorKind) -> Any:
        deadline = time.monotonic() + self.timeout_s
        while True:
            server = self.conn.compute.get_server(server_id)
            if server.status in targets:
                return server
            if server.status in _FAILED_STATES:
                raise VimError(failure, f"{what}: server went to {server.status}: {_fault(server)}")
            if server.status in _GONE_STATES:
                raise VimError(failure, f"{what}: server was deleted meanwhile")
            if time.monotonic() > deadline:
                raise VimError(
                    failure,
                    f"{what}: server still {server.status} after {self.timeout_s:.0f}s (waiting for "
                    f"{'/'.join(sorted(targets))})",
                )
            time.sleep(self.poll_s)

    def _address(self, server: Any) -> str:
        port = server.metadata.get(LABEL_PORT, str(self.default_port))
        networks = server.addresses or {}
        ordered = [networks[self.network]] if self.network in networks else []
        ordered += [v for k, v in sorted(networks.items()) if k != self.network]
        for entries in ordered:
            for entry in entries:
                if entry.get("OS-EXT-IPS:type", "fixed") == "fixed" and entry.get("version", 4) == 4:
                    return f"{entry['addr']}:{port}"
        for entries in ordered:
            for entry in entries:
                if entry.get("OS-EXT-IPS:type", "fixed") == "fixed":
                    return f"[{entry['addr']}]:{port}"
        return ""

    def _instance(self, server: Any) -> Instance:
        md = server.metadata or {}
        endpoint, media_service = md.get(LABEL_ENDPOINT, ""), md.get(LABEL_MEDIA_SERVICE, "")
        status = server.status
        if status == "ACTIVE":
            return Instance(server.id, endpoint, media_service, InstanceStatus.RUNNING, self._address(server), status)
        if status in _FAILED_STATES:
            return Instance(
                server.id, endpoint, media_service, InstanceStatus.EXITED, "", f"{status}: {_fault(server)}"
            )
        if status in _STOPPED_STATES and md.get(LABEL_DESIRED) == "running":
            detail = f"{status} although started: it went down by itself"
            return Instance(server.id, endpoint, media_service, InstanceStatus.EXITED, "", detail)
        return Instance(server.id, endpoint, media_service, InstanceStatus.CREATED, "", status)
