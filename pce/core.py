"""The PCE's pure core: topology + LIDs + registrations -> per-NAP views and switch configurations.

Routes are computed on shortest-path trees rooted at the *server* NAPs (few) rather than at every client NAP (many);
paths are symmetric, so a client's route to a server is the reversed tree path. An index from link id to the NAPs whose
current view uses it makes a link failure recompute only the affected NAPs' views (SFR-13).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from flame_control.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from pce import lids as lidlib
from pce.paths import Constraints, PathEngine, Tree, choose_server, directions_of, multicast_tree
from pce.registry import Registration, Registry
from pce.switch.fabric import Fabric
from pce.switch.pipeline import FlowRule, SwitchConfig, flows_for
from pce.topology import EMPTY, Topology

DEFAULT = Constraints()


class Route(NamedTuple):
    """How a client NAP reaches one server NAP (a named tuple: thousands are built per link failure)."""

    server: str
    fid: int
    reverse_fid: int
    cost: float
    nodes: tuple[str, ...]
    links: tuple[str, ...]
    #: LID table of the forward FID and of the reverse FID (carried in the frame's flow label; 0 in exact mode).
    table: int = 0
    reverse_table: int = 0


class NapView(NamedTuple):
    """Everything one NAP needs (the content of a snapshot, without its version)."""

    ilids: tuple[int, ...]
    routes: tuple[tuple[str, tuple[Route, ...]], ...]
    local_fqdns: tuple[str, ...]

    def links(self) -> set[str]:
        """Links any of this view's routes use."""
        return {link for _, routes in self.routes for r in routes for link in r.links}


_new = tuple.__new__

#: leg.routes miss marker (None is a valid entry: no leak-free reverse FID).
_UNBUILT = Route("", 0, 0, 0.0, (), ())


#: Route order: cheapest first, then by server NAP id.
_ROUTE_ORDER = operator.attrgetter("cost", "server")


@dataclass(eq=False, slots=True)
class _Leg:
    """The shared part of the routes of every client NAP behind one switch to one server (see PceCore._leg)."""

    #: Nodes and links from the access switch to the server NAP.
    nodes: tuple[str, ...]
    links: tuple[str, ...]
    #: (LID table, FID, false-positive-free) client -> server: the same for every NAP behind the switch.
    forward: tuple[int, int, bool]
    #: Switch directions server -> access switch (the reverse FID adds the switch -> client NAP direction).
    backward: tuple[tuple[str, str], ...]
    #: (client NAP, access link, cost) -> its route over this leg (None: no leak-free reverse FID), built once.
    routes: dict[tuple[str, str, float], Route | None] = field(default_factory=dict)
    #: Reverse-FID state shared by the NAPs behind the switch: the backward FID (exact mode) or the per-LID-table
    #: false-positive state of the backward prefix (Bloom mode), filled on first use.
    checks: list[lidlib.PrefixCheck] = field(default_factory=list)
    backward_fid: int = -1


class _Cached(NamedTuple):
    """Cached routes of one (client, FQDN, constraints) and every link they use."""

    routes: list[Route]
    links: frozenset[str]


_NO_LINKS: frozenset[str] = frozenset()


#: (server, its tree, its legs by access switch).
_ServerTree = tuple[str, Tree, dict[str, tuple[Tree, _Leg]]]


@dataclass(frozen=True)
class _Batch:
    """Registry reads shared by every NAP of one refresh (the registry does not change during a refresh)."""

    fqdns: list[str]
    servers: dict[str, list[str]]
    local: dict[str, tuple[str, ...]]
    #: fqdn -> (server, tree, legs) under the default constraints, filled as NAPs need them.
    trees: dict[str, list[_ServerTree]] = field(default_factory=dict)

    @staticmethod
    def of(registry: Registry) -> _Batch:
        """One pass over the registrations."""
        servers: dict[str, list[str]] = {}
        local: dict[str, list[str]] = {}
        for fqdn, nap in registry.registrations:
            servers.setdefault(fqdn, []).append(nap)
            local.setdefault(nap, []).append(fqdn)
        return _Batch(
            sorted(servers),
            {f: sorted(naps) for f, naps in servers.items()},
            {n: tuple(sorted(fs)) for n, fs in local.items()},
        )


