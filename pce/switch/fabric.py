"""A pure in-memory fabric: the switches' flow tables executed on a frame's FID, hop by hop (Faucet's fakeoftable
idea). Used by property tests to assert reachability, and by the emulated fabric driver to move real frames."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from flame_control.icn import fid as fidlib
from pce.switch.pipeline import FlowRule, outputs
from pce.topology import Topology

DEFAULT_HOP_LIMIT = 64


@dataclass
class Delivery:
    """Where a frame went: NAPs that accepted it (FID & iLID == iLID), NAPs it reached but that rejected it, and the
    links it crossed."""

    accepted: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)
    dropped_hop_limit: int = 0
    #: Sum of the configured latencies (seconds) of the links on the path to each NAP reached.
    latency_s: dict[str, float] = field(default_factory=dict)


class Fabric:
    """Switch tables per node plus the topology's wiring."""

    def __init__(
        self, topo: Topology, rules: Mapping[str, Sequence[FlowRule]], ilids: Sequence[Mapping[str, int]]
    ) -> None:
        self.topo = topo
        self.rules = rules
        #: iLIDs per LID table (one table in exact mode).
        self.ilids = ilids
        # (node, port) -> (far node, far port, link id)
        self.wiring: dict[tuple[str, int], tuple[str, int, str]] = {}
        for link in topo.links.values():
            if link.down:
                continue
            self.wiring[link.a] = (link.b[0], link.b[1], link.id)
            self.wiring[link.b] = (link.a[0], link.a[1], link.id)

    def nap_port(self, nap: str) -> tuple[str, int] | None:
        """(switch, port) a NAP is attached to."""
        for (node, _port), (far, far_port, _) in self.wiring.items():
            if node == nap:
                return far, far_port
        return None

    def send(self, source_nap: str, fid: int, table: int = 0, hop_limit: int = DEFAULT_HOP_LIMIT) -> Delivery:
        """Inject a frame (FID, LID table) from ``source_nap`` and follow it through every switch it reaches."""
        result = Delivery()
        start = self.nap_port(source_nap)
        if start is None:
            return result
        first = self.wiring[start][2]
        result.links.append(first)
        queue = deque([(start[0], start[1], hop_limit, self.topo.links[first].latency_s)])
        while queue:
            node, in_port, hops, latency = queue.popleft()
            kind = self.topo.nodes[node].kind
            if kind == "nap":
                result.latency_s.setdefault(node, latency)
                if fidlib.delivers(fid, self.ilids[table].get(node, 0)):
                    result.accepted.add(node)
                else:
                    result.rejected.add(node)
                continue
            if hops <= 0:
                result.dropped_hop_limit += 1
                continue
            for port in sorted(outputs(self.rules.get(node, ()), fid, in_port, table)):
                far = self.wiring.get((node, port))
                if far is None:
                    continue
                result.links.append(far[2])
                queue.append((far[0], far[1], hops - 1, latency + self.topo.links[far[2]].latency_s))
        return result
