# ruff: noqa: E501  (the rule tables below are one case per line)
"""Infrastructure catalogues (ORCH-3, ORCH-5) and the topology the PCE receives (ORCH-4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import pce.topology
from flame_control.api.flame.pce.v1 import topology_pb2
from flame_control.orchestrator.catalogue import catalogue_to_topology, parse_catalogue
from flame_control.orchestrator.model import Catalogue, Severity
from tests.unit.orchestrator.base_template import CATALOGUE, NODES, ROOT

PCE_YAML = ROOT / "examples/topologies/flame-integration.yaml"


def test_orch3_example_catalogue_parses(catalogue: Catalogue) -> None:
    assert sorted(s.name for s in catalogue.sites) == ["site-dc", "site-edge-a", "site-edge-b"]
    assert len(catalogue.switches) == 3 and len(catalogue.naps) == 6 and len(catalogue.links) == 9
    dc = next(s for s in catalogue.sites if s.name == "site-dc")
    assert (dc.nap_id, dc.tier, dc.cpus, dc.memory_mb, dc.max_endpoints) == ("nap-dc", "dc", 16.0, 32768, 64)
    assert dc.vims == ("process", "docker", "openstack")


def test_orch4_catalogue_topology_is_the_integration_topology_the_pce_loads(catalogue: Catalogue) -> None:
    """ORCH-4: the example catalogue becomes exactly the PCE's Figure 25 topology (nodes and links; the PCE's YAML
    adds a traffic class and location names, which a catalogue does not carry)."""
    msg = catalogue_to_topology(catalogue)
    ours = pce.topology.to_proto(pce.topology.from_proto(msg))  # the PCE validates it and normalises the order
    theirs = pce.topology.to_proto(pce.topology.load_file(PCE_YAML))
    theirs.ClearField("traffic_classes")
    assert ours == theirs
    kinds = {n.id: n.kind for n in msg.nodes}
    assert kinds["sw-dc"] == topology_pb2.NODE_KIND_SWITCH and kinds["nap-dc"] == topology_pb2.NODE_KIND_NAP
    site = next(n for n in msg.nodes if n.id == "site-edge-a")
    assert (site.kind, site.nap_id, dict(site.labels)) == (
        topology_pb2.NODE_KIND_COMPUTE_SITE,
        "nap-edge-a1",
        {"tier": "edge"},
    )
    link = next(li for li in msg.links if li.id == "dc-a")
    assert (link.a.node_id, link.a.port, link.b.node_id, link.b.port) == ("sw-dc", 3, "sw-edge-a", 3)
    assert (link.capacity_mbps, link.latency.ToNanoseconds(), link.weight) == (10000.0, 5_000_000, 5.0)


def _catalogue_doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(CATALOGUE.read_text())
    return doc


def _node(doc: dict[str, Any], name: str) -> dict[str, Any]:
    node: dict[str, Any] = doc["topology_template"]["node_templates"][name]
    return node


CASES = [
    ("duplicate-dpid", lambda d: _node(d, "sw-edge-b")["properties"].update(dpid=1), f"{NODES}.sw-edge-b.properties.dpid"),
    ("zero-dpid", lambda d: _node(d, "sw-edge-b")["properties"].update(dpid=0), f"{NODES}.sw-edge-b.properties.dpid"),
    ("site-nap-unknown", lambda d: _node(d, "site-dc")["properties"].update(nap="nap-ghost"), f"{NODES}.site-dc.properties.nap"),
    ("site-nap-missing", lambda d: _node(d, "site-dc")["properties"].pop("nap"), f"{NODES}.site-dc.properties.nap"),
    ("site-tier", lambda d: _node(d, "site-dc")["properties"].update(tier="core"), f"{NODES}.site-dc.properties.tier"),
    ("site-capacity", lambda d: _node(d, "site-dc")["properties"].update(cpus=0), f"{NODES}.site-dc.properties.cpus"),
    ("site-vim", lambda d: _node(d, "site-dc")["properties"].update(vims=["kvm"]), f"{NODES}.site-dc.properties.vims[0]"),
    ("site-no-vims", lambda d: _node(d, "site-dc")["properties"].update(vims=[]), f"{NODES}.site-dc.properties.vims"),
    ("location-range", lambda d: _node(d, "nap-dc")["properties"].update(location={"latitude": 91, "longitude": 0}), f"{NODES}.nap-dc.properties.location.latitude"),
    ("link-dangling", lambda d: _node(d, "a-b")["properties"].update(b_node="sw-ghost"), f"{NODES}.a-b.properties.b_node"),
    ("link-to-site", lambda d: _node(d, "a-b")["properties"].update(b_node="site-dc", b_port=7), f"{NODES}.a-b.properties.b_node"),
    ("link-port-reused", lambda d: _node(d, "a-b")["properties"].update(a_port=1), f"{NODES}.a-nap-a1.properties.a_port"),  # the later of the two (sorted dump)
    ("link-port-zero", lambda d: _node(d, "a-b")["properties"].update(a_port=0), f"{NODES}.a-b.properties.a_port"),
    ("link-self", lambda d: _node(d, "a-b")["properties"].update(b_node="sw-edge-a", b_port=9), f"{NODES}.a-b.properties.b_node"),
    ("link-negative-latency", lambda d: _node(d, "a-b")["properties"].update(latency_ms=-1), f"{NODES}.a-b.properties.latency_ms"),
    ("nap-two-links", lambda d: _node(d, "a-b")["properties"].update(b_node="nap-dc", b_port=2), f"{NODES}.nap-dc"),
    ("node-id", lambda d: d["topology_template"]["node_templates"].update(SW_X={"type": "flame.nodes.Switch", "properties": {"dpid": 9}}), f"{NODES}.SW_X"),
    ("endpoint-in-catalogue", lambda d: d["topology_template"]["node_templates"].update(x={"type": "flame.nodes.ServiceFunctionEndpoint", "properties": {}}), f"{NODES}.x.type"),
    ("policies-in-catalogue", lambda d: d["topology_template"].update(policies=[{"p": {"type": "flame.policies.Kpi"}}]), "topology_template.policies.p"),
    ("property-type", lambda d: _node(d, "sw-dc")["properties"].update(dpid="one"), f"{NODES}.sw-dc.properties.dpid"),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "mutate", "path"), CASES, ids=[c[0] for c in CASES])
def test_orch5_each_catalogue_rule_reports_its_path(rule: str, mutate: Any, path: str) -> None:
    """ORCH-5: a bad catalogue is refused (no catalogue) with an ERROR at the node/property at fault."""
    doc = _catalogue_doc()
    mutate(doc)
    cat, problems = parse_catalogue(yaml.safe_dump(doc))
    assert cat is None
    assert any(p.path == path and p.severity is Severity.ERROR for p in problems), problems


def test_an_unattached_nap_is_a_warning_only() -> None:
    doc = _catalogue_doc()
    doc["topology_template"]["node_templates"]["nap-spare"] = {"type": "flame.nodes.Nap", "properties": {}}
    cat, problems = parse_catalogue(yaml.safe_dump(doc))
    assert cat is not None
    assert [(p.path, p.severity) for p in problems] == [(f"{NODES}.nap-spare", Severity.WARNING)]


def test_catalogues_the_pce_would_refuse_are_refused_here_first() -> None:
    """ORCH-4: every case above that parses as a topology is also refused by the PCE's own validation."""
    doc = _catalogue_doc()
    _node(doc, "a-b")["properties"].update(b_node="nap-dc", b_port=2)
    assert parse_catalogue(yaml.safe_dump(doc))[0] is None
    good, _ = parse_catalogue(CATALOGUE.read_text())
    assert good is not None
    msg = catalogue_to_topology(good)
    bad = next(li for li in msg.links if li.id == "a-b")
    bad.b.node_id, bad.b.port = "nap-dc", 2
    with pytest.raises(Exception, match="fabric links"):
        pce.topology.from_proto(msg)


def test_hostile_catalogue_is_refused() -> None:
    cat, problems = parse_catalogue("a: &a [1, *a]")
    assert cat is None and "recursive alias" in problems[0].message
    cat, problems = parse_catalogue(Path(__file__).read_text()[:100])
    assert cat is None and problems