@dataclass
class PceCore:
    """State of the PCE. Methods return what changed; adapters push it."""

    topology: Topology = EMPTY
    registry: Registry = field(default_factory=Registry)
    version: int = 0
    #: Links taken down administratively (UpdateLinkState, or down in the applied topology): a switch reporting
    #: their ports up does not bring them back (issue 13); the others follow their ports.
    admin_down: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.engine = PathEngine(self.topology)
        self.plan = lidlib.plan(self.topology)
        #: nap -> its iLID in every LID table (changes only with the topology).
        self._ilids: dict[str, tuple[int, ...]] = {}
        #: (client, fqdn, constraints) -> routes; dropped precisely when a link or registration changes.
        #: Keyed by (client, fqdn, number of the constraints in _cids): Constraints hash in Python, and a dict that
        #: grows or is rebuilt after a link change re-hashes every key (thousands), so keys hash in C.
        self._routes: dict[tuple[str, str, int], _Cached] = {}
        self._cids: dict[Constraints, int] = {DEFAULT: 0}
        #: (tree directions, destinations) -> (table, fid); LIDs only change with the topology, so this survives
        #: link-state changes (NAPs on one switch share their forward FIDs).
        self._fids: dict[tuple[tuple[tuple[str, str], ...], tuple[str, ...]], tuple[int, int, bool]] = {}
        #: (server, constraints) -> access switch -> (the server's tree it was read from, leg): the part of a route
        #: every NAP behind one switch shares (read once per switch, not once per NAP; see :meth:`_leg`).
        self._legs: dict[tuple[str, Constraints], dict[str, tuple[Tree, _Leg]]] = {}
        self.views: dict[str, NapView] = {}
        self.interest: dict[str, frozenset[str] | None] = {}
        self._link_users: dict[str, set[str]] = {}
        #: (prefix directions, last switch, LID table) -> shared false-positive state of reverse FIDs (Bloom mode).
        self._prefix_checks: dict[tuple[tuple[tuple[str, str], ...], str, int], lidlib.PrefixCheck] = {}
        #: nap -> links its current view uses (kept so a refresh does not recompute the old view's set).
        self._view_links: dict[str, frozenset[str]] = {}

    # -- topology -------------------------------------------------------------------------------------------------
    def apply_topology(self, topo: Topology, plan: lidlib.LidPlan | None = None) -> set[str]:
        """Replace the topology (already validated); drop registrations behind vanished NAPs; returns affected NAPs.

        ``plan``: LIDs to use (restored from the durable store, issue 13); default: assigned from the topology."""
        self.topology = topo
        self.admin_down = {lk.id for lk in topo.links.values() if lk.down}
        self.engine = PathEngine(topo)
        self.plan = plan if plan is not None else lidlib.plan(topo)
        self._ilids.clear()
        self._routes.clear()
        self._cids = {DEFAULT: 0}
        self._fids.clear()
        self._legs.clear()
        self._prefix_checks.clear()
        self.registry.drop_naps(n for n in {nap for _, nap in self.registry.registrations} if n not in topo.nodes)
        self.version += 1
        return self.refresh(self.views.keys())

    def set_link_state(self, link_id: str, up: bool) -> set[str]:
        """Mark a link up/down; recompute only views that can change; returns affected NAPs."""
        if link_id not in self.topology.links:
            raise NotFound("link", link_id)
        if self.topology.links[link_id].down == (not up):
            return set()
        topo = self.topology.with_link_state(link_id, up)
        engine = PathEngine(topo, self.engine)
        self.engine.invalidate_link(link_id, up, engine)
        self.topology, self.engine = topo, engine
        if up:
            self._routes.clear()
            self._cids = {DEFAULT: 0}
        else:
            self._routes = {k: v for k, v in self._routes.items() if link_id not in v.links}
        self.version += 1
        if up:
            return self.refresh(list(self.views))
        # _link_users may still name NAPs whose view stopped using the link (see refresh): keep only current users.
        view_links = self._view_links
        users = self._link_users[link_id] = {
            n for n in self._link_users.get(link_id, ()) if link_id in view_links.get(n, _NO_LINKS)
        }
        return self.refresh(users)

    # -- registrations --------------------------------------------------------------------------------------------
    def register(self, reg: Registration) -> set[str]:
        """Register an FQDN behind a NAP of the topology; returns affected NAPs."""
        node = self.topology.nodes.get(reg.nap_id)
        if node is None or node.kind != "nap":
            raise InvalidArgument([FieldViolation("nap_id", f"{reg.nap_id!r} is not a NAP of the topology")])
        self.registry.register(reg)
        self._forget_fqdn(reg.fqdn)
        return self.refresh(self._interested_in(reg.fqdn) | {reg.nap_id})

    def unregister(self, fqdn: str, nap_id: str, subject: str | None = None) -> set[str]:
        """Remove a registration (``subject``: who asks, None = operator); returns affected NAPs."""
        self.registry.unregister(fqdn, nap_id, subject)
        self._forget_fqdn(fqdn)
        return self.refresh(self._interested_in(fqdn) | {nap_id})

    def _forget_fqdn(self, fqdn: str) -> None:
        self._routes = {k: v for k, v in self._routes.items() if k[1] != fqdn}

    def _interested_in(self, fqdn: str) -> set[str]:
        return {n for n, wanted in self.interest.items() if wanted is None or fqdn in wanted}

    # -- routes ---------------------------------------------------------------------------------------------------
    def routes(
        self, client: str, fqdn: str, c: Constraints = DEFAULT, servers: Sequence[str] | None = None
    ) -> list[Route]:
        """Routes from ``client`` to every server NAP of ``fqdn`` satisfying ``c``, best first (cached).

        ``servers`` (the registry's servers of ``fqdn``) may be passed by a caller that already has them."""
        cached = self._routes.get((client, fqdn, 0 if c is DEFAULT else self._cid(c)))  # repeated queries: one lookup
        return (cached or self._cached_routes(client, fqdn, c, servers)).routes

    def _cid(self, c: Constraints) -> int:
        if c is DEFAULT:
            return 0
        cid = self._cids.get(c)
        if cid is None:
            cid = self._cids[c] = len(self._cids)
        return cid

    def _cached_routes(self, client: str, fqdn: str, c: Constraints, servers: Sequence[str] | None = None) -> _Cached:
        cached = self._routes.get((client, fqdn, self._cid(c)))
        if cached is None:
            if servers is None:
                servers = self.registry.servers(fqdn)
            cached = self._store_routes(client, fqdn, c, self._compute_routes(client, servers, fqdn, c))
        return cached

    def _store_routes(self, client: str, fqdn: str, c: Constraints, routes: list[Route]) -> _Cached:
        # tuple.__new__: the named tuples' own __new__ is a Python-level function (thousands are built per failure)
        cached = self._routes[(client, fqdn, self._cid(c))] = _new(
            _Cached, (routes, _NO_LINKS.union(*[r.links for r in routes]))
        )
        return cached

    def _constraints_for(self, fqdn: str, c: Constraints) -> Constraints:
        if c.traffic_class == "" and self.topology.classes:
            cls = self.topology.class_for(fqdn)
            if cls:
                return dataclasses.replace(c, traffic_class=cls)
        return c

    def _server_trees(self, servers: Sequence[str], fqdn: str, c: Constraints) -> list[_ServerTree]:
        """(server, its tree, its legs) for plain constraints: what every client's routes to ``fqdn`` are read from."""
        c = self._constraints_for(fqdn, c)
        out = []
        for server in servers:
            legs = self._legs.get((server, c))
            if legs is None:
                legs = self._legs[(server, c)] = {}
            out.append((server, self.engine.tree(server, c), legs))
        return out

    def _compute_routes(
        self,
        client: str,
        servers: Sequence[str],
        fqdn: str,
        c: Constraints,
        trees: Sequence[_ServerTree] | None = None,
    ) -> list[Route]:
        if not c.plain:
            c = self._constraints_for(fqdn, c)
            # Ranked by the searched (preference-biased) cost; each route reports its unbiased metric cost.
            out = []
            for _, server in choose_server(self.engine, client, servers, c):
                path = self.engine.tree(client, c).path_to(server)
                route = self._route(path[0], path[1], self.engine.metric_cost(path[1], c)) if path is not None else None
                if route is not None:
                    out.append(route)
            return out
        if trees is None:
            trees = self._server_trees(servers, fqdn, c)
        nodes = self.topology.nodes
        out = []
        for server, tree, legs in trees:
            cost = tree.cost.get(client)
            if cost is None:
                continue
            hop = tree.parent.get(client)
            if hop is not None and not tree.paths and nodes[hop[0]].kind == "switch":
                hit = legs.get(hop[0])
                leg = hit[1] if hit is not None and hit[0] is tree else self._leg(server, legs, tree, hop[0])
                route = leg.routes.get((client, hop[1], cost), _UNBUILT)
                if route is _UNBUILT:
                    route = self._route_via_leg(client, hop, leg, cost)
            else:
                path = tree.path_to(client)
                assert path is not None
                route = self._route(path[0][::-1], path[1][::-1], cost)
            if route is not None:
                out.append(route)
        if len(out) > 1:
            out.sort(key=_ROUTE_ORDER)
        return out

    def _leg(self, server: str, legs: dict[str, tuple[Tree, _Leg]], tree: Tree, switch: str) -> _Leg:
        """What every client NAP behind ``switch`` shares on its route to ``server``: the node and link path from the
        switch to the server, the forward FID (the client NAP is no switch, so it adds no direction) and the reverse
        directions up to the switch. ``legs``: the legs of the server's trees under these constraints, by switch.

        Valid while the engine keeps the same tree object; a tree repaired below a failed link keeps the legs of the
        switches outside the repaired subtree (their paths did not move), and a recomputed tree that still reaches
        the switch the same way keeps the leg (and the routes built on it)."""
        hit = legs.get(switch)
        if hit is not None and (hit[0] is tree or (tree.base is hit[0] and switch not in tree.moved)):
            legs[switch] = (tree, hit[1])
            return hit[1]
        path = tree.path_to(switch)
        assert path is not None
        nodes, links = tuple(path[0][::-1]), tuple(path[1][::-1])
        if hit is not None and hit[1].nodes == nodes and hit[1].links == links:
            legs[switch] = (tree, hit[1])
            return hit[1]
        forward = tuple(directions_of(self.engine, nodes))
        leg = _Leg(nodes, links, self._fid(forward, (server,)), tuple(directions_of(self.engine, nodes[::-1])))
        legs[switch] = (tree, leg)
        return leg

    def _route_via_leg(self, client: str, hop: tuple[str, str], leg: _Leg, cost: float) -> Route | None:
        switch, access = hop
        table, fid, ok = leg.forward
        route = None
        if ok:  # never issue a FID that could leak off its path (SFR-8); other servers remain
            rtable, rfid, rok = self._leg_reverse_fid(leg, switch, client)
            if rok:
                route = _new(
                    Route, (leg.nodes[-1], fid, rfid, cost, (client, *leg.nodes), (access, *leg.links), table, rtable)
                )
        leg.routes[(client, access, cost)] = route
        return route

    def _leg_reverse_fid(self, leg: _Leg, switch: str, client: str) -> tuple[int, int, bool]:
        """:meth:`_fid` of the leg's backward directions + (switch, client) to ``client``, from state the leg keeps
        for every NAP behind its switch: in exact mode the backward FID (the OR of LIDs, as :func:`lids.fid_for`), in
        Bloom mode each LID table's :class:`lids.PrefixCheck` (the same verdict as the full check)."""
        plan = self.plan
        if plan.exact:
            table = plan.tables[0]
            if leg.backward_fid < 0:
                leg.backward_fid = lidlib.fid_for(table, leg.backward, ())
            return 0, leg.backward_fid | table.lids.get((switch, client), 0) | table.ilids[client], True
        checks = leg.checks
        direction = (switch, client)
        for i, table in enumerate(plan.tables):
            if i == len(checks):
                checks.append(self._prefix_check(leg.backward, switch, table))
            fid, ok = lidlib.extension_fid(checks[i], direction, client)
            if ok:
                return table.index, fid, True
        return self._fid((*leg.backward, direction), (client,))  # no table is leak-free: the full check decides

    def _prefix_check(
        self, prefix: tuple[tuple[str, str], ...], switch: str, table: lidlib.LidTable
    ) -> lidlib.PrefixCheck:
        ck = (prefix, switch, table.index)
        check = self._prefix_checks.get(ck)
        if check is None:
            if len(self._prefix_checks) > 200_000:
                self._prefix_checks.clear()
            check = self._prefix_checks[ck] = lidlib.prefix_check(table, prefix, switch)
        return check

    def _route(self, nodes: Sequence[str], links: Sequence[str], cost: float) -> Route | None:
        forward = directions_of(self.engine, nodes)
        backward = directions_of(self.engine, nodes[::-1])
        table, fid, ok = self._fid(forward, (nodes[-1],))
        rtable, rfid, rok = self._fid(backward, (nodes[0],))
        if not (ok and rok):
            return None  # never issue a FID that could leak off its path (SFR-8); other servers remain
        return Route(nodes[-1], fid, rfid, cost, tuple(nodes), tuple(links), table, rtable)

    def _fid(self, tree: Sequence[tuple[str, str]], destinations: tuple[str, ...]) -> tuple[int, int, bool]:
        """(LID table, FID, false-positive-free) for a tree, memoised until the topology changes."""
        key = (tree if isinstance(tree, tuple) else tuple(tree), destinations)
        hit = self._fids.get(key)
        if hit is None:
            if len(self._fids) > 200_000:
                self._fids.clear()
            table, fid, ok = lidlib.choose_table(self.plan, tree, destinations)
            hit = self._fids[key] = (table.index, fid, ok)
        return hit

    def resolve(self, client: str, fqdn: str, c: Constraints = DEFAULT) -> list[Route]:
        """ResolvePath: validated inputs, NotFound when nothing serves the name reachably."""
        node = self.topology.nodes.get(client)
        if node is None or node.kind != "nap":
            raise InvalidArgument([FieldViolation("client_nap_id", f"{client!r} is not a NAP of the topology")])
        if c.traffic_class and c.traffic_class not in self.topology.classes:
            raise InvalidArgument([FieldViolation("constraints.traffic_class", f"unknown class {c.traffic_class!r}")])
        if not self.registry.servers(fqdn):
            raise NotFound("fqdn", fqdn, f"no NAP serves {fqdn!r}")
        routes = self.routes(client, fqdn, c)
        if not routes:
            raise NotFound("path", f"{client}->{fqdn}", f"no server of {fqdn!r} is reachable under the constraints")
        return routes

    def multicast(
        self, source: str, destinations: Sequence[str], c: Constraints = DEFAULT
    ) -> tuple[list[str], int, bool, int]:
        """(links, fid, false_positive_free, LID table) of a tree from ``source`` reaching ``destinations``."""
        v = []
        for i, d in enumerate(destinations):
            node = self.topology.nodes.get(d)
            if node is None or node.kind != "nap":
                v.append(FieldViolation(f"destination_nap_ids[{i}]", f"{d!r} is not a NAP"))
        src = self.topology.nodes.get(source)
        if src is None or src.kind != "nap":
            v.append(FieldViolation("source_nap_id", f"{source!r} is not a NAP"))
        if not destinations:
            v.append(FieldViolation("destination_nap_ids", "at least one destination"))
        if v:
            raise InvalidArgument(v)
        result = multicast_tree(self.engine, source, destinations, c)
        assert result is not None
        links, missing = result
        if missing:
            raise NotFound("path", ",".join(missing), f"unreachable from {source}: {', '.join(missing)}")
        tree_dirs = self.tree_directions(source, destinations, c)
        table, fid, ok = self._fid(tree_dirs, tuple(sorted(destinations)))
        return links, fid, ok, table

    def multicast_parts(
        self, source: str, destinations: Sequence[str], c: Constraints = DEFAULT
    ) -> tuple[list[str], list[tuple[tuple[str, ...], int, int]]]:
        """(links, parts): the tree's links and false-positive-free FIDs covering every destination.

        One part when the whole tree fits; else the destinations are split in halves until each part is leak-free
        (SFR-8: the PCE never issues a FID that reaches a link off its tree). A part is (destinations, fid, table)."""
        links, fid, ok, table = self.multicast(source, destinations, c)
        if ok:
            return links, [(tuple(sorted(destinations)), fid, table)]
        parts: list[tuple[tuple[str, ...], int, int]] = []
        pending = [tuple(sorted(destinations))]
        while pending:
            group = pending.pop()
            dirs = self.tree_directions(source, group, c)
            table, fid, ok = self._fid(dirs, group)
            if ok:
                parts.append((group, fid, table))
            elif len(group) == 1:
                raise FailedPrecondition(
                    [PreconditionViolation("FID", group[0], "no LID table gives a leak-free FID for this path")]
                )
            else:
                half = len(group) // 2
                pending += [group[:half], group[half:]]
        return links, sorted(parts)

    def tree_directions(
        self, source: str, destinations: Iterable[str], c: Constraints = DEFAULT
    ) -> list[tuple[str, str]]:
        """Switch output directions of the multicast tree."""
        tree = self.engine.tree(source, c)
        dirs: set[tuple[str, str]] = set()
        for d in destinations:
            path = tree.path_to(d)
            if path:
                dirs.update(directions_of(self.engine, path[0]))
        return sorted(dirs)

    # -- views ----------------------------------------------------------------------------------------------------
    def subscribe(self, nap_id: str, interested: Iterable[str] | None) -> NapView:
        """A NAP opened a session: remember its interest and return its current view."""
        wanted = frozenset(interested) if interested else None
        self.interest[nap_id] = wanted
        self.refresh([nap_id])
        return self.views[nap_id]

    def unsubscribe(self, nap_id: str) -> None:
        """Forget a NAP's interest (its session closed)."""
        self.interest.pop(nap_id, None)
        self.views.pop(nap_id, None)
        for link in self._view_links.pop(nap_id, frozenset()):
            self._link_users.get(link, set()).discard(nap_id)

    def view_of(self, nap_id: str) -> NapView:
        """Compute a NAP's view from scratch."""
        return self._view(nap_id, _Batch.of(self.registry))[0]

    def _view(self, nap_id: str, batch: _Batch) -> tuple[NapView, frozenset[str]]:
        """The NAP's view and every link it uses."""
        ilids = self._ilids.get(nap_id)
        if ilids is None:
            ilids = self._ilids[nap_id] = tuple(t.ilids.get(nap_id, 0) for t in self.plan.tables)
        wanted = self.interest.get(nap_id)
        fqdns = batch.fqdns if wanted is None else sorted(wanted)
        routes: list[tuple[str, tuple[Route, ...]]] = []
        links = _NO_LINKS
        if nap_id in self.topology.nodes:
            for fqdn in fqdns:
                servers = batch.servers.get(fqdn)
                if not servers:
                    routes.append((fqdn, ()))
                    continue
                cached = self._routes.get((nap_id, fqdn, 0))  # 0: DEFAULT in _cids
                if cached is None:
                    trees = batch.trees.get(fqdn)
                    if trees is None:
                        trees = batch.trees[fqdn] = self._server_trees(servers, fqdn, DEFAULT)
                    cached = self._store_routes(
                        nap_id, fqdn, DEFAULT, self._compute_routes(nap_id, servers, fqdn, DEFAULT, trees)
                    )
                rs = cached.routes
                if nap_id in servers:
                    rs = [r for r in rs if r.server != nap_id]  # its own route has no links
                routes.append((fqdn, tuple(rs)))
                links = cached.links if not links else links | cached.links
        return _new(NapView, (ilids, tuple(routes), batch.local.get(nap_id, ()))), links

    def refresh(self, naps: Iterable[str]) -> set[str]:
        """Recompute views of ``naps`` that have sessions; returns those whose view changed."""
        changed = set()
        batch = _Batch.of(self.registry)  # registry reads and server trees shared by every NAP of this refresh
        interest, views, view_links, link_users = self.interest, self.views, self._view_links, self._link_users
        for nap in list(naps):
            if nap not in interest:
                continue
            new, new_links = self._view(nap, batch)
            if new != views.get(nap):
                old_links = view_links.get(nap, _NO_LINKS)
                if new_links is not old_links:
                    # Links the view no longer uses keep the NAP in their user sets (set_link_state filters them
                    # against _view_links): one update per new link instead of two per changed link.
                    for link in new_links - old_links:
                        users = link_users.get(link)
                        if users is None:
                            users = link_users[link] = set()
                        users.add(nap)
                views[nap] = new
                view_links[nap] = new_links
                changed.add(nap)
        return changed

    # -- switches -------------------------------------------------------------------------------------------------
    def switch_configs(self, single_table: bool = False) -> dict[str, SwitchConfig]:
        """node id -> what that switch must do (LIDs of every LID table per port)."""
        configs = {}
        for sw in self.topology.switches():
            per_table = [self.switch_ports(table.index)[sw.dpid] for table in self.plan.tables]
            configs[sw.id] = SwitchConfig(sw.dpid, per_table[0], single_table, tuple(per_table[1:]))
        return configs

    def switch_rules(self, single_table: bool = False) -> dict[str, list[FlowRule]]:
        """node id -> the flow rules of that switch."""
        return {node: flows_for(cfg) for node, cfg in self.switch_configs(single_table).items()}

    def fabric(self) -> Fabric:
        """The pure fabric of the current topology and rules (what a frame would do)."""
        return Fabric(self.topology, self.switch_rules(), [t.ilids for t in self.plan.tables])

    def switch_ports(self, table_index: int = 0) -> dict[int, dict[int, int]]:
        """dpid -> {port: LID of the direction leaving through that port} in one LID table."""
        table = self.plan.tables[table_index]
        out: dict[int, dict[int, int]] = {}
        for sw in self.topology.switches():
            ports = {}
            for link in self.topology.links.values():
                if sw.id in (link.a[0], link.b[0]):
                    far = link.other(sw.id)[0]
                    ports[link.port_at(sw.id)] = table.lids[(sw.id, far)]
            out[sw.dpid] = dict(sorted(ports.items()))
        return out


