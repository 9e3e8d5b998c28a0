"""Health and graceful stop that probes can see (issue 11 item 5), with `flame up`, `flame-nap` and `flame status` as
real processes on loopback:

- SIGTERM: every service answers grpc.health.v1 Check with NOT_SERVING (reason "shutting down") during the drain
  period, then the process exits 0 within drain + shutdown_grace_s;
- `flame-nap` is NOT_SERVING while its PCE session is down and `flame status` prints why;
- `flame status` names a TLS mismatch ("server requires TLS", and the reverse) instead of a bare UNAVAILABLE;
- SF endpoint processes survive a graceful stop on purpose and the next start adopts them (operator guide).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flame_control.api.flame.orchestrator.v1 import orchestrator_pb2 as O
from flame_control.runtime.health import REASON_KEY
from flame_control.runtime.tlsgen import write_dev_pki
from flame_control.vim.process import ProcessVim
from tests.support.control_plane import start_control_plane
from tests.support.procs import Proc, ProcessGroup, free_port, port_open, wait_for

SERVICES = {
    "orchestrator": "flame.orchestrator.v1.OrchestratorService",
    "sfemc": "flame.sfemc.v1.SfemcService",
    "pce": "flame.pce.v1.PceService",
    "clmc": "flame.clmc.v1.ClmcService",
    "nap": "flame.nap.v1.NapAgentService",
}
TOPOLOGY = Path(__file__).resolve().parents[2] / "examples" / "topologies" / "flame-integration.yaml"
DRAIN_S = 1.5
GRACE_S = 3.0


def check(port: int, service: str) -> tuple[str, str]:
    """One health Check over the network: (status or error code, reason)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            reply, call = health_pb2_grpc.HealthStub(ch).Check.with_call(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
        except grpc.RpcError as err:
            return err.code().name, ""
        reason = dict(call.trailing_metadata() or ()).get(REASON_KEY, "")
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), str(reason)


def flame_up(procs: ProcessGroup, tmp: Path, keys: list[str], *extra: str) -> tuple[Proc, dict[str, int]]:
    ports = {k: free_port() for k in keys}
    argv = [sys.executable, "-m", "flame_control.cli.main", "up", "--services", ",".join(keys)]
    argv += ["--state-dir", str(tmp / "state"), "--set=services.pce.emulated_port=0", "--set=metrics.enabled=false"]
    argv += [f"--set=listen.ports.{k}={p}" for k, p in ports.items()]
    argv += [f"--set=shutdown_drain_s={DRAIN_S}", f"--set=shutdown_grace_s={GRACE_S}", *extra]
    proc = procs.start(
        "flame-up", argv, env={"PYTHONUNBUFFERED": "1"}, ready=lambda: all(map(port_open, ports.values())), timeout=60
    )
    return proc, ports


def flame_nap(procs: ProcessGroup, tmp: Path, pce_port: int) -> tuple[Proc, int]:
    port = free_port()
    argv = [sys.executable, "-m", "nap_agent.cli", "--state-dir", str(tmp / "nap"), f"--set=listen.ports.nap={port}"]
    argv += ["--set=services.nap.http_listen=127.0.0.1:0", f"--set=peers.pce=127.0.0.1:{pce_port}"]
    argv += ["--set=services.nap.nap_id=nap-edge-a1"]
    argv += [f"--set=shutdown_drain_s={DRAIN_S}", f"--set=shutdown_grace_s={GRACE_S}", "--set=metrics.enabled=false"]
    proc = procs.start("flame-nap", argv, env={"PYTHONUNBUFFERED": "1"}, ready=lambda: port_open(port), timeout=60)
    return proc, port


