"""KPI evaluation core (CLMC-19, CLMC-20, CLMC-21, CLMC-22): pure, no clock, no I/O.

The engine asks storage for observations and hands them here with ``now``; this module decides state changes.

Semantics (chosen against the known faults of Kapacitor/Alertmanager deadman and threshold alerts):

- threshold: the value (raw latest point in the window, or an aggregate over the window) compared with ``threshold``;
  a firing alert clears only when the value passes ``clear_threshold`` (hysteresis). A group with no data in the
  window clears ("no data"): silence is the deadman KPI's job, so an alert never stays firing forever unobserved.
- relative: percent change of the aggregate between the current and the previous window.
- deadman: fires when a group that has reported before has been silent for ``deadman_period``; clears as soon as
  its newest point is within the period again. Groups never seen cannot fire. After an engine (re)start, deadman
  KPIs do not fire until one period has passed (data paused by the CLMC's own downtime is not an outage), but
  persisted firing alerts are kept and clear normally.
- ``for_duration``: the condition must hold continuously that long before the alert fires.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dc_field

from clmc.storage.base import AggKind, TagTuple

THRESHOLD, RELATIVE, DEADMAN = "threshold", "relative", "deadman"
GREATER, LESS, EITHER = "greater", "less", "either"


@dataclass(frozen=True)
class KpiSpec:
    """A validated KPI definition (see clmc.kpi_rules for the protobuf mapping)."""

    media_service: str
    name: str
    kind: str
    measurement: str
    field: str
    aggregation: AggKind | None
    window_ns: int
    group_by: tuple[str, ...] = ()
    scope: Mapping[str, str] = dc_field(default_factory=dict)
    comparison: str = GREATER
    threshold: float = 0.0
    clear_threshold: float = 0.0
    percentile: float = 50.0
    for_ns: int = 0
    deadman_ns: int = 0
    #: An infrastructure KPI: scope exactly as given, no flame_sfc added (CLMC-28).
    infrastructure: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """Identity: (media service, name)."""
        return (self.media_service, self.name)


@dataclass(frozen=True)
class GroupState:
    """Alert state of one group of one KPI (persisted)."""

    firing: bool = False
    pending_since_ns: int | None = None
    last_seen_ns: int | None = None
    value: float = math.nan


@dataclass(frozen=True)
class Transition:
    """A decided state change of one group."""

    group: TagTuple
    firing: bool
    value: float
    message: str


#: Per group: threshold -> value; relative -> (current, previous); deadman -> newest point time (ns).
Observations = Mapping[TagTuple, float | tuple[float, float] | int]


def _breach(spec: KpiSpec, value: float, limit: float) -> bool:
    if spec.comparison == LESS:
        return value < limit
    if spec.comparison == EITHER:
        return abs(value) > limit
    return value > limit


def _relative_change(cur: float, prev: float) -> float:
    if prev == 0:
        return 0.0 if cur == 0 else math.copysign(math.inf, cur)
    return (cur - prev) / abs(prev) * 100.0


def evaluate(
    spec: KpiSpec,
    states: Mapping[TagTuple, GroupState],
    observations: Observations,
    now_ns: int,
    started_ns: int,
) -> tuple[dict[TagTuple, GroupState], list[Transition]]:
    """New states of every group and the transitions (events) to publish."""
    new: dict[TagTuple, GroupState] = {}
    out: list[Transition] = []
    for group in sorted(set(states) | set(observations)):
        state = states.get(group, GroupState())
        obs = observations.get(group)
        if spec.kind == DEADMAN:
            seen = int(obs) if isinstance(obs, int | float) and not isinstance(obs, bool) else None
            last = max(filter(None, (seen, state.last_seen_ns)), default=None)
            silent_for = now_ns - last if last is not None else 0
            condition = last is not None and silent_for > spec.deadman_ns and now_ns - started_ns >= spec.deadman_ns
            clear = last is not None and silent_for <= spec.deadman_ns
            value = silent_for / 1e9
            state = replace(state, last_seen_ns=last)
            reason = f"no data for {value:.1f} s (period {spec.deadman_ns / 1e9:g} s)"
            cleared_reason = "reporting again"
        elif obs is None:
            condition, clear, value = False, True, math.nan
            reason, cleared_reason = "", "no data in the window"
        else:
            if spec.kind == RELATIVE:
                assert isinstance(obs, tuple)
                value = _relative_change(*obs)
            else:
                value = float(obs)  # type: ignore[arg-type]
            condition = _breach(spec, value, spec.threshold)
            clear = not _breach(spec, value, spec.clear_threshold)
            unit = "% change" if spec.kind == RELATIVE else ""
            reason = f"{spec.field} {value:g}{unit} breaches {spec.threshold:g}"
            cleared_reason = f"{spec.field} {value:g}{unit} back within {spec.clear_threshold:g}"
        if state.firing:
            if clear:
                out.append(Transition(group, False, value, cleared_reason))
                state = replace(state, firing=False, pending_since_ns=None)
        elif condition:
            since = state.pending_since_ns if state.pending_since_ns is not None else now_ns
            if now_ns - since >= spec.for_ns:
                out.append(Transition(group, True, value, reason))
                state = replace(state, firing=True, pending_since_ns=None)
            else:
                state = replace(state, pending_since_ns=since)
        else:
            state = replace(state, pending_since_ns=None)
        if spec.kind != DEADMAN and obs is None and not state.firing:
            continue  # nothing to remember about a quiet, unobserved group
        new[group] = replace(state, value=value)
    return new, out
