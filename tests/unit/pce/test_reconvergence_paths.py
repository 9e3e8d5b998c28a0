"""SFR-13 reconvergence shortcuts must change nothing a computation from scratch would give: trees repaired below a
failed link have the costs of a fresh search and are valid shortest-path trees; snapshots encoded from cached wire
fragments are the messages the field-by-field builder makes, LID tables included (a Bloom-mode FID is only
leak-free in its own table, so a NAP must be told which)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flame_control.api.flame.pce.v1 import nap_session_pb2
from flame_control.icn import fid as fidlib
from pce import convert
from pce.core import NapView, PceCore, Route
from pce.paths import Constraints, PathEngine, Tree
from pce.registry import Registration
from pce.topology import Topology
from tests.unit.pce.test_paths_and_fids import random_topology

VOD = "vod.video.flame.example"
LIVE = "live.flame.example"


def _check_tree(engine: PathEngine, tree: Tree, c: Constraints) -> None:
    """Every reached node hangs off its parent over an up link at exactly parent cost + weight; NAPs are leaves."""
    nodes = engine.topo.nodes
    for node, (up, link_id) in tree.parent.items():
        link = engine.topo.links[link_id]
        assert not link.down and {link.a[0], link.b[0]} == {node, up}
        assert up == tree.source or nodes[up].kind == "switch"
        assert tree.cost[node] == tree.cost[up] + engine._weight(link_id, c)
        assert tree.hops[node] == tree.hops[up] + 1
    assert set(tree.cost) == set(tree.parent) | {tree.source} == set(tree.hops)
    assert tree.links_used == {link for _, link in tree.parent.values()}


@given(st.integers(0, 10_000), st.sampled_from(["hops", "weighted"]), st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_tree_repaired_below_a_failed_link_costs_what_a_fresh_search_does(seed: int, metric: str, bias: bool) -> None:
    rng = random.Random(seed)
    topo = random_topology(rng, switches=rng.randint(3, 25), naps_per_switch=2, extra_links=rng.randint(0, 25))
    switches = [n.id for n in topo.switches()]
    c = Constraints(
        metric=metric,
        prefer_nodes=frozenset(rng.sample(switches, 2)) if bias else frozenset(),
        avoid_nodes=frozenset(rng.sample(switches[1:], 1)) if bias and len(switches) > 3 else frozenset(),
    )
    source = rng.choice(topo.naps())
    engine = PathEngine(topo)
    engine.tree(source, c)
    for _ in range(4):  # several failures in a row, each repairing the tree the previous one left
        used = [lk for lk in engine.tree(source, c).links_used if topo.nodes[topo.links[lk].b[0]].kind == "switch"]
        if not used:
            break
        victim = rng.choice(sorted(used))
        topo = topo.with_link_state(victim, False)
        nxt = PathEngine(topo, engine)
        engine.invalidate_link(victim, False, nxt)
        engine = nxt
        tree = engine.tree(source, c)  # repaired, or searched from scratch when half the tree hung below the link
        assert engine.misses + engine.repairs == 1
        fresh = PathEngine(topo)._dijkstra(source, c)
        assert tree.cost == fresh.cost
        _check_tree(engine, tree, c)


@given(st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_the_filter_free_search_gives_the_same_tree_as_the_general_one(seed: int) -> None:
    rng = random.Random(seed)
    topo = random_topology(rng, switches=rng.randint(2, 30), naps_per_switch=2, extra_links=rng.randint(0, 30))
    down = rng.sample(sorted(topo.links), 3)
    for lk in down:
        topo = topo.with_link_state(lk, False)
    engine = PathEngine(topo)
    for metric in ("hops", "weighted", "latency"):
        c = Constraints(metric=metric)
        assert c.plain
        source = rng.choice(topo.naps())
        fast = engine._dijkstra_plain(source, c)
        object.__setattr__(c, "plain", False)  # force the general search
        slow = engine._dijkstra(source, c)
        assert (fast.cost, fast.hops, fast.parent) == (slow.cost, slow.hops, slow.parent)


def _built(version: int, view: NapView) -> nap_session_pb2.NapSessionResponse:
    """The field-by-field builder (what convert.snapshot did before it encoded from cached fragments)."""
    msg = nap_session_pb2.NapSessionResponse()
    snap = msg.snapshot
    snap.version = version
    snap.ilid = fidlib.to_bytes(view.ilids[0])
    snap.ilids.extend(fidlib.to_bytes(i) for i in view.ilids)
    snap.local_fqdns.extend(view.local_fqdns)
    for fqdn, routes in view.routes:
        entry = snap.routes.add(fqdn=fqdn)
        for r in routes:
            entry.servers.add(
                server_nap_id=r.server,
                fid=fidlib.to_bytes(r.fid),
                reverse_fid=fidlib.to_bytes(r.reverse_fid),
                cost=r.cost,
                lid_table=r.table,
                reverse_lid_table=r.reverse_table,
            )
    return msg


def _subscribed_core(topo: Topology, rng: random.Random) -> PceCore:
    core = PceCore()
    core.apply_topology(topo)
    naps = topo.naps()
    for server in rng.sample(naps, 3):
        core.register(Registration(VOD, server, "alice"))
    core.register(Registration(LIVE, rng.choice(naps), "bob"))
    for nap in naps:
        core.subscribe(nap, None if rng.random() < 0.8 else [LIVE])
    return core


@given(st.integers(0, 10_000), st.booleans())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_wire_encoded_snapshots_are_the_built_messages_before_and_after_a_failure(seed: int, bloom: bool) -> None:
    rng = random.Random(seed)
    topo = random_topology(rng, switches=60 if bloom else 6, naps_per_switch=3 if bloom else 2, extra_links=30)
    core = _subscribed_core(topo, rng)
    assert core.plan.exact != bloom
    transit = [lk.id for lk in topo.links.values() if topo.nodes[lk.b[0]].kind == "switch"]
    for step in range(3):
        for nap, view in core.views.items():
            version = rng.randint(0, 1 << 40) if nap.endswith("0") else step + 1
            ours = convert.snapshot(version, view)
            assert ours == _built(version, view)
            assert ours.SerializeToString() == _built(version, view).SerializeToString()
        core.set_link_state(rng.choice(transit), False)


def test_snapshots_carry_each_routes_lid_tables() -> None:
    route = Route("nap-dc", (1 << 255) | 5, 1 << 7, 2.5, ("a", "sw", "nap-dc"), ("l1", "l2"), 3, 6)
    view = NapView((1 << 200, 1 << 3), ((VOD, (route, route._replace(server="nap-b", table=0, cost=0.0))),), ("x.y",))
    msg = convert.snapshot(300, view)
    assert msg == _built(300, view)
    first, second = msg.snapshot.routes[0].servers
    assert (first.lid_table, first.reverse_lid_table, fidlib.from_bytes(first.fid)) == (3, 6, route.fid)
    assert (second.server_nap_id, second.lid_table, second.cost) == ("nap-b", 0, 0.0)
    assert [fidlib.from_bytes(b) for b in msg.snapshot.ilids] == [1 << 200, 1 << 3]
