"""SFEMC-4: decision logic matching monitoring data against StateChange surrogate policies, with an injectable clock
(every call is given ``now``): hysteresis, relative and deadman triggers, KPI scope, cooldown, override, several
policies per target, and no flapping under oscillating load."""

from __future__ import annotations

from itertools import pairwise

import pytest
from google.protobuf import duration_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from flame_control.api.flame.common.v1 import common_pb2
from flame_control.api.flame.sfemc.v1 import sfemc_pb2
from flame_control.runtime.errors import InvalidArgument
from flame_control.sfemc.decision import (
    Comparison,
    Decision,
    Policy,
    PolicyEngine,
    Trigger,
    TriggerKind,
    policies_from_proto,
    scope_matches,
)
from flame_control.sfemc.states import EndpointState

S = EndpointState


def metric(
    name: str = "load",
    targets: tuple[str, ...] = ("edge",),
    threshold: float = 80.0,
    clear: float | None = 50.0,
    kind: TriggerKind = TriggerKind.THRESHOLD,
    comparison: Comparison = Comparison.GT,
    cooldown: float = 0.0,
    to_state: EndpointState = S.CONNECTED,
    from_state: EndpointState = S.PLACED,
    window: float = 10.0,
) -> Policy:
    trig = Trigger(
        measurement="nap_http",
        field="requests",
        window_s=window,
        kind=kind,
        comparison=comparison,
        threshold=threshold,
        clear_threshold=clear,
    )
    return Policy(name, targets, trig, to_state, from_state, cooldown)


def kpi(name: str, kpi_name: str, scope: dict[str, str], to_state: EndpointState = S.CONNECTED) -> Policy:
    return Policy(name, ("edge",), Trigger(kpi=kpi_name, scope=scope), to_state, S.PLACED, 0.0)


def engine(*policies: Policy, initial: dict[str, EndpointState] | None = None) -> PolicyEngine:
    return PolicyEngine(policies, initial or {"edge": S.PLACED, "dc": S.CONNECTED}, now=0.0)


def test_sfemc4_threshold_fires_above_and_clears_only_below_clear_threshold() -> None:
    """Hysteresis: fires when the value passes 80, stays while it falls to 50..80, clears below 50."""
    e = engine(metric())
    assert e.desired("edge") is S.PLACED
    assert e.on_metric("load", 79.0, 1) == []
    [d] = e.on_metric("load", 81.0, 2)
    assert (d.node, d.from_state, d.to_state, d.policy, d.at) == ("edge", S.PLACED, S.CONNECTED, "load", 2)
    assert "81 > 80" in d.reason
    assert e.desired("edge") is S.CONNECTED
    assert e.on_metric("load", 60.0, 3) == []  # inside the band: still fired
    assert e.on_metric("load", 50.0, 4) == []  # at the clear threshold: not passed
    [d] = e.on_metric("load", 49.0, 5)
    assert (d.from_state, d.to_state) == (S.CONNECTED, S.PLACED)
    assert "49 < 50" in d.reason
    assert e.desired("dc") is S.CONNECTED  # untouched target keeps its initial state


def test_sfemc4_clear_threshold_defaults_to_threshold_and_lt_mirrors() -> None:
    e = engine(metric(clear=None, comparison=Comparison.LT, threshold=10.0, to_state=S.BOOTED))
    assert e.on_metric("load", 10.0, 1) == []
    assert [d.to_state for d in e.on_metric("load", 9.0, 2)] == [S.BOOTED]
    assert [d.to_state for d in e.on_metric("load", 11.0, 3)] == [S.PLACED]


def test_sfemc4_no_data_holds_a_threshold_trigger() -> None:
    e = engine(metric())
    e.on_metric("load", 90.0, 1)
    assert e.on_metric("load", None, 2) == []
    assert e.on_metric("load", float("nan"), 3) == []
    assert e.desired("edge") is S.CONNECTED


def test_sfemc4_relative_trigger_on_percent_change() -> None:
    """relative: +50 % against the previous value fires; a drop of 20 % or more clears (clear_threshold -20)."""
    e = engine(metric(kind=TriggerKind.RELATIVE, threshold=50.0, clear=-20.0))
    assert e.on_metric("load", 100.0, 1) == []  # no previous value yet
    assert e.on_metric("load", 140.0, 2) == []  # +40 %
    [d] = e.on_metric("load", 220.0, 3)  # +57 %
    assert d.to_state is S.CONNECTED and "%" in d.reason
    assert e.on_metric("load", 200.0, 4) == []  # -9 %: inside the band
    assert [d.to_state for d in e.on_metric("load", 150.0, 5)] == [S.PLACED]  # -25 %


