"""Policy preference (SFR-6), region constraints on transit (SFR-5), and the route/FID caches behind fast reconvergence
(SFR-13): cached and shared results must equal what a fresh core computes from scratch."""

from __future__ import annotations

import dataclasses
import itertools
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flame_control.runtime.errors import InvalidArgument, NotFound
from pce import lids as lidlib
from pce.core import DEFAULT, PceCore, parse_constraints
from pce.paths import Constraints
from pce.registry import Registration
from pce.topology import Link, Topology, load_file
from tests.unit.pce.test_paths_and_fids import random_topology

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "topologies" / "flame-integration.yaml"
VOD = "vod.video.flame.example"
LIVE = "live.flame.example"
DIRECT = ("nap-edge-a1", "sw-edge-a", "sw-dc", "nap-dc")
VIA_B = ("nap-edge-a1", "sw-edge-a", "sw-edge-b", "sw-dc", "nap-dc")


@pytest.fixture
def core() -> PceCore:
    c = PceCore()
    c.apply_topology(load_file(EXAMPLE))
    c.register(Registration(VOD, "nap-dc", "alice"))
    return c


def test_sfr6_a_preferred_transit_node_wins_over_a_shorter_path(core: PceCore) -> None:
    weighted = Constraints(metric="weighted")
    (plain,) = core.resolve("nap-edge-a1", VOD, weighted)
    assert plain.nodes == DIRECT and plain.cost == 7  # 1 + dc-a 5 + 1
    (preferred,) = core.resolve(
        "nap-edge-a1", VOD, dataclasses.replace(weighted, prefer_nodes=frozenset({"sw-edge-b"}))
    )
    # via sw-edge-b costs 9 (1 + a-b 2 + dc-b 5 + 1); biased: a-b and dc-b at half weight -> 5.5 < 7
    assert preferred.nodes == VIA_B
    assert preferred.cost == 9  # the reported cost is the unbiased metric
    assert core.fabric().send("nap-edge-a1", preferred.fid).accepted == {"nap-dc"}
    assert core.fabric().send("nap-dc", preferred.reverse_fid).accepted == {"nap-edge-a1"}


def test_sfr6_preferred_links_win_and_the_route_cache_keys_on_the_preference(core: PceCore) -> None:
    weighted = Constraints(metric="weighted")
    prefer = dataclasses.replace(weighted, prefer_links=frozenset({"a-b", "dc-b"}))
    assert core.resolve("nap-edge-a1", VOD, weighted)[0].nodes == DIRECT
    assert core.resolve("nap-edge-a1", VOD, prefer)[0].nodes == VIA_B
    assert core.resolve("nap-edge-a1", VOD, weighted)[0].nodes == DIRECT  # cached separately, not confused
    # one preferred link is not enough: 1 + 1 + 5 + 1 = 8 > 7
    one = dataclasses.replace(weighted, prefer_links=frozenset({"a-b"}))
    assert core.resolve("nap-edge-a1", VOD, one)[0].nodes == DIRECT
    # a failed preferred link is not used; the preference never overrides availability
    core.set_link_state("a-b", up=False)
    assert core.resolve("nap-edge-a1", VOD, prefer)[0].nodes == DIRECT


def test_sfr6_prefer_link_ids_are_validated() -> None:
    known = load_file(EXAMPLE)
    c = parse_constraints(prefer_links=["a-b"], known_nodes=known.nodes, known_links=known.links)
    assert c.prefer_links == frozenset({"a-b"})
    with pytest.raises(InvalidArgument) as err:
        parse_constraints(prefer_links=["a-b", "nope"], known_nodes=known.nodes, known_links=known.links)
    assert [v.field for v in err.value.violations] == ["constraints.prefer_link_ids[1]"]


def _with_regions(regions: dict[str, str], weights: dict[str, float]) -> PceCore:
    topo = load_file(EXAMPLE)
    nodes = {n: dataclasses.replace(node, region=regions.get(n, node.region)) for n, node in topo.nodes.items()}
    links: dict[str, Link] = {
        k: dataclasses.replace(link, weight=weights.get(k, link.weight)) for k, link in topo.links.items()
    }
    c = PceCore()
    c.apply_topology(Topology(nodes, links, topo.classes))
    c.register(Registration(VOD, "nap-dc", "alice"))
    return c


def test_sfr5_region_constraint_routes_around_a_transit_switch_outside_the_region() -> None:
    # dc-a made expensive: the best weighted path from nap-edge-a1 goes through sw-edge-b, which is in another region.
    c = _with_regions({"sw-edge-b": "bath"}, {"dc-a": 20})
    weighted = Constraints(metric="weighted")
    assert c.resolve("nap-edge-a1", VOD, weighted)[0].nodes == VIA_B
    (inside,) = c.resolve("nap-edge-a1", VOD, dataclasses.replace(weighted, region="bristol"))
    assert inside.nodes == DIRECT and inside.cost == 22
    assert c.fabric().send("nap-edge-a1", inside.fid).accepted == {"nap-dc"}
    # with the in-region link down there is no in-region path: NOT_FOUND, not a path through bath
    c.set_link_state("dc-a", up=False)
    with pytest.raises(NotFound):
        c.resolve("nap-edge-a1", VOD, dataclasses.replace(weighted, region="bristol"))
    assert c.resolve("nap-edge-a1", VOD, weighted)[0].nodes == VIA_B


def test_sfr5_region_constraint_also_excludes_surrogates_outside_the_region() -> None:
    c = _with_regions({"nap-edge-b1": "bath"}, {})
    c.register(Registration(VOD, "nap-edge-b1", "alice"))
    anywhere = c.resolve("nap-edge-b2", VOD)
    assert anywhere[0].server == "nap-edge-b1"  # 3 hops vs 4
    inside = c.resolve("nap-edge-b2", VOD, Constraints(region="bristol"))
    assert [r.server for r in inside] == ["nap-dc"]


