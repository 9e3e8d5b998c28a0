"""Placement (ORCH-5 geo placement, ORCH-7 capacity against what is deployed): constraints, preferences, determinism."""

from __future__ import annotations

import dataclasses
import random

from flame_control.orchestrator.model import (
    Catalogue,
    EndpointNode,
    GeoPoint,
    PlacementConstraint,
    Problem,
    ServiceTemplate,
    Site,
)
from flame_control.orchestrator.placement import SiteUsage, haversine_km, place, usage_of

HARBOURSIDE = GeoPoint(51.4510, -2.6000)


def _ep(name: str, fqdn: str = "", **kw: object) -> EndpointNode:
    return EndpointNode(name=name, fqdn=fqdn or f"{name}.video.flame.example", image="vod-media-server", **kw)  # type: ignore[arg-type]


def _tpl(*eps: EndpointNode) -> ServiceTemplate:
    return ServiceTemplate("vod", tuple(eps))


def test_haversine_matches_a_known_distance() -> None:
    london, paris = GeoPoint(51.5074, -0.1278), GeoPoint(48.8566, 2.3522)
    assert abs(haversine_km(london, paris) - 343.5) < 1.0
    assert haversine_km(london, london) == 0.0


def test_orch5_named_site_is_honoured(catalogue: Catalogue) -> None:
    tpl = _tpl(_ep("a", placement=PlacementConstraint(site="site-edge-b")))
    assert place(tpl, catalogue, {}) == {"a": "site-edge-b"}


def test_orch5_nearest_site_to_near_wins_within_the_constraints(catalogue: Catalogue) -> None:
    near_a = _ep("a", placement=PlacementConstraint(near=HARBOURSIDE))
    assert place(_tpl(near_a), catalogue, {}) == {"a": "site-edge-a"}
    edge_dc_only = _ep("b", placement=PlacementConstraint(near=HARBOURSIDE, tier="dc"))
    assert place(_tpl(edge_dc_only), catalogue, {}) == {"b": "site-dc"}


def test_orch5_max_distance_excludes_far_sites(catalogue: Catalogue) -> None:
    cabot = GeoPoint(51.4590, -2.5870)
    close = _ep("a", placement=PlacementConstraint(near=cabot, max_distance_km=0.5))
    assert place(_tpl(close), catalogue, {}) == {"a": "site-edge-b"}
    too_far = _ep("a", placement=PlacementConstraint(near=GeoPoint(51.5074, -0.1278), max_distance_km=20))
    result = place(_tpl(too_far), catalogue, {})
    assert isinstance(result, list) and "km from near" in result[0].message


def test_unconstrained_endpoints_go_to_the_least_loaded_site(catalogue: Catalogue) -> None:
    usage = {
        "site-dc": SiteUsage(cpus=12, memory_mb=1024, endpoints=4),
        "site-edge-a": SiteUsage(cpus=3, memory_mb=512, endpoints=1),
    }
    assert place(_tpl(_ep("a")), catalogue, usage) == {"a": "site-edge-b"}
    assert place(_tpl(_ep("a")), catalogue, {}) == {"a": "site-dc"}  # 0.5 of 16 cpus is the lightest load


def test_surrogates_of_one_fqdn_are_spread_over_sites(catalogue: Catalogue) -> None:
    """A NAP registers an FQDN once: three surrogates of one FQDN take three sites."""
    eps = [_ep(n, fqdn="vod.video.flame.example", placement=PlacementConstraint(region="bristol")) for n in "abc"]
    result = place(_tpl(*eps), catalogue, {})
    assert isinstance(result, dict) and sorted(result.values()) == ["site-dc", "site-edge-a", "site-edge-b"]
    fourth = place(_tpl(*eps, _ep("d", fqdn="vod.video.flame.example")), catalogue, {})
    assert isinstance(fourth, list) and "already serves vod.video.flame.example" in fourth[0].message