def test_sfemc4_deadman_fires_after_a_window_of_silence_and_clears_on_data() -> None:
    e = engine(metric(kind=TriggerKind.DEADMAN, window=10.0, to_state=S.CONNECTED))
    assert e.on_metric("load", None, 5.0) == []  # 5 s of silence since the engine started
    [d] = e.on_metric("load", None, 10.0)
    assert d.to_state is S.CONNECTED and "no data for 10s" in d.reason
    [d] = e.on_metric("load", 3.0, 12.0)
    assert d.to_state is S.PLACED
    assert e.on_metric("load", None, 21.0) == []  # 9 s since the last data
    assert [d.to_state for d in e.on_metric("load", None, 22.0)] == [S.CONNECTED]


def test_sfemc4_kpi_event_scope_matching() -> None:
    """A KPI event acts on policies naming that KPI whose scope tags all equal the event's group; a tag missing in
    the group is no match; an empty scope matches any group."""
    assert scope_matches({}, {"flame_location": "edge-1"})
    assert scope_matches({"flame_location": "edge-1"}, {"flame_location": "edge-1", "flame_sfc": "vod"})
    assert not scope_matches({"flame_location": "edge-1"}, {"flame_location": "edge-2"})
    assert not scope_matches({"flame_location": "edge-1"}, {})
    e = engine(kpi("p", "latency_high", {"flame_location": "edge-1"}))
    assert e.on_kpi_event("latency_high", True, {"flame_location": "edge-2"}, 1) == []
    assert e.on_kpi_event("other_kpi", True, {"flame_location": "edge-1"}, 1) == []
    [d] = e.on_kpi_event("latency_high", True, {"flame_location": "edge-1", "flame_sfc": "vod"}, 2)
    assert d.to_state is S.CONNECTED and "edge-1" in d.reason
    [d] = e.on_kpi_event("latency_high", False, {"flame_location": "edge-1", "flame_sfc": "vod"}, 3)
    assert d.to_state is S.PLACED


def test_sfemc4_unscoped_kpi_policy_fires_while_any_group_fires() -> None:
    e = engine(kpi("p", "latency_high", {}))
    e.on_kpi_event("latency_high", True, {"flame_location": "a"}, 1)
    e.on_kpi_event("latency_high", True, {"flame_location": "b"}, 2)
    assert e.on_kpi_event("latency_high", False, {"flame_location": "a"}, 3) == []  # b still fires
    assert [d.to_state for d in e.on_kpi_event("latency_high", False, {"flame_location": "b"}, 4)] == [S.PLACED]


def test_sfemc4_cooldown_holds_then_tick_applies_the_latest_wish() -> None:
    """After acting, a policy waits out its cooldown; a clear arriving meanwhile is remembered and applied by tick
    when the cooldown ends; a flip and flip-back inside the cooldown is no action."""
    e = engine(metric(cooldown=30.0))
    assert e.pending_until(0) is None
    assert len(e.on_metric("load", 90.0, 100.0)) == 1
    assert e.on_metric("load", 10.0, 110.0) == []  # cleared, but cooling down
    assert e.desired("edge") is S.CONNECTED
    assert e.pending_until(111.0) == 130.0
    assert e.tick(129.9) == []
    [d] = e.tick(130.0)
    assert (d.to_state, d.policy, d.at) == (S.PLACED, "load", 130.0)
    assert "10 < 50" in d.reason
    assert e.pending_until(130.0) is None
    # flip (fire) and flip back (clear) inside the next cooldown: nothing to apply
    assert e.on_metric("load", 90.0, 140.0) == []
    assert e.pending_until(140.0) == 160.0
    assert e.on_metric("load", 10.0, 150.0) == []
    assert e.pending_until(150.0) is None
    assert e.tick(200.0) == []
    assert e.desired("edge") is S.PLACED


def test_sfemc4_pending_until_is_never_in_the_past() -> None:
    e = engine(metric(cooldown=5.0))
    e.on_metric("load", 90.0, 0.0)
    e.on_metric("load", 10.0, 1.0)
    assert e.pending_until(3.0) == 5.0
    assert e.pending_until(9.0) == 9.0


def test_sfemc4_operator_override_beats_policies() -> None:
    e = engine(metric())
    [d] = e.set_override("edge", S.BOOTED, 1.0)
    assert (d.to_state, d.policy) == (S.BOOTED, "") and e.overridden("edge")
    assert e.on_metric("load", 90.0, 2.0) == []  # the policy acts, the override holds
    assert e.fired("load") and e.desired("edge") is S.BOOTED
    [d] = e.set_override("edge", None, 3.0)
    assert d.to_state is S.CONNECTED and not e.overridden("edge")
    with pytest.raises(KeyError):
        e.set_override("nope", S.PLACED, 4.0)
    with pytest.raises(ValueError):
        e.set_override("edge", S.BOOTING, 4.0)


