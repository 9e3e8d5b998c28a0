"""Infrastructure KPIs (CLMC-19, CLMC-22, CLMC-28, issue 15): a KPI on an infrastructure measurement, defined by
the platform operator or the infrastructure provider, is scoped by any tag (NAP, switch, host, link) instead of a
forced ``flame_sfc``; a deadman on a silent NAP (``nap_fabric`` points carry no ``flame_sfc``) fires and the
infrastructure provider sees it, while it may not define KPIs on media-service measurements."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, kpi_pb2
from flame_control.runtime.testing import channel, running_server
from tests.integration.clmc.helpers import AUTH, TOKENS, clmc_spec, point, publish


def nap_deadman() -> kpi_pb2.KpiDefinition:
    d = kpi_pb2.KpiDefinition(
        name="nap_silent",
        media_service="infrastructure",
        kind=kpi_pb2.KPI_KIND_DEADMAN,
        measurement="nap_fabric",
        group_by=["flame_location"],
        scope={"switch": "sw-1"},
    )
    d.deadman_period.FromSeconds(1)
    return d


def test_clmc22_deadman_on_a_silent_nap_fires_for_the_infrastructure_provider(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path, kpi_interval_s=0.3), auth=AUTH) as target:
            infra = clmc_pb2_grpc.ClmcServiceStub(channel(target, TOKENS["infrastructure_provider"]))
            comp = clmc_pb2_grpc.ClmcServiceStub(channel(target, TOKENS["component"]))
            msp = clmc_pb2_grpc.ClmcServiceStub(channel(target, TOKENS["media_service_provider"]))
            defined = (await infra.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="k1", kpi=nap_deadman()))).kpi
            assert dict(defined.scope) == {"switch": "sw-1"}  # no flame_sfc forced on an infrastructure KPI
            with pytest.raises(grpc.aio.AioRpcError) as exc:  # media-service data is outside its viewpoint
                bad = kpi_pb2.KpiDefinition()
                bad.CopyFrom(nap_deadman())
                bad.measurement, bad.name = "sf_http", "x"
                await infra.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="k2", kpi=bad))
            assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
            events = infra.SubscribeKpiEvents(clmc_pb2.SubscribeKpiEventsRequest())
            await asyncio.sleep(0.2)

            def fabric(nap: str) -> clmc_pb2.PublishMeasurementsRequest:
                tags = {"flame_location": nap, "switch": "sw-1"}
                return clmc_pb2.PublishMeasurementsRequest(
                    points=[point("nap_fabric", time.time_ns(), tags, frames_sent=10)]
                )

            await publish(comp, fabric("nap-1"), fabric("nap-2"))
            reader = asyncio.ensure_future(events.read())  # one read; cancelling it would cancel the stream
            deadline = time.monotonic() + 15
            while not reader.done() and time.monotonic() < deadline:
                await publish(comp, fabric("nap-2"))  # nap-2 keeps reporting; nap-1 has gone silent
                await asyncio.wait({reader}, timeout=0.5)
            fired = reader.result().event if reader.done() else None
            assert fired is not None, "no deadman event for the silent NAP"
            assert fired.state == kpi_pb2.KPI_STATE_FIRING and dict(fired.group) == {"flame_location": "nap-1"}
            events.cancel()
            listed = (await infra.ListKpis(clmc_pb2.ListKpisRequest())).kpis
            assert [(k.kpi.name, [dict(f.group) for f in k.firing]) for k in listed] == [
                ("nap_silent", [{"flame_location": "nap-1"}])
            ]
            assert (await msp.ListKpis(clmc_pb2.ListKpisRequest())).kpis == []

    asyncio.run(scenario())


def test_clmc19_a_media_service_kpi_on_nap_http_counts_only_its_own_service(tmp_path: Path) -> None:
    """The orchestrator defines a service's KPIs as the platform operator; a KPI on ``nap_http`` (an infrastructure
    measurement prefix) is still that service's KPI: ``flame_sfc`` is added to its scope, so demand for other
    services at the same NAP does not count (regression: every service's edge-demand KPI summed all services). Only
    an explicit ``infrastructure`` KPI keeps its scope as given, and a media service provider may not define one."""

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path, kpi_interval_s=0.3), auth=AUTH) as target:
            ops = clmc_pb2_grpc.ClmcServiceStub(channel(target, TOKENS["platform_operator"]))
            msp = clmc_pb2_grpc.ClmcServiceStub(channel(target, TOKENS["media_service_provider"]))
            demand = kpi_pb2.KpiDefinition(
                name="edge_demand",
                media_service="svc-a",
                kind=kpi_pb2.KPI_KIND_THRESHOLD,
                measurement="nap_http",
                field="requests",
                aggregation=kpi_pb2.AGGREGATION_SUM,
                scope={"flame_location": "nap-1"},
                comparison=kpi_pb2.COMPARISON_GREATER,
                threshold=50,
            )
            demand.window.FromSeconds(10)
            defined = (await ops.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="k1", kpi=demand))).kpi
            assert dict(defined.scope) == {"flame_location": "nap-1", "flame_sfc": "svc-a"}
            assert not defined.infrastructure
            infra = kpi_pb2.KpiDefinition()
            infra.CopyFrom(demand)
            infra.name, infra.infrastructure = "nap_demand", True
            defined = (await ops.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="k2", kpi=infra))).kpi
            assert dict(defined.scope) == {"flame_location": "nap-1"} and defined.infrastructure
            infra.name = "mine"
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await msp.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="k3", kpi=infra))
            assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
            listed = {k.kpi.name: dict(k.kpi.scope) for k in (await ops.ListKpis(clmc_pb2.ListKpisRequest())).kpis}
            assert listed == {
                "edge_demand": {"flame_location": "nap-1", "flame_sfc": "svc-a"},
                "nap_demand": {"flame_location": "nap-1"},
            }

    asyncio.run(scenario())
