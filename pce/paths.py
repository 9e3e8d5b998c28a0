"""Path computation on a topology (SFR-4, SFR-5, SFR-6, SFR-12): shortest-path trees by hops, weight or latency, with
policy and geo filters, cached per (source, constraints) and invalidated precisely when a link changes.

Pure: no I/O, no clocks. Nodes are indexed once per topology; adjacency is kept in flat lists for a fast Dijkstra.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields

from pce.topology import Topology

METRICS = ("hops", "weighted", "latency")
EARTH_RADIUS_KM = 6371.0
#: Policy preference (SFR-6) as a cost bias: a preferred link, or a link touching a preferred node, costs this fraction
#: of its metric weight, so a preferred path wins over an unpreferred one up to twice as costly. Applied once per link.
PREFER_FACTOR = 0.5


@dataclass(frozen=True, slots=True)
class Constraints:
    """Normalised path constraints (hashable: part of the cache key)."""

    metric: str = "hops"
    traffic_class: str = ""
    region: str = ""
    max_distance_km: float = 0.0
    origin: tuple[float, float] | None = None
    avoid_nodes: frozenset[str] = frozenset()
    avoid_links: frozenset[str] = frozenset()
    prefer_nodes: frozenset[str] = frozenset()
    max_hops: int = 0
    prefer_links: frozenset[str] = frozenset()
    _hash: int = field(init=False, repr=False, compare=False)
    #: No geo, policy or hop-limit part: routes come straight from server-rooted trees (computed once).
    plain: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Constraints key every cache lookup (trees, routes, legs): hash the fields once, not on every lookup.
        object.__setattr__(self, "_hash", hash(tuple(getattr(self, f.name) for f in fields(self) if f.compare)))
        plain = not (
            self.max_distance_km
            or self.prefer_nodes
            or self.prefer_links
            or self.region
            or self.avoid_nodes
            or self.avoid_links
            or self.max_hops
        )
        object.__setattr__(self, "plain", plain)

    def __hash__(self) -> int:
        return self._hash


@dataclass(slots=True)
class Tree:
    """A shortest-path tree from one source: cost and predecessor (node, link) per reached node."""

    source: str
    cost: dict[str, float]
    hops: dict[str, int]
    parent: dict[str, tuple[str, str]]
    links_used: set[str] = field(default_factory=set)
    #: Explicit paths (hop-bounded trees, whose best paths need not form a parent tree).
    paths: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    #: A tree repaired below a failed link: the tree it was repaired from, and the nodes whose path moved (every
    #: other node keeps the path it had in ``base``).
    base: Tree | None = None
    moved: frozenset[str] = frozenset()

    def path_to(self, target: str) -> tuple[list[str], list[str]] | None:
        """(node ids, link ids) from the source to ``target``, or None when unreachable."""
        if target not in self.cost:
            return None
        if self.paths:
            return self.paths[target]
        nodes, links = [target], []
        while nodes[-1] != self.source:
            prev, link = self.parent[nodes[-1]]
            nodes.append(prev)
            links.append(link)
        return nodes[::-1], links[::-1]


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in km between (lat, lon) points."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


class PathEngine:
    """Shortest paths on one immutable topology, with a tree cache that survives link-state changes precisely."""

    def __init__(self, topo: Topology, previous: PathEngine | None = None) -> None:
        """``previous``: the engine of a topology with the same nodes and links (only link states differ), whose
        adjacency and per-metric weights are shared instead of rebuilt (they do not depend on link state)."""
        self.topo = topo
        self.adjacency: dict[str, list[tuple[str, str]]]
        self._neighbours: dict[str, list[str]]
        self._naps: frozenset[str]
        #: (metric, traffic class) -> node -> ((neighbour, link id, metric weight), ...) in adjacency order.
        self._weighted: dict[tuple[str, str], dict[str, tuple[tuple[str, str, float], ...]]]
        same = previous is not None and previous.topo.nodes is topo.nodes
        if previous is not None and same and previous.topo.links.keys() == topo.links.keys():
            self.adjacency, self._neighbours = previous.adjacency, previous._neighbours
            self._naps, self._weighted = previous._naps, previous._weighted
        else:
            # adjacency: node -> list of (neighbour, link id); NAP-facing links included (NAPs are leaves).
            self.adjacency = {n: [] for n in topo.nodes}
            for link in sorted(topo.links.values(), key=lambda link: link.id):
                self.adjacency[link.a[0]].append((link.b[0], link.id))
                self.adjacency[link.b[0]].append((link.a[0], link.id))
            self._neighbours = {n: [nbr for nbr, _ in adj] for n, adj in self.adjacency.items()}
            self._naps = frozenset(n.id for n in topo.nodes.values() if n.kind == "nap")
            self._weighted = {}
        self._down = frozenset(k for k, link in topo.links.items() if link.down)
        self._cache: dict[tuple[str, Constraints], Tree] = {}
        #: Trees of the previous engine that lost a transit link: (tree, link) repaired on first use (see tree()).
        self._stale: dict[tuple[str, Constraints], tuple[Tree, str]] = {}
        self.hits = 0
        self.misses = 0
        self.repairs = 0

    def neighbours(self) -> dict[str, list[str]]:
        """node -> neighbour ids (for false-positive checks); computed once per topology."""
        return self._neighbours

    def metric_weight(self, link_id: str, c: Constraints) -> float:
        """A link's weight under the metric (and traffic class) of ``c``, without preference bias."""
        link = self.topo.links[link_id]
        if c.metric == "hops":
            return 1.0
        if c.metric == "latency":
            return link.latency_s
        if c.traffic_class and c.traffic_class in link.class_weights:
            return link.class_weights[c.traffic_class]
        return link.weight

    def _weight(self, link_id: str, c: Constraints) -> float:
        # What path search minimises: the metric weight, biased down on preferred links and nodes (SFR-6).
        w = self.metric_weight(link_id, c)
        if c.prefer_links or c.prefer_nodes:
            link = self.topo.links[link_id]
            if link_id in c.prefer_links or link.a[0] in c.prefer_nodes or link.b[0] in c.prefer_nodes:
                return w * PREFER_FACTOR
        return w

    def metric_cost(self, links: Iterable[str], c: Constraints) -> float:
        """Unbiased cost of a path's links under ``c`` (what a route reports)."""
        return sum(self.metric_weight(link_id, c) for link_id in links)

    def _allowed(self, node: str, c: Constraints) -> bool:
        if node in c.avoid_nodes:
            return False
        if c.region:
            n = self.topo.nodes[node]
            return n.region == c.region
        return True

    def tree(self, source: str, c: Constraints) -> Tree:
        """The shortest-path tree from ``source`` under ``c`` (cached)."""
        key = (source, c)
        cached = self._cache.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        stale = self._stale.pop(key, None)
        repaired = self._repair(stale[0], stale[1], c) if stale is not None else None
        if repaired is not None:
            self.repairs += 1
            tree = repaired
        else:
            self.misses += 1
            tree = self._hop_bounded(source, c) if c.max_hops and c.metric != "hops" else self._dijkstra(source, c)
        self._cache[key] = tree
        return tree

    def _weighted_adjacency(self, c: Constraints) -> dict[str, tuple[tuple[str, str, float], ...]]:
        key = (c.metric, c.traffic_class)
        adj = self._weighted.get(key)
        if adj is None:
            adj = self._weighted[key] = {
                n: tuple((nbr, link_id, self.metric_weight(link_id, c)) for nbr, link_id in edges)
                for n, edges in self.adjacency.items()
            }
        return adj

    def _dijkstra(self, source: str, c: Constraints) -> Tree:
        if c.plain:  # no per-edge filter or bias: the search runs on the precomputed weighted adjacency
            return self._dijkstra_plain(source, c)
        cost = {source: 0.0}
        hops = {source: 0}
        parent: dict[str, tuple[str, str]] = {}
        done: set[str] = set()
        heap = [(0.0, 0, source)]
        links = self.topo.links
        nodes = self.topo.nodes
        while heap:
            d, h, node = heapq.heappop(heap)
            if node in done:
                continue
            done.add(node)
            # NAPs other than the source are leaves: traffic never transits a NAP.
            if node != source and nodes[node].kind == "nap":
                continue
            if c.max_hops and h >= c.max_hops:
                continue
            for nbr, link_id in self.adjacency[node]:
                if nbr in done or links[link_id].down or link_id in c.avoid_links or not self._allowed(nbr, c):
                    continue
                nd = d + self._weight(link_id, c)
                if nd < cost.get(nbr, math.inf):
                    cost[nbr] = nd
                    hops[nbr] = h + 1
                    parent[nbr] = (node, link_id)
                    heapq.heappush(heap, (nd, h + 1, nbr))
        return Tree(source, cost, hops, parent, {link for _, link in parent.values()})

    def _dijkstra_plain(self, source: str, c: Constraints) -> Tree:
        # The same search as _dijkstra (same visiting order and tie-breaks, so the same tree) without filters.
        adj = self._weighted_adjacency(c)
        down, naps = self._down, self._naps
        cost = {source: 0.0}
        hops = {source: 0}
        parent: dict[str, tuple[str, str]] = {}
        done: set[str] = set()
        heap = [(0.0, 0, source)]
        pop, push, inf, get = heapq.heappop, heapq.heappush, math.inf, cost.get
        while heap:
            d, h, node = pop(heap)
            if node in done:
                continue
            done.add(node)
            if node in naps and node != source:
                continue
            h += 1
            for nbr, link_id, w in adj[node]:
                if nbr in done or link_id in down:
                    continue
                nd = d + w
                if nd < get(nbr, inf):
                    cost[nbr] = nd
                    hops[nbr] = h
                    parent[nbr] = (node, link_id)
                    push(heap, (nd, h, nbr))
        return Tree(source, cost, hops, parent, {link for _, link in parent.values()})

    def _edges(self, c: Constraints) -> Callable[[str], Iterable[tuple[str, str, float]]]:
        """node -> its usable links under ``c`` as (neighbour, link id, searched weight); links down or avoided are
        left out (node constraints are not applied: callers only walk nodes a search already entered)."""
        links = self.topo.links
        if c.plain:
            adj, down = self._weighted_adjacency(c), self._down
            if not down:
                return adj.__getitem__
            return lambda n: [e for e in adj[n] if e[1] not in down]
        return lambda n: [
            (nbr, lid, self._weight(lid, c))
            for nbr, lid in self.adjacency[n]
            if not links[lid].down and lid not in c.avoid_links
        ]

    def _repair(self, tree: Tree, link_id: str, c: Constraints) -> Tree | None:
        """``tree`` (a shortest-path tree of the previous topology, which used ``link_id`` in transit) for this
        topology, where ``link_id`` is down: only the subtree below the link is searched again. None when that
        subtree holds half the tree or more (a search from scratch is then cheaper).

        Removing a link never shortens a path, so every node outside that subtree keeps its cost and its path. The
        subtree's nodes are seeded from their neighbours outside it and settled by Dijkstra inside it: a shortest
        path to a subtree node leaves the rest of the tree for the last time over one such boundary link. Equal-cost
        choices may differ from a search from scratch; costs do not."""
        parent = dict(tree.parent)
        link = self.topo.links[link_id]
        child = link.a[0] if parent.get(link.a[0], ("", ""))[1] == link_id else link.b[0]
        children: dict[str, list[str]] = {}
        for node, (up, _) in parent.items():
            children.setdefault(up, []).append(node)
        below = [child]
        for node in below:
            below.extend(children.get(node, ()))
        sub = set(below)
        if 2 * len(sub) >= len(tree.cost):
            return None
        cost = {n: v for n, v in tree.cost.items() if n not in sub}
        hops = {n: v for n, v in tree.hops.items() if n not in sub}
        for n in sub:
            del parent[n]
        source, naps = tree.source, self._naps
        out = self._edges(c)
        heap: list[tuple[float, int, str]] = []
        best: dict[str, float] = {}
        inf = math.inf
        for v in below:
            for u, lid, w in out(v):
                if u in sub or u not in cost or (u in naps and u != source):
                    continue
                nd = cost[u] + w
                if nd < best.get(v, inf):
                    best[v] = nd
                    hops[v] = hops[u] + 1
                    parent[v] = (u, lid)
                    heapq.heappush(heap, (nd, hops[v], v))
        done: set[str] = set()
        while heap:
            d, h, node = heapq.heappop(heap)
            if node in done:
                continue
            done.add(node)
            cost[node] = d
            if node in naps:
                continue
            for nbr, lid, w in out(node):
                if nbr not in sub or nbr in done:
                    continue
                nd = d + w
                if nd < best.get(nbr, inf):
                    best[nbr] = nd
                    hops[nbr] = h + 1
                    parent[nbr] = (node, lid)
                    heapq.heappush(heap, (nd, h + 1, nbr))
        for n in sub - done:
            hops.pop(n, None)
            parent.pop(n, None)
        tree.base = None  # one step of history only: a chain of repaired trees would keep every old tree alive
        return Tree(source, cost, hops, parent, {lk for _, lk in parent.values()}, base=tree, moved=frozenset(sub))

    def _hop_bounded(self, source: str, c: Constraints) -> Tree:
        # Cheapest path with at most max_hops links: dynamic programming layered by hop count, then explicit paths.
        layer: dict[str, float] = {source: 0.0}
        back: dict[tuple[str, int], tuple[str, str]] = {}
        best: dict[str, tuple[float, int]] = {source: (0.0, 0)}
        for h in range(1, c.max_hops + 1):
            nxt: dict[str, float] = {}
            for node, d in layer.items():
                if node != source and self.topo.nodes[node].kind == "nap":
                    continue
                for nbr, link_id in self.adjacency[node]:
                    if self.topo.links[link_id].down or link_id in c.avoid_links or not self._allowed(nbr, c):
                        continue
                    nd = d + self._weight(link_id, c)
                    if nd < nxt.get(nbr, math.inf):
                        nxt[nbr] = nd
                        back[(nbr, h)] = (node, link_id)
            for node, d in nxt.items():
                if d < best.get(node, (math.inf, 0))[0]:
                    best[node] = (d, h)
            layer = nxt
        tree = Tree(source, {n: v[0] for n, v in best.items()}, {n: v[1] for n, v in best.items()}, {})
        for node, (_, h) in best.items():
            nodes, links, n = [node], [], node
            while h > 0:
                n, link_id = back[(n, h)]
                nodes.append(n)
                links.append(link_id)
                h -= 1
            tree.paths[node] = (nodes[::-1], links[::-1])
            tree.links_used.update(links)
        return tree

    def invalidate_link(self, link_id: str, now_up: bool, new_engine: PathEngine) -> int:
        """Carry cached trees over to ``new_engine`` (same nodes, one link changed) unless the change can affect them.

        Down: a tree not using the link is kept; a tree using it keeps everything outside the subtree below the link
        when that subtree is only NAPs (they have one access link, so they are now unreachable); otherwise only the
        subtree below the link is searched again, when the tree is first used (:meth:`_repair`; hop-bounded trees are
        dropped). Up: trees where the link would shorten some path are dropped. Returns how many were dropped.
        """
        dropped = len(self._stale)  # a repair still pending is not carried over a second change
        for key, tree in self._cache.items():
            _, c = key
            if not now_up:
                if link_id not in tree.links_used:
                    kept: Tree | None = tree
                else:
                    kept = _prune_leaf_subtree(tree, link_id, new_engine.topo)
                    if kept is None and not tree.paths and not c.max_hops:
                        new_engine._stale[key] = (tree, link_id)
                        continue
            else:
                link = new_engine.topo.links[link_id]
                w = new_engine._weight(link_id, c)
                ca, cb = tree.cost.get(link.a[0], math.inf), tree.cost.get(link.b[0], math.inf)
                kept = None if (ca + w < cb or cb + w < ca or c.max_hops) else tree
            if kept is None:
                dropped += 1
            else:
                new_engine._cache[key] = kept
        return dropped