def test_sfemc4_several_policies_on_one_target_highest_fired_state_wins() -> None:
    """Highest to_state among fired policies; when none fires, the highest from_state of cleared ones; else the
    initial state."""
    warm = metric("warm", threshold=50.0, clear=40.0, to_state=S.BOOTED, from_state=S.PLACED)
    hot = metric("hot", threshold=80.0, clear=70.0, to_state=S.CONNECTED, from_state=S.BOOTED)
    e = engine(warm, hot)
    assert e.desired("edge") is S.PLACED
    [d] = e.on_metric("warm", 60.0, 1)
    assert (d.to_state, d.policy) == (S.BOOTED, "warm")
    [d] = e.on_metric("hot", 90.0, 2)
    assert (d.to_state, d.policy) == (S.CONNECTED, "hot")
    assert e.on_metric("warm", 10.0, 3) == []  # hot still fired: CONNECTED stays
    [d] = e.on_metric("hot", 10.0, 4)
    assert (d.to_state, d.policy) == (S.BOOTED, "hot")  # hot cleared -> its from_state BOOTED (warm standby)
    assert e.desired("edge") is S.BOOTED


def test_sfemc4_scale_down_policy_below_the_initial_state() -> None:
    """A firing policy may ask for less than the initial state (park a data-centre surrogate at night)."""
    park = Policy("park", ("dc",), Trigger(kpi="night"), S.PLACED, S.CONNECTED, 0.0)
    e = engine(park)
    [d] = e.on_kpi_event("night", True, {}, 1)
    assert (d.node, d.to_state) == ("dc", S.PLACED)
    [d] = e.on_kpi_event("night", False, {}, 2)
    assert d.to_state is S.CONNECTED


def test_sfemc4_apply_keeps_unchanged_policies_and_drops_removed_ones() -> None:
    p = metric(cooldown=30.0)
    e = engine(p)
    e.on_metric("load", 90.0, 1.0)
    assert e.apply([p], {"edge": S.PLACED, "dc": S.CONNECTED}, 2.0) == []  # same definition: state kept
    assert e.on_metric("load", 10.0, 3.0) == []  # and so is the cooldown
    [d] = e.apply([], {"edge": S.PLACED, "dc": S.CONNECTED}, 4.0)
    assert (d.node, d.to_state, d.reason) == ("edge", S.PLACED, "policies replaced")
    assert e.on_metric("load", 90.0, 5.0) == []  # unknown now: ignored


