"""Decision logic for StateChange surrogate policies (SFEMC-4): monitoring data in, desired endpoint states out.

Inputs are KPI events from the CLMC (``on_kpi_event``), metric values the SFEMC polls itself (``on_metric``), the
passing of time (``tick``) and operator overrides (``set_override``); each returns the :class:`Decision` list of
desired-state changes it caused. Pure: every call is given ``now`` (seconds, any monotonic epoch).

Rules, per policy:

- *Condition* (what the trigger says now), with hysteresis. threshold ``gt``: fires when value > threshold, clears
  when value < clear_threshold (clear_threshold <= threshold; defaults to threshold); ``lt`` mirrors it. Values inside
  the band change nothing. relative: the same test on the percent change against the previous value. deadman: fires
  when no data arrived for ``window_s`` (``on_metric(None)`` after a window of silence), clears on data. KPI trigger:
  fires while a matching KPI event group is firing (the CLMC's KPI has its own hysteresis).
- *Applied direction* (what the policy asks of its targets): follows the condition, but after the policy acted it does
  not act again, in either direction, for ``cooldown_s``. The latest condition is remembered and applied by
  ``tick`` once the cooldown ended (``pending_until`` says when), so a clear that arrived during cooldown is not lost,
  and a flip and flip-back inside the cooldown is no action at all.
- A policy applied as fired requests ``to_state``; one that cleared after firing requests ``from_state``; one that
  never fired requests nothing.

Per target: an operator override wins; else the highest state requested by a fired policy; else the highest
``from_state`` of its cleared policies; else its initial (held) state.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field

from flame_control.api.flame.sfemc.v1 import sfemc_pb2
from flame_control.runtime.errors import FieldViolation, InvalidArgument
from flame_control.sfemc.states import EndpointState, from_proto, is_stable


class TriggerKind(enum.StrEnum):
    """How a metric trigger reads its value."""

    THRESHOLD = "threshold"
    RELATIVE = "relative"
    DEADMAN = "deadman"


class Comparison(enum.StrEnum):
    """Direction of a threshold or relative trigger."""

    GT = "gt"
    LT = "lt"


#: Aggregations the SFEMC's metric poller knows (CLMC query functions).
AGGREGATIONS = frozenset({"mean", "max", "min", "sum", "count", "last", "median", "p95", "p99"})


@dataclass(frozen=True)
class Trigger:
    """Mirror of ``flame.sfemc.v1.Trigger``: a KPI name, or a condition on ``measurement.field``."""

    kpi: str = ""
    measurement: str = ""
    field: str = ""
    aggregation: str = "mean"
    window_s: float = 60.0
    kind: TriggerKind = TriggerKind.THRESHOLD
    comparison: Comparison = Comparison.GT
    threshold: float = 0.0
    #: None = same as ``threshold``.
    clear_threshold: float | None = None
    scope: Mapping[str, str] = dc_field(default_factory=dict)

    @property
    def clear(self) -> float:
        """The effective clear threshold."""
        return self.threshold if self.clear_threshold is None else self.clear_threshold

    @property
    def is_kpi(self) -> bool:
        """True for a KPI-event trigger."""
        return bool(self.kpi)


@dataclass(frozen=True)
class Policy:
    """Mirror of ``flame.sfemc.v1.SurrogatePolicy``."""

    name: str
    targets: tuple[str, ...]
    trigger: Trigger
    to_state: EndpointState
    from_state: EndpointState
    cooldown_s: float = 30.0


@dataclass(frozen=True)
class Decision:
    """A target's desired state changed: from ``from_state`` to ``to_state`` at ``at``, because of ``policy``
    (empty for an operator override)."""

    node: str
    from_state: EndpointState
    to_state: EndpointState
    policy: str
    reason: str
    at: float


def policy_from_proto(pb: sfemc_pb2.SurrogatePolicy, default_cooldown_s: float = 30.0, at: str = "") -> Policy:
    """The policy of a proto message (``at``: field path prefix for errors, e.g. ``policies[2]``). An unset cooldown
    takes ``default_cooldown_s``; a clear_threshold of 0 means unset (proto3 gives it no presence); an unset window
    is 60 s; empty kind/comparison/aggregation mean threshold/gt/mean. InvalidArgument for a kind or comparison
    that is not one of ours; every other rule is checked by :func:`policy_problems`."""
    t = pb.trigger
    prefix = f"{at}." if at else ""
    bad: list[FieldViolation] = []
    kind_text = t.kind.strip().lower() or TriggerKind.THRESHOLD.value
    cmp_text = t.comparison.strip().lower() or Comparison.GT.value
    if kind_text not in {k.value for k in TriggerKind}:
        bad.append(FieldViolation(f"{prefix}trigger.kind", f"{t.kind!r} is not threshold, relative or deadman"))
    if cmp_text not in {c.value for c in Comparison}:
        bad.append(FieldViolation(f"{prefix}trigger.comparison", f"{t.comparison!r} is not gt or lt"))
    if bad:
        raise InvalidArgument(bad)
    trigger = Trigger(
        kpi=t.kpi,
        measurement=t.measurement,
        field=t.field,
        aggregation=t.aggregation.strip().lower() or "mean",
        window_s=t.window.ToTimedelta().total_seconds() if t.HasField("window") else 60.0,
        kind=TriggerKind(kind_text),
        comparison=Comparison(cmp_text),
        threshold=t.threshold,
        clear_threshold=t.clear_threshold if t.clear_threshold != 0.0 else None,
        scope=dict(t.scope),
    )
    cooldown = pb.cooldown.ToTimedelta().total_seconds() if pb.HasField("cooldown") else default_cooldown_s
    return Policy(pb.name, tuple(pb.targets), trigger, _state_of(pb.to_state), _state_of(pb.from_state), cooldown)


def policies_from_proto(pbs: Iterable[sfemc_pb2.SurrogatePolicy], default_cooldown_s: float = 30.0) -> list[Policy]:
    """:func:`policy_from_proto` for a list, every conversion problem reported at once (``policies[i].…``)."""
    out: list[Policy] = []
    bad: list[FieldViolation] = []
    for i, pb in enumerate(pbs):
        try:
            out.append(policy_from_proto(pb, default_cooldown_s, f"policies[{i}]"))
        except InvalidArgument as exc:
            bad += exc.violations
    if bad:
        raise InvalidArgument(bad)
    return out


def _state_of(value: int) -> EndpointState:
    try:
        return from_proto(value)
    except ValueError:
        return EndpointState.UNSPECIFIED  # an unknown number: reported by policy_problems as not stable


def policy_problems(policies: Iterable[Policy], nodes: Iterable[str]) -> list[FieldViolation]:
    """Every problem of a policy set for a service with endpoints ``nodes`` (field paths ``policies[i].…``)."""
    known = set(nodes)
    out: list[FieldViolation] = []
    seen: set[str] = set()
    for i, p in enumerate(policies):
        at = f"policies[{i}]"
        found: list[tuple[str, str]] = []
        bad = found.append
        if not p.name:
            bad(("name", "required"))
        elif p.name in seen:
            bad(("name", f"duplicate policy name {p.name!r}"))
        seen.add(p.name)
        if not p.targets:
            bad(("targets", "at least one target endpoint is required"))
        for j, t in enumerate(p.targets):
            if t not in known:
                bad((f"targets[{j}]", f"unknown endpoint node {t!r}"))
        for path, state in (("to_state", p.to_state), ("from_state", p.from_state)):
            if not is_stable(state):
                bad((path, "must be UNPLACED, PLACED, BOOTED or CONNECTED"))
        if p.to_state == p.from_state:
            bad(("to_state", "must differ from from_state"))
        if not (p.cooldown_s >= 0 and math.isfinite(p.cooldown_s)):
            bad(("cooldown", "must be a non-negative duration"))
        out += [FieldViolation(f"{at}.{path}", why) for path, why in found]
        out += [FieldViolation(f"{at}.trigger.{v.field}", v.description) for v in _trigger_problems(p.trigger)]
    return out


def _trigger_problems(t: Trigger) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if t.kpi:
        if t.measurement or t.field:
            out.append(FieldViolation("kpi", "a trigger names either a KPI or a measurement/field, not both"))
        return out
    if not t.measurement:
        out.append(FieldViolation("measurement", "required unless the trigger names a KPI"))
    if not t.field and t.kind is not TriggerKind.DEADMAN:
        out.append(FieldViolation("field", "required for threshold and relative triggers"))
    if t.aggregation not in AGGREGATIONS:
        out.append(FieldViolation("aggregation", f"must be one of {sorted(AGGREGATIONS)}"))
    if not (t.window_s > 0 and math.isfinite(t.window_s)):
        out.append(FieldViolation("window", "must be a positive duration"))
    if not (math.isfinite(t.threshold) and math.isfinite(t.clear)):
        out.append(FieldViolation("threshold", "must be finite"))
    elif t.kind is not TriggerKind.DEADMAN:
        if t.comparison is Comparison.GT and t.clear > t.threshold:
            out.append(FieldViolation("clear_threshold", "must be <= threshold for gt (hysteresis band below it)"))
        if t.comparison is Comparison.LT and t.clear < t.threshold:
            out.append(FieldViolation("clear_threshold", "must be >= threshold for lt (hysteresis band above it)"))
    return out


def scope_matches(scope: Mapping[str, str], group: Mapping[str, str]) -> bool:
    """True when every scope tag is present in ``group`` with the same value (an empty scope matches any group)."""
    return all(group.get(k) == v for k, v in scope.items())


@dataclass
class _PolicyState:
    """What the engine knows about one policy."""

    condition: bool = False
    applied: bool = False
    acted: bool = False
    last_action_at: float | None = None
    previous: float | None = None
    last_data_at: float = 0.0
    firing_groups: set[tuple[tuple[str, str], ...]] = dc_field(default_factory=set)
    why: str = ""


class PolicyEngine:
    """Desired states of a media service's endpoints under its policies (see the module docstring for the rules)."""

    def __init__(self, policies: Iterable[Policy], initial: Mapping[str, EndpointState], now: float) -> None:
        self.policies: dict[str, Policy] = {}
        self.initial: dict[str, EndpointState] = {}
        self._state: dict[str, _PolicyState] = {}
        self._overrides: dict[str, EndpointState] = {}
        self.apply(policies, initial, now)

    # --- configuration ---------------------------------------------------------------------------------------------

    def apply(self, policies: Iterable[Policy], initial: Mapping[str, EndpointState], now: float) -> list[Decision]:
        """Replace the policy set and the endpoints' initial states. A policy whose definition is unchanged keeps its
        condition, direction and cooldown; new or changed ones start cleared. InvalidArgument on any problem (nothing
        changes then)."""
        plist = list(policies)
        problems = policy_problems(plist, initial)
        for node, state in initial.items():
            if not is_stable(state):
                problems.append(FieldViolation(f"endpoints[{node}].initial_state", "must be a stable state"))
        if problems:
            raise InvalidArgument(problems)
        before = self._all_desired()
        old, old_state = self.policies, self._state
        self.policies = {p.name: p for p in plist}
        self.initial = dict(initial)
        self._state = {
            p.name: old_state[p.name] if old.get(p.name) == p else _PolicyState(last_data_at=now) for p in plist
        }
        self._overrides = {n: s for n, s in self._overrides.items() if n in self.initial}
        return self._changes(before, "", "policies replaced", now)

    def metric_policies(self) -> list[Policy]:
        """Policies whose trigger the SFEMC polls (metric triggers), by name: what to query and feed to on_metric."""
        return [p for _, p in sorted(self.policies.items()) if not p.trigger.is_kpi]

    # --- inputs ----------------------------------------------------------------------------------------------------

    def on_kpi_event(self, kpi_name: str, firing: bool, group: Mapping[str, str], now: float) -> list[Decision]:
        """A KPI event from the CLMC: policies triggered by ``kpi_name`` whose scope matches ``group`` take it."""
        key = tuple(sorted(group.items()))
        out: list[Decision] = []
        for name, p in sorted(self.policies.items()):
            if p.trigger.kpi != kpi_name or not scope_matches(p.trigger.scope, group):
                continue
            st = self._state[name]
            if firing:
                st.firing_groups.add(key)
            else:
                st.firing_groups.discard(key)
            label = ",".join(f"{k}={v}" for k, v in key) or "all"
            why = f"KPI {kpi_name} {'firing' if firing else 'cleared'} for {label}"
            out += self._update(name, bool(st.firing_groups), why, now)
        return out

    def on_metric(self, policy_name: str, value: float | None, now: float) -> list[Decision]:
        """The aggregated value of a metric policy's window (None = no data in the window). Unknown names and KPI
        policies are ignored (a poll may finish after the policy set was replaced)."""
        p = self.policies.get(policy_name)
        if p is None or p.trigger.is_kpi:
            return []
        t, st = p.trigger, self._state[policy_name]
        what = f"{t.aggregation}({t.measurement}.{t.field or '*'}) over {t.window_s:g}s"
        if t.kind is TriggerKind.DEADMAN:
            if value is not None:
                st.last_data_at = max(st.last_data_at, now)
                return self._update(policy_name, False, f"{what}: data again", now)
            silent = now - st.last_data_at
            if silent >= t.window_s:
                return self._update(policy_name, True, f"{what}: no data for {silent:g}s", now)
            return self._update(policy_name, st.condition, "", now)
        if value is None or math.isnan(value):
            return self._update(policy_name, st.condition, "", now)
        signal = value
        if t.kind is TriggerKind.RELATIVE:
            prev, st.previous = st.previous, value
            if prev is None:
                return self._update(policy_name, st.condition, "", now)
            signal = _percent_change(prev, value)
            what = f"change of {what} ({prev:g} -> {value:g})"
            unit = "%"
        else:
            unit = ""
        condition = _hysteresis(st.condition, signal, t)
        op = ">" if (t.comparison is Comparison.GT) == condition else "<"
        bound = t.threshold if condition else t.clear
        why = f"{what} = {signal:g}{unit} {op} {bound:g}{unit}" if condition != st.condition else ""
        return self._update(policy_name, condition, why, now)

    def tick(self, now: float) -> list[Decision]:
        """Apply every remembered direction whose policy's cooldown has ended."""
        out: list[Decision] = []
        for name in sorted(self.policies):
            out += self._update(name, self._state[name].condition, "", now)
        return out

    def set_override(self, node: str, state: EndpointState | None, now: float, reason: str = "") -> list[Decision]:
        """Hold ``node`` at ``state`` whatever the policies say (None clears the override). KeyError for an unknown
        node, ValueError for a state that is not stable."""
        if node not in self.initial:
            raise KeyError(node)
        if state is not None and not is_stable(state):
            raise ValueError(f"override must be a stable state, not {state.label}")
        before = self._all_desired()
        if state is None:
            self._overrides.pop(node, None)
        else:
            self._overrides[node] = state
        why = reason or ("operator override cleared" if state is None else f"operator override to {state.label}")
        return self._changes(before, "", why, now)

    # --- outputs ---------------------------------------------------------------------------------------------------

    def desired(self, node: str) -> EndpointState:
        """The state ``node`` should be in now. KeyError for an unknown node."""
        if node in self._overrides:
            return self._overrides[node]
        fired: list[EndpointState] = []
        cleared: list[EndpointState] = []
        for name, p in self.policies.items():
            if node not in p.targets:
                continue
            st = self._state[name]
            if st.applied:
                fired.append(p.to_state)
            elif st.acted:
                cleared.append(p.from_state)
        if fired:
            return max(fired)
        if cleared:
            return max(cleared)
        return self.initial[node]

    def overridden(self, node: str) -> bool:
        """True while an operator override holds ``node``."""
        return node in self._overrides

    def fired(self, policy_name: str) -> bool:
        """True while ``policy_name`` asks for its ``to_state``."""
        return self._state[policy_name].applied

    def pending_until(self, now: float) -> float | None:
        """When :meth:`tick` has something to apply (a direction held back by a cooldown), or None. Never before
        ``now``."""
        times = [
            st.last_action_at + self.policies[name].cooldown_s
            for name, st in self._state.items()
            if st.condition != st.applied and st.last_action_at is not None
        ]
        return max(now, min(times)) if times else None

    # --- internals -------------------------------------------------------------------------------------------------

    def _all_desired(self) -> dict[str, EndpointState]:
        return {n: self.desired(n) for n in self.initial}

    def _update(self, name: str, condition: bool, why: str, now: float) -> list[Decision]:
        st, p = self._state[name], self.policies[name]
        st.condition = condition
        if why:
            st.why = why
        if st.condition == st.applied:
            return []
        if st.last_action_at is not None and now - st.last_action_at < p.cooldown_s:
            return []  # remembered; tick applies it when the cooldown ends
        before = self._all_desired()
        st.applied, st.acted, st.last_action_at = st.condition, True, now
        verb = "fired" if st.applied else "cleared"
        return self._changes(before, name, f"policy {name} {verb}: {st.why}".rstrip(": "), now)

    def _changes(self, before: Mapping[str, EndpointState], policy: str, why: str, now: float) -> list[Decision]:
        out = []
        for node in sorted(self.initial):
            after = self.desired(node)
            if before.get(node, self.initial[node]) != after:
                out.append(Decision(node, before.get(node, self.initial[node]), after, policy, why, now))
        return out


def _hysteresis(condition: bool, signal: float, t: Trigger) -> bool:
    if t.comparison is Comparison.GT:
        return signal >= t.clear if condition else signal > t.threshold
    return signal <= t.clear if condition else signal < t.threshold


def _percent_change(previous: float, value: float) -> float:
    if previous == 0:
        return 0.0 if value == 0 else math.copysign(math.inf, value)
    return (value - previous) / abs(previous) * 100.0