def _prune_leaf_subtree(tree: Tree, link_id: str, topo: Topology) -> Tree | None:
    """The tree without the NAP leaves hanging below ``link_id``, or None when real transit depends on the link."""
    if tree.paths:
        return None
    below = [node for node, (_, link) in tree.parent.items() if link == link_id]
    if len(below) != 1 or topo.nodes[below[0]].kind != "nap":
        return None
    gone = below[0]
    cost = {n: v for n, v in tree.cost.items() if n != gone}
    hops = {n: v for n, v in tree.hops.items() if n != gone}
    parent = {n: v for n, v in tree.parent.items() if n != gone}
    return Tree(tree.source, cost, hops, parent, {link for _, link in parent.values()})


def choose_server(engine: PathEngine, client: str, servers: Iterable[str], c: Constraints) -> list[tuple[float, str]]:
    """Reachable candidate servers satisfying geo constraints, best first: (cost, nap id)."""
    tree = engine.tree(client, c)
    nodes = engine.topo.nodes
    origin = c.origin
    if origin is None:
        cn = nodes[client]
        origin = (cn.latitude, cn.longitude) if cn.latitude is not None and cn.longitude is not None else None
    out = []
    for s in servers:
        if s not in tree.cost or s in c.avoid_nodes:
            continue
        sn = nodes[s]
        if c.max_distance_km and origin is not None:
            if sn.latitude is None or sn.longitude is None:
                continue
            if haversine_km(origin, (sn.latitude, sn.longitude)) > c.max_distance_km:
                continue
        out.append((tree.cost[s], s))
    out.sort(key=lambda cs: (cs[0], cs[1] not in c.prefer_nodes, cs[1]))
    return out


def multicast_tree(
    engine: PathEngine, source: str, destinations: Sequence[str], c: Constraints
) -> tuple[list[str], list[str]] | None:
    """(links, unreachable destinations) of the union of shortest paths from ``source``; None if source unknown."""
    if source not in engine.topo.nodes:
        return None
    tree = engine.tree(source, c)
    links: set[str] = set()
    missing = []
    for d in destinations:
        path = tree.path_to(d)
        if path is None:
            missing.append(d)
        else:
            links.update(path[1])
    return sorted(links), missing


def directions_of(engine: PathEngine, node_path: Sequence[str]) -> list[tuple[str, str]]:
    """Switch output directions along a node path (what the FID must contain)."""
    nodes: Mapping[str, object] = engine.topo.nodes
    return [(a, b) for a, b in itertools.pairwise(node_path) if getattr(nodes[a], "kind", "") == "switch"]
