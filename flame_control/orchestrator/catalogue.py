"""Infrastructure catalogues (ORCH-3, ORCH-5) and the topology the PCE receives from them (ORCH-4).

A catalogue is a TOSCA template of ``flame.nodes.ComputeSite``, ``flame.nodes.Switch``, ``flame.nodes.Nap`` and
``flame.nodes.Link`` node templates (see docs/tosca-profile.md). ``parse_catalogue`` checks shapes (the profile),
TOSCA grammar (tosca-parser) and the rules the PCE's topology validation applies (ids, datapath ids, ports, NAP
attachment), so a catalogue that parses here is accepted by the PCE; ``catalogue_to_topology`` builds the
``flame.pce.v1.Topology`` message. Pure apart from reading the shipped profile.
"""

from __future__ import annotations

import math
import re
from typing import Any

from flame_control.api.flame.pce.v1 import topology_pb2
from flame_control.orchestrator.model import Catalogue, GeoPoint, LinkSpec, NapNode, Problem, Severity, Site, SwitchNode
from flame_control.orchestrator.profile import LINK, NAP, SITE, SWITCH, load_yaml
from flame_control.orchestrator.template import NODES, _geo, _get, _opt_float, split_document, tosca_problems

#: Node ids the PCE accepts (pce.topology.NODE_ID).
NODE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
TIERS = ("dc", "edge")
VIMS = ("process", "docker", "openstack")
_KINDS = (SITE, SWITCH, NAP, LINK)


