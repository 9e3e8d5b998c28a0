"""KPI evaluation with an injectable clock (CLMC-19, CLMC-20, CLMC-21, CLMC-22): threshold with hysteresis and
for-duration, relative change, deadman that fires AND clears, aggregated facts, alert state surviving a restart.
Storage is the real embedded SQLite store in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from clmc.kpi import DEADMAN, GREATER, THRESHOLD, GroupState, KpiSpec, evaluate
from clmc.kpi_engine import KpiEngine
from clmc.kpi_rules import spec_from_proto, spec_to_proto
from clmc.kpi_state import ClmcState
from clmc.storage.base import SeriesData
from clmc.storage.embedded import EmbeddedStore
from flame_control.api.flame.clmc.v1 import kpi_pb2
from flame_control.runtime.errors import InvalidArgument

S = 1_000_000_000
T0 = 1_700_000_000 * S


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def kpi(**kw: object) -> kpi_pb2.KpiDefinition:
    d = kpi_pb2.KpiDefinition(name="lat", media_service="svc", measurement="nap_http", field="latency_ms")
    for k, v in kw.items():
        if k in ("window", "for_duration", "deadman_period"):
            getattr(d, k).FromSeconds(v)  # type: ignore[arg-type]
        elif k in ("group_by",):
            d.group_by.extend(v)  # type: ignore[arg-type]
        else:
            setattr(d, k, v)
    return d


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.clock = Clock()
        self.store = EmbeddedStore(tmp / "m.sqlite")
        self.open()

    def open(self) -> None:
        self.state = ClmcState(self.tmp / "state.sqlite")
        self.engine = KpiEngine(self.store, self.state, self.clock)

    def restart(self) -> None:
        self.state.close()
        self.open()

    def point(self, value: float, loc: str = "a", at: int | None = None) -> None:
        tags = (("flame_location", loc), ("flame_sfc", "svc"))
        t = self.clock.now if at is None else at
        self.store.write([SeriesData("nap_http", tags, [t], {"latency_ms": [value]})])

    def step(self, seconds: float) -> list[tuple[int, float, dict[str, str]]]:
        self.clock.now += int(seconds * S)
        out = []
        for spec in self.engine.specs.values():
            out += [(e.state, e.value, dict(e.group)) for e in self.engine.evaluate_kpi(spec, self.clock.now)]
        return out


FIRING, CLEARED = kpi_pb2.KPI_STATE_FIRING, kpi_pb2.KPI_STATE_CLEARED


def test_clmc20_threshold_on_measured_value_with_hysteresis(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.engine.define(
        spec_from_proto(
            kpi(
                kind=kpi_pb2.KPI_KIND_THRESHOLD,
                comparison=kpi_pb2.COMPARISON_GREATER,
                threshold=90,
                clear_threshold=80,
                group_by=["flame_location"],
            )
        )
    )
    rig.point(50)
    assert rig.step(1) == []
    rig.point(95)
    assert rig.step(1) == [(FIRING, 95.0, {"flame_location": "a"})]
    rig.point(85)  # below the threshold but above the clear threshold: still firing, no flapping
    assert rig.step(1) == []
    rig.point(99)
    assert rig.step(1) == []  # already firing: no duplicate event
    rig.point(75)
    assert rig.step(1) == [(CLEARED, 75.0, {"flame_location": "a"})]


def test_clmc20_for_duration_requires_the_condition_to_hold(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.engine.define(
        spec_from_proto(
            kpi(kind=kpi_pb2.KPI_KIND_THRESHOLD, comparison=kpi_pb2.COMPARISON_GREATER, threshold=90, for_duration=10)
        )
    )
    rig.point(95)
    assert rig.step(1) == []
    rig.point(50)  # condition broken: pending resets
    assert rig.step(5) == []
    for _ in range(10):
        rig.point(95)
        assert rig.step(1) == []
    rig.point(95)
    assert [e[0] for e in rig.step(1)] == [FIRING]


def test_clmc21_threshold_on_aggregated_fact_p95_over_window(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.engine.define(
        spec_from_proto(
            kpi(
                kind=kpi_pb2.KPI_KIND_THRESHOLD,
                comparison=kpi_pb2.COMPARISON_GREATER,
                threshold=100,
                aggregation=kpi_pb2.AGGREGATION_PERCENTILE,
                percentile=95,
                window=60,
            )
        )
    )
    for i in range(100):
        rig.point(float(i), at=rig.clock.now - i * S // 10)
    assert rig.step(0.5) == []  # p95 of 0..99 is 94
    for i in range(20):
        rig.point(500.0, at=rig.clock.now - i * S // 100)
    ((state, value, _),) = rig.step(0.5)
    assert state == FIRING and value == 500.0


def test_clmc21_relative_change_between_windows(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.engine.define(
        spec_from_proto(
            kpi(
                kind=kpi_pb2.KPI_KIND_RELATIVE,
                comparison=kpi_pb2.COMPARISON_GREATER,
                threshold=50,
                aggregation=kpi_pb2.AGGREGATION_MEAN,
                window=10,
            )
        )
    )
    for i in range(10):
        rig.point(100.0, at=rig.clock.now - 19 * S + i * S // 2)  # previous window: mean 100
        rig.point(120.0, at=rig.clock.now - 5 * S + i * S // 2)  # current window: +20 %
    assert rig.step(0) == []
    rig.clock.now += 10 * S
    for i in range(10):
        rig.point(200.0, at=rig.clock.now - 5 * S + i * S // 2)  # +66 % against 120
    ((state, value, _),) = rig.step(0)
    assert state == FIRING and value == pytest.approx(200 / 120 * 100 - 100)


def test_clmc22_deadman_fires_on_silence_and_clears_when_data_resumes(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.engine.define(
        spec_from_proto(kpi(kind=kpi_pb2.KPI_KIND_DEADMAN, deadman_period=10, field="", group_by=["flame_location"]))
    )
    rig.engine.started_ns = rig.clock.now - 60 * S
    rig.point(1, "a")
    rig.point(1, "b")
    assert rig.step(5) == []
    rig.point(1, "b")  # b keeps reporting, a goes silent
    assert rig.step(5) == []
    rig.point(1, "b")
    events = rig.step(1)
    assert events == [(FIRING, pytest.approx(11.0), {"flame_location": "a"})]
    assert rig.step(1) == []  # no repeated firing
    rig.point(1, "a")
    assert [(e[0], e[2]) for e in rig.step(0.1)] == [(CLEARED, {"flame_location": "a"})]
    assert rig.step(1) == []


def test_clmc22_deadman_never_fires_for_unseen_groups_nor_during_startup_grace(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.engine.define(spec_from_proto(kpi(kind=kpi_pb2.KPI_KIND_DEADMAN, deadman_period=10)))
    rig.engine.started_ns = rig.clock.now
    assert rig.step(60) == []  # nothing ever reported: nothing to be silent about
    rig.point(1, at=rig.clock.now - 30 * S)
    rig.restart()  # the engine restarts: old data, but the outage may be our own downtime
    rig.engine.started_ns = rig.clock.now
    assert rig.step(5) == []
    assert [e[0] for e in rig.step(6)] == [FIRING]


def test_clmc22_alert_state_survives_a_restart_without_refiring_and_still_clears(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.engine.define(
        spec_from_proto(kpi(kind=kpi_pb2.KPI_KIND_THRESHOLD, comparison=kpi_pb2.COMPARISON_GREATER, threshold=90))
    )
    rig.point(95)
    assert [e[0] for e in rig.step(1)] == [FIRING]
    rig.restart()
    assert list(rig.engine.specs) == [("svc", "lat")]
    rig.point(96)
    assert rig.step(1) == []  # still firing from before the restart: not raised twice
    rig.point(10)
    assert [e[0] for e in rig.step(1)] == [CLEARED]
    seqs = [e.sequence for e in rig.state.events_after(0)]
    assert seqs == sorted(seqs) and len(seqs) == 2


def test_clmc19_invalid_kpi_lists_every_violation() -> None:
    with pytest.raises(InvalidArgument) as exc:
        spec_from_proto(kpi_pb2.KpiDefinition(kind=kpi_pb2.KPI_KIND_RELATIVE, group_by=["flame_ue"]))
    fields = {v.field for v in exc.value.violations}
    assert {
        "kpi.name",
        "kpi.media_service",
        "kpi.measurement",
        "kpi.field",
        "kpi.aggregation",
        "kpi.window",
        "kpi.group_by[0]",
        "kpi.threshold",
    } <= fields
    with pytest.raises(InvalidArgument, match="hysteresis"):
        spec_from_proto(
            kpi(kind=kpi_pb2.KPI_KIND_THRESHOLD, comparison=kpi_pb2.COMPARISON_GREATER, threshold=5, clear_threshold=6)
        )


def test_definition_round_trips_with_defaults() -> None:
    spec = spec_from_proto(kpi(kind=kpi_pb2.KPI_KIND_THRESHOLD, comparison=kpi_pb2.COMPARISON_LESS, threshold=3))
    assert spec.clear_threshold == 3 and spec.window_ns == 60 * S and spec.scope == {"flame_sfc": "svc"}
    assert spec_from_proto(spec_to_proto(spec)) == spec


def test_pure_evaluate_clears_a_threshold_alert_when_its_group_has_no_data() -> None:
    spec = KpiSpec("svc", "k", THRESHOLD, "m", "f", None, 60 * S, comparison=GREATER, threshold=1, clear_threshold=1)
    group = (("flame_location", "a"),)
    states, events = evaluate(spec, {group: GroupState(firing=True)}, {}, T0, T0)
    assert [e.firing for e in events] == [False] and states == {}
    dead = KpiSpec("svc", "d", DEADMAN, "m", "", None, 0, deadman_ns=10 * S)
    states, events = evaluate(dead, {}, {group: T0 - 20 * S}, T0, T0 - 100 * S)
    assert [e.firing for e in events] == [True] and states[group].firing


def _firing_latency_kpi(rig: Rig, threshold: float = 90) -> KpiSpec:
    spec = spec_from_proto(
        kpi(
            kind=kpi_pb2.KPI_KIND_THRESHOLD,
            comparison=kpi_pb2.COMPARISON_GREATER,
            threshold=threshold,
            group_by=["flame_location"],
        )
    )
    rig.engine.define(spec)
    rig.point(500)
    assert rig.step(1) == [(FIRING, 500.0, {"flame_location": "a"})]
    return spec


def test_clmc19_redefining_the_same_kpi_keeps_a_firing_alert_which_then_clears(tmp_path: Path) -> None:
    """Issue 15: the orchestrator re-defines every KPI on each service update; an identical definition must keep the
    alert state, so the alert firing at 500 clears when the value falls to 70 (it stayed firing for good before)."""
    rig = Rig(tmp_path)
    spec = _firing_latency_kpi(rig)
    events = rig.engine.define(spec_from_proto(spec_to_proto(spec)))
    assert rig.state.alerts(spec.key)[(("flame_location", "a"),)].firing
    assert events == []  # same definition: no event
    rig.point(70)
    assert rig.step(1) == [(CLEARED, 70.0, {"flame_location": "a"})]


def test_clmc19_changed_kpi_clears_what_was_firing_under_the_old_definition(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    spec = _firing_latency_kpi(rig)
    changed = spec_from_proto(_with_threshold(spec, 1000))
    events = rig.engine.define(changed)
    assert [(e.state, dict(e.group), e.kpi) for e in events] == [(CLEARED, {"flame_location": "a"}, "lat")]
    assert events[0].sequence > 0 and "redefined" in events[0].message
    assert rig.state.alerts(spec.key) == {}
    assert [e.sequence for e in rig.state.events_after(0)][-1] == events[0].sequence  # in the numbered log
    rig.point(500)
    assert rig.step(1) == []  # 500 does not breach the new threshold of 1000


def test_clmc19_deleted_kpi_clears_what_was_firing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    spec = _firing_latency_kpi(rig)
    deleted, events = rig.engine.delete(spec.key)
    assert deleted
    assert [(e.state, dict(e.group), e.value) for e in events] == [(CLEARED, {"flame_location": "a"}, 500.0)]
    assert "deleted" in events[0].message and events[0].sequence > 0
    assert rig.engine.delete(spec.key) == (False, [])


def _with_threshold(spec: KpiSpec, threshold: float) -> kpi_pb2.KpiDefinition:
    d = spec_to_proto(spec)
    d.threshold = threshold
    d.clear_threshold = threshold
    return d
