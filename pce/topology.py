"""The PCE's topology model (SFR-7) and its validation: from the `flame.pce.v1.Topology` message or a YAML file of the
same shape. Validation reports every problem with its field path and applies nothing when there is one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from flame_control.api.flame.pce.v1 import topology_pb2
from flame_control.runtime.errors import FieldViolation, InvalidArgument, Violations

NODE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_KINDS = {
    topology_pb2.NODE_KIND_SWITCH: "switch",
    topology_pb2.NODE_KIND_NAP: "nap",
    topology_pb2.NODE_KIND_COMPUTE_SITE: "compute_site",
}
KIND_VALUES = {v: k for k, v in _KINDS.items()}


@dataclass(frozen=True)
class Node:
    """A switch, NAP or compute site."""

    id: str
    kind: str
    dpid: int = 0
    latitude: float | None = None
    longitude: float | None = None
    region: str = ""
    nap_id: str = ""


@dataclass(frozen=True)
class Link:
    """A bidirectional link between (node, port) ends."""

    id: str
    a: tuple[str, int]
    b: tuple[str, int]
    weight: float = 1.0
    latency_s: float = 0.0
    capacity_mbps: float = 0.0
    class_weights: Mapping[str, float] = field(default_factory=dict)
    down: bool = False

    def other(self, node_id: str) -> tuple[str, int]:
        """The far end seen from ``node_id``."""
        return self.b if self.a[0] == node_id else self.a

    def port_at(self, node_id: str) -> int:
        """The port of this link on ``node_id``."""
        return self.a[1] if self.a[0] == node_id else self.b[1]


@dataclass(frozen=True)
class TrafficClass:
    """Traffic routed with its own weights (SFR-12)."""

    name: str
    fqdn_patterns: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topology:
    """A validated topology: immutable; a change makes a new one."""

    nodes: Mapping[str, Node]
    links: Mapping[str, Link]
    classes: Mapping[str, TrafficClass] = field(default_factory=dict)

    def naps(self) -> list[str]:
        """NAP node ids, sorted."""
        return sorted(n.id for n in self.nodes.values() if n.kind == "nap")

    def switches(self) -> list[Node]:
        """Switch nodes, sorted by id."""
        return sorted((n for n in self.nodes.values() if n.kind == "switch"), key=lambda n: n.id)

    def with_link_state(self, link_id: str, up: bool) -> Topology:
        """A copy with one link's state changed."""
        link = self.links[link_id]
        links = dict(self.links)
        links[link_id] = Link(
            link.id, link.a, link.b, link.weight, link.latency_s, link.capacity_mbps, link.class_weights, not up
        )
        return Topology(self.nodes, links, self.classes)

    def class_for(self, fqdn: str) -> str:
        """The traffic class an FQDN belongs to ("" = default)."""
        for cls in sorted(self.classes.values(), key=lambda c: c.name):
            for pattern in cls.fqdn_patterns:
                if pattern == fqdn or (pattern.startswith("*.") and fqdn.endswith(pattern[1:])):
                    return cls.name
        return ""


EMPTY = Topology({}, {}, {})


