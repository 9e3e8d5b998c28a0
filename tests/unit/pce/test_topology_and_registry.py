"""PCE topology validation (SFR-7) and FQDN registration rules (SFR-10, SFR-11, SFR-21)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flame_control.api.flame.pce.v1 import topology_pb2
from flame_control.runtime.errors import InvalidArgument, NotFound, PermissionDenied
from pce.registry import Registration, Registry, check_fqdn, fqdn_problem
from pce.topology import from_proto, load_file, parse_dict, to_proto

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "topologies" / "flame-integration.yaml"


def _msg(data: dict) -> topology_pb2.Topology:  # type: ignore[type-arg]
    return parse_dict(data)


def fields_of(err: InvalidArgument) -> list[str]:
    return [v.field for v in err.violations]


def test_sfr7_example_topology_is_the_roadmap_triangle_with_two_naps_per_switch() -> None:
    topo = load_file(EXAMPLE)
    assert [s.id for s in topo.switches()] == ["sw-dc", "sw-edge-a", "sw-edge-b"]
    assert len(topo.naps()) == 6
    for sw in topo.switches():
        naps = [
            link for link in topo.links.values() if sw.id in (link.a[0], link.b[0]) and "nap" in link.other(sw.id)[0]
        ]
        assert len(naps) == 2
    assert from_proto(to_proto(topo)) == topo


def test_sfr7_every_problem_is_reported_with_its_path() -> None:
    data = {
        "nodes": [
            {"id": "s1", "kind": "NODE_KIND_SWITCH", "dpid": 1},
            {"id": "s1", "kind": "NODE_KIND_SWITCH", "dpid": 2},
            {"id": "s2", "kind": "NODE_KIND_SWITCH", "dpid": 1},
            {"id": "n1", "kind": "NODE_KIND_NAP"},
            {"id": "BAD ID", "kind": "NODE_KIND_NAP"},
            {"id": "x", "kind": "NODE_KIND_UNSPECIFIED"},
        ],
        "links": [
            {"id": "l1", "a": {"node_id": "s1", "port": 1}, "b": {"node_id": "ghost", "port": 1}},
            {"id": "l2", "a": {"node_id": "s1", "port": 2}, "b": {"node_id": "n1", "port": 1}, "weight": -1},
            {"id": "l3", "a": {"node_id": "s1", "port": 2}, "b": {"node_id": "s2", "port": 1}},
            {"id": "l3", "a": {"node_id": "s2", "port": 2}, "b": {"node_id": "s2", "port": 3}},
        ],
    }
    with pytest.raises(InvalidArgument) as info:
        from_proto(_msg(data))
    got = fields_of(info.value)
    assert "topology.nodes[1].id" in got  # duplicate node
    assert "topology.nodes[2].dpid" in got  # duplicate dpid
    assert "topology.nodes[4].id" in got  # bad id syntax
    assert "topology.nodes[5].kind" in got  # unspecified kind
    assert "topology.links[0].b.node_id" in got  # dangling
    assert "topology.links[1].weight" in got  # negative weight
    assert "topology.links[2].a.port" in got  # duplicate port
    assert "topology.links[3].id" in got  # duplicate link id
    assert "topology.links[3].b.node_id" in got  # self loop


def test_unknown_keys_in_a_topology_file_are_rejected(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("nodes: []\nlinkz: []\n")
    with pytest.raises(InvalidArgument, match="linkz"):
        load_file(f)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("video.example.org", True),
        ("VIDEO.Example.org.", True),
        ("a-b.c1.example", True),
        ("single", False),
        ("-bad.example", False),
        ("bad-.example", False),
        ("sp ace.example", False),
        ("x" * 64 + ".example", False),
        ("a." * 127 + "example", False),
        ("1.2.3.4", False),
        ("", False),
    ],
)
def test_sfr11_fqdn_syntax(name: str, ok: bool) -> None:
    assert (fqdn_problem(name) is None) is ok


def test_sfr21_names_are_owned_and_delegable() -> None:
    reg = Registry()
    reg.register(Registration("video.example.org", "nap-1", "alice"))
    with pytest.raises(PermissionDenied):
        reg.register(Registration("video.example.org", "nap-2", "bob"))
    with pytest.raises(PermissionDenied):
        reg.register(Registration("hd.video.example.org", "nap-2", "bob"))
    reg.delegate("video.example.org", "alice", "bob")
    reg.register(Registration("hd.video.example.org", "nap-2", "bob"))
    assert reg.servers("hd.video.example.org") == ["nap-2"]
    with pytest.raises(PermissionDenied):
        reg.delegate("video.example.org", "mallory", "mallory")
    reg.register(Registration("video.example.org", "nap-3", "alice"))
    assert reg.servers("video.example.org") == ["nap-1", "nap-3"]
    with pytest.raises(NotFound):
        reg.unregister("video.example.org", "nap-9")
    assert check_fqdn("Video.Example.org.") == "video.example.org"
