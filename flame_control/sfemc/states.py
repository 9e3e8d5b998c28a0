"""The SF endpoint state machine (SFEMC-5): which step moves an endpoint towards its desired state, and how long it
spent in each state.

States (FLAME CLMC model, ``flame.common.v1.EndpointState``)::

    UNPLACED --PLACE--> PLACING --> PLACED --BOOT--> BOOTING --> BOOTED --CONNECT--> CONNECTING --> CONNECTED
    UNPLACED <--REMOVE-- PLACED <--STOP-- BOOTED <--DISCONNECT-- CONNECTED

Stable states are the four an endpoint can be held in (and a desired state must be one of them); PLACING, BOOTING and
CONNECTING are entered while the upward step runs. Downward steps have no transient state of their own: the endpoint
stays in its state until the step succeeded (a disconnecting endpoint is still routable, so CONNECTED is the honest
state until its name is withdrawn). A failed step leaves the endpoint FAILED; the next attempt plans from the step's
source state (the last stable state), passed in as ``resume_from``. Every step is idempotent on the VIM/PCE side, so
an endpoint found in a transient state (a crash mid-step) resumes that step, or undoes it when the desired state is
below it.

Pure: no clock, no I/O; times are passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from flame_control.api.flame.common.v1 import common_pb2


class EndpointState(enum.IntEnum):
    """Python mirror of ``flame.common.v1.EndpointState`` (same numbers, so ``EndpointState(pb_value)`` works)."""

    UNSPECIFIED = 0
    UNPLACED = 1
    PLACING = 2
    PLACED = 3
    BOOTING = 4
    BOOTED = 5
    CONNECTING = 6
    CONNECTED = 7
    FAILED = 8

    @property
    def label(self) -> str:
        """Lower-case FLAME name ("connected"), as used in ``endpoint_config`` fields and ``state_durations`` keys."""
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> EndpointState:
        """The state named ``label`` ("connected", "CONNECTED" or "ENDPOINT_STATE_CONNECTED"); ValueError if none."""
        key = label.strip().upper().removeprefix("ENDPOINT_STATE_")
        try:
            return cls[key]
        except KeyError:
            raise ValueError(f"unknown endpoint state {label!r}") from None


def to_proto(state: EndpointState) -> common_pb2.EndpointState.ValueType:
    """The ``common_pb2.EndpointState`` value of ``state``."""
    return common_pb2.EndpointState.Value(f"ENDPOINT_STATE_{state.name}")


def from_proto(value: int) -> EndpointState:
    """The state of a ``common_pb2.EndpointState`` value; ValueError for a number the proto does not define."""
    common_pb2.EndpointState.Name(value)  # type: ignore[arg-type]  # ValueError for a number the proto lacks
    return EndpointState(value)


#: States an endpoint can be held in, lowest first; desired states are always one of these.
STABLE: tuple[EndpointState, ...] = (
    EndpointState.UNPLACED,
    EndpointState.PLACED,
    EndpointState.BOOTED,
    EndpointState.CONNECTED,
)
_RANK = {s: i for i, s in enumerate(STABLE)}


class Action(enum.Enum):
    """What the controller does to move an endpoint one stable state up or down."""

    PLACE = "place"
    BOOT = "boot"
    CONNECT = "connect"
    DISCONNECT = "disconnect"
    STOP = "stop"
    REMOVE = "remove"


@dataclass(frozen=True)
class Step:
    """One action: from ``source`` (stable), through ``transient`` while it runs, to ``target`` on success.

    For downward steps ``transient == source`` (the endpoint keeps its state until the step succeeded)."""

    action: Action
    source: EndpointState
    transient: EndpointState
    target: EndpointState

    @property
    def upward(self) -> bool:
        """True for PLACE, BOOT and CONNECT."""
        return _RANK[self.target] > _RANK[self.source]


_S = EndpointState
STEPS: Mapping[Action, Step] = {
    Action.PLACE: Step(Action.PLACE, _S.UNPLACED, _S.PLACING, _S.PLACED),
    Action.BOOT: Step(Action.BOOT, _S.PLACED, _S.BOOTING, _S.BOOTED),
    Action.CONNECT: Step(Action.CONNECT, _S.BOOTED, _S.CONNECTING, _S.CONNECTED),
    Action.DISCONNECT: Step(Action.DISCONNECT, _S.CONNECTED, _S.CONNECTED, _S.BOOTED),
    Action.STOP: Step(Action.STOP, _S.BOOTED, _S.BOOTED, _S.PLACED),
    Action.REMOVE: Step(Action.REMOVE, _S.PLACED, _S.PLACED, _S.UNPLACED),
}
_UP = {s.source: s for s in STEPS.values() if s.upward}
_DOWN = {s.source: s for s in STEPS.values() if not s.upward}
#: Transient state -> the upward step it belongs to, and the step that undoes it.
_IN_FLIGHT = {s.transient: s for s in STEPS.values() if s.upward}
_UNDO = {Action.PLACE: Action.REMOVE, Action.BOOT: Action.STOP, Action.CONNECT: Action.DISCONNECT}


def is_stable(state: EndpointState) -> bool:
    """True for UNPLACED, PLACED, BOOTED and CONNECTED."""
    return state in _RANK


def _check_desired(desired: EndpointState) -> None:
    if not is_stable(desired):
        raise ValueError(f"desired state must be one of {[s.label for s in STABLE]}, not {desired.label}")


def next_step(current: EndpointState, desired: EndpointState, resume_from: EndpointState | None = None) -> Step | None:
    """The step to run next to move an endpoint from ``current`` towards ``desired``, or None when it is there.

    ``current`` FAILED plans from ``resume_from`` (the source of the failed step, i.e. the last stable state;
    UNPLACED when unknown or UNSPECIFIED: placing is idempotent, the VIM adopts an instance it already has). A transient
    ``current`` (a step interrupted by a crash) resumes that step when ``desired`` is at or above its target, else
    undoes it. ValueError when ``desired`` is not a stable state or ``current`` is UNSPECIFIED.
    """
    _check_desired(desired)
    if current is EndpointState.FAILED:
        known = resume_from is not None and resume_from is not EndpointState.UNSPECIFIED
        current = resume_from if known and resume_from is not None else EndpointState.UNPLACED
        if not is_stable(current):
            raise ValueError(f"resume_from must be a stable state, not {current.label}")
    if current is EndpointState.UNSPECIFIED:
        raise ValueError("current state is unspecified")
    if current in _IN_FLIGHT:
        step = _IN_FLIGHT[current]
        return step if _RANK[desired] >= _RANK[step.target] else STEPS[_UNDO[step.action]]
    if _RANK[current] < _RANK[desired]:
        return _UP[current]
    if _RANK[current] > _RANK[desired]:
        return _DOWN[current]
    return None


def path(current: EndpointState, desired: EndpointState, resume_from: EndpointState | None = None) -> list[Step]:
    """Every step from ``current`` to ``desired`` when each succeeds (same rules as :func:`next_step`)."""
    steps: list[Step] = []
    step = next_step(current, desired, resume_from)
    while step is not None:
        steps.append(step)
        step = next_step(step.target, desired)
    return steps


@dataclass(frozen=True)
class StateClock:
    """Time an endpoint spent per state, from its transition times (seconds, any epoch).

    Same rule as the CLMC's ``endpoint_config`` (clmc/endpoint_config.py ``transition``): leaving a state adds the
    stay to ``<state>_sum`` and records it as ``<state>_mst`` (most recent stay); a transition timed before the
    current stay began counts as 0 s, never negative. Immutable: :meth:`enter` returns the next clock.
    """

    state: EndpointState
    since: float
    sums: Mapping[EndpointState, float] = field(default_factory=dict)
    most_recent: Mapping[EndpointState, float] = field(default_factory=dict)

    def enter(self, state: EndpointState, at: float) -> StateClock:
        """The clock after entering ``state`` at ``at`` (re-entering the current state closes and reopens it)."""
        stay = max(0.0, at - self.since)
        sums = dict(self.sums)
        msts = dict(self.most_recent)
        sums[self.state] = sums.get(self.state, 0.0) + stay
        msts[self.state] = stay
        return StateClock(state, max(at, self.since), sums, msts)

    def sum_s(self, state: EndpointState, now: float) -> float:
        """Total seconds in ``state`` up to ``now`` (the ongoing stay included)."""
        ongoing = max(0.0, now - self.since) if state is self.state else 0.0
        return self.sums.get(state, 0.0) + ongoing

    def durations(self, now: float) -> dict[str, float]:
        """``{label: total seconds}`` for every state visited so far, the current stay counted up to ``now``
        (what ``Endpoint.state_durations`` carries)."""
        out = {s.label: self.sum_s(s, now) for s in EndpointState if s in self.sums or s is self.state}
        return dict(sorted(out.items(), key=lambda kv: EndpointState.from_label(kv[0])))

    def fields(self, now: float) -> dict[str, float]:
        """``<state>_sum`` (the current stay counted up to ``now``) and ``<state>_mst`` (the most recent completed
        stay) for every state, 0 when never visited. At a transition time this equals the CLMC's endpoint_config."""
        out: dict[str, float] = {}
        for s in EndpointState:
            if s is EndpointState.UNSPECIFIED:
                continue
            out[f"{s.label}_sum"] = self.sum_s(s, now)
            out[f"{s.label}_mst"] = self.most_recent.get(s, 0.0)
        return out
