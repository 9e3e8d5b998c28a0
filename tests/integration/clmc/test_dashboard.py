"""Built-in dashboard (CLMC-17) in a real headless Chromium against a running CLMC: the page loads, its script polls
the JSON endpoint and renders live KPI, endpoint and NAP traffic data; the screenshot is kept under
test-artifacts/."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, kpi_pb2, model_pb2
from flame_control.api.flame.common.v1 import common_pb2
from flame_control.runtime.testing import channel, running_server
from tests.integration.clmc.helpers import S, clmc_spec, point, publish
from tests.support.browser import render
from tests.support.procs import free_port

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"


@pytest.mark.browser
def test_clmc17_dashboard_shows_live_data_in_headless_chromium(tmp_path: Path) -> None:
    port = free_port()
    now = time.time_ns()

    async def scenario() -> str:
        async with (
            running_server(clmc_spec(tmp_path, dashboard_port=port, kpi_interval_s=0.3)) as target,
            channel(target) as ch,
        ):
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            kpi = kpi_pb2.KpiDefinition(
                name="nap_latency",
                media_service="svc",
                kind=kpi_pb2.KPI_KIND_THRESHOLD,
                measurement="nap_http",
                field="latency_ms",
                comparison=kpi_pb2.COMPARISON_GREATER,
                threshold=100,
                group_by=["flame_location"],
            )
            await stub.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="k", kpi=kpi))
            points = [
                point(
                    "nap_http",
                    now - i * S,
                    {"flame_location": loc, "flame_sfc": "svc"},
                    requests=10 + i + 20 * j,
                    latency_ms=300.0 if loc == "bristol" else 20.0,
                )
                for i in range(120)
                for j, loc in enumerate(["bristol", "barcelona"])
            ]
            await publish(stub, clmc_pb2.PublishMeasurementsRequest(points=points))
            event = model_pb2.ConfigEvent(
                source="sfemc",
                subject_kind="endpoint",
                tags={"flame_sfe": "ep-cache-1"},
                from_state=common_pb2.ENDPOINT_STATE_BOOTED,
                to_state=common_pb2.ENDPOINT_STATE_CONNECTED,
            )
            event.time.FromNanoseconds(now)

            async def events() -> object:
                yield clmc_pb2.PublishConfigEventsRequest(events=[event])

            await stub.PublishConfigEvents(events())
            await asyncio.sleep(1.0)  # the KPI fires for bristol
            snap = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/snapshot", timeout=5).read())
            assert snap["kpis"][0]["firing"] == [{"group": {"flame_location": "bristol"}, "value": 300.0}]
            return await asyncio.to_thread(render, f"http://127.0.0.1:{port}/", tmp_path, tmp_path / "dashboard.png")

    dom = asyncio.run(scenario())
    shot = tmp_path / "dashboard.png"
    assert shot.exists() and shot.stat().st_size > 5000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "clmc-dashboard.png")
    # Rendered by the page's script from live data (the static HTML contains none of it).
    assert "live · updated" in dom
    assert "svc/nap_latency" in dom and "firing (1)" in dom
    assert "ep-cache-1" in dom and "connected" in dom
    assert 'data-location="bristol"' in dom and 'data-location="barcelona"' in dom
