"""The SFEMC's durable endpoint table (SFEMC-5): what each media service asked for (specs, policies, owner) and
where each endpoint is (state, VIM instance, address, durations). Crash-only: the file is the truth the controller
resumes from; the VIMs' labelled instances are adopted on top of it (no duplicates after a crash).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from flame_control.api.flame.common.v1 import common_pb2
from flame_control.api.flame.sfemc.v1 import sfemc_pb2


def endpoint_id(media_service: str, node_name: str) -> str:
    """Endpoint ids are "<media service>/<node name>"."""
    return f"{media_service}/{node_name}"


def needs_new_instance(old: sfemc_pb2.EndpointSpec, new: sfemc_pb2.EndpointSpec) -> bool:
    """True when the change cannot be applied to the running instance (image, VIM, site, resources...); only
    ``initial_state`` and ``location`` change in place."""
    a, b = sfemc_pb2.EndpointSpec(), sfemc_pb2.EndpointSpec()
    a.CopyFrom(old)
    b.CopyFrom(new)
    for m in (a, b):
        m.ClearField("initial_state")
        m.ClearField("location")
    return a.SerializeToString(deterministic=True) != b.SerializeToString(deterministic=True)


@dataclass
class Check:
    """The "Verified" condition of an endpoint: did the last check confirm its state (not persisted)."""

    #: flame.common.v1.ConditionStatus value.
    status: int = common_pb2.CONDITION_STATUS_UNKNOWN
    reason: str = "NotVerified"
    message: str = "not verified since the SFEMC started"
    #: Wall-clock time ``status`` last changed (0 = since the SFEMC started).
    since: float = 0.0


@dataclass
class EndpointRecord:
    """One endpoint: its spec and where it is."""

    media_service: str
    spec: sfemc_pb2.EndpointSpec
    state: int = common_pb2.ENDPOINT_STATE_UNPLACED
    #: Wall-clock time it entered ``state``.
    state_since: float = 0.0
    instance_id: str = ""
    address: str = ""
    last_error: str = ""
    #: Seconds spent per state name (lower case) so far, not counting the current stay.
    durations: dict[str, float] = field(default_factory=dict)
    #: The stable state to resume from after FAILED.
    resume_from: int = common_pb2.ENDPOINT_STATE_UNPLACED
    #: The spec removed from the desired set: drive to UNPLACED, then drop the record.
    removing: bool = False
    #: A spec waiting for the old instance to be removed (change that needs a new instance).
    next_spec: sfemc_pb2.EndpointSpec | None = None
    #: Operator override of the desired state (0 = none).
    override: int = 0
    #: Whether the FQDN registration this endpoint made went through the NAP agent (else straight to the PCE).
    via_nap: bool = False
    #: Result of the last verification of ``state`` (issue 14); runtime only: after a restart nothing is verified.
    check: Check = field(default_factory=lambda: Check())

    @property
    def id(self) -> str:
        return endpoint_id(self.media_service, self.spec.node_name)

    def to_json(self) -> dict[str, Any]:
        return {
            "media_service": self.media_service,
            "spec": json_format.MessageToDict(self.spec),
            "state": self.state,
            "state_since": self.state_since,
            "instance_id": self.instance_id,
            "address": self.address,
            "last_error": self.last_error,
            "durations": self.durations,
            "resume_from": self.resume_from,
            "removing": self.removing,
            "next_spec": json_format.MessageToDict(self.next_spec) if self.next_spec is not None else None,
            "override": self.override,
            "via_nap": self.via_nap,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EndpointRecord:
        nxt = d.get("next_spec")
        return cls(
            media_service=d["media_service"],
            spec=json_format.ParseDict(d["spec"], sfemc_pb2.EndpointSpec()),
            state=int(d["state"]),
            state_since=float(d["state_since"]),
            instance_id=d.get("instance_id", ""),
            address=d.get("address", ""),
            last_error=d.get("last_error", ""),
            durations={k: float(v) for k, v in d.get("durations", {}).items()},
            resume_from=int(d.get("resume_from", common_pb2.ENDPOINT_STATE_UNPLACED)),
            removing=bool(d.get("removing", False)),
            next_spec=json_format.ParseDict(nxt, sfemc_pb2.EndpointSpec()) if nxt else None,
            override=int(d.get("override", 0)),
            via_nap=bool(d.get("via_nap", False)),
        )


@dataclass
class ServiceRecord:
    """What one media service asked the SFEMC for."""

    name: str
    owner: str
    policies: list[sfemc_pb2.SurrogatePolicy] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "owner": self.owner,
            "policies": [json_format.MessageToDict(p) for p in self.policies],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ServiceRecord:
        return cls(
            d["name"],
            d.get("owner", ""),
            [json_format.ParseDict(p, sfemc_pb2.SurrogatePolicy()) for p in d["policies"]],
        )


@dataclass
class EndpointTable:
    """Every service and endpoint the SFEMC manages, persisted as one JSON document (atomic replace)."""

    path: Path
    services: dict[str, ServiceRecord] = field(default_factory=dict)
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)
    #: Sequence of the last KPI event applied (resume point of the CLMC subscription).
    kpi_sequence: int = 0
    #: Extra documents of other cores (images, delegations), stored in the same file.
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> EndpointTable:
        table = cls(path)
        if path.exists():
            doc = json.loads(path.read_text())
            table.services = {s["name"]: ServiceRecord.from_json(s) for s in doc.get("services", [])}
            recs = [EndpointRecord.from_json(e) for e in doc.get("endpoints", [])]
            table.endpoints = {r.id: r for r in recs}
            table.kpi_sequence = int(doc.get("kpi_sequence", 0))
            table.extras = doc.get("extras", {})
        return table

    def save(self) -> None:
        doc = {
            "services": [s.to_json() for _, s in sorted(self.services.items())],
            "endpoints": [e.to_json() for _, e in sorted(self.endpoints.items())],
            "kpi_sequence": self.kpi_sequence,
            "extras": self.extras,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def of_service(self, name: str) -> list[EndpointRecord]:
        return [e for _, e in sorted(self.endpoints.items()) if e.media_service == name]