def test_a_registration_change_invalidates_only_that_fqdns_cached_routes(core: PceCore) -> None:
    core.register(Registration(LIVE, "nap-edge-b1", "bob"))
    for nap in core.topology.naps():
        core.subscribe(nap, [LIVE] if nap == "nap-edge-a2" else None)
    live_before = {k: v for k, v in core._routes.items() if k[1] == LIVE}
    vod_before = {k: v for k, v in core._routes.items() if k[1] == VOD}
    assert live_before and vod_before
    affected = core.register(Registration(VOD, "nap-edge-a2", "alice"))
    assert "nap-edge-a2" in affected  # the new server itself (its local FQDNs changed), though it only wants LIVE
    assert dict(core.views["nap-edge-a1"].routes)[VOD][0].server == "nap-edge-a2"
    for key, routes in live_before.items():
        assert core._routes[key] is routes  # untouched: the very same cached list
    assert all(core._routes.get(k) is not v for k, v in vod_before.items())
    assert dict(core.views["nap-edge-a2"].routes) == {LIVE: tuple(core.routes("nap-edge-a2", LIVE))}


def _views_from_scratch(core: PceCore) -> dict[str, object]:
    fresh = PceCore()
    fresh.apply_topology(core.topology)
    for reg in core.registry.registrations.values():
        fresh.register(reg)
    for nap, wanted in core.interest.items():
        fresh.subscribe(nap, wanted)
    return dict(fresh.views)


@given(st.integers(0, 10_000), st.booleans())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_views_after_link_changes_agree_with_a_fresh_core(seed: int, bloom: bool) -> None:
    """The leg/route/FID caches and the shared false-positive checks change nothing a fresh computation would give,
    in exact mode and in Bloom mode (past 256 identifiers). Equal-cost paths may differ (a kept tree keeps its choice),
    so views are compared by (server, cost) per FQDN, and every cached route must be exactly the route the uncached
    code builds for its own path."""
    rng = random.Random(seed)
    topo = random_topology(rng, switches=60 if bloom else 8, naps_per_switch=3 if bloom else 2, extra_links=30)
    core = PceCore()
    core.apply_topology(topo)
    assert core.plan.exact != bloom
    naps = topo.naps()
    for server in rng.sample(naps, 3):
        core.register(Registration(VOD, server, "alice"))
    core.register(Registration(LIVE, rng.choice(naps), "bob"))
    for nap in naps:
        core.subscribe(nap, None)
    transit = [lk.id for lk in topo.links.values() if topo.nodes[lk.b[0]].kind == "switch"]
    access = [lk.id for lk in topo.links.values() if topo.nodes[lk.b[0]].kind == "nap"]
    changes = [(lk, False) for lk in rng.sample(transit, 3)] + [(rng.choice(access), False)]
    changes += [(lk, True) for lk, _ in changes[:2]]
    for link_id, up in changes:
        before = dict(core.views)
        affected = core.set_link_state(link_id, up)
        assert affected == {n for n in core.views if core.views[n] != before[n]}
        expected = _views_from_scratch(core)
        assert core.views.keys() == expected.keys()
        for nap, view in core.views.items():
            fresh = dict(expected[nap].routes)  # type: ignore[attr-defined]
            assert [f for f, _ in view.routes] == list(fresh)
            for fqdn, routes in view.routes:
                assert [(r.server, r.cost) for r in routes] == [(r.server, r.cost) for r in fresh[fqdn]]
                for r in routes:
                    assert all(not core.topology.links[lk].down for lk in r.links)
                    assert r == core._route(r.nodes, r.links, r.cost)


@given(st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_shared_prefix_false_positive_check_agrees_with_the_full_check(seed: int) -> None:
    rng = random.Random(seed)
    topo = random_topology(rng, switches=60, naps_per_switch=3, extra_links=40)
    plan = lidlib.plan(topo)
    assert not plan.exact
    switches = [n.id for n in topo.switches()]
    for _ in range(5):
        # a random walk of switch directions, extended by one switch -> NAP direction
        walk = [rng.choice(switches)]
        adjacency = lidlib.directions(topo)
        adjacent = set(adjacency)
        for _ in range(rng.randint(0, 6)):
            nxt = [b for a, b in adjacency if a == walk[-1] and topo.nodes[b].kind == "switch" and b not in walk]
            if not nxt:
                break
            walk.append(rng.choice(nxt))
        prefix = list(itertools.pairwise(walk))
        last = walk[-1]
        nap = rng.choice([b for a, b in adjacency if a == last and topo.nodes[b].kind == "nap"])
        far = rng.choice([n for n in topo.naps() if (last, n) not in adjacent])  # a NAP elsewhere: outside reach
        for table in plan.tables:
            check = lidlib.prefix_check(table, prefix, last)
            for direction, dest in (((last, nap), nap), ((last, nap), far)):
                fid, ok = lidlib.extension_fid(check, direction, dest)
                tree = [*prefix, direction]
                assert fid == lidlib.fid_for(table, tree, [dest])
                assert ok == (not lidlib.false_positives(table, fid, tree))


def test_default_constraints_are_one_cache_key() -> None:
    assert hash(Constraints()) == hash(DEFAULT) and Constraints() == DEFAULT
    assert Constraints(prefer_links=frozenset({"x"})) != DEFAULT
    assert dataclasses.replace(DEFAULT, metric="weighted") == Constraints(metric="weighted")
    assert hash(dataclasses.replace(DEFAULT, metric="weighted")) == hash(Constraints(metric="weighted"))
