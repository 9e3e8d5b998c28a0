"""The one interface every VIM driver implements, and the data it speaks.

Drivers are blocking (the docker SDK and openstacksdk are); the SFEMC's endpoint controller calls them from worker
threads with a per-VIM timeout. Every call is idempotent and every instance carries labels naming its endpoint, so a
controller that crashed mid-deploy finds (``list``) and adopts what it had created instead of creating duplicates.

State mapping (FLAME endpoint states, ARCHITECTURE section 6): an instance that exists but does not run is PLACED;
one that runs and answers on its address is BOOTED. ``create`` makes a PLACED instance, ``start`` makes it run,
``stop`` takes it back to PLACED, ``delete`` removes it (UNPLACED).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

#: Label keys every driver puts on its instances (docker labels, OpenStack metadata, process spec files).
LABEL_ENDPOINT = "flame.endpoint"
LABEL_MEDIA_SERVICE = "flame.media_service"
#: Label (or server metadata key) holding the port the endpoint serves on.
LABEL_PORT = "flame.port"


class InstanceStatus(enum.StrEnum):
    """What the VIM says about an instance."""

    #: Exists, not running (FLAME: placed).
    CREATED = "created"
    #: Running (FLAME: booted once its address answers).
    RUNNING = "running"
    #: Was running and stopped by itself (crashed or exited): a boot failure.
    EXITED = "exited"


class VimErrorKind(enum.StrEnum):
    """Failure taxonomy of VIM errors (maps onto flame.clmc.v1.FailureCategory)."""

    #: The instance could not be created (image missing, no capacity, bad request).
    PLACEMENT = "placement"
    #: It could not be started or died while starting.
    BOOT = "boot"
    #: The VIM itself is unreachable (daemon down, API error).
    CONTROL_PLANE = "control_plane"
    #: The instance id is unknown to the VIM.
    NOT_FOUND = "not_found"


class VimError(Exception):
    """A VIM operation failed; ``kind`` says which part of the taxonomy."""

    def __init__(self, kind: VimErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class InstanceSpec:
    """What to run for one endpoint."""

    #: Endpoint id ("<media service>/<node name>"), stored as the LABEL_ENDPOINT label.
    endpoint_id: str
    #: Media service (flame_sfc), stored as the LABEL_MEDIA_SERVICE label.
    media_service: str
    #: VIM-specific image reference (docker image, process command line, OpenStack image name or id).
    image: str
    #: Port the endpoint serves HTTP on inside the instance (0 = let the driver choose one).
    port: int = 0
    #: CPU cores requested.
    cpus: float = 0.5
    #: Memory requested (MiB).
    memory_mb: int = 256
    #: Environment for the instance.
    environment: Mapping[str, str] = field(default_factory=dict)
    #: Compute site (flame_location), informational for most drivers.
    site: str = ""


@dataclass(frozen=True)
class Instance:
    """One instance as the VIM reports it."""

    #: VIM-specific id (container id, server id, process instance name).
    instance_id: str
    #: Endpoint it belongs to (from its labels).
    endpoint_id: str
    #: Media service it belongs to (from its labels).
    media_service: str
    #: What the VIM says.
    status: InstanceStatus
    #: host:port where the endpoint serves HTTP, reachable from the NAP in front of the site ("" until running).
    address: str = ""
    #: VIM detail (exit code, last log line, server fault) for error reports.
    detail: str = ""


@runtime_checkable
class VimDriver(Protocol):
    """A VIM: creates, starts, stops, deletes and lists endpoint instances. Every method is idempotent."""

    #: Driver name: "process", "docker" or "openstack".
    name: str

    def create(self, spec: InstanceSpec) -> Instance:
        """Create a PLACED instance for ``spec``; when one labelled with the same endpoint exists, return it."""
        ...

    def start(self, instance_id: str) -> Instance:
        """Start the instance (no-op when running); returns it RUNNING with its address."""
        ...

    def stop(self, instance_id: str) -> Instance:
        """Stop the instance (no-op when stopped); returns it CREATED."""
        ...

    def delete(self, instance_id: str) -> None:
        """Remove the instance and everything it holds; no error when it is already gone."""
        ...

    def get(self, instance_id: str) -> Instance | None:
        """The instance, or None when the VIM does not know it."""
        ...

    def list(self, media_service: str | None = None) -> list[Instance]:
        """Every instance this platform created (by label), optionally of one media service."""
        ...

    def close(self) -> None:
        """Release the driver's resources (client sessions); instances keep running."""
        ...
