"""KPI identity through the real orchestrator (CLMC-19, CLMC-22, issue 15): the orchestrator re-defines every KPI of a
media service on each update; an alert firing at the CLMC stays firing across the update and clears afterwards
(before the fix the update dropped the alert state: no CLEARED event ever came and the SFEMC stayed "firing")."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from flame_control.api.flame.clmc.v1 import clmc_pb2, kpi_pb2
from flame_control.api.flame.orchestrator.v1 import orchestrator_pb2 as O
from flame_control.vim.process import ProcessVim
from tests.support.control_plane import VOD, ControlPlane, start_control_plane
from tests.support.procs import ProcessGroup

pytestmark = pytest.mark.slow
FQDN = "vod.video.flame.example"
S = 1_000_000_000


def wait(what: str, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except grpc.RpcError as err:
            last = err
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


@pytest.fixture
def cp(procs: ProcessGroup) -> Iterator[ControlPlane]:
    plane = start_control_plane(procs, naps=("nap-dc", "nap-edge-a1", "nap-edge-a2", "nap-edge-b1"))
    try:
        wait(
            "catalogue applied",
            lambda: len(plane.orchestrator.GetInfrastructure(O.GetInfrastructureRequest(), timeout=5).sites) == 3,
        )
        yield plane
    finally:
        procs.stop_all()
        vim = ProcessVim(plane.state_dir / "sfemc" / "process-vim")
        for inst in vim.list():
            vim.delete(inst.instance_id)


def firing_groups(cp: ControlPlane) -> list[dict[str, str]]:
    (status,) = cp.clmc.ListKpis(clmc_pb2.ListKpisRequest(media_service="vod"), timeout=5).kpis
    return [dict(f.group) for f in status.firing]


def requests_at(cp: ControlPlane, *points: tuple[int, int]) -> None:
    """nap_http demand at nap-edge-a2 (what its NAP reports): (requests, time)."""
    batch = clmc_pb2.PublishMeasurementsRequest()
    for requests, t_ns in points:
        m = batch.points.add(name="nap_http", tags={"flame_location": "nap-edge-a2", "fqdn": FQDN})
        m.time.FromNanoseconds(t_ns)
        m.fields["requests"].int_value = requests
    cp.clmc.PublishMeasurements(iter([batch]), timeout=5)


def test_clmc19_service_update_while_an_alert_fires_keeps_it_and_it_clears_later(cp: ControlPlane) -> None:
    """edge_a_demand: sum of requests over 30 s > 50 fires, < 10 clears. The sum goes 520 (fires), then 20..40
    (between the thresholds: still firing, hysteresis) while the service is updated; before the fix the update's
    DefineKpi dropped the alert, 40 did not fire it again, and no CLEARED ever came."""
    template = VOD.read_text()
    cp.orchestrator.DeployMediaService(O.DeployMediaServiceRequest(request_id="d1", template=template), timeout=15)
    wait("KPI defined", lambda: cp.clmc.ListKpis(clmc_pb2.ListKpisRequest(media_service="vod"), timeout=5).kpis, 60)
    t0 = time.time_ns()
    requests_at(cp, (500, t0 - 25 * S), (20, t0))
    wait("edge_a_demand firing", lambda: firing_groups(cp) == [{}], 30)
    events = cp.clmc.SubscribeKpiEvents(clmc_pb2.SubscribeKpiEventsRequest(media_service="vod"), timeout=120)
    time.sleep(max(0.0, (t0 + 6 * S - time.time_ns()) / 1e9))  # the 500 has left the window: the sum is 20
    assert firing_groups(cp) == [{}]
    requests_at(cp, (20, time.time_ns()))  # sum 40: still between the thresholds during the update
    ms = cp.orchestrator.GetMediaService(O.GetMediaServiceRequest(name="vod"), timeout=5).service
    updated = template.replace("Video on demand with", "Video on demand (updated) with")
    assert updated != template
    cp.orchestrator.UpdateMediaService(
        O.UpdateMediaServiceRequest(request_id=uuid.uuid4().hex, name="vod", template=updated), timeout=15
    )
    wait(
        "update reconciled",
        lambda: (
            (
                s := cp.orchestrator.GetMediaService(O.GetMediaServiceRequest(name="vod"), timeout=5).service
            ).observed_generation
            >= s.generation
            > ms.generation
        ),
        30,
    )
    assert firing_groups(cp) == [{}]  # still firing after the update's DefineKpi
    # No more points: the window empties and the alert clears; CLEARED arrives, and nothing fired again meanwhile.
    first = next(iter(events)).event
    events.cancel()
    assert (first.state, first.kpi) == (kpi_pb2.KPI_STATE_CLEARED, "edge_a_demand"), first
    assert firing_groups(cp) == []
