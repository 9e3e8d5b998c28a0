"""What a FLAME TOSCA template means, as plain data: the output of parsing (``template.py``, ``catalogue.py``) and
the input of validation, placement and deployment. Pure: no I/O.

Paths in ``Problem`` are dotted paths into the YAML document (e.g.
``topology_template.node_templates.edge_a.properties.fqdn``) so an author can find every problem.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass


class Severity(enum.StrEnum):
    """How bad a template problem is (mirror of flame.orchestrator.v1.Severity)."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One problem found in a template or catalogue."""

    path: str
    message: str
    hint: str
    severity: Severity = Severity.ERROR


class TemplateInvalid(Exception):
    """A template or catalogue has error-severity problems; nothing is deployed from it."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems if p.severity is Severity.ERROR))
        self.problems = problems


@dataclass(frozen=True)
class GeoPoint:
    """WGS84 point."""

    latitude: float
    longitude: float


@dataclass(frozen=True)
class PlacementConstraint:
    """Where an endpoint may go (ORCH-5 geo placement): a named site, a region, a tier, or a distance from a point."""

    site: str = ""
    region: str = ""
    tier: str = ""
    near: GeoPoint | None = None
    max_distance_km: float = 0.0


@dataclass(frozen=True)
class EndpointNode:
    """A service-function endpoint node (flame.nodes.ServiceFunctionEndpoint) of a media service template."""

    #: Node name in the template (flame_sf).
    name: str
    #: FQDN it serves.
    fqdn: str
    #: Image name (registered with the SFEMC, SFEMC-6).
    image: str
    #: VIM: "process", "docker", "openstack" ("" = the orchestrator's default).
    vim: str = ""
    cpus: float = 0.5
    memory_mb: int = 256
    #: Port the endpoint serves HTTP on inside the instance (0 = image default).
    port: int = 0
    #: Initial (held) state: "connected", "booted", "placed" (lower-case FLAME state names).
    initial_state: str = "connected"
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    placement: PlacementConstraint = dataclasses.field(default_factory=PlacementConstraint)


@dataclass(frozen=True)
class TriggerSpec:
    """Trigger of a StateChange policy: a CLMC KPI by name, or a metric condition the SFEMC evaluates itself."""

    #: Name of a KPI of this template (its FIRING/CLEARED events trigger); "" for a metric condition.
    kpi: str = ""
    measurement: str = ""
    field: str = ""
    #: "mean", "min", "max", "sum", "count" or "pNN" (percentile).
    aggregation: str = "mean"
    window_s: float = 60.0
    #: "threshold", "relative" or "deadman".
    kind: str = "threshold"
    #: "gt" or "lt".
    comparison: str = "gt"
    threshold: float = 0.0
    #: Hysteresis (defaults to threshold).
    clear_threshold: float | None = None
    #: Tag filter, e.g. {"flame_location": "site-edge-a"}.
    scope: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class StateChangePolicy:
    """A flame.policies.StateChange surrogate policy (SFEMC-1, SFEMC-2, ORCH-8)."""

    name: str
    #: Endpoint node names it acts on.
    targets: tuple[str, ...]
    trigger: TriggerSpec
    #: State targets go to when the trigger fires ("connected"...).
    to_state: str = "connected"
    #: State they return to when it clears.
    from_state: str = "placed"
    cooldown_s: float = 30.0


@dataclass(frozen=True)
class KpiSpec:
    """A flame.policies.Kpi declared in a template: defined at the CLMC on deploy (CLMC-19)."""

    name: str
    #: "threshold", "relative" or "deadman".
    kind: str
    measurement: str
    field: str = ""
    #: "" (raw points), "mean", "min", "max", "sum", "count", "pNN".
    aggregation: str = ""
    window_s: float = 0.0
    group_by: tuple[str, ...] = ()
    scope: dict[str, str] = dataclasses.field(default_factory=dict)
    comparison: str = "gt"
    threshold: float = 0.0
    clear_threshold: float | None = None
    for_s: float = 0.0
    deadman_s: float = 0.0


@dataclass(frozen=True)
class ServiceTemplate:
    """A parsed media-service template."""

    #: Media service name (flame_sfc), from metadata.
    name: str
    endpoints: tuple[EndpointNode, ...]
    policies: tuple[StateChangePolicy, ...] = ()
    kpis: tuple[KpiSpec, ...] = ()
    #: Template metadata (template_name, template_author, template_version...).
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Site:
    """A compute site of the infrastructure catalogue (flame.nodes.ComputeSite)."""

    name: str
    nap_id: str
    location: GeoPoint
    region: str = ""
    #: "dc" or "edge".
    tier: str = "edge"
    cpus: float = 4.0
    memory_mb: int = 8192
    max_endpoints: int = 16
    #: VIMs available at the site.
    vims: tuple[str, ...] = ("process",)


@dataclass(frozen=True)
class SwitchNode:
    """An OpenFlow switch of the catalogue (flame.nodes.Switch)."""

    name: str
    dpid: int
    location: GeoPoint | None = None
    region: str = ""


@dataclass(frozen=True)
class NapNode:
    """A NAP of the catalogue (flame.nodes.Nap)."""

    name: str
    location: GeoPoint | None = None
    region: str = ""


@dataclass(frozen=True)
class LinkSpec:
    """A link between two node ports (flame.relationships.Link / flame.nodes.Link)."""

    name: str
    a_node: str
    a_port: int
    b_node: str
    b_port: int
    capacity_mbps: float = 0.0
    latency_ms: float = 0.0
    weight: float = 0.0


@dataclass(frozen=True)
class Catalogue:
    """A parsed infrastructure catalogue (ORCH-3, ORCH-5)."""

    sites: tuple[Site, ...]
    switches: tuple[SwitchNode, ...]
    naps: tuple[NapNode, ...]
    links: tuple[LinkSpec, ...]
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
