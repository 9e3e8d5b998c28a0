"""Backend contract (CLMC-9 store, CLMC-10, CLMC-11, CLMC-16): the same assertions against the embedded SQLite store and
a real private influxd. Point identity dedup, typed fields, tag/time filters, aggregations, deletes that really
delete."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from clmc.storage.base import AggKind, AggQuery, MetricStore, Selection, SeriesData, StorageError
from clmc.storage.embedded import EmbeddedStore
from clmc.storage.influx import InfluxStore
from tests.support.influxdb import start_influxd
from tests.support.procs import ProcessGroup

S = 1_000_000_000
T0 = 1_700_000_000 * S


@pytest.fixture(params=["embedded", pytest.param("influxdb", marks=pytest.mark.influxdb)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetricStore]:
    group = ProcessGroup(tmp_path)
    backend: MetricStore
    try:
        if request.param == "embedded":
            backend = EmbeddedStore(tmp_path / "m.sqlite")
        else:
            server = start_influxd(group, tmp_path)
            backend = InfluxStore(server.url, "clmc_test")
        yield backend
        backend.close()
    finally:
        group.stop_all()


def series(loc: str, n: int, start: int = T0, step: int = S, base: float = 0.0, ue: str | None = None) -> SeriesData:
    tags = {"flame_location": loc, "flame_sfc": "svc"}
    if ue:
        tags["flame_ue"] = ue
    times = [start + i * step for i in range(n)]
    return SeriesData("nap_http", tuple(sorted(tags.items())), times, {"latency_ms": [base + i for i in range(n)]})


def test_clmc10_same_point_identity_written_twice_is_stored_once(store: MetricStore) -> None:
    assert store.write([series("a", 10)]) == 10
    store.write([series("a", 10)])  # redelivery
    assert store.count(Selection("nap_http")) == 10
    points, truncated = store.query(Selection("nap_http"), (), 100)
    assert len(points) == 10 and not truncated


def test_clmc7_typed_fields_round_trip(store: MetricStore) -> None:
    tags = (("flame_sfc", "svc"),)
    store.write([SeriesData("sf_http", tags, [T0], {"requests": [7], "cpu": [1.5], "note": ["a b,c"], "ok": [True]})])
    (p,), _ = store.query(Selection("sf_http"), (), 10)
    assert p.fields == {"requests": 7, "cpu": 1.5, "note": "a b,c", "ok": True}
    assert isinstance(p.fields["requests"], int) and isinstance(p.fields["ok"], bool)
    assert p.tags == {"flame_sfc": "svc"} and p.time_ns == T0


def test_clmc16_filters_by_tags_and_time_and_limits(store: MetricStore) -> None:
    store.write([series("a", 10), series("b", 10), series("c", 10)])
    sel = Selection("nap_http", {"flame_location": frozenset({"a", "b"})}, T0 + 2 * S, T0 + 5 * S)
    points, truncated = store.query(sel, (), 100)
    assert len(points) == 6 and not truncated
    assert {p.tags["flame_location"] for p in points} == {"a", "b"}
    assert [p.time_ns for p in points] == sorted(p.time_ns for p in points)
    points, truncated = store.query(Selection("nap_http"), (), 5)
    assert len(points) == 5 and truncated


@pytest.mark.parametrize(
    ("kind", "expected"),
    [(AggKind.MEAN, 2.0), (AggKind.MIN, 0.0), (AggKind.MAX, 4.0), (AggKind.SUM, 10.0), (AggKind.COUNT, 5.0)],
)
def test_clmc11_aggregations_over_windows_grouped_by_location(
    store: MetricStore, kind: AggKind, expected: float
) -> None:
    # 10 points per location, one per second: two 5 s windows; location b is offset by +100.
    store.write([series("a", 10), series("b", 10, base=100.0)])
    q = AggQuery("nap_http", "latency_ms", kind, T0, T0 + 10 * S, 5 * S, ("flame_location",))
    result = {dict(s.group)["flame_location"]: s.windows for s in store.aggregate(q)}
    assert set(result) == {"a", "b"}
    first, second = result["a"]
    assert (first.start_ns, second.start_ns) == (T0, T0 + 5 * S)
    assert first.value == pytest.approx(expected) and first.count == 5
    if kind in (AggKind.MEAN, AggKind.MIN, AggKind.MAX):
        assert result["b"][0].value == pytest.approx(expected + 100)


def test_clmc11_percentile_matches_nearest_rank(store: MetricStore) -> None:
    store.write([series("a", 100)])
    q = AggQuery("nap_http", "latency_ms", AggKind.PERCENTILE, T0, T0 + 100 * S, 0, (), percentile=95.0)
    ((s,),) = [store.aggregate(q)]
    assert s.windows[0].value == pytest.approx(94.0) and s.windows[0].count == 100


def test_latest_per_group_gives_newest_time_and_value(store: MetricStore) -> None:
    store.write([series("a", 5), series("b", 3)])
    latest = store.latest(Selection("nap_http", {}, T0, T0 + 60 * S), "latency_ms", ("flame_location",))
    assert latest[(("flame_location", "a"),)] == (T0 + 4 * S, 4.0)
    assert latest[(("flame_location", "b"),)] == (T0 + 2 * S, 2.0)
    no_field = store.latest(Selection("nap_http", {}, T0, T0 + 60 * S), None, ())
    ((t, v),) = no_field.values()
    assert t == T0 + 4 * S and math.isnan(v)


def test_clmc10_delete_by_tag_and_time_really_deletes_and_leaves_the_rest(store: MetricStore) -> None:
    store.write([series("a", 10), series("b", 10)])
    sel = Selection("nap_http", {"flame_location": frozenset({"a"})}, T0, T0 + 4 * S)
    assert store.delete(sel) == 4
    assert store.count(sel) == 0
    assert store.count(Selection("nap_http")) == 16
    assert store.count(Selection("nap_http", {"flame_location": frozenset({"b"})})) == 10


def test_clmc26_subject_delete_across_measurements(store: MetricStore) -> None:
    store.write([series("a", 3, ue="ue-1"), series("a", 3, ue="ue-2")])
    store.write([SeriesData("sf_http", (("flame_ue", "ue-1"),), [T0], {"requests": [1]})])
    subject = Selection(None, {"flame_ue": frozenset({"ue-1"})})
    assert store.count(subject) == 4
    assert store.delete(subject) == 4
    assert store.count(subject) == 0 and store.query(subject, (), 10) == ([], False)
    assert store.count(Selection(None, {"flame_ue": frozenset({"ue-2"})})) == 3


def test_point_times_per_series(store: MetricStore) -> None:
    store.write([series("a", 3, step=2 * S)])
    ((tags, times),) = store.point_times(Selection("nap_http")).items()
    assert dict(tags)["flame_location"] == "a" and times == [T0, T0 + 2 * S, T0 + 4 * S]


@pytest.mark.influxdb
def test_clmc10_influx_write_while_influxd_down_is_retried_then_succeeds_or_raises(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    try:
        server = start_influxd(group, tmp_path)
        store = InfluxStore(server.url, "clmc_test", retry_for_s=1.0)
        store.write([series("a", 5)])
        server.stop()
        with pytest.raises(StorageError, match="failed after retries"):
            store.write([series("a", 5, start=T0 + 100 * S)])
        server.start()
        store.write([series("a", 5, start=T0 + 100 * S)])
        assert store.count(Selection("nap_http")) == 10
    finally:
        group.stop_all()


@pytest.mark.influxdb
def test_clmc10_influx_write_during_a_short_outage_is_retried_until_influxd_is_back(tmp_path: Path) -> None:
    import threading

    group = ProcessGroup(tmp_path)
    try:
        server = start_influxd(group, tmp_path)
        store = InfluxStore(server.url, "clmc_test", retry_for_s=30.0)
        server.stop()
        restarter = threading.Timer(1.0, server.start)
        restarter.start()
        store.write([series("a", 5)])  # blocks, retrying with backoff, until influxd is back
        restarter.join()
        assert store.count(Selection("nap_http")) == 5
    finally:
        group.stop_all()


def test_clmc7_field_types_are_remembered_per_measurement(store: MetricStore) -> None:
    tags = (("flame_sfc", "svc"),)
    store.write([SeriesData("app", tags, [T0], {"n": [7], "x": [1.5], "s": ["a"], "b": [True]})])
    assert store.field_types()["app"] == {"n": "integer", "x": "float", "s": "string", "b": "boolean"}
