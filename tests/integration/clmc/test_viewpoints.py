"""Stakeholder viewpoints per role per RPC over real gRPC with token auth (CLMC-27, CLMC-28, CLMC-29): media service
providers see only their own services, personal data (flame_ue) only for the platform operator, infrastructure
providers only infrastructure measurements, components publish and read KPIs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, kpi_pb2
from flame_control.runtime.testing import channel, running_server
from tests.integration.clmc.helpers import AUTH, TOKENS, S, clmc_spec, point, publish

OK, DENIED = "OK", "PERMISSION_DENIED"


async def code(call: Awaitable[Any]) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return str(err.code().name)
    return OK


def kpi(service: str) -> kpi_pb2.KpiDefinition:
    return kpi_pb2.KpiDefinition(
        name="lat",
        media_service=service,
        kind=kpi_pb2.KPI_KIND_THRESHOLD,
        measurement="nap_http",
        field="latency_ms",
        comparison=kpi_pb2.COMPARISON_GREATER,
        threshold=100,
    )


def test_clmc27_28_29_every_role_sees_only_its_viewpoint_on_every_rpc(tmp_path: Path) -> None:
    t0 = (time.time_ns() // S - 300) * S

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path), auth=AUTH) as target:
            stubs: dict[str, Any] = {}
            channels = []
            for role, token in TOKENS.items():
                ch = channel(target, token)
                channels.append(ch)
                stubs[role] = clmc_pb2_grpc.ClmcServiceStub(ch)
            ops, msp, ana, infra, comp = (
                stubs[r]
                for r in (
                    "platform_operator",
                    "media_service_provider",
                    "analyst",
                    "infrastructure_provider",
                    "component",
                )
            )
            data = clmc_pb2.PublishMeasurementsRequest(
                points=[
                    point(
                        "nap_http",
                        t0 + i * S,
                        {"flame_sfc": sfc, "flame_location": "a", "flame_ue": f"ue-{sfc}"},
                        latency_ms=float(i),
                    )
                    for i in range(3)
                    for sfc in ("svc-a", "svc-b")
                ]
                + [point("sf_http", t0, {"flame_sfc": "svc-b"}, cpu=1.0)]
            )
            # Publishing: operator and components only.
            assert await code(publish(comp, data)) == OK
            assert await code(publish(ana, data)) == DENIED
            assert await code(publish(msp, data)) == DENIED

            async def query(stub: Any, **kw: Any) -> clmc_pb2.QueryResponse:
                return await stub.Query(clmc_pb2.QueryRequest(**kw))

            everything = await query(ops, measurement="nap_http")
            assert {p.tags["flame_sfc"] for p in everything.points} == {"svc-a", "svc-b"}
            assert all("flame_ue" in p.tags for p in everything.points)
            mine = await query(msp, measurement="nap_http")
            assert len(mine.points) == 3 and {p.tags["flame_sfc"] for p in mine.points} == {"svc-a"}
            assert all("flame_ue" not in p.tags for p in mine.points)
            assert await code(query(msp, measurement="nap_http", tags={"flame_sfc": "svc-b"})) == DENIED
            assert len((await query(msp, measurement="sf_http")).points) == 0  # svc-b's data is invisible
            analyst = await query(ana, measurement="nap_http")
            assert len(analyst.points) == 6 and all("flame_ue" not in p.tags for p in analyst.points)
            assert await code(query(ana, measurement="nap_http", tags={"flame_ue": "ue-svc-a"})) == DENIED
            assert len((await query(infra, measurement="nap_http")).points) == 6
            assert await code(query(infra, measurement="sf_http")) == DENIED
            assert await code(query(comp, measurement="nap_http")) == DENIED

            def agg(**kw: Any) -> clmc_pb2.AggregateRequest:
                req = clmc_pb2.AggregateRequest(
                    measurement="nap_http", field="latency_ms", aggregation=kpi_pb2.AGGREGATION_COUNT, **kw
                )
                req.start.FromNanoseconds(t0)
                req.end.FromNanoseconds(t0 + 60 * S)
                return req

            groups = await msp.Aggregate(agg(group_by=["flame_sfc"]))
            assert [(dict(s.group), s.points[0].value) for s in groups.series] == [({"flame_sfc": "svc-a"}, 3.0)]
            assert len((await ops.Aggregate(agg(group_by=["flame_sfc"]))).series) == 2
            assert await code(ana.Aggregate(agg(group_by=["flame_ue"]))) == DENIED

            dq = clmc_pb2.GetDataQualityRequest(measurement="nap_http")
            dq.start.FromNanoseconds(t0)
            dq.end.FromNanoseconds(t0 + 10 * S)
            dq.expected_interval.FromSeconds(1)
            assert {s.tags["flame_sfc"] for s in (await msp.GetDataQuality(dq)).series} == {"svc-a"}
            assert all("flame_ue" not in s.tags for s in (await ana.GetDataQuality(dq)).series)

            # Personal data: only the platform operator.
            subject = clmc_pb2.QueryDataSubjectRequest(subject_id="ue-svc-a")
            for role in ("media_service_provider", "analyst", "infrastructure_provider", "component"):
                assert await code(stubs[role].QueryDataSubject(subject)) == DENIED, role
                erase = clmc_pb2.DeleteDataSubjectRequest(request_id=f"e-{role}", subject_id="ue-svc-a")
                assert await code(stubs[role].DeleteDataSubject(erase)) == DENIED, role
                delete = clmc_pb2.DeleteMeasurementsRequest(request_id=f"m-{role}", measurement="nap_http")
                assert await code(stubs[role].DeleteMeasurements(delete)) == DENIED, role
            assert len((await ops.QueryDataSubject(subject)).points) == 3

            # KPIs: a media service provider manages and sees its own services only.
            assert await code(msp.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="a", kpi=kpi("svc-a")))) == OK
            assert await code(msp.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="b", kpi=kpi("svc-b")))) == DENIED
            assert await code(ana.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="c", kpi=kpi("svc-b")))) == DENIED
            assert await code(ops.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="d", kpi=kpi("svc-b")))) == OK
            listed: Callable[[Any], Awaitable[Any]] = lambda s: s.ListKpis(clmc_pb2.ListKpisRequest())  # noqa: E731
            assert [k.kpi.media_service for k in (await listed(msp)).kpis] == ["svc-a"]
            assert len((await listed(comp)).kpis) == 2
            assert (
                await code(msp.DeleteKpi(clmc_pb2.DeleteKpiRequest(request_id="x", media_service="svc-b", name="lat")))
                == DENIED
            )
            sub = msp.SubscribeKpiEvents(clmc_pb2.SubscribeKpiEventsRequest(media_service="svc-b"))
            assert await code(sub.read()) == DENIED
            for stub in stubs.values():
                assert await code(stub.GetInformationModel(clmc_pb2.GetInformationModelRequest())) == OK
            for ch in channels:
                await ch.close()

    asyncio.run(scenario())