@pytest.mark.parametrize(
    ("policy", "path"),
    [
        (metric(targets=("ghost",)), "policies[0].targets[0]"),
        (metric(targets=()), "policies[0].targets"),
        (metric(to_state=S.BOOTING), "policies[0].to_state"),
        (metric(to_state=S.PLACED, from_state=S.PLACED), "policies[0].to_state"),
        (metric(cooldown=-1.0), "policies[0].cooldown"),
        (metric(threshold=80.0, clear=90.0), "policies[0].trigger.clear_threshold"),
        (metric(comparison=Comparison.LT, threshold=10.0, clear=5.0), "policies[0].trigger.clear_threshold"),
        (metric(window=0.0), "policies[0].trigger.window"),
        (Policy("k", ("edge",), Trigger(kpi="x", measurement="m"), S.CONNECTED, S.PLACED), "policies[0].trigger.kpi"),
        (Policy("m", ("edge",), Trigger(), S.CONNECTED, S.PLACED), "policies[0].trigger.measurement"),
    ],
)
def test_sfemc4_bad_policies_are_rejected_with_their_path(policy: Policy, path: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        engine(policy)
    assert path in [v.field for v in exc.value.violations]


def test_sfemc4_duplicate_policy_names_rejected() -> None:
    with pytest.raises(InvalidArgument) as exc:
        engine(metric("a"), metric("a"))
    assert [v.field for v in exc.value.violations] == ["policies[1].name"]


def test_sfemc4_policies_from_proto() -> None:
    """Proto SurrogatePolicy -> Policy: durations, enum strings, clear_threshold 0 = unset, unknown kinds listed."""
    pb = sfemc_pb2.SurrogatePolicy(
        name="edge-on-demand",
        targets=["edge"],
        trigger=sfemc_pb2.Trigger(
            measurement="nap_http",
            field="requests",
            aggregation="MEAN",
            window=duration_pb2.Duration(seconds=30),
            kind="Threshold",
            comparison="gt",
            threshold=100,
            scope={"flame_location": "edge-1"},
        ),
        to_state=common_pb2.ENDPOINT_STATE_CONNECTED,
        from_state=common_pb2.ENDPOINT_STATE_PLACED,
        cooldown=duration_pb2.Duration(seconds=45),
    )
    [p] = policies_from_proto([pb])
    assert p.trigger.window_s == 30.0 and p.trigger.aggregation == "mean"
    assert p.trigger.kind is TriggerKind.THRESHOLD and p.trigger.clear == 100.0
    assert p.trigger.scope == {"flame_location": "edge-1"}
    assert (p.to_state, p.from_state, p.cooldown_s) == (S.CONNECTED, S.PLACED, 45.0)
    [d] = policies_from_proto([sfemc_pb2.SurrogatePolicy(name="x")], default_cooldown_s=7.0)
    assert d.cooldown_s == 7.0 and d.trigger.window_s == 60.0
    bad = sfemc_pb2.SurrogatePolicy(name="y", trigger=sfemc_pb2.Trigger(kind="spike", comparison="ge"))
    with pytest.raises(InvalidArgument) as exc:
        policies_from_proto([pb, bad])
    assert [v.field for v in exc.value.violations] == ["policies[1].trigger.kind", "policies[1].trigger.comparison"]


# --- no flapping (hypothesis) --------------------------------------------------------------------------------------


def _actions(decisions: list[Decision]) -> list[float]:
    return [d.at for d in decisions]


@settings(max_examples=200, deadline=None)
@given(
    cooldown=st.floats(1.0, 120.0),
    samples=st.lists(st.tuples(st.floats(0.01, 30.0), st.floats(0.0, 200.0)), min_size=1, max_size=80),
    tick_between=st.booleans(),
)
def test_sfemc4_no_flap_at_most_one_action_per_cooldown_window(
    cooldown: float, samples: list[tuple[float, float]], tick_between: bool
) -> None:
    """Whatever the load does, one policy's actions are at least ``cooldown`` apart: at most one action in any
    (half-open) window of length C, counting actions from inputs and from ticks."""
    e = engine(metric(cooldown=cooldown))
    now, acts = 0.0, []
    for dt, value in samples:
        now += dt
        if tick_between:
            until = e.pending_until(now)
            if until is not None and until <= now:
                acts += _actions(e.tick(now))
        acts += _actions(e.on_metric("load", value, now))
    acts += _actions(e.tick(now + cooldown))
    assert all(b - a >= cooldown for a, b in pairwise(acts))


@settings(max_examples=200, deadline=None)
@given(
    start_fired=st.booleans(),
    values=st.lists(st.floats(50.0, 80.0), min_size=1, max_size=100),
    comparison=st.sampled_from(list(Comparison)),
)
def test_sfemc4_no_flap_oscillation_inside_the_hysteresis_band_is_no_action(
    start_fired: bool, values: list[float], comparison: Comparison
) -> None:
    """A value oscillating between clear_threshold and threshold (inclusive) never moves an endpoint, whichever state
    the trigger is in."""
    if comparison is Comparison.GT:
        p, outside = metric(threshold=80.0, clear=50.0), (90.0 if start_fired else 10.0)
    else:
        p, outside = metric(comparison=Comparison.LT, threshold=50.0, clear=80.0), (10.0 if start_fired else 90.0)
    e = engine(p)
    e.on_metric("load", outside, 0.0)
    state = e.desired("edge")
    for i, v in enumerate(values, start=1):
        assert e.on_metric("load", v, float(i)) == []
        assert e.tick(float(i)) == []
    assert e.desired("edge") is state


@settings(max_examples=100, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.floats(0.01, 20.0), st.sampled_from(["a", "b"]), st.booleans(), st.sampled_from(["x", "y"])),
        max_size=60,
    ),
    cooldown=st.floats(1.0, 60.0),
)
def test_sfemc4_no_flap_kpi_policies_respect_cooldown_per_policy(
    events: list[tuple[float, str, bool, str]], cooldown: float
) -> None:
    """Two KPI policies on one target under a random event storm: each policy's actions stay a cooldown apart and
    the final desired state equals what the latest conditions ask once cooldowns have passed."""
    pa = Policy("a", ("edge",), Trigger(kpi="a"), S.BOOTED, S.PLACED, cooldown)
    pb = Policy("b", ("edge",), Trigger(kpi="b"), S.CONNECTED, S.PLACED, cooldown)
    e = engine(pa, pb)
    now = 0.0
    last_action: dict[str, float] = {}
    firing: dict[str, set[str]] = {"a": set(), "b": set()}
    for dt, name, on, loc in events:
        now += dt
        (firing[name].add if on else firing[name].discard)(loc)
        for d in e.on_kpi_event(name, on, {"flame_location": loc}, now) + e.tick(now):
            if d.policy in last_action:
                assert d.at - last_action[d.policy] >= cooldown
            last_action[d.policy] = d.at
    e.tick(now + cooldown)
    want = S.CONNECTED if firing["b"] else S.BOOTED if firing["a"] else None
    assert e.desired("edge") is (want or S.PLACED)
