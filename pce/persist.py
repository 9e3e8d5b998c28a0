"""What the PCE keeps in its durable store (issue 13, SFR-20) and how it is encoded; restore of a core from it.

Keys (values: protobuf messages from our contracts where one exists, else a small JSON document with a ``v`` field):

| key | value |
|---|---|
| ``format`` | ``{"v": 1}``: the layout version; an unknown one stops the PCE instead of misreading state |
| ``topology`` | ``flame.pce.v1.Topology`` as applied (ApplyTopology or the topology file), every link up |
| ``links/<link id>`` | ``{"v": 1, "down": true, "by": "operator" or "switch"}`` for every link down now |
| ``lids`` | ``{"v": 1, "bits": [...], "tables": [{"lids": [[from, to, hex]], "ilids": {nap: hex}}]}`` |
| ``registrations/<fqdn>/<nap>`` | ``flame.pce.v1.FqdnRegistration`` (owner, source, time) |
| ``authority`` | ``{"v": 1, "claims": {zone: owner}, "delegations": {zone: [subjects]}}`` (SFR-21) |
| ``version`` | ``{"v": 1, "version": n}``: the core's change counter |
| ``sessions/<nap>`` | ``{"v": 1, "pushed": n, "digest": hex}``: last version pushed to the NAP, digest of its content |
| ``config/topology_file`` | ``{"v": 1, "sha256": hex}`` of the topology file last applied from configuration |

A NAP that reconnects saying it applied the version stored for it gets no re-push while its view's digest matches.

:class:`Persister` mirrors what it wrote and, per section, writes only the difference in one atomic ``apply``. Pure
apart from the store it is given.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flame_control.api.flame.pce.v1 import routing_pb2, topology_pb2
from flame_control.naming import NameAuthority
from pce import lids as lidlib
from pce import topology as topolib
from pce.core import PceCore
from pce.registry import Registration, Registry
from pce.store.base import StateStore

log = logging.getLogger("flame.pce.persist")

FORMAT = 1
_SOURCES = {
    "config": routing_pb2.REGISTRATION_SOURCE_CONFIG,
    "rpc": routing_pb2.REGISTRATION_SOURCE_RPC,
    "nap": routing_pb2.REGISTRATION_SOURCE_NAP,
}
_SOURCE_NAMES = {v: k for k, v in _SOURCES.items()}
SECTIONS = ("topology", "links", "lids", "registrations", "authority", "version")


class StateFormatError(RuntimeError):
    """The store holds state this PCE cannot read (a newer layout, or corrupt values)."""


def _doc(**fields: Any) -> bytes:
    return json.dumps({"v": 1, **fields}, sort_keys=True, separators=(",", ":")).encode()


def _undoc(key: str, raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise StateFormatError(f"{key}: not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise StateFormatError(f"{key}: unknown document version {doc.get('v') if isinstance(doc, dict) else doc!r}")
    return doc


# -- encoders: core -> keys of one section ------------------------------------------------------------------------
def _topology(core: PceCore) -> dict[str, bytes]:
    if not core.topology.nodes:
        return {}
    msg = topolib.to_proto(core.topology)
    for link in msg.links:
        link.down = False  # link states live under links/ (they change often; the topology does not)
    return {"topology": msg.SerializeToString(deterministic=True)}


def _links(core: PceCore) -> dict[str, bytes]:
    return {
        f"links/{lk.id}": _doc(down=True, by="operator" if lk.id in core.admin_down else "switch")
        for lk in core.topology.links.values()
        if lk.down
    }


def _lids(core: PceCore) -> dict[str, bytes]:
    if not core.topology.nodes:
        return {}
    tables = [
        {
            "lids": [[a, b, f"{lid:x}"] for (a, b), lid in sorted(t.lids.items())],
            "ilids": {n: f"{i:x}" for n, i in sorted(t.ilids.items())},
        }
        for t in core.plan.tables
    ]
    return {"lids": _doc(bits=list(core.plan.bits_per_lid), tables=tables)}


@functools.lru_cache(maxsize=1 << 16)
def encode_registration(reg: Registration) -> bytes:
    """The stored form of one registration (cached: every sync compares all registrations)."""
    msg = routing_pb2.FqdnRegistration(
        fqdn=reg.fqdn, nap_id=reg.nap_id, owner=reg.owner, endpoint_id=reg.endpoint_id, source=_SOURCES[reg.source]
    )
    msg.registered_at.FromNanoseconds(int(reg.registered_at * 1e9))
    return msg.SerializeToString(deterministic=True)


def _registrations(core: PceCore) -> dict[str, bytes]:
    return {f"registrations/{f}/{n}": encode_registration(r) for (f, n), r in core.registry.registrations.items()}


def _authority(core: PceCore) -> dict[str, bytes]:
    return {"authority": _doc(**core.registry.authority.to_json())}


def _version(core: PceCore) -> dict[str, bytes]:
    return {"version": _doc(version=core.version)}


_ENCODERS: dict[str, Callable[[PceCore], dict[str, bytes]]] = {
    "topology": _topology,
    "links": _links,
    "lids": _lids,
    "registrations": _registrations,
    "authority": _authority,
    "version": _version,
}


def _section_of(key: str) -> str:
    return key.split("/", 1)[0]


def body_digest(body: bytes) -> str:
    """A digest of a NAP's snapshot content (:func:`pce.convert.snapshot_body`), stable across processes."""
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def file_digest(data: bytes) -> str:
    """sha256 of a configuration file's bytes."""
    return hashlib.sha256(data).hexdigest()