def flame_status(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "flame_control.cli.main", "status", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def sigterm_and_watch(proc: Proc, ports: dict[str, int]) -> tuple[dict[str, set[str]], float]:
    """SIGTERM the process, probe every service until it exits; returns what each answered and the time to exit."""
    seen: dict[str, set[str]] = {k: set() for k in ports}
    started = time.monotonic()
    os.kill(proc.popen.pid, signal.SIGTERM)
    while proc.popen.poll() is None and time.monotonic() - started < DRAIN_S + GRACE_S + 20:
        for key, port in ports.items():
            status, reason = check(port, SERVICES[key])
            seen[key].add(f"{status} {reason}".strip())
        time.sleep(0.05)
    proc.popen.wait(5)
    return seen, time.monotonic() - started


def test_flame_up_sigterm_every_service_answers_not_serving_while_draining_then_exits(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    keys = ["orchestrator", "sfemc", "pce", "clmc"]
    proc, ports = flame_up(procs, tmp_path, keys)
    for key in keys:
        assert check(ports[key], SERVICES[key]) == ("SERVING", "")
    seen, elapsed = sigterm_and_watch(proc, ports)
    for key in keys:
        assert any(s.startswith("NOT_SERVING shutting down") for s in seen[key]), (key, seen[key])
    assert proc.popen.returncode == 0, proc.output()[-2000:]
    # A generous bound: drain + grace + interpreter shutdown on a loaded 2-core machine.
    assert DRAIN_S <= elapsed < DRAIN_S + GRACE_S + 15, elapsed


def test_flame_nap_not_serving_while_pce_session_down_and_status_says_why(procs: ProcessGroup, tmp_path: Path) -> None:
    up, ports = flame_up(procs, tmp_path, ["pce"], f"--set=services.pce.topology_file={TOPOLOGY}")
    nap, nap_port = flame_nap(procs, tmp_path, ports["pce"])
    args = ["--services", "nap", f"--set=listen.ports.nap={nap_port}", "--timeout", "5"]
    wait_for(lambda: check(nap_port, SERVICES["nap"])[0] == "SERVING", 30, what="NAP SERVING with its PCE session up")
    assert flame_status(*args).returncode == 0
    procs.stop(up)
    wait_for(lambda: check(nap_port, SERVICES["nap"])[0] == "NOT_SERVING", 30, what="NAP NOT_SERVING without PCE")
    status = flame_status(*args)
    assert status.returncode == 1, status.stdout + status.stderr
    # The reason names the session state and the last error the NAP saw (connection refused: the PCE is gone).
    assert "NOT_SERVING (PCE session" in status.stdout and "):" in status.stdout, status.stdout
    seen, _ = sigterm_and_watch(nap, {"nap": nap_port})
    assert any(s.startswith("NOT_SERVING shutting down") for s in seen["nap"]), seen
    assert nap.popen.returncode == 0, nap.output()[-2000:]


def test_flame_status_says_server_requires_tls(procs: ProcessGroup, tmp_path: Path) -> None:
    pki = write_dev_pki(tmp_path / "pki")
    tls = ["--set=tls.enabled=true", f"--set=tls.cert={pki['server_cert']}", f"--set=tls.key={pki['server_key']}"]
    _, ports = flame_up(procs, tmp_path, ["pce"], *tls)
    status = flame_status("--services", "pce", f"--set=listen.ports.pce={ports['pce']}")
    assert status.returncode == 1
    assert "UNREACHABLE" in status.stdout and "server requires TLS" in status.stdout, status.stdout
    with_tls = flame_status(
        "--services", "pce", f"--set=listen.ports.pce={ports['pce']}", "--set=tls.enabled=true",
        f"--set=tls.server_ca={pki['ca']}",
    )  # fmt: skip
    assert with_tls.returncode == 0 and "SERVING" in with_tls.stdout, with_tls.stdout + with_tls.stderr


def test_flame_status_says_server_does_not_use_tls(procs: ProcessGroup, tmp_path: Path) -> None:
    pki = write_dev_pki(tmp_path / "pki")
    _, ports = flame_up(procs, tmp_path, ["pce"])
    status = flame_status(
        "--services", "pce", f"--set=listen.ports.pce={ports['pce']}", "--set=tls.enabled=true",
        f"--set=tls.server_ca={pki['ca']}",
    )  # fmt: skip
    assert status.returncode == 1
    assert "server does not use TLS" in status.stdout, status.stdout


@pytest.mark.slow
def test_graceful_stop_leaves_endpoint_processes_running_and_the_next_start_adopts_them(procs: ProcessGroup) -> None:
    """What the operator guide says survives a stop on purpose (ORCH-6, process VIM): SF endpoint processes."""
    cp = start_control_plane(procs, naps=("nap-dc", "nap-edge-a1", "nap-edge-a2", "nap-edge-b1"))
    vim = ProcessVim(cp.state_dir / "sfemc" / "process-vim")
    try:
        cp.deploy_vod()
        pids = {i.instance_id: vim.pid_of(i.instance_id) for i in vim.list()}
        alive = {k: p for k, p in pids.items() if p}
        assert alive, pids
        assert cp.stop() == 0  # SIGTERM: drain, then exit 0
        assert all(Path(f"/proc/{p}").exists() for p in alive.values()), "an endpoint process died with the stop"
        cp.start()
        get = O.GetMediaServiceRequest(name="vod")
        running = lambda: cp.orchestrator.GetMediaService(get, timeout=5).service.status == O.SERVICE_STATUS_RUNNING  # noqa: E731
        wait_for(running, 90, interval=0.2, what="vod RUNNING after the restart")
        assert {i.instance_id: vim.pid_of(i.instance_id) for i in vim.list()} == pids  # adopted, nothing restarted
    finally:
        procs.stop_all()
        for inst in vim.list():
            vim.delete(inst.instance_id)