def parse_catalogue(text: str) -> tuple[Catalogue | None, list[Problem]]:
    """Parse and check an infrastructure catalogue; (catalogue or None when it has errors, every problem)."""
    doc, problems = load_yaml(text, "catalogue")
    if problems:
        return None, problems
    entities, problems = split_document(doc)
    if entities is None:
        return None, problems
    nodes, policies, types = entities
    kinds: dict[str, str] = {}
    for name, tpl in nodes.items():
        path = f"{NODES}.{name}"
        kind = next((k for k in _KINDS if types.is_a(tpl["type"], k)), "")
        if not kind:
            problems.append(
                Problem(f"{path}.type", f"{tpl['type']} is not an infrastructure type", "use " + ", ".join(_KINDS))
            )
            continue
        kinds[name] = kind
        defs = types.properties(tpl["type"], "node_types")
        problems += types.check_properties(tpl.get("properties"), defs, f"{path}.properties", tpl["type"])
        if not NODE_ID.match(name):
            hint = "use 1-63 lower-case letters, digits, '.', '_' or '-' (the PCE's node ids)"
            problems.append(Problem(path, f"name {name!r} is not a valid node id", hint))
    for name in policies:
        problems.append(Problem(f"topology_template.policies.{name}", "catalogues have no policies", "remove it"))
    problems += tosca_problems(doc, types, nodes, {}, lambda _: False)
    props = {name: (nodes[name].get("properties") or {}) for name in kinds}
    props = {name: p if isinstance(p, dict) else {} for name, p in props.items()}
    sites = tuple(_site(n, props[n]) for n, k in kinds.items() if k == SITE)
    switches = tuple(_switch(n, props[n]) for n, k in kinds.items() if k == SWITCH)
    naps = tuple(
        NapNode(n, _geo(props[n].get("location")), _get(props[n], "region", str, "")) for n in kinds if kinds[n] == NAP
    )
    links = tuple(_link(n, props[n]) for n, k in kinds.items() if k == LINK)
    metadata = doc.get("metadata")
    meta = {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    cat = Catalogue(sites, switches, naps, links, meta)
    problems += check_catalogue(cat)
    if any(p.severity is Severity.ERROR for p in problems):
        return None, problems
    return cat, problems


def _site(name: str, p: dict[str, Any]) -> Site:
    vims = _get(p, "vims", list, ["process"])
    return Site(
        name=name,
        nap_id=_get(p, "nap", str, ""),
        location=_geo(p.get("location")) or GeoPoint(math.nan, math.nan),
        region=_get(p, "region", str, ""),
        tier=_get(p, "tier", str, Site.tier),
        cpus=float(_get(p, "cpus", (int, float), Site.cpus)),
        memory_mb=_get(p, "memory_mb", int, Site.memory_mb),
        max_endpoints=_get(p, "max_endpoints", int, Site.max_endpoints),
        vims=tuple(v for v in vims if isinstance(v, str)),
    )


def _switch(name: str, p: dict[str, Any]) -> SwitchNode:
    return SwitchNode(name, _get(p, "dpid", int, 0), _geo(p.get("location")), _get(p, "region", str, ""))


def _link(name: str, p: dict[str, Any]) -> LinkSpec:
    return LinkSpec(
        name=name,
        a_node=_get(p, "a_node", str, ""),
        a_port=_get(p, "a_port", int, 0),
        b_node=_get(p, "b_node", str, ""),
        b_port=_get(p, "b_port", int, 0),
        capacity_mbps=_opt_float(p, "capacity_mbps") or 0.0,
        latency_ms=_opt_float(p, "latency_ms") or 0.0,
        weight=_opt_float(p, "weight") or 0.0,
    )


def check_catalogue(cat: Catalogue) -> list[Problem]:
    """The catalogue rules (the PCE's topology rules plus site capacity and VIMs), with paths and hints."""
    problems: list[Problem] = []

    def add(name: str, prop: str, message: str, hint: str, severity: Severity = Severity.ERROR) -> None:
        path = f"{NODES}.{name}.properties.{prop}" if prop else f"{NODES}.{name}"
        problems.append(Problem(path, message, hint, severity))

    naps = {n.name for n in cat.naps}
    fabric = naps | {s.name for s in cat.switches}
    located: list[tuple[str, GeoPoint | None]] = [(n.name, n.location) for n in cat.switches]
    located += [(n.name, n.location) for n in cat.naps]
    located += [(s.name, s.location) for s in cat.sites]
    for name, loc in located:
        if loc is not None and math.isfinite(loc.latitude) and not -90 <= loc.latitude <= 90:
            add(name, "location.latitude", "must be within -90..90", "write degrees north (negative: south)")
        if loc is not None and math.isfinite(loc.longitude) and not -180 <= loc.longitude <= 180:
            add(name, "location.longitude", "must be within -180..180", "write degrees east (negative: west)")
    dpids: dict[int, str] = {}
    for sw in cat.switches:
        if sw.dpid <= 0 or sw.dpid >= 1 << 64:
            add(sw.name, "dpid", "must be a positive 64-bit datapath id", "write the switch's datapath id, e.g. 1")
        elif sw.dpid in dpids:
            add(sw.name, "dpid", f"dpid {sw.dpid} already used by {dpids[sw.dpid]!r}", "give every switch its own dpid")
        else:
            dpids[sw.dpid] = sw.name
    for site in cat.sites:
        if site.nap_id and site.nap_id not in naps:
            add(site.name, "nap", f"{site.nap_id!r} is not a NAP of the catalogue", "name a flame.nodes.Nap node")
        if site.tier not in TIERS:
            add(site.name, "tier", f"unknown tier {site.tier!r}", "use dc or edge")
        for prop, value in (("cpus", site.cpus), ("memory_mb", site.memory_mb), ("max_endpoints", site.max_endpoints)):
            if not value > 0:
                add(site.name, prop, "must be greater than 0", f"give the site's {prop}")
        if not site.vims:
            add(site.name, "vims", "a site needs at least one VIM", "write vims: [process]")
        for i, vim in enumerate(site.vims):
            if vim not in VIMS:
                add(site.name, f"vims[{i}]", f"unknown VIM {vim!r}", "use " + ", ".join(VIMS))
    ports: dict[tuple[str, int], str] = {}
    attached: dict[str, list[str]] = {}
    for link in cat.links:
        for end, node, port in (("a", link.a_node, link.a_port), ("b", link.b_node, link.b_port)):
            if node and node not in fabric:
                what = (
                    "a compute site (sites attach through their nap)"
                    if node in {s.name for s in cat.sites}
                    else "unknown"
                )
                add(link.name, f"{end}_node", f"{node!r} is {what}", "name a switch or NAP of the catalogue")
            if port < 1 or port > 0xFFFFFFFF:
                add(link.name, f"{end}_port", "port numbers start at 1", "write the port number on that node")
            elif (node, port) in ports:
                add(
                    link.name,
                    f"{end}_port",
                    f"port {port} of {node!r} already used by {ports[(node, port)]!r}",
                    "use a free port",
                )
            else:
                ports[(node, port)] = link.name
            if node in naps:
                attached.setdefault(node, []).append(link.name)
        if link.a_node and link.a_node == link.b_node:
            add(link.name, "b_node", "a link cannot connect a node to itself", "name the other end")
        for prop in ("capacity_mbps", "latency_ms", "weight"):
            value = getattr(link, prop)
            if not (math.isfinite(value) and value >= 0):
                add(link.name, prop, "must be a finite number >= 0", f"write the link's {prop}")
    for nap in sorted(naps):
        if len(attached.get(nap, [])) > 1:
            add(
                nap,
                "",
                f"NAP attached by {len(attached[nap])} links",
                "a NAP attaches to the fabric by exactly one link",
            )
        elif not attached.get(nap):
            add(nap, "", "NAP is not attached to any switch", "add a flame.nodes.Link to a switch", Severity.WARNING)
    return problems


def catalogue_to_topology(cat: Catalogue) -> topology_pb2.Topology:
    """The PCE topology of a catalogue (ORCH-4): switches, NAPs, compute sites (with nap_id and label tier), links."""
    msg = topology_pb2.Topology()
    for sw in cat.switches:
        node = msg.nodes.add(id=sw.name, kind=topology_pb2.NODE_KIND_SWITCH, dpid=sw.dpid, region=sw.region)
        if sw.location is not None:
            node.location.latitude, node.location.longitude = sw.location.latitude, sw.location.longitude
    for nap in cat.naps:
        node = msg.nodes.add(id=nap.name, kind=topology_pb2.NODE_KIND_NAP, region=nap.region)
        if nap.location is not None:
            node.location.latitude, node.location.longitude = nap.location.latitude, nap.location.longitude
    for site in cat.sites:
        node = msg.nodes.add(
            id=site.name, kind=topology_pb2.NODE_KIND_COMPUTE_SITE, region=site.region, nap_id=site.nap_id
        )
        node.location.latitude, node.location.longitude = site.location.latitude, site.location.longitude
        node.labels["tier"] = site.tier
    for link in cat.links:
        m = msg.links.add(id=link.name, capacity_mbps=link.capacity_mbps, weight=link.weight)
        m.a.node_id, m.a.port = link.a_node, link.a_port
        m.b.node_id, m.b.port = link.b_node, link.b_port
        m.latency.FromNanoseconds(round(link.latency_ms * 1e6))
    return msg