def test_orch7_capacity_counts_what_is_already_used(catalogue: Catalogue) -> None:
    ep = _ep("a", cpus=2, placement=PlacementConstraint(site="site-edge-a"))
    assert place(_tpl(ep), catalogue, {"site-edge-a": SiteUsage(cpus=2)}) == {"a": "site-edge-a"}
    result = place(_tpl(ep), catalogue, {"site-edge-a": SiteUsage(cpus=2.5)})
    assert isinstance(result, list)
    (problem,) = result
    assert problem.path == "topology_template.node_templates.a.properties.placement"
    assert "needs 2 cpus, 1.5 of 4 free" in problem.message and "capacity" in problem.hint


def test_endpoint_slots_and_memory_are_limits_too(catalogue: Catalogue) -> None:
    ep = _ep("a", placement=PlacementConstraint(site="site-edge-a"))
    full = place(_tpl(ep), catalogue, {"site-edge-a": SiteUsage(endpoints=8)})
    assert isinstance(full, list) and "endpoint slots" in full[0].message
    big = place(_tpl(_ep("b", memory_mb=9000, placement=PlacementConstraint(site="site-edge-a"))), catalogue, {})
    assert isinstance(big, list) and "MB" in big[0].message


def test_endpoints_of_one_template_share_the_capacity(catalogue: Catalogue) -> None:
    eps = [_ep(f"e{i}", cpus=1.5, placement=PlacementConstraint(site="site-edge-a")) for i in range(3)]
    result = place(_tpl(*eps), catalogue, {})
    assert isinstance(result, list) and [p.path.split(".")[2] for p in result] == ["e2"]


def test_vim_must_be_offered(catalogue: Catalogue) -> None:
    ep = _ep("a", vim="openstack")
    assert place(_tpl(ep), catalogue, {}) == {"a": "site-dc"}  # only the data centre offers openstack
    pinned = place(_tpl(dataclasses.replace(ep, placement=PlacementConstraint(site="site-edge-a"))), catalogue, {})
    assert isinstance(pinned, list) and "VIM 'openstack' not offered" in pinned[0].message
    docker_default = place(_tpl(_ep("b")), catalogue, {}, default_vim="openstack")
    assert docker_default == {"b": "site-dc"}


def test_placement_is_deterministic_whatever_the_endpoint_order(catalogue: Catalogue) -> None:
    eps = [_ep(f"e{i}", cpus=0.5 + (i % 3) * 0.5, placement=PlacementConstraint(region="bristol")) for i in range(12)]
    expected = place(_tpl(*eps), catalogue, {})
    assert isinstance(expected, dict)
    for seed in range(5):
        shuffled = eps[:]
        random.Random(seed).shuffle(shuffled)
        assert place(_tpl(*shuffled), catalogue, {}) == expected


def test_an_empty_catalogue_places_nothing() -> None:
    result = place(_tpl(_ep("a")), Catalogue((), (), (), ()), {})
    assert isinstance(result, list) and isinstance(result[0], Problem) and "no compute sites" in result[0].message


def test_usage_of_deployed_services_sums_per_site(catalogue: Catalogue) -> None:
    tpl = _tpl(_ep("a", cpus=1, memory_mb=100), _ep("b", cpus=2, memory_mb=200))
    used = usage_of([(tpl, {"a": "site-dc", "b": "site-dc"}), (tpl, {"a": "site-edge-a", "b": "gone"})], catalogue)
    assert used == {"site-dc": SiteUsage(3.0, 300, 2), "site-edge-a": SiteUsage(1.0, 100, 1)}


def test_site_model_defaults_fit_a_default_endpoint() -> None:
    site = Site("s", "n", GeoPoint(0, 0))
    assert place(_tpl(_ep("a")), Catalogue((site,), (), (), ()), {}) == {"a": "s"}


def test_surrogates_whose_fqdns_differ_only_in_case_are_spread_over_sites(catalogue: Catalogue) -> None:
    """Issue 14: `VOD.Video...` and `vod.video...` are one name: they never share a site."""
    eps = [_ep(f"s{i}", fqdn=f) for i, f in enumerate(("vod.video.flame.example", "VOD.video.flame.example",
                                                          "Vod.Video.Flame.Example"))]  # fmt: skip
    result = place(_tpl(*eps), catalogue, {})
    assert isinstance(result, dict) and len(set(result.values())) == 3, result
