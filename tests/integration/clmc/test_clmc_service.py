"""ClmcService over real gRPC with the full runtime: ingest validation (CLMC-3, CLMC-7), query and analytics
(CLMC-11, CLMC-13, CLMC-16), config events (CLMC-4), data subjects (CLMC-25, CLMC-26)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, kpi_pb2, model_pb2
from flame_control.api.flame.common.v1 import common_pb2
from flame_control.runtime.testing import channel, running_server
from tests.integration.clmc.helpers import S, clmc_spec, point, publish, series_batch


def now_ns() -> int:
    return (time.time_ns() // S - 600) * S  # ten minutes ago, whole seconds


def violations(err: grpc.aio.AioRpcError) -> list[str]:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return [v.field for v in bad.field_violations]
    return []


def test_clmc3_malformed_batch_is_rejected_whole_with_every_violation_and_nothing_stored(tmp_path: Path) -> None:
    t0 = now_ns()

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            good = point("nap_http", t0, {"flame_location": "a"}, requests=3)
            bad = clmc_pb2.PublishMeasurementsRequest(
                points=[
                    good,
                    point("bad name!", t0, {}, x=1.0),
                    point("nap_http", t0, {"flame_locaton": "typo"}, requests=1),
                    point("nap_http", t0, {"flame_location": "a"}, requets=1),
                    point("nap_http", t0 + 10**6 * S, {}, requests=1),
                    model_pb2.Measurement(name="nap_http", fields={"requests": model_pb2.FieldValue(int_value=1)}),
                ],
                series=[series_batch("sf_http", {}, [t0, t0 + S], cpu=[1.0])],
            )
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await publish(stub, bad)
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            fields = violations(exc.value)
            assert "points[1].name" in fields and "points[2].tags.flame_locaton" in fields
            assert "points[3].fields.requets" in fields and "points[4].time" in fields
            assert "points[5].time" in fields and "series[0].columns[0].values" in fields
            resp = await stub.Query(clmc_pb2.QueryRequest(measurement="nap_http"))
            assert len(resp.points) == 0  # the good point of the rejected batch was not stored either
            # A huge batch is refused with a clear message.
            huge = clmc_pb2.PublishMeasurementsRequest(
                series=[series_batch("x", {}, list(range(t0, t0 + 200_001)), v=[1.0] * 200_001)]
            )
            with pytest.raises(grpc.aio.AioRpcError, match="at most 200000 per batch"):
                await publish(stub, huge)

    asyncio.run(scenario())


def test_clmc16_clmc11_ingest_query_aggregate_over_grpc(tmp_path: Path) -> None:
    t0 = now_ns()

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            times = [t0 + i * S for i in range(120)]
            resp = await publish(
                stub,
                clmc_pb2.PublishMeasurementsRequest(
                    series=[
                        series_batch(
                            "nap_http",
                            {"flame_location": "a", "flame_sfc": "svc-a"},
                            times,
                            latency_ms=[float(i) for i in range(120)],
                        ),
                        series_batch(
                            "nap_http", {"flame_location": "b", "flame_sfc": "svc-b"}, times, latency_ms=[100.0] * 120
                        ),
                    ]
                ),
                clmc_pb2.PublishMeasurementsRequest(
                    points=[point("nap_http", t0, {"flame_location": "c"}, requests=5)]
                ),
            )
            assert resp.accepted_points == 241 and resp.batches == 2
            q = clmc_pb2.QueryRequest(measurement="nap_http", tags={"flame_location": "c"})
            (p,) = (await stub.Query(q)).points
            assert p.fields["requests"].int_value == 5 and p.time.ToNanoseconds() == t0
            agg = clmc_pb2.AggregateRequest(
                measurement="nap_http",
                field="latency_ms",
                aggregation=kpi_pb2.AGGREGATION_MEAN,
                group_by=["flame_location"],
            )
            agg.start.FromNanoseconds(t0)
            agg.end.FromNanoseconds(t0 + 120 * S)
            agg.window.FromSeconds(60)
            result = await stub.Aggregate(agg)
            by_loc = {s.group["flame_location"]: [(p.value, p.count) for p in s.points] for s in result.series}
            assert by_loc["a"] == [(29.5, 60), (89.5, 60)] and by_loc["b"] == [(100.0, 60), (100.0, 60)]
            bad = clmc_pb2.AggregateRequest(measurement="nap_http", field="latency_ms")
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.Aggregate(bad)
            assert {"aggregation", "start", "end"} <= set(violations(exc.value))
            # Data quality (CLMC-13): a series reporting every 2 s against an expected 1 s is 50 % complete.
            await publish(
                stub,
                clmc_pb2.PublishMeasurementsRequest(
                    series=[
                        series_batch("sf_http", {"flame_sf": "x"}, [t0 + i * 2 * S for i in range(30)], cpu=[1.0] * 30)
                    ]
                ),
            )
            dq = clmc_pb2.GetDataQualityRequest(measurement="sf_http")
            dq.start.FromNanoseconds(t0)
            dq.end.FromNanoseconds(t0 + 60 * S)
            dq.expected_interval.FromSeconds(1)
            (quality,) = (await stub.GetDataQuality(dq)).series
            assert quality.completeness == pytest.approx(0.5)
            assert quality.max_gap.ToSeconds() == 2 and quality.staleness.ToSeconds() == 2

    asyncio.run(scenario())


def test_clmc4_clmc25_clmc26_config_events_and_data_subject_query_and_delete(tmp_path: Path) -> None:
    t0 = now_ns()

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            await publish(
                stub,
                clmc_pb2.PublishMeasurementsRequest(
                    points=[
                        point("nap_http", t0 + i * S, {"flame_location": "a", "flame_ue": ue}, requests=i)
                        for i in range(5)
                        for ue in ("ue-1", "ue-2")
                    ]
                ),
            )
            event = model_pb2.ConfigEvent(
                source="sfemc",
                subject_kind="endpoint",
                tags={"flame_sfe": "e1", "flame_ue": "ue-1"},
                from_state=common_pb2.ENDPOINT_STATE_BOOTING,
                to_state=common_pb2.ENDPOINT_STATE_BOOTED,
                failure=model_pb2.FAILURE_CATEGORY_UNSPECIFIED,
                message="up",
            )
            event.time.FromNanoseconds(t0)

            async def events() -> object:
                yield clmc_pb2.PublishConfigEventsRequest(events=[event])

            assert (await stub.PublishConfigEvents(events())).accepted_events == 1
            found = await stub.QueryDataSubject(clmc_pb2.QueryDataSubjectRequest(subject_id="ue-1"))
            assert len(found.points) == 5 and len(found.events) == 1
            assert found.events[0].to_state == common_pb2.ENDPOINT_STATE_BOOTED
            assert found.events[0].tags["flame_sfe"] == "e1"
            deleted = await stub.DeleteDataSubject(
                clmc_pb2.DeleteDataSubjectRequest(request_id="r1", subject_id="ue-1")
            )
            assert (deleted.points_deleted, deleted.events_deleted) == (5, 1)
            assert list(deleted.verified_backends) == ["embedded"]
            after = await stub.QueryDataSubject(clmc_pb2.QueryDataSubjectRequest(subject_id="ue-1"))
            assert len(after.points) == 0 and len(after.events) == 0
            other = await stub.QueryDataSubject(clmc_pb2.QueryDataSubjectRequest(subject_id="ue-2"))
            assert len(other.points) == 5
            # A late copy of an erased subject's point (e.g. redelivered) is not stored again.
            await publish(
                stub,
                clmc_pb2.PublishMeasurementsRequest(
                    points=[point("nap_http", t0, {"flame_location": "a", "flame_ue": "ue-1"}, requests=1)]
                ),
            )
            again = await stub.QueryDataSubject(clmc_pb2.QueryDataSubjectRequest(subject_id="ue-1"))
            assert len(again.points) == 0

    asyncio.run(scenario())


def test_clmc4_endpoint_transitions_derive_endpoint_config_sum_mst_and_current_state(tmp_path: Path) -> None:
    t0 = now_ns()
    steps = [
        (common_pb2.ENDPOINT_STATE_PLACED, 0),
        (common_pb2.ENDPOINT_STATE_BOOTING, 3),
        (common_pb2.ENDPOINT_STATE_BOOTED, 8),
        (common_pb2.ENDPOINT_STATE_CONNECTED, 10),
        (common_pb2.ENDPOINT_STATE_BOOTED, 20),
        (common_pb2.ENDPOINT_STATE_CONNECTED, 21),
    ]

    def event(state: int, at: int) -> model_pb2.ConfigEvent:
        e = model_pb2.ConfigEvent(
            source="sfemc",
            subject_kind="endpoint",
            to_state=state,
            tags={"flame_sfc": "svc", "flame_sfe": "ep1", "flame_location": "a"},
        )
        e.time.FromNanoseconds(t0 + at * S)
        return e

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)

            async def events() -> object:
                for state, at in steps[:3]:
                    yield clmc_pb2.PublishConfigEventsRequest(events=[event(state, at)])
                yield clmc_pb2.PublishConfigEventsRequest(events=[event(s, at) for s, at in steps[3:]])

            assert (await stub.PublishConfigEvents(events())).accepted_events == 6
        # The tracks survive a restart: the next transition continues the sums.
        async with running_server(clmc_spec(tmp_path)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)

            async def more() -> object:
                yield clmc_pb2.PublishConfigEventsRequest(events=[event(common_pb2.ENDPOINT_STATE_FAILED, 31)])

            await stub.PublishConfigEvents(more())
            points = (await stub.Query(clmc_pb2.QueryRequest(measurement="endpoint_config"))).points
            assert len(points) == 7 and dict(points[-1].tags) == {
                "flame_sfc": "svc",
                "flame_sfe": "ep1",
                "flame_location": "a",
            }
            last = {
                k: v.WhichOneof("value") and getattr(v, v.WhichOneof("value")) for k, v in points[-1].fields.items()
            }
            assert last["current_state"] == "failed"
            assert last["placed_sum"] == 3 and last["booting_sum"] == 5
            assert last["booted_sum"] == 3 and last["booted_mst"] == 1
            assert last["connected_sum"] == 20 and last["connected_mst"] == 10

    asyncio.run(scenario())
