"""SFEMC-5: the SF endpoint state machine (steps, paths, failure retry) and per-state durations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clmc.endpoint_config import transition as clmc_transition
from flame_control.api.flame.common.v1 import common_pb2
from flame_control.sfemc.states import (
    STABLE,
    Action,
    EndpointState,
    StateClock,
    from_proto,
    next_step,
    path,
    to_proto,
)

S = EndpointState


def test_sfemc5_states_mirror_the_proto_enum() -> None:
    """Every proto EndpointState has a Python twin with the same number and name, both ways."""
    for name, number in common_pb2.EndpointState.items():
        state = from_proto(number)
        assert int(state) == number
        assert to_proto(state) == number
        assert f"ENDPOINT_STATE_{state.name}" == name
    assert S.from_label("connected") is S.CONNECTED
    assert S.from_label("ENDPOINT_STATE_PLACED") is S.PLACED
    assert S.BOOTED.label == "booted"
    with pytest.raises(ValueError):
        from_proto(99)
    with pytest.raises(ValueError):
        S.from_label("running")


def test_sfemc5_full_path_up_and_down() -> None:
    """unplaced -> connected is PLACE, BOOT, CONNECT through the transient states; back down is DISCONNECT, STOP,
    REMOVE without transient states (the endpoint keeps its honest state until the step succeeded)."""
    up = path(S.UNPLACED, S.CONNECTED)
    assert [s.action for s in up] == [Action.PLACE, Action.BOOT, Action.CONNECT]
    assert [(s.source, s.transient, s.target) for s in up] == [
        (S.UNPLACED, S.PLACING, S.PLACED),
        (S.PLACED, S.BOOTING, S.BOOTED),
        (S.BOOTED, S.CONNECTING, S.CONNECTED),
    ]
    down = path(S.CONNECTED, S.UNPLACED)
    assert [s.action for s in down] == [Action.DISCONNECT, Action.STOP, Action.REMOVE]
    assert all(s.transient == s.source for s in down)
    assert [s.action for s in path(S.CONNECTED, S.BOOTED)] == [Action.DISCONNECT]
    assert [s.action for s in path(S.PLACED, S.BOOTED)] == [Action.BOOT]
    assert path(S.BOOTED, S.BOOTED) == []
    assert next_step(S.CONNECTED, S.CONNECTED) is None


@given(st.sampled_from(STABLE), st.sampled_from(STABLE))
def test_sfemc5_every_path_between_stable_states_is_a_chain(a: EndpointState, b: EndpointState) -> None:
    """Any stable -> stable path is a contiguous chain of steps that ends at the desired state, never overshooting."""
    steps = path(a, b)
    assert len(steps) == abs(STABLE.index(a) - STABLE.index(b))
    current = a
    for step in steps:
        assert step.source == current
        current = step.target
    assert current == b


def test_sfemc5_failed_step_retries_from_the_last_stable_state() -> None:
    """A failed BOOT (placed -> booting -> FAILED) is retried as BOOT from PLACED; a failed STOP as STOP from BOOTED;
    FAILED with no known source plans from UNPLACED (PLACE is idempotent: the VIM adopts what it has)."""
    assert next_step(S.FAILED, S.CONNECTED, resume_from=S.PLACED).action is Action.BOOT
    assert next_step(S.FAILED, S.PLACED, resume_from=S.BOOTED).action is Action.STOP
    assert next_step(S.FAILED, S.PLACED, resume_from=S.PLACED) is None
    assert [s.action for s in path(S.FAILED, S.CONNECTED, S.BOOTED)] == [Action.CONNECT]
    assert next_step(S.FAILED, S.BOOTED).action is Action.PLACE
    assert next_step(S.FAILED, S.BOOTED, resume_from=S.UNSPECIFIED).action is Action.PLACE
    assert next_step(S.CONNECTED, S.CONNECTED, resume_from=S.UNSPECIFIED) is None  # only read when FAILED
    with pytest.raises(ValueError):
        next_step(S.FAILED, S.BOOTED, resume_from=S.BOOTING)


def test_sfemc5_interrupted_step_is_resumed_or_undone() -> None:
    """An endpoint found in a transient state (a crash mid-step) resumes the step when the desired state is at or
    above its target, else undoes it (REMOVE/STOP/DISCONNECT are idempotent)."""
    assert next_step(S.PLACING, S.CONNECTED).action is Action.PLACE
    assert next_step(S.PLACING, S.PLACED).action is Action.PLACE
    assert next_step(S.PLACING, S.UNPLACED).action is Action.REMOVE
    assert next_step(S.BOOTING, S.PLACED).action is Action.STOP
    assert next_step(S.CONNECTING, S.BOOTED).action is Action.DISCONNECT
    assert [s.action for s in path(S.CONNECTING, S.UNPLACED)] == [Action.DISCONNECT, Action.STOP, Action.REMOVE]


@pytest.mark.parametrize("desired", [S.PLACING, S.BOOTING, S.CONNECTING, S.FAILED, S.UNSPECIFIED])
def test_sfemc5_desired_state_must_be_stable(desired: EndpointState) -> None:
    with pytest.raises(ValueError):
        next_step(S.UNPLACED, desired)


def test_sfemc5_state_clock_sums_and_most_recent_stays() -> None:
    """Durations per state: sums include the ongoing stay up to now; mst is the latest completed stay; a transition
    timed before the current stay began counts 0 s."""
    clock = StateClock(S.UNPLACED, 100.0)
    clock = clock.enter(S.PLACING, 101.0).enter(S.PLACED, 103.0).enter(S.BOOTING, 104.0).enter(S.BOOTED, 110.0)
    clock = clock.enter(S.PLACED, 112.0).enter(S.BOOTING, 113.0).enter(S.BOOTED, 115.0)
    assert clock.durations(120.0) == {
        "unplaced": 1.0,
        "placing": 2.0,
        "placed": 2.0,
        "booting": 8.0,
        "booted": 2.0 + 5.0,
    }
    fields = clock.fields(120.0)
    assert fields["booting_mst"] == 2.0
    assert fields["booted_mst"] == 2.0
    assert fields["booted_sum"] == 7.0
    assert fields["connected_sum"] == 0.0
    late = clock.enter(S.CONNECTING, 114.0)  # older than the current stay
    assert late.sums[S.BOOTED] == 2.0
    assert late.most_recent[S.BOOTED] == 0.0
    assert late.since == 115.0


@given(st.lists(st.tuples(st.sampled_from(list(S)[1:]), st.integers(0, 10**6)), max_size=20))
def test_sfemc5_state_clock_agrees_with_clmc_endpoint_config(steps: list[tuple[EndpointState, int]]) -> None:
    """The SFEMC's durations equal what the CLMC derives as endpoint_config from the same transitions (CLMC-7), also
    when transitions arrive out of order."""
    clock = StateClock(S.UNPLACED, 0.0)
    track = clmc_transition(None, "unplaced", 0)
    at_ms = 0
    for state, dt in steps:
        at_ms += dt - 200_000  # sometimes backwards
        clock = clock.enter(state, at_ms / 1000)
        track = clmc_transition(track, state.label, at_ms * 1_000_000)
        for s in S:
            if s is S.UNSPECIFIED:
                continue
            assert clock.sums.get(s, 0.0) == pytest.approx(track.sums.get(s.label, 0.0))
            assert clock.most_recent.get(s, 0.0) == pytest.approx(track.msts.get(s.label, 0.0))
