"""KPIs in real time over gRPC (CLMC-19, CLMC-22): define, publish a breaching point, the FIRING event arrives on
SubscribeKpiEvents; after a CLMC restart on the same state dir the KPI is still firing, events replay by sequence,
and the alert clears on good data."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from clmc.kpi_rules import spec_from_proto
from clmc.kpi_state import ClmcState
from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, kpi_pb2
from flame_control.runtime.testing import channel, running_server
from tests.integration.clmc.helpers import clmc_spec, point, publish


def latency_kpi() -> kpi_pb2.KpiDefinition:
    d = kpi_pb2.KpiDefinition(
        name="latency",
        media_service="svc-a",
        kind=kpi_pb2.KPI_KIND_THRESHOLD,
        measurement="nap_http",
        field="latency_ms",
        comparison=kpi_pb2.COMPARISON_GREATER,
        threshold=100,
        clear_threshold=50,
        group_by=["flame_location"],
    )
    d.window.FromSeconds(30)
    return d


async def next_event(stream: object, timeout: float = 10.0) -> kpi_pb2.KpiEvent:
    resp = await asyncio.wait_for(stream.read(), timeout)  # type: ignore[attr-defined]
    return resp.event


def test_clmc22_kpi_event_in_real_time_and_alert_state_survives_restart(tmp_path: Path) -> None:
    tags = {"flame_location": "bristol", "flame_sfc": "svc-a"}

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path, kpi_interval_s=0.5)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            await stub.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="k1", kpi=latency_kpi()))
            stream = stub.SubscribeKpiEvents(clmc_pb2.SubscribeKpiEventsRequest(media_service="svc-a"))
            await asyncio.sleep(0.3)
            sent = time.monotonic()
            await publish(
                stub,
                clmc_pb2.PublishMeasurementsRequest(points=[point("nap_http", time.time_ns(), tags, latency_ms=250.0)]),
            )
            event = await next_event(stream)
            assert time.monotonic() - sent < 5
            assert event.state == kpi_pb2.KPI_STATE_FIRING and event.value == 250.0
            assert dict(event.group) == {"flame_location": "bristol"} and event.sequence >= 1
            first_seq = event.sequence
            stream.cancel()
            for _ in range(50):  # the event is also stored as a kpi_event point (for dashboards)
                stored = (await stub.Query(clmc_pb2.QueryRequest(measurement="kpi_event"))).points
                if stored:
                    break
                await asyncio.sleep(0.1)
            (stored_event,) = stored
            assert stored_event.tags["kpi_state"] == "firing" and stored_event.tags["flame_location"] == "bristol"
            assert stored_event.fields["sequence"].int_value == first_seq
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.DeleteKpi(clmc_pb2.DeleteKpiRequest(request_id="d0", media_service="svc-a", name="nope"))
            assert exc.value.code() == grpc.StatusCode.NOT_FOUND

        # Restart: a new CLMC on the same state dir.
        async with running_server(clmc_spec(tmp_path, kpi_interval_s=0.5)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            (status,) = (await stub.ListKpis(clmc_pb2.ListKpisRequest())).kpis
            assert status.kpi.name == "latency"
            assert [dict(f.group) for f in status.firing] == [{"flame_location": "bristol"}]
            await publish(
                stub,
                clmc_pb2.PublishMeasurementsRequest(
                    points=[point("nap_http", time.time_ns() + 1000, tags, latency_ms=10.0)]
                ),
            )
            await asyncio.sleep(0.2)
            # Resume after the last event seen before the restart: the CLEARED event comes (replayed or live), once.
            replay = stub.SubscribeKpiEvents(clmc_pb2.SubscribeKpiEventsRequest(after_sequence=first_seq))
            cleared = await next_event(replay)
            assert cleared.state == kpi_pb2.KPI_STATE_CLEARED and cleared.sequence == first_seq + 1
            replay.cancel()
            await stub.DeleteKpi(clmc_pb2.DeleteKpiRequest(request_id="d1", media_service="svc-a", name="latency"))
            assert len((await stub.ListKpis(clmc_pb2.ListKpisRequest())).kpis) == 0

    asyncio.run(scenario())


def test_clmc19_redefining_a_firing_kpi_over_grpc_keeps_it_firing_and_it_clears_at_70(tmp_path: Path) -> None:
    """Issue 15: an alert firing at 500 survives DefineKpi with the same definition (what the orchestrator sends on
    every service update) and clears when the value falls to 70; a changed definition, then a delete, each send
    CLEARED for what was firing."""
    tags = {"flame_location": "bristol", "flame_sfc": "svc-a"}
    kpi = latency_kpi()
    kpi.clear_threshold = 0  # clears below 100

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path, kpi_interval_s=0.5)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            await stub.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="k1", kpi=kpi))
            stream = stub.SubscribeKpiEvents(clmc_pb2.SubscribeKpiEventsRequest(media_service="svc-a"))
            await asyncio.sleep(0.3)
            one = clmc_pb2.PublishMeasurementsRequest(
                points=[point("nap_http", time.time_ns(), tags, latency_ms=500.0)]
            )
            await publish(stub, one)
            assert (await next_event(stream)).state == kpi_pb2.KPI_STATE_FIRING
            await stub.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="k2", kpi=kpi))  # a service update
            (status,) = (await stub.ListKpis(clmc_pb2.ListKpisRequest())).kpis
            assert [dict(f.group) for f in status.firing] == [{"flame_location": "bristol"}]
            await publish(
                stub,
                clmc_pb2.PublishMeasurementsRequest(points=[point("nap_http", time.time_ns(), tags, latency_ms=70.0)]),
            )
            cleared = await next_event(stream)
            assert cleared.state == kpi_pb2.KPI_STATE_CLEARED and cleared.value == 70.0
            # Fire again, then change the threshold: CLEARED for the old definition's alert.
            await publish(
                stub,
                clmc_pb2.PublishMeasurementsRequest(points=[point("nap_http", time.time_ns(), tags, latency_ms=600.0)]),
            )
            assert (await next_event(stream)).state == kpi_pb2.KPI_STATE_FIRING
            changed = latency_kpi()
            changed.threshold, changed.clear_threshold = 1000, 900
            await stub.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="k3", kpi=changed))
            redefined = await next_event(stream)
            assert redefined.state == kpi_pb2.KPI_STATE_CLEARED and "redefined" in redefined.message
            changed.threshold, changed.clear_threshold = 100, 50
            await stub.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="k4", kpi=changed))
            await publish(
                stub,
                clmc_pb2.PublishMeasurementsRequest(points=[point("nap_http", time.time_ns(), tags, latency_ms=700.0)]),
            )
            assert (await next_event(stream)).state == kpi_pb2.KPI_STATE_FIRING
            await stub.DeleteKpi(clmc_pb2.DeleteKpiRequest(request_id="d1", media_service="svc-a", name="latency"))
            gone = await next_event(stream)
            assert gone.state == kpi_pb2.KPI_STATE_CLEARED and "deleted" in gone.message
            stream.cancel()

    asyncio.run(scenario())


def test_clmc22_resuming_past_the_retained_events_gets_an_explicit_gap_marker(tmp_path: Path) -> None:
    """Issue 15: a subscriber resuming after event 2 when only events 8..12 are retained used to get 8..12 and never
    learn that 3..7 were lost; now a gap marker comes first."""
    spec = spec_from_proto(latency_kpi())
    state = ClmcState(tmp_path / "clmc_state.sqlite", retained_events=5)
    state.put_kpi(spec, lambda firing: [])
    event = kpi_pb2.KpiEvent(kpi="latency", media_service="svc-a", state=kpi_pb2.KPI_STATE_FIRING, value=1.0)
    assert [e.sequence for e in state.save(spec, {}, [event] * 12)] == list(range(1, 13))
    state.close()

    async def scenario() -> None:
        spec_ = clmc_spec(tmp_path, kpi_events_retained=5)
        async with running_server(spec_) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            stream = stub.SubscribeKpiEvents(clmc_pb2.SubscribeKpiEventsRequest(after_sequence=2))
            first = await asyncio.wait_for(stream.read(), 10)
            assert first.HasField("gap") and not first.HasField("event")
            assert (first.gap.first_sequence, first.gap.last_sequence) == (3, 7)
            seqs = [(await next_event(stream)).sequence for _ in range(5)]
            assert seqs == [8, 9, 10, 11, 12]
            stream.cancel()
            # Resuming within what is retained: no gap marker.
            stream = stub.SubscribeKpiEvents(clmc_pb2.SubscribeKpiEventsRequest(after_sequence=7))
            first = await asyncio.wait_for(stream.read(), 10)
            assert not first.HasField("gap") and first.event.sequence == 8
            stream.cancel()

    asyncio.run(scenario())
