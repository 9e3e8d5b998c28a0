"""The built-in dashboard enforces viewpoints when auth is on (CLMC-17, CLMC-29): a real CLMC with token auth and the
dashboard over HTTP. No or an unknown token: 401; a media service provider sees only its own service's traffic, KPIs,
KPI events and endpoints; the operator sees everything; a component 403. Tokens in the URL never reach the log.
With auth off the dashboard answers without a token (the embedded localhost default)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, kpi_pb2, model_pb2
from flame_control.api.flame.common.v1 import common_pb2
from flame_control.runtime.testing import channel, running_server
from tests.integration.clmc.helpers import AUTH, TOKENS, S, clmc_spec, point, publish
from tests.support.browser import render
from tests.support.procs import free_port

#: svc-a (owned by the media service provider's token) is served at bristol, svc-b at barcelona.
LOCATION = {"svc-a": "bristol", "svc-b": "barcelona"}


def get(port: int, path: str, token: str | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


async def seed(stub: Any, now: int) -> None:
    """Traffic, one KPI firing per service, and one endpoint per service."""
    for service in LOCATION:
        kpi = kpi_pb2.KpiDefinition(
            name="latency",
            media_service=service,
            kind=kpi_pb2.KPI_KIND_THRESHOLD,
            measurement="nap_http",
            field="latency_ms",
            comparison=kpi_pb2.COMPARISON_GREATER,
            threshold=100,
        )
        await stub.DefineKpi(clmc_pb2.DefineKpiRequest(request_id=f"k-{service}", kpi=kpi))
    points = [
        point(
            "nap_http",
            now - i * S,
            {"flame_location": loc, "flame_sfc": svc, "flame_ue": f"ue-{svc}"},
            requests=5,
            latency_ms=300.0,
        )
        for i in range(30)
        for svc, loc in LOCATION.items()
    ]
    await publish(stub, clmc_pb2.PublishMeasurementsRequest(points=points))
    events = []
    for svc in LOCATION:
        e = model_pb2.ConfigEvent(
            source="sfemc",
            subject_kind="endpoint",
            tags={"flame_sfc": svc, "flame_sfe": f"ep-{svc}"},
            from_state=common_pb2.ENDPOINT_STATE_BOOTED,
            to_state=common_pb2.ENDPOINT_STATE_CONNECTED,
        )
        e.time.FromNanoseconds(now)
        events.append(e)

    async def stream() -> Any:
        yield clmc_pb2.PublishConfigEventsRequest(events=events)

    await stub.PublishConfigEvents(stream())


def services_in(snap: dict[str, Any]) -> dict[str, set[str]]:
    """Which services each part of a snapshot shows."""
    return {
        "traffic": {svc for svc, loc in LOCATION.items() if loc in snap["traffic"]},
        "kpis": {k["media_service"] for k in snap["kpis"]},
        "events": {e["kpi"].split("/")[0] for e in snap["events"]},
        "endpoints": {e["endpoint"].removeprefix("ep-") for e in snap["endpoints"]},
    }


def test_clmc29_dashboard_with_auth_401_without_token_msp_sees_only_its_service_operator_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    now = time.time_ns()
    caplog.set_level(logging.DEBUG, logger="flame.clmc.dashboard")

    async def scenario() -> None:
        spec = clmc_spec(tmp_path, dashboard_port=port, kpi_interval_s=0.2)
        async with running_server(spec, auth=AUTH) as target, channel(target, TOKENS["platform_operator"]) as ch:
            await seed(clmc_pb2_grpc.ClmcServiceStub(ch), now)
            await asyncio.sleep(1.0)  # both KPIs fire

            def check() -> None:
                # The page itself is static (no data); the data needs a token.
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                    assert page.status == 200 and b"svc-a" not in page.read()
                code, body, headers = get(port, "/api/snapshot")
                assert code == 401 and "bearer token" in body["error"]
                assert headers["WWW-Authenticate"].startswith("Bearer")
                assert get(port, "/api/snapshot", "not-a-token")[0] == 401
                assert get(port, "/api/snapshot?token=not-a-token")[0] == 401

                everything = {k: set(LOCATION) for k in ("traffic", "kpis", "events", "endpoints")}
                code, ops, _ = get(port, "/api/snapshot", TOKENS["platform_operator"])
                assert code == 200 and ops["viewer"]["role"] == "platform_operator"
                assert services_in(ops) == everything

                only_a = {k: {"svc-a"} for k in everything}
                code, msp, _ = get(port, "/api/snapshot", TOKENS["media_service_provider"])
                assert code == 200 and services_in(msp) == only_a
                code, msp_q, _ = get(port, f"/api/snapshot?token={TOKENS['media_service_provider']}")
                assert code == 200 and services_in(msp_q) == only_a  # the page's ?token= form

                code, ana, _ = get(port, "/api/snapshot", TOKENS["analyst"])
                assert code == 200 and services_in(ana) == everything
                # Infrastructure providers read infrastructure measurements (NAP traffic), not endpoint events.
                code, infra, _ = get(port, "/api/snapshot", TOKENS["infrastructure_provider"])
                assert code == 200 and services_in(infra)["traffic"] == set(LOCATION)
                assert infra["endpoints"] == []
                code, body, _ = get(port, "/api/snapshot", TOKENS["component"])
                assert code == 403 and "do not query measurements" in body["error"]
                for snap in (ops, msp, ana, infra):
                    assert "ue-svc" not in json.dumps(snap)  # never personal data

            await asyncio.to_thread(check)

    asyncio.run(scenario())
    assert "/api/snapshot" in caplog.text
    for token in TOKENS.values():
        assert token not in caplog.text


def test_clmc17_dashboard_without_auth_needs_no_token_and_shows_everything(tmp_path: Path) -> None:
    port = free_port()
    now = time.time_ns()

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path, dashboard_port=port, kpi_interval_s=0.2)) as target:
            async with channel(target) as ch:
                await seed(clmc_pb2_grpc.ClmcServiceStub(ch), now)
                await asyncio.sleep(1.0)
            code, snap, _ = await asyncio.to_thread(get, port, "/api/snapshot")
            assert code == 200 and snap["viewer"]["role"] == "platform_operator"
            assert services_in(snap) == {k: set(LOCATION) for k in ("traffic", "kpis", "events", "endpoints")}

    asyncio.run(scenario())


@pytest.mark.browser
def test_clmc29_dashboard_page_with_token_in_url_shows_only_the_msp_service_in_chromium(tmp_path: Path) -> None:
    port = free_port()
    now = time.time_ns()

    async def scenario() -> tuple[str, str]:
        spec = clmc_spec(tmp_path, dashboard_port=port, kpi_interval_s=0.2)
        async with running_server(spec, auth=AUTH) as target, channel(target, TOKENS["platform_operator"]) as ch:
            await seed(clmc_pb2_grpc.ClmcServiceStub(ch), now)
            await asyncio.sleep(1.0)
            url = f"http://127.0.0.1:{port}/"
            msp = await asyncio.to_thread(
                render, f"{url}?token={TOKENS['media_service_provider']}", tmp_path / "msp", tmp_path / "msp.png"
            )
            anonymous = await asyncio.to_thread(render, url, tmp_path / "anon", tmp_path / "anon.png")
            return msp, anonymous

    msp, anonymous = asyncio.run(scenario())
    assert "live · updated" in msp and "svc-a/latency" in msp and "ep-svc-a" in msp
    assert "svc-b" not in msp and 'data-location="barcelona"' not in msp
    assert "bearer token is needed" in anonymous and "svc-a" not in anonymous
