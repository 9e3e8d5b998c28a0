"""Status that never lies (issue 14 item 3, ORCH-8, ORCH-9, SFEMC-5) against the real control plane and real NAP agents:

- a NAP agent restarted under a connected endpoint: the SFEMC registers the endpoint again within seconds and users
  are served again (before: RUNNING, registered at the PCE, every request `502 no local endpoint` indefinitely);
- split deployment (`flame up --services orchestrator` beside `flame up --services sfemc,pce,clmc`): with the SFEMC and
  PCE killed and every endpoint process killed, the orchestrator says UNKNOWN, never RUNNING (before: RUNNING, all
  endpoints CONNECTED, for 15+ s);
- restart window: after a control-plane crash, RUNNING is never shown while the PCE lists no registration;
- conditions (type, status, reason, message, last transition time) on services and endpoints; WatchMediaService
  opened before the service exists, and resumed from a revision.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import grpc
import pytest

from flame_control.api.flame.common.v1 import common_pb2
from flame_control.api.flame.orchestrator.v1 import orchestrator_pb2 as O
from flame_control.api.flame.pce.v1 import pce_pb2
from tests.integration.orchestrator.test_lifecycle import (
    CONNECTED,
    VOD,
    deploy,
    endpoints,
    get,
    registered_naps,
    running,
    service,
    vim_of,
    wait,
)
from tests.support.control_plane import ROOT, ControlPlane, start_control_plane
from tests.support.procs import ProcessGroup, free_port, port_open

pytestmark = pytest.mark.slow


def restart_nap(cp: ControlPlane, nap_id: str) -> None:
    """SIGKILL a NAP agent and start it again with the same config (same admin and HTTP ports): it comes back with
    no local services."""
    nap = cp.naps[nap_id]
    cp.group.stop(nap.proc, signal.SIGKILL, grace=5)
    nap.status_path.unlink(missing_ok=True)
    work = nap.status_path.parent
    nap.proc = cp.group.start(
        f"nap-{nap_id}-restarted-{time.monotonic_ns()}",
        [
            sys.executable,
            "-m",
            "nap_agent.cli",
            "--config",
            str(work / "config.json"),
            "--state-dir",
            str(work / "state"),
        ],
        cwd=ROOT,
        ready=lambda: nap.status_path.exists(),
        timeout=30,
    )


def served_by_origin(cp: ControlPlane) -> bool:
    try:
        status, headers, _ = get(cp.naps["nap-edge-a2"].http_port, "/vod/film/seg1.ts")
    except OSError:
        return False
    return status == 200 and headers.get("x-flame-endpoint") == "vod/origin"


def test_sfemc5_nap_agent_restart_re_registers_the_endpoint_within_seconds(cp: ControlPlane) -> None:
    deploy(cp, VOD.read_text())
    wait("vod running", lambda: running(cp), 60)
    wait("served through nap-edge-a2", lambda: served_by_origin(cp), 15)
    restart_nap(cp, "nap-dc")
    t0 = time.monotonic()
    wait("served again after the NAP restart", lambda: served_by_origin(cp), 30)
    recovered_s = time.monotonic() - t0
    print(f"served again {recovered_s:.1f} s after the NAP agent restarted")
    assert recovered_s < 15
    wait("vod running, origin verified", lambda: running(cp) and endpoints(cp)["origin"].verified, 15)


def test_orch9_conditions_and_a_watch_opened_before_the_service_exists_resumes_from_a_revision(
    cp: ControlPlane,
) -> None:
    stream = cp.orchestrator.WatchMediaService(O.WatchMediaServiceRequest(name="vod", wait_for_creation=True))
    first = next(stream)
    assert first.message == "waiting for creation"
    deploy(cp, VOD.read_text())
    seen = [first]
    for msg in stream:
        seen.append(msg)
        if msg.status == O.SERVICE_STATUS_RUNNING and not msg.endpoint_id:
            break
    stream.cancel()
    assert any(m.message == "created" for m in seen)
    revisions = [m.revision for m in seen[1:]]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
    # Resume after the "created" event: the same events again, first one marked resumed.
    created = next(m for m in seen if m.message == "created")
    again = cp.orchestrator.WatchMediaService(
        O.WatchMediaServiceRequest(name="vod", resume_after_revision=created.revision), timeout=10
    )
    replay = [next(again) for _ in range(len(seen) - 2)]
    again.cancel()
    assert replay[0].resumed and [m.revision for m in replay] == revisions[1:]
    ms = service(cp)
    conds = {c.type: c for c in ms.conditions}
    assert conds["Ready"].status == common_pb2.CONDITION_STATUS_TRUE
    assert conds["SfemcWatch"].status == common_pb2.CONDITION_STATUS_TRUE
    assert conds["EndpointsVerified"].status == common_pb2.CONDITION_STATUS_TRUE
    assert all(c.last_transition_time.seconds > 0 and c.reason for c in conds.values())
    origin = endpoints(cp)["origin"]
    verified = {c.type: c for c in origin.conditions}["Verified"]
    assert origin.verified and verified.status == common_pb2.CONDITION_STATUS_TRUE, verified


def test_orch8_restart_window_never_running_without_a_pce_registration(cp: ControlPlane) -> None:
    deploy(cp, VOD.read_text())
    wait("vod running", lambda: running(cp), 60)
    cp.restart()
    lies: list[str] = []
    running_since = 0.0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            st = service(cp).status
            if st != O.SERVICE_STATUS_RUNNING:
                running_since = 0.0
            else:
                running_since = running_since or time.monotonic()
                missing = "nap-dc" not in registered_naps(cp)
                # Still RUNNING and still missing after a second look.
                if missing and service(cp).status == O.SERVICE_STATUS_RUNNING and "nap-dc" not in registered_naps(cp):
                    lies.append("RUNNING while the PCE lists no registration of the origin")
                if time.monotonic() - running_since > 3:
                    break
        except grpc.RpcError:
            running_since = 0.0
        time.sleep(0.02)
    assert running_since, "never RUNNING after the restart"
    assert lies == []
    assert endpoints(cp)["origin"].state == CONNECTED


def _split_config(cp_config: Path) -> dict[str, object]:
    return json.loads(cp_config.read_text())  # type: ignore[no-any-return]


def test_orch8_split_deployment_with_sfemc_and_pce_killed_is_never_running(procs: ProcessGroup) -> None:
    plane = start_control_plane(procs, naps=("nap-dc", "nap-edge-a2"), catalogue=None)
    # Replace the single `flame up` by two: the orchestrator alone, and the SFEMC, PCE and CLMC together.
    plane.stop()
    config = _split_config(plane.config_path)
    config["services"]["orchestrator"] = {  # type: ignore[index]
        "catalogue_file": str(ROOT / "examples" / "infrastructure" / "flame-integration.yaml")
    }
    plane.config_path.write_text(json.dumps(config))
    ports = plane.ports

    def up(name: str, services: str, keys: tuple[str, ...]) -> object:
        return procs.start(
            name,
            [sys.executable, "-m", "flame_control.cli.main", "up", "--config", str(plane.config_path),
             "--services", services, f"--set=metrics.port={free_port()}"],  # one /metrics port per process
            cwd=ROOT,
            env={"PYTHONUNBUFFERED": "1"},
            ready=lambda: all(port_open(ports[k]) for k in keys),
            timeout=60,
        )  # fmt: skip

    backend = up("flame-up-backend", "sfemc,pce,clmc", ("sfemc", "pce", "clmc"))
    up("flame-up-orchestrator", "orchestrator", ("orchestrator",))
    try:
        wait("catalogue applied", lambda: len(plane.orchestrator.GetInfrastructure(
            O.GetInfrastructureRequest(), timeout=5).sites) == 3)  # fmt: skip
        wait("topology", lambda: plane.pce.GetTopology(pce_pb2.GetTopologyRequest(), timeout=5).version)
        deploy(plane, VOD.read_text())
        wait("vod running", lambda: running(plane), 60)
        pids = [vim_of(plane).pid_of(i.instance_id) for i in vim_of(plane).list()]
        procs.stop(backend, signal.SIGKILL)  # type: ignore[arg-type]
        for pid in pids:
            if pid:
                os.killpg(pid, signal.SIGKILL)
        statuses: list[int] = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15:
            statuses.append(service(plane).status)
            time.sleep(0.1)
        # A moment for the orchestrator to see the stream break, then never RUNNING again.
        after = statuses[20:]
        assert O.SERVICE_STATUS_RUNNING not in after, [O.ServiceStatus.Name(s) for s in after[:5]]
        assert service(plane).status == O.SERVICE_STATUS_UNKNOWN
        conds = {c.type: c for c in service(plane).conditions}
        assert conds["SfemcWatch"].status == common_pb2.CONDITION_STATUS_FALSE
    finally:
        procs.stop_all()
        vim = vim_of(plane)
        for inst in vim.list():
            vim.delete(inst.instance_id)


def test_sfemc5_delete_right_after_a_nap_restart_leaves_no_pce_registration(cp: ControlPlane) -> None:
    """Issue 14 item 4: the restarted NAP answers NOT_FOUND to the unregistration; the SFEMC withdraws the name at the
    PCE itself and checks it is gone (before: NOT_FOUND was taken as success and the registration stayed)."""
    deploy(cp, VOD.read_text())
    wait("vod running", lambda: running(cp), 60)
    assert registered_naps(cp) == {"nap-dc"}
    restart_nap(cp, "nap-dc")
    cp.orchestrator.DeleteMediaService(O.DeleteMediaServiceRequest(request_id="d-nap", name="vod"), timeout=5)
    wait("vod endpoints gone", lambda: endpoints(cp) == {}, 60)
    assert registered_naps(cp) == set()