def _finite_nonneg(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def from_proto(msg: topology_pb2.Topology, prefix: str = "topology") -> Topology:
    """Validate a Topology message; raise InvalidArgument listing every problem."""
    v = Violations()
    nodes: dict[str, Node] = {}
    dpids: dict[int, str] = {}
    for i, n in enumerate(msg.nodes):
        path = f"{prefix}.nodes[{i}]"
        if not NODE_ID.match(n.id):
            v.add(
                f"{path}.id", "must be 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter/digit"
            )
        elif n.id in nodes:
            v.add(f"{path}.id", f"duplicate node id {n.id!r}")
        kind = _KINDS.get(n.kind)
        if kind is None:
            v.add(f"{path}.kind", "must be NODE_KIND_SWITCH, NODE_KIND_NAP or NODE_KIND_COMPUTE_SITE")
        if kind == "switch":
            if n.dpid == 0:
                v.add(f"{path}.dpid", "switches need a non-zero datapath id")
            elif n.dpid in dpids:
                v.add(f"{path}.dpid", f"dpid {n.dpid} already used by {dpids[n.dpid]!r}")
            else:
                dpids[n.dpid] = n.id
        lat = lon = None
        if n.HasField("location"):
            lat, lon = n.location.latitude, n.location.longitude
            v.check(-90 <= lat <= 90, f"{path}.location.latitude", "must be within -90..90")
            v.check(-180 <= lon <= 180, f"{path}.location.longitude", "must be within -180..180")
        if n.id and n.id not in nodes and kind:
            nodes[n.id] = Node(n.id, kind, n.dpid, lat, lon, n.region, n.nap_id)
    for i, n in enumerate(msg.nodes):
        if n.kind == topology_pb2.NODE_KIND_COMPUTE_SITE and n.nap_id:
            target = nodes.get(n.nap_id)
            v.check(
                target is not None and target.kind == "nap", f"{prefix}.nodes[{i}].nap_id", f"{n.nap_id!r} is not a NAP"
            )
    classes: dict[str, TrafficClass] = {}
    for i, c in enumerate(msg.traffic_classes):
        path = f"{prefix}.traffic_classes[{i}]"
        if not NODE_ID.match(c.name):
            v.add(f"{path}.name", "must be a short lower-case name")
        elif c.name in classes:
            v.add(f"{path}.name", f"duplicate traffic class {c.name!r}")
        for j, proto in enumerate(c.protocols):
            v.check(proto in ("http", "https", "ip"), f"{path}.protocols[{j}]", "must be http, https or ip")
        classes[c.name] = TrafficClass(c.name, tuple(p.lower() for p in c.fqdn_patterns), tuple(c.protocols))
    links: dict[str, Link] = {}
    seen_links: set[str] = set()
    ports: dict[tuple[str, int], str] = {}
    for i, link in enumerate(msg.links):
        path = f"{prefix}.links[{i}]"
        ok = True
        if not NODE_ID.match(link.id):
            v.add(f"{path}.id", "must be 1-63 lower-case letters, digits, '.', '_' or '-'")
            ok = False
        elif link.id in seen_links:
            v.add(f"{path}.id", f"duplicate link id {link.id!r}")
            ok = False
        seen_links.add(link.id)
        for end_name, end in (("a", link.a), ("b", link.b)):
            node = nodes.get(end.node_id)
            if node is None:
                v.add(f"{path}.{end_name}.node_id", f"unknown node {end.node_id!r} (dangling link)")
                ok = False
            elif node.kind == "compute_site":
                v.add(f"{path}.{end_name}.node_id", "compute sites attach through their NAP, not by links")
                ok = False
            if end.port == 0:
                v.add(f"{path}.{end_name}.port", "port numbers start at 1")
                ok = False
            elif (end.node_id, end.port) in ports:
                v.add(
                    f"{path}.{end_name}.port",
                    f"port {end.port} of {end.node_id!r} already used by link {ports[(end.node_id, end.port)]!r}",
                )
                ok = False
            else:
                ports[(end.node_id, end.port)] = link.id
        if link.a.node_id == link.b.node_id and link.a.node_id:
            v.add(f"{path}.b.node_id", "a link cannot connect a node to itself")
            ok = False
        if not _finite_nonneg(link.weight):
            v.add(f"{path}.weight", "must be a finite number >= 0")
            ok = False
        if not _finite_nonneg(link.capacity_mbps):
            v.add(f"{path}.capacity_mbps", "must be a finite number >= 0")
        latency = link.latency.seconds + link.latency.nanos / 1e9
        v.check(latency >= 0, f"{path}.latency", "must not be negative")
        for cls, w in link.class_weights.items():
            v.check(cls in classes, f"{path}.class_weights[{cls}]", f"unknown traffic class {cls!r}")
            v.check(_finite_nonneg(w), f"{path}.class_weights[{cls}]", "must be a finite number >= 0")
        if ok:
            links[link.id] = Link(
                link.id,
                (link.a.node_id, link.a.port),
                (link.b.node_id, link.b.port),
                link.weight or 1.0,
                latency,
                link.capacity_mbps,
                dict(link.class_weights),
                link.down,
            )
    for nap in (n for n in nodes.values() if n.kind == "nap"):
        attached = [lid for (node_id, _), lid in ports.items() if node_id == nap.id]
        if len(attached) > 1:
            v.add(f"{prefix}.links", f"NAP {nap.id!r} has {len(attached)} fabric links; a NAP attaches by exactly one")
    v.raise_if_any()
    return Topology(nodes, links, classes)


def to_proto(topo: Topology) -> topology_pb2.Topology:
    """The message form of a validated topology."""
    msg = topology_pb2.Topology()
    for n in sorted(topo.nodes.values(), key=lambda n: n.id):
        node = msg.nodes.add(id=n.id, kind=KIND_VALUES[n.kind], dpid=n.dpid, region=n.region, nap_id=n.nap_id)
        if n.latitude is not None and n.longitude is not None:
            node.location.latitude, node.location.longitude = n.latitude, n.longitude
    for link in sorted(topo.links.values(), key=lambda link: link.id):
        m = msg.links.add(id=link.id, weight=link.weight, capacity_mbps=link.capacity_mbps, down=link.down)
        m.a.node_id, m.a.port = link.a
        m.b.node_id, m.b.port = link.b
        m.latency.FromNanoseconds(round(link.latency_s * 1e9))
        m.class_weights.update(link.class_weights)
    for c in sorted(topo.classes.values(), key=lambda c: c.name):
        msg.traffic_classes.add(name=c.name, fqdn_patterns=list(c.fqdn_patterns), protocols=list(c.protocols))
    return msg


def parse_dict(data: Any, source: str = "topology") -> topology_pb2.Topology:
    """A YAML/JSON mapping (proto JSON shape: nodes, links, traffic_classes) -> message; unknown keys rejected."""
    if not isinstance(data, dict):
        raise InvalidArgument([FieldViolation(source, "must be a mapping with nodes and links")])
    msg = topology_pb2.Topology()
    try:
        json_format.ParseDict(data, msg)
    except json_format.ParseError as exc:
        raise InvalidArgument([FieldViolation(source, str(exc))]) from exc
    return msg


def load_file(path: Path) -> Topology:
    """Load and validate a YAML topology file (SFR-7)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidArgument([FieldViolation(str(path), f"cannot read topology: {exc}")]) from exc
    return from_proto(parse_dict(data, str(path)), str(path))
