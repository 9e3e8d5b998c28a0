"""Conversions between the PCE core's values and flame.pce.v1 messages (thin adapter code, no logic)."""

from __future__ import annotations

import functools

from flame_control.api.flame.pce.v1 import nap_session_pb2, routing_pb2
from flame_control.icn import fid as fidlib
from pce.core import NapView, PceCore, Route, parse_constraints
from pce.paths import Constraints
from pce.registry import Registration

_METRICS = {
    routing_pb2.METRIC_UNSPECIFIED: "hops",
    routing_pb2.METRIC_HOPS: "hops",
    routing_pb2.METRIC_WEIGHTED: "weighted",
    routing_pb2.METRIC_LATENCY: "latency",
}
_SOURCES = {
    "config": routing_pb2.REGISTRATION_SOURCE_CONFIG,
    "rpc": routing_pb2.REGISTRATION_SOURCE_RPC,
    "nap": routing_pb2.REGISTRATION_SOURCE_NAP,
}


def constraints(msg: routing_pb2.PathConstraints, core: PceCore, prefix: str = "constraints") -> Constraints:
    """Validated core constraints from the message."""
    origin = None
    if msg.geo.HasField("origin"):
        origin = (msg.geo.origin.latitude, msg.geo.origin.longitude)
    return parse_constraints(
        metric=_METRICS.get(msg.metric, "hops"),
        traffic_class=msg.traffic_class,
        region=msg.geo.region,
        max_distance_km=msg.geo.max_distance_km,
        origin=origin,
        avoid_nodes=msg.avoid_node_ids,
        avoid_links=msg.avoid_link_ids,
        prefer_nodes=msg.prefer_node_ids,
        max_hops=msg.max_hops,
        prefer_links=msg.prefer_link_ids,
        known_nodes=core.topology.nodes,
        known_links=core.topology.links,
        prefix=prefix,
    )


def path(client: str, route: Route) -> routing_pb2.Path:
    """A Path message."""
    return routing_pb2.Path(
        client_nap_id=client,
        server_nap_id=route.server,
        node_ids=list(route.nodes),
        link_ids=list(route.links),
        fid=fidlib.to_bytes(route.fid),
        reverse_fid=fidlib.to_bytes(route.reverse_fid),
        cost=route.cost,
        lid_table=route.table,
        reverse_lid_table=route.reverse_table,
    )


def registration(reg: Registration) -> routing_pb2.FqdnRegistration:
    """A FqdnRegistration message."""
    msg = routing_pb2.FqdnRegistration(
        fqdn=reg.fqdn, nap_id=reg.nap_id, owner=reg.owner, endpoint_id=reg.endpoint_id, source=_SOURCES[reg.source]
    )
    msg.registered_at.FromNanoseconds(int(reg.registered_at * 1e9))
    return msg


@functools.lru_cache(maxsize=1 << 17)
def _fid_bytes(value: int) -> bytes:
    # Many snapshots carry the same FIDs (NAPs behind one switch share forward FIDs) and the same iLIDs version after
    # version: encode each once.
    return fidlib.to_bytes(value)


@functools.lru_cache(maxsize=1 << 14)
def _ilid_bytes(ilids: tuple[int, ...]) -> tuple[bytes, ...]:
    return tuple(fidlib.to_bytes(i) for i in ilids)


def snapshot(version: int, view: NapView) -> nap_session_pb2.NapSessionResponse:
    """A Snapshot message for one NAP."""
    msg = nap_session_pb2.NapSessionResponse()
    snap = msg.snapshot
    ilids = _ilid_bytes(view.ilids)
    snap.version = version
    snap.ilid = ilids[0]
    snap.ilids.extend(ilids)
    snap.local_fqdns.extend(view.local_fqdns)
    for fqdn, routes in view.routes:
        add = snap.routes.add(fqdn=fqdn).servers.add
        for r in routes:
            add(server_nap_id=r.server, fid=_fid_bytes(r.fid), reverse_fid=_fid_bytes(r.reverse_fid), cost=r.cost)
    return msg
