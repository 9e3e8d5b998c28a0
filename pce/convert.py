"""Conversions between the PCE core's values and flame.pce.v1 messages (thin adapter code, no logic)."""

from __future__ import annotations

import functools
import struct

from flame_control.api.flame.pce.v1 import nap_session_pb2, routing_pb2
from flame_control.icn import fid as fidlib
from flame_control.runtime.errors import FieldViolation, InvalidArgument
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
    if msg.metric not in _METRICS:  # an unknown enum number is refused, not read as the default (issue 13)
        raise InvalidArgument(
            [FieldViolation(f"{prefix}.metric", f"unknown metric {msg.metric}; use METRIC_HOPS, _WEIGHTED or _LATENCY")]
        )
    return parse_constraints(
        metric=_METRICS[msg.metric],
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


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: Encoded varints below 2**14 (every length in a snapshot; versions up to 16383).
_VARINTS = tuple(bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(1 << 14))


def _uvarint(value: int) -> bytes:
    return _VARINTS[value] if value < 1 << 14 else _varint(value)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (_VARINTS[n] if n < 1 << 14 else _varint(n)) + payload


def _fid32(value: int) -> bytes:
    # fidlib.to_bytes without its range check: int.to_bytes itself refuses negative values and values past 256 bits.
    return value.to_bytes(32, "big")


@functools.lru_cache(maxsize=1 << 16)
def _forward_fid_field(value: int) -> bytes:
    # NAPs behind one switch share their forward FIDs: encode each once.
    return b"\x12\x20" + _fid32(value)


_DOUBLE = struct.Struct("<d")
#: Encoded ServerRoute entries by the id of the (immutable) Route they encode; the entry keeps its route alive, so an
#: id cannot be reused while it is cached. Routes live across versions (the core keeps each on the leg its NAP shares
#: with the NAPs behind the same switch; a link change builds new ones only where a path changed), so a new snapshot
#: mostly re-encodes only the routes that changed. Same for each NAP's iLID tuple (_ILIDS).
_ENCODED: dict[int, tuple[Route, bytes]] = {}
_ILIDS: dict[int, tuple[tuple[int, ...], bytes, bytes]] = {}


@functools.lru_cache(maxsize=1 << 12)
def _string_field(tag: bytes, value: str) -> bytes:
    # NAP ids and FQDNs recur in every snapshot.
    return _field(tag, value.encode())


@functools.lru_cache(maxsize=1 << 12)
def _cost_field(cost: float) -> bytes:
    return b"\x21" + _DOUBLE.pack(cost) if cost else b""


def _route_field(r: Route) -> bytes:
    """The ``servers`` entry of a FqdnRoute (field 2) for one route."""
    hit = _ENCODED.get(id(r))
    if hit is not None and hit[0] is r:
        return hit[1]
    body = b"".join(
        (
            _string_field(b"\x0a", r.server),
            _forward_fid_field(r.fid),
            b"\x1a\x20",
            r.reverse_fid.to_bytes(32, "big"),  # int.to_bytes refuses negative values and values past 256 bits
            _cost_field(r.cost),
            b"\x28" + _uvarint(r.table) if r.table else b"",
            b"\x30" + _uvarint(r.reverse_table) if r.reverse_table else b"",
        )
    )
    data = b"\x12" + _VARINTS[len(body)] + body if len(body) < 1 << 14 else _field(b"\x12", body)
    if len(_ENCODED) > 1 << 15:
        _ENCODED.clear()
    _ENCODED[id(r)] = (r, data)
    return data


def _ilid_parts(ilids: tuple[int, ...]) -> tuple[bytes, bytes]:
    """Snapshot fields ``ilid`` (2: the first LID table's iLID) and ``ilids`` (5: every table's)."""
    hit = _ILIDS.get(id(ilids))
    if hit is not None and hit[0] is ilids:
        return hit[1], hit[2]
    encoded = [_fid32(i) for i in ilids]
    first = b"\x12\x20" + encoded[0] if encoded else b""
    every = b"\x2a\x20" + b"\x2a\x20".join(encoded) if encoded else b""
    if len(_ILIDS) > 1 << 14:
        _ILIDS.clear()
    _ILIDS[id(ilids)] = (ilids, first, every)
    return first, every


def snapshot_body(view: NapView) -> bytes:
    """The wire encoding of a NAP's Snapshot without its version field: what :func:`snapshot` sends after the version
    (and what the PCE digests to tell whether a NAP already has this content)."""
    first, every = _ilid_parts(view.ilids)
    parts = [first]
    for fqdn, routes in view.routes:
        parts.append(_field(b"\x1a", _string_field(b"\x0a", fqdn) + b"".join([_route_field(r) for r in routes])))
    for f in view.local_fqdns:
        parts.append(_string_field(b"\x22", f))
    parts.append(every)
    return b"".join(parts)


def snapshot(version: int, view: NapView, body: bytes | None = None) -> nap_session_pb2.NapSessionResponse:
    """A Snapshot message for one NAP: every route with its FIDs and LID tables (the flow-label values the NAP puts
    on its frames; in Bloom mode a FID is only leak-free in its own table).

    Encoded on the wire format directly from fragments cached per route and per iLID tuple, then parsed once: the
    same message the field-by-field builder makes (tests/unit/pce/test_sessions.py compares them), several times
    faster. ``body``: :func:`snapshot_body` of ``view`` when the caller already has it."""
    head = b"\x08" + _uvarint(version) if version else b""
    payload = head + (snapshot_body(view) if body is None else body)
    return nap_session_pb2.NapSessionResponse.FromString(_field(b"\x0a", payload))
