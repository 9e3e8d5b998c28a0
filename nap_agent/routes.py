"""What the NAP knows from its PCE session: its iLIDs (one per LID table) and, per FQDN, the server NAPs with FIDs,
best first. Built from a ``flame.pce.v1.Snapshot``; the last good one stays in force while the PCE is away."""

from __future__ import annotations

from dataclasses import dataclass, field

from flame_control.api.flame.pce.v1 import nap_session_pb2
from flame_control.icn import cid as cidlib
from flame_control.icn import fid as fidlib


@dataclass(frozen=True)
class Route:
    """One way to an FQDN: the server NAP, the FID there and the FID back, each with its LID table."""

    fqdn: str
    server_nap_id: str
    fid: int
    label: int
    reverse_fid: int
    reverse_label: int
    cost: float


@dataclass
class RouteTable:
    """A snapshot in a form the data plane reads per frame."""

    version: int = 0
    ilids: tuple[int, ...] = ()
    by_fqdn: dict[str, list[Route]] = field(default_factory=dict)
    local_fqdns: frozenset[str] = frozenset()
    by_cid: dict[bytes, str] = field(default_factory=dict)
    to_nap: dict[str, Route] = field(default_factory=dict)

    @classmethod
    def from_snapshot(cls, snap: nap_session_pb2.Snapshot) -> RouteTable:
        """Raises ValueError for a malformed snapshot (the NAP NACKs it and keeps the last good one)."""
        ilids = tuple(fidlib.from_bytes(b) for b in snap.ilids) or (fidlib.from_bytes(snap.ilid),)
        by_fqdn: dict[str, list[Route]] = {}
        to_nap: dict[str, Route] = {}
        for r in snap.routes:
            fqdn = cidlib.normalise_fqdn(r.fqdn)
            routes = []
            for s in r.servers:
                if s.lid_table >= 256 or s.reverse_lid_table >= 256:
                    raise ValueError(f"route to {fqdn!r}: LID table out of range")
                route = Route(
                    fqdn,
                    s.server_nap_id,
                    fidlib.from_bytes(s.fid),
                    s.lid_table,
                    fidlib.from_bytes(s.reverse_fid) if s.reverse_fid else 0,
                    s.reverse_lid_table,
                    s.cost,
                )
                routes.append(route)
                best = to_nap.get(s.server_nap_id)
                if best is None or route.cost < best.cost:
                    to_nap[s.server_nap_id] = route
            by_fqdn[fqdn] = sorted(routes, key=lambda x: x.cost)
        local = frozenset(cidlib.normalise_fqdn(f) for f in snap.local_fqdns)
        names = set(by_fqdn) | local
        return cls(snap.version, ilids, by_fqdn, local, {cidlib.http_cid(n): n for n in names}, to_nap)

    def best(self, fqdn: str, exclude: str = "") -> Route | None:
        """The cheapest route to an FQDN (not to server NAP ``exclude``: a NAP never sends to itself over the
        fabric), or None when no (other) NAP serves it."""
        for route in self.by_fqdn.get(cidlib.normalise_fqdn(fqdn), ()):
            if not exclude or route.server_nap_id != exclude:
                return route
        return None

    def accepts(self, fid: int, label: int) -> bool:
        """This NAP takes a frame with ``fid`` built from LID table ``label`` (``FID & iLID == iLID``)."""
        if label >= len(self.ilids):
            return False
        ilid = self.ilids[label]
        return ilid != 0 and fid & ilid == ilid