def parse_constraints(
    metric: str = "hops",
    traffic_class: str = "",
    region: str = "",
    max_distance_km: float = 0.0,
    origin: tuple[float, float] | None = None,
    avoid_nodes: Iterable[str] = (),
    avoid_links: Iterable[str] = (),
    prefer_nodes: Iterable[str] = (),
    max_hops: int = 0,
    prefer_links: Iterable[str] = (),
    known_nodes: Mapping[str, object] | None = None,
    known_links: Mapping[str, object] | None = None,
    prefix: str = "constraints",
) -> Constraints:
    """Validated Constraints (InvalidArgument listing every bad field)."""
    v = []
    if not (math.isfinite(max_distance_km) and max_distance_km >= 0):
        v.append(FieldViolation(f"{prefix}.geo.max_distance_km", "must be a finite number >= 0"))
    if origin is not None:
        if not -90 <= origin[0] <= 90:  # NaN fails too
            v.append(FieldViolation(f"{prefix}.geo.origin.latitude", "must be within -90..90"))
        if not -180 <= origin[1] <= 180:
            v.append(FieldViolation(f"{prefix}.geo.origin.longitude", "must be within -180..180"))
    for name, ids, known in (
        ("avoid_node_ids", avoid_nodes, known_nodes),
        ("prefer_node_ids", prefer_nodes, known_nodes),
        ("avoid_link_ids", avoid_links, known_links),
        ("prefer_link_ids", prefer_links, known_links),
    ):
        for i, x in enumerate(ids):
            if known is not None and x not in known:
                v.append(FieldViolation(f"{prefix}.{name}[{i}]", f"unknown id {x!r}"))
    if v:
        raise InvalidArgument(v)
    return Constraints(
        metric,
        traffic_class,
        region,
        max_distance_km,
        origin,
        frozenset(avoid_nodes),
        frozenset(avoid_links),
        frozenset(prefer_nodes),
        max_hops,
        frozenset(prefer_links),
    )