# -- restore ------------------------------------------------------------------------------------------------------
@dataclass
class Restored:
    """Everything read back from a store."""

    core: PceCore
    #: nap -> (last pushed version, digest of its view).
    sessions: dict[str, tuple[int, str]] = field(default_factory=dict)
    topology_file_sha256: str = ""
    revision: int = 0
    #: What the store held (the persister's starting mirror).
    raw: dict[str, bytes] = field(default_factory=dict)
    #: True when the stored LIDs were used as they were (False: recomputed because they did not fit the topology).
    lids_restored: bool = False


def _decode_plan(raw: bytes, topo: topolib.Topology) -> lidlib.LidPlan | None:
    doc = _undoc("lids", raw)
    tables = []
    for i, t in enumerate(doc["tables"]):
        lids = {(a, b): int(h, 16) for a, b, h in t["lids"]}
        ilids = {n: int(h, 16) for n, h in t["ilids"].items()}
        tables.append(lidlib.make_table(i, lids, ilids))
    plan = lidlib.LidPlan(tuple(tables), tuple(doc["bits"]))
    want_dirs, want_naps = set(lidlib.directions(topo)), set(topo.naps())
    if not tables or any(set(t.lids) != want_dirs or set(t.ilids) != want_naps for t in tables):
        return None
    return plan


def load(store: StateStore) -> Restored:
    """Read the whole PCE state and build a core that resumes it (same LIDs, registrations, link states, version)."""
    raw, revision = store.read_all()
    if "format" in raw and _undoc("format", raw["format"]).get("layout") != FORMAT:
        raise StateFormatError(f"the store's layout is not {FORMAT}: {raw['format']!r}")
    core = PceCore()
    out = Restored(core, revision=revision, raw=dict(raw))
    if "topology" in raw:
        msg = topology_pb2.Topology.FromString(raw["topology"])
        topo = topolib.from_proto(msg)
        admin = set()
        for key in (k for k in raw if k.startswith("links/")):
            link_id, doc = key.removeprefix("links/"), _undoc(key, raw[key])
            if link_id in topo.links and doc.get("down"):
                topo = topo.with_link_state(link_id, up=False)
                if doc.get("by", "operator") == "operator":
                    admin.add(link_id)
        plan = _decode_plan(raw["lids"], topo) if "lids" in raw else None
        out.lids_restored = plan is not None
        if plan is None:
            log.warning("stored LIDs do not fit the stored topology; recomputed")
        core.apply_topology(topo, plan)
        core.admin_down = admin
    registry = Registry()
    if "authority" in raw:
        doc = _undoc("authority", raw["authority"])
        doc.pop("v")
        registry.authority = NameAuthority.from_json(doc)
    for key in (k for k in raw if k.startswith("registrations/")):
        m = routing_pb2.FqdnRegistration.FromString(raw[key])
        reg = Registration(
            m.fqdn, m.nap_id, m.owner, m.endpoint_id, _SOURCE_NAMES.get(m.source, "rpc"),
            m.registered_at.ToNanoseconds() / 1e9,
        )  # fmt: skip
        registry.registrations[(reg.fqdn, reg.nap_id)] = reg
    core.registry = registry
    if "version" in raw:
        core.version = int(_undoc("version", raw["version"])["version"])
    for key in (k for k in raw if k.startswith("sessions/")):
        doc = _undoc(key, raw[key])
        out.sessions[key.removeprefix("sessions/")] = (int(doc["pushed"]), str(doc["digest"]))
    if "config/topology_file" in raw:
        out.topology_file_sha256 = str(_undoc("config/topology_file", raw["config/topology_file"])["sha256"])
    return out


# -- writes -------------------------------------------------------------------------------------------------------
class Persister:
    """Writes the difference between the core (per section) and what the store holds, atomically."""

    def __init__(self, store: StateStore, written: Mapping[str, bytes] | None = None) -> None:
        self.store = store
        self.written: dict[str, bytes] = dict(written or {})
        self.revision = 0
        self.writes = 0

    def sync(self, core: PceCore, sections: Iterable[str] = SECTIONS, extra: Mapping[str, bytes] | None = None) -> int:
        """Make the store hold the core's state of ``sections`` (the version always); returns keys written."""
        chosen = set(sections) | {"version"}
        want: dict[str, bytes] = {"format": _doc(layout=FORMAT)}
        for name in chosen:
            want.update(_ENCODERS[name](core))
        want.update(extra or {})
        puts = {k: v for k, v in want.items() if self.written.get(k) != v}
        deletes = [k for k in self.written if _section_of(k) in chosen and k not in want]
        return self._apply(puts, deletes)

    def sessions(self, pushed: Mapping[str, tuple[int, str]]) -> int:
        """Record the versions and view digests pushed to NAPs."""
        puts = {f"sessions/{nap}": _doc(pushed=v, digest=d) for nap, (v, d) in pushed.items()}
        return self._apply({k: v for k, v in puts.items() if self.written.get(k) != v}, [])

    def topology_file(self, sha256: str) -> int:
        """Record which topology file content was applied from configuration."""
        return self._apply({"config/topology_file": _doc(sha256=sha256)}, [])

    def _apply(self, puts: dict[str, bytes], deletes: list[str]) -> int:
        if not puts and not deletes:
            return 0
        self.revision = self.store.apply(puts, deletes)
        self.writes += 1
        self.written.update(puts)
        for k in deletes:
            self.written.pop(k, None)
        return len(puts) + len(deletes)


def decode_session(key: str, raw: bytes) -> tuple[int, str]:
    """A ``sessions/<nap>`` value: (last version pushed to the NAP, digest of its content)."""
    doc = _undoc(key, raw)
    return int(doc["pushed"]), str(doc["digest"])
