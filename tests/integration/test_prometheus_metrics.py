"""Prometheus metrics on every service and every NAP agent (issue 11 item 6), proven against a real Prometheus server:
`flame up` (orchestrator, SFEMC, PCE, CLMC) and four `flame-nap` agents each serve /metrics on loopback; Prometheus
scrapes them; the test asks Prometheus's HTTP API for the series an operator's dashboard uses
(clmc/dashboards/flame-control-plane.json): RPCs by method and code with latency histograms, PCE sessions, snapshot
pushes, flow-mods and reconvergence time (SFR-13), NAP requests, bytes, retransmissions, open exchanges and multicast
groups (SFR-1), CLMC points, KPI evaluations and firing alerts (CLMC-19), services and endpoints by state and VIM call
latency (ORCH-6).
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from flame_control.api.flame.pce.v1 import pce_pb2
from flame_control.vim.process import ProcessVim
from tests.support.control_plane import ControlPlane, start_control_plane
from tests.support.procs import ProcessGroup
from tests.support.prometheus import Prometheus, start_prometheus

pytestmark = pytest.mark.slow
FQDN = "vod.video.flame.example"
NAPS = ("nap-dc", "nap-edge-a1", "nap-edge-a2", "nap-edge-b1")
DASHBOARD = Path(__file__).resolve().parents[2] / "clmc" / "dashboards" / "flame-control-plane.json"


def value(result: list[dict[str, object]]) -> float:
    return sum(float(r["value"][1]) for r in result)  # type: ignore[index]


def wait_value(prom: Prometheus, expr: str, ok: object, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        v = value(prom.wait_for(expr, timeout))
        if ok(v):  # type: ignore[operator]
            return v
        assert time.monotonic() < deadline, f"{expr} = {v}"
        time.sleep(0.5)


@pytest.fixture
def stack(procs: ProcessGroup) -> Iterator[tuple[ControlPlane, Prometheus]]:
    cp = start_control_plane(procs, naps=NAPS)
    prom = start_prometheus(
        procs,
        {
            "flame-control": [f"127.0.0.1:{cp.metrics_port}"],
            "flame-nap": [f"127.0.0.1:{n.metrics_port}" for n in cp.naps.values()],
        },
    )
    try:
        yield cp, prom
    finally:
        procs.stop_all()
        vim = ProcessVim(cp.state_dir / "sfemc" / "process-vim")
        for inst in vim.list():  # endpoint instances outlive the control plane on purpose
            vim.delete(inst.instance_id)


def test_prometheus_scrapes_every_service_and_nap_agent_series_the_dashboard_uses(
    stack: tuple[ControlPlane, Prometheus],
) -> None:
    cp, prom = stack
    # Every target is up: one /metrics port for flame up, one per NAP agent.
    up = prom.wait_for('up{job=~"flame-.*"} == 1')
    deadline = time.monotonic() + 60
    while len(up) < 1 + len(NAPS):
        assert time.monotonic() < deadline, up
        time.sleep(0.5)
        up = prom.query('up{job=~"flame-.*"} == 1')

    # Work for every component: deploy the VOD service (orchestrator -> SFEMC -> VIM -> NAP -> PCE), fetch through an
    # edge NAP (NAP data plane, CLMC reports), fail one call (INVALID_ARGUMENT), flap a link (PCE reconvergence).
    cp.deploy_vod()
    edge = cp.naps["nap-edge-a1"]
    for _ in range(3):
        conn = http.client.HTTPConnection("127.0.0.1", edge.http_port, timeout=15)
        conn.request("GET", "/vod/demo/seg0.ts", headers={"Host": FQDN})
        assert conn.getresponse().read()
        conn.close()
    with pytest.raises(grpc.RpcError) as bad_call:
        cp.pce.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn="not a name", nap_id="nap-dc"), timeout=5)
    assert bad_call.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    topo = cp.pce.GetTopology(pce_pb2.GetTopologyRequest(), timeout=5).topology
    link = topo.links[0].id
    for state in (False, True):
        cp.pce.UpdateLinkState(pce_pb2.UpdateLinkStateRequest(link_id=link, up=state), timeout=10)

    # RPCs by method and code, with latency histograms, from the one runtime interceptor.
    assert wait_value(prom, 'flame_rpc_requests_total{method="DeployMediaService",code="OK"}', lambda v: v >= 1)
    bad = 'flame_rpc_requests_total{service="flame.pce.v1.PceService",method="RegisterFqdn",code="INVALID_ARGUMENT"}'
    assert wait_value(prom, bad, lambda v: v >= 1)
    assert prom.wait_for('flame_rpc_duration_seconds_bucket{method="GetTopology",le="+Inf"}')
    assert prom.wait_for("histogram_quantile(0.9, sum by (le) (rate(flame_rpc_duration_seconds_bucket[1m])))")
    # NAP agents' RPCs are counted too (the SFEMC registers endpoints through their admin service).
    assert wait_value(prom, 'flame_rpc_requests_total{service="flame.nap.v1.NapAgentService"}', lambda v: v >= 1)

    # PCE.
    assert wait_value(prom, 'flame_pce_nap_sessions{state="connected"}', lambda v: v == len(NAPS))
    assert wait_value(prom, "flame_pce_snapshot_pushes_total", lambda v: v >= len(NAPS))
    assert wait_value(prom, "flame_pce_flow_mods_total", lambda v: v > 0)
    assert wait_value(prom, "flame_pce_reconvergence_seconds_count", lambda v: v >= 2)

    # NAP agents (per nap_id).
    assert wait_value(prom, 'flame_nap_http_requests_total{nap_id="nap-edge-a1"}', lambda v: v >= 3)
    assert wait_value(prom, 'flame_nap_fabric_bytes_total{nap_id="nap-edge-a1",direction="received"}', lambda v: v > 0)
    assert len(prom.wait_for("flame_nap_retransmissions_total")) == len(NAPS)
    assert len(prom.wait_for("flame_nap_open_exchanges")) == 2 * len(NAPS)
    assert len(prom.wait_for("flame_nap_multicast_groups")) == 2 * len(NAPS)
    assert wait_value(prom, "flame_nap_pce_session_up", lambda v: v == len(NAPS))

    # CLMC (NAP reports and config events are ingested; the VOD template defines KPIs).
    assert wait_value(prom, "flame_clmc_points_ingested_total", lambda v: v > 0)
    assert prom.wait_for("flame_clmc_kpi_evaluations_total")
    assert prom.wait_for('flame_clmc_alerts_firing{media_service="vod",kpi="edge_a_demand"}')

    # Orchestrator and SFEMC.
    assert wait_value(prom, 'flame_orchestrator_media_services{status="running"}', lambda v: v == 1)
    assert wait_value(prom, 'flame_sfemc_endpoints{state="connected"}', lambda v: v >= 1)
    assert wait_value(
        prom, 'flame_sfemc_vim_call_duration_seconds_count{operation="placing",vim="process"}', lambda v: v >= 1
    )

    # The Grafana dashboard shipped beside the CLMC's: every panel's query returns data from this Prometheus.
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            assert prom.wait_for(target["expr"], timeout=90), (panel["title"], target["expr"])
