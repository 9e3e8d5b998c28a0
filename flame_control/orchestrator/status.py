"""A media service's status, conditions and event history (issue 14: status that never lies; ORCH-8, ORCH-9).

Pure core, no I/O: ``derive`` turns what the SFEMC reported (over a live watch) into a status and a message;
``Conditions`` keeps Kubernetes-style conditions with their last transition times; ``EventLog`` numbers every event
with a revision (increasing across orchestrator restarts: never below the wall clock in nanoseconds), keeps the last
events of each service and feeds WatchMediaService streams, including streams opened before the service exists and
streams resuming after a revision.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flame_control.api.flame.common.v1 import common_pb2
from flame_control.api.flame.orchestrator.v1 import orchestrator_pb2
from flame_control.api.flame.sfemc.v1 import sfemc_pb2

S = orchestrator_pb2
TRUE = common_pb2.CONDITION_STATUS_TRUE
FALSE = common_pb2.CONDITION_STATUS_FALSE
UNKNOWN = common_pb2.CONDITION_STATUS_UNKNOWN
FAILED_STATE = common_pb2.ENDPOINT_STATE_FAILED
#: Events kept per service for resuming watches.
HISTORY = 1000


@dataclass(frozen=True)
class Inputs:
    """What the status of one service is derived from."""

    deleting: bool
    generation: int
    observed_generation: int
    #: Node names the template in force declares.
    wanted: set[str]
    #: Endpoints as the SFEMC last reported them.
    endpoints: Iterable[sfemc_pb2.Endpoint]
    #: Is the SFEMC's endpoint watch live (a message or heartbeat within its silence limit)?
    watch_live: bool


def derive(i: Inputs) -> tuple[int, str]:
    """(status, message). RUNNING only when the watch is live and every endpoint is in its desired state and
    verified by the SFEMC; what cannot be told is UNKNOWN, never RUNNING."""
    if i.deleting:
        return S.SERVICE_STATUS_DELETING, ""
    if not i.watch_live:
        return S.SERVICE_STATUS_UNKNOWN, "the SFEMC's endpoint watch is down: endpoint states cannot be verified"
    if i.observed_generation < i.generation:
        return (S.SERVICE_STATUS_PENDING if i.observed_generation == 0 else S.SERVICE_STATUS_DEPLOYING), ""
    eps = list(i.endpoints)
    failed = [e for e in eps if e.state == FAILED_STATE]
    if failed:
        return S.SERVICE_STATUS_DEGRADED, "; ".join(f"{e.id}: {e.last_error}" for e in failed)
    have = {e.node_name for e in eps}
    if i.wanted <= have and all(e.state == e.desired_state for e in eps):
        unverified = [e for e in eps if not e.verified]
        if unverified:
            detail = "; ".join(f"{e.id}: {_why(e)}" for e in unverified[:5])
            return S.SERVICE_STATUS_UNKNOWN, f"{len(unverified)} endpoint(s) not verified: {detail}"
        return S.SERVICE_STATUS_RUNNING, ""
    return S.SERVICE_STATUS_DEPLOYING, ""


def _why(e: sfemc_pb2.Endpoint) -> str:
    for c in e.conditions:
        if c.type == "Verified":
            return f"{c.reason} {c.message}".strip()
    return "not verified"


_READY: dict[int, int] = {
    S.SERVICE_STATUS_RUNNING: TRUE,
    S.SERVICE_STATUS_UNKNOWN: UNKNOWN,
    S.SERVICE_STATUS_UNSPECIFIED: UNKNOWN,
}


@dataclass
class Conditions:
    """Conditions per service with the wall-clock time each last changed status (in memory)."""

    wall: Callable[[], float]
    _held: dict[tuple[str, str], tuple[int, str, str, float]] = field(default_factory=dict)

    def set(self, service: str, type_: str, status: int, reason: str, message: str = "") -> None:
        old = self._held.get((service, type_))
        since = old[3] if old is not None and old[0] == status else self.wall()
        self._held[(service, type_)] = (status, reason, message, since)

    def update(self, service: str, status: int, message: str, watch_live: bool, unverified: int) -> None:
        """The three conditions of a service from its status."""
        name = S.ServiceStatus.Name(status).removeprefix("SERVICE_STATUS_").title()  # type: ignore[arg-type]
        self.set(service, "Ready", _READY.get(status, FALSE), name, message)
        self.set(
            service,
            "SfemcWatch",
            TRUE if watch_live else FALSE,
            "WatchLive" if watch_live else "WatchLost",
            "" if watch_live else "no message or heartbeat from the SFEMC within the silence limit",
        )
        if not watch_live:
            self.set(service, "EndpointsVerified", UNKNOWN, "WatchLost")
        elif unverified:
            self.set(service, "EndpointsVerified", FALSE, "NotVerified", f"{unverified} endpoint(s)")
        else:
            self.set(service, "EndpointsVerified", TRUE, "AllVerified")

    def of(self, service: str) -> list[common_pb2.Condition]:
        out = []
        for (svc, type_), (status, reason, message, since) in sorted(self._held.items()):
            if svc != service:
                continue
            c = common_pb2.Condition(type=type_, status=status, reason=reason, message=message)  # type: ignore[arg-type]
            c.last_transition_time.FromNanoseconds(int(since * 1e9))
            out.append(c)
        return out

    def forget(self, service: str) -> None:
        for key in [k for k in self._held if k[0] == service]:
            del self._held[key]


@dataclass
class EventLog:
    """Revisions, per-service history and WatchMediaService subscribers."""

    wall_ns: Callable[[], int]
    revision: int = 0
    history: dict[str, collections.deque[S.WatchMediaServiceResponse]] = field(default_factory=dict)
    watchers: dict[str, list[asyncio.Queue[S.WatchMediaServiceResponse]]] = field(default_factory=dict)

    def next_revision(self) -> int:
        self.revision = max(self.revision + 1, self.wall_ns())
        return self.revision

    def record(self, name: str, msg: S.WatchMediaServiceResponse) -> None:
        """Stamp ``msg`` with a time and a revision, keep it, and send it to the service's watchers."""
        msg.time.FromNanoseconds(self.wall_ns())
        msg.revision = self.next_revision()
        self.history.setdefault(name, collections.deque(maxlen=HISTORY)).append(msg)
        for q in list(self.watchers.get(name, [])):
            q.put_nowait(msg)

    def since(self, name: str, revision: int) -> list[S.WatchMediaServiceResponse] | None:
        """Events of ``name`` after ``revision``, or None when some of them may be lost (a gap): gap-free when the
        history still holds the event at ``revision`` (or one before it), or holds everything since the service was
        created."""
        held = list(self.history.get(name, ()))
        if held and (held[0].revision <= revision or held[0].message == "created"):
            return [m for m in held if m.revision > revision]
        return None

    def subscribe(self, name: str) -> asyncio.Queue[S.WatchMediaServiceResponse]:
        q: asyncio.Queue[S.WatchMediaServiceResponse] = asyncio.Queue()
        self.watchers.setdefault(name, []).append(q)
        return q

    def unsubscribe(self, name: str, q: asyncio.Queue[S.WatchMediaServiceResponse]) -> None:
        queues = self.watchers.get(name, [])
        if q in queues:
            queues.remove(q)
        if not queues:
            self.watchers.pop(name, None)
