"""Bad and hostile time ranges on every CLMC read path (issue 5 proof, "bad time ranges: clear errors").

End at or before start, a start in the far future (Query's open end is "now"), and the extremes a Timestamp can hold
(year 1 to year 9999, outside the int64-nanosecond range storage keeps) answer INVALID_ARGUMENT with a
google.rpc.BadRequest field violation naming the field; never INTERNAL, never an empty answer that looks valid.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from clmc.analytics import MAX_TIME_NS, MIN_TIME_NS
from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, kpi_pb2
from flame_control.runtime.testing import channel, running_server
from tests.integration.clmc.helpers import S, clmc_spec, point, publish
from tests.support.influxdb import start_influxd
from tests.support.procs import ProcessGroup

NOW = time.time_ns() // S * S
#: Timestamp's own limits: 0001-01-01 and 9999-12-31T23:59:59Z.
MIN_TS = timestamp_pb2.Timestamp(seconds=-62135596800)
MAX_TS = timestamp_pb2.Timestamp(seconds=253402300799)


def ts(ns: int) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(ns)
    return t


def field_violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """field -> description of the BadRequest detail in the status trailer."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return {v.field: v.description for v in bad.field_violations}
    return {}


def query(start: timestamp_pb2.Timestamp | None, end: timestamp_pb2.Timestamp | None) -> clmc_pb2.QueryRequest:
    req = clmc_pb2.QueryRequest(measurement="nap_http")
    if start is not None:
        req.start.CopyFrom(start)
    if end is not None:
        req.end.CopyFrom(end)
    return req


def aggregate(start: timestamp_pb2.Timestamp, end: timestamp_pb2.Timestamp, window_s: int = 0) -> Any:
    req = clmc_pb2.AggregateRequest(
        measurement="nap_http", field="requests", aggregation=kpi_pb2.AGGREGATION_SUM, start=start, end=end
    )
    if window_s:
        req.window.FromSeconds(window_s)
    return req


def quality(start: timestamp_pb2.Timestamp, end: timestamp_pb2.Timestamp) -> clmc_pb2.GetDataQualityRequest:
    req = clmc_pb2.GetDataQualityRequest(measurement="nap_http", start=start, end=end)
    req.expected_interval.FromSeconds(10)
    return req


def delete(start: timestamp_pb2.Timestamp, end: timestamp_pb2.Timestamp) -> clmc_pb2.DeleteMeasurementsRequest:
    return clmc_pb2.DeleteMeasurementsRequest(request_id="d1", measurement="nap_http", start=start, end=end)


FAR_FUTURE = NOW + 10 * 365 * 86400 * S
#: (name, RPC name, request, the field the violation must name)
CASES: list[tuple[str, str, Callable[[], Any], str]] = [
    ("query end before start", "Query", lambda: query(ts(NOW), ts(NOW - S)), "end"),
    ("query end equals start", "Query", lambda: query(ts(NOW), ts(NOW)), "end"),
    ("query start in the far future, open end (= now)", "Query", lambda: query(ts(FAR_FUTURE), None), "end"),
    ("query start at year 9999", "Query", lambda: query(MAX_TS, None), "start"),
    ("query end at year 9999", "Query", lambda: query(ts(NOW), MAX_TS), "end"),
    ("query start at year 1", "Query", lambda: query(MIN_TS, ts(NOW)), "start"),
    ("aggregate end before start", "Aggregate", lambda: aggregate(ts(NOW), ts(NOW - S)), "end"),
    ("aggregate end equals start", "Aggregate", lambda: aggregate(ts(NOW), ts(NOW)), "end"),
    (
        "aggregate far-future start, end before it",
        "Aggregate",
        lambda: aggregate(ts(FAR_FUTURE), ts(FAR_FUTURE - S)),
        "end",
    ),
    ("aggregate year 1 to year 9999", "Aggregate", lambda: aggregate(MIN_TS, MAX_TS), "start"),
    ("aggregate year 1 to year 9999, 1 s windows", "Aggregate", lambda: aggregate(MIN_TS, MAX_TS, 1), "start"),
    ("aggregate end at year 9999", "Aggregate", lambda: aggregate(ts(NOW), MAX_TS), "end"),
    ("data quality end before start", "GetDataQuality", lambda: quality(ts(NOW), ts(NOW - S)), "end"),
    ("data quality year 1 to year 9999", "GetDataQuality", lambda: quality(MIN_TS, MAX_TS), "start"),
    ("delete end before start", "DeleteMeasurements", lambda: delete(ts(NOW), ts(NOW - S)), "end"),
    ("delete end at year 9999", "DeleteMeasurements", lambda: delete(ts(NOW), MAX_TS), "end"),
]


@pytest.mark.parametrize(("rpc", "make", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_or_hostile_time_range_is_invalid_argument_naming_the_field(
    tmp_path: Path, rpc: str, make: Callable[[], Any], field: str
) -> None:
    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            await publish(
                stub, clmc_pb2.PublishMeasurementsRequest(points=[point("nap_http", NOW - 60 * S, {}, requests=1)])
            )
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await getattr(stub, rpc)(make())
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
            violations = field_violations(exc.value)
            assert violations.get(field), violations
            # The point is still there: a rejected range deletes nothing and leaves the store readable.
            left = await stub.Query(query(ts(NOW - 3600 * S), None))
            assert len(left.points) == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("backend", ["embedded", pytest.param("influxdb", marks=pytest.mark.influxdb)])
def test_widest_valid_range_still_answers(tmp_path: Path, procs: ProcessGroup, backend: str) -> None:
    """The accepted limits themselves work on both backends: from the epoch to a year ahead, and the int64 extremes,
    find the point (InfluxQL's own time bounds are the same int64 range)."""
    settings: dict[str, Any] = {}
    if backend == "influxdb":
        settings = {"backend": "influxdb", "influx_url": start_influxd(procs, tmp_path).url}

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path, **settings)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            await publish(
                stub, clmc_pb2.PublishMeasurementsRequest(points=[point("nap_http", NOW - 60 * S, {}, requests=2)])
            )
            for start, end in ((ts(0), ts(NOW + 365 * 86400 * S)), (ts(MIN_TIME_NS), ts(MAX_TIME_NS))):
                resp = await stub.Query(query(start, end))
                assert len(resp.points) == 1
                agg = await stub.Aggregate(aggregate(start, end))
                assert [p.value for s in agg.series for p in s.points] == [2.0]
                report = await stub.GetDataQuality(quality(start, end))
                assert len(report.series) == 1

    asyncio.run(scenario())
