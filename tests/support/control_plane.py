"""The control plane as real processes for orchestration tests and benchmarks: `flame up` (orchestrator, SFEMC, PCE
with the emulated fabric, CLMC) from a config file, plus `flame-nap` agents on the emulated fabric whose admin
services the SFEMC registers endpoints through. Stopped by PID with the process group; `restart()` kills the
control plane hard (SIGKILL) and starts it again on the same state directory."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from flame_control.api.flame.clmc.v1 import clmc_pb2_grpc
from flame_control.api.flame.orchestrator.v1 import orchestrator_pb2_grpc
from flame_control.api.flame.pce.v1 import pce_pb2_grpc
from flame_control.api.flame.sfemc.v1 import sfemc_pb2_grpc
from nap_agent.agent import Settings as NapSettings
from tests.support.nap_procs import NapProcess
from tests.support.procs import Proc, ProcessGroup, free_port, port_open, wait_for

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "examples" / "infrastructure" / "flame-integration.yaml"
VOD = ROOT / "examples" / "media-services" / "vod.yaml"
KEYS = ("orchestrator", "sfemc", "pce", "clmc")


@dataclass
class ControlPlane:
    """A running `flame up` and its NAP agents."""

    group: ProcessGroup
    ports: dict[str, int]
    emulated_port: int
    config_path: Path
    state_dir: Path
    #: Port of `flame up`'s Prometheus /metrics endpoint.
    metrics_port: int = 0
    proc: Proc | None = None
    naps: dict[str, NapProcess] = field(default_factory=dict)
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)

    def channel(self, key: str) -> grpc.Channel:
        if key not in self._channels:
            self._channels[key] = grpc.insecure_channel(f"127.0.0.1:{self.ports[key]}")
        return self._channels[key]

    @property
    def orchestrator(self) -> Any:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel("orchestrator"))

    @property
    def sfemc(self) -> Any:
        return sfemc_pb2_grpc.SfemcServiceStub(self.channel("sfemc"))

    @property
    def pce(self) -> Any:
        return pce_pb2_grpc.PceServiceStub(self.channel("pce"))

    @property
    def clmc(self) -> Any:
        return clmc_pb2_grpc.ClmcServiceStub(self.channel("clmc"))

    def start(self) -> None:
        self.proc = self.group.start(
            "flame-up",
            [sys.executable, "-m", "flame_control.cli.main", "up", "--config", str(self.config_path)],
            cwd=ROOT,
            env={"PYTHONUNBUFFERED": "1"},
            ready=lambda: all(port_open(p) for p in self.ports.values()),
            timeout=60,
        )

    def kill(self) -> None:
        """SIGKILL the control plane (a crash: no graceful shutdown, endpoint processes stay)."""
        assert self.proc is not None
        self.proc.popen.kill()
        self.proc.popen.wait(10)
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def restart(self) -> None:
        self.kill()
        self.start()

    def deploy_vod(self, timeout: float = 90.0) -> None:
        """Deploy examples/media-services/vod.yaml once the catalogue is applied; wait until it is RUNNING."""
        from flame_control.api.flame.orchestrator.v1 import orchestrator_pb2 as O

        def ask(fn: Any) -> Any:
            try:
                return fn()
            except grpc.RpcError:
                return None

        infra = O.GetInfrastructureRequest()
        sites = lambda: ask(lambda: self.orchestrator.GetInfrastructure(infra, timeout=5).sites)  # noqa: E731
        wait_for(sites, timeout, 0.2, "catalogue applied")
        request = O.DeployMediaServiceRequest(request_id=f"deploy-vod-{id(self)}", template=VOD.read_text())
        self.orchestrator.DeployMediaService(request, timeout=30)
        get = O.GetMediaServiceRequest(name="vod")
        running = O.SERVICE_STATUS_RUNNING
        wait_for(lambda: ask(lambda: self.orchestrator.GetMediaService(get, timeout=5).service.status == running),
                 timeout, 0.2, "vod RUNNING")  # fmt: skip

    def stop(self) -> int:
        assert self.proc is not None
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()
        return self.group.stop(self.proc)

    def add_nap(self, nap_id: str) -> NapProcess:
        nap = NapProcess(
            self.group,
            NapSettings(
                nap_id=nap_id,
                fabric=f"127.0.0.1:{self.emulated_port}",
                pce_endpoints=[f"127.0.0.1:{self.ports['pce']}"],
                http_listen=f"127.0.0.1:{free_port()}",
            ),
        )
        self.naps[nap_id] = nap
        return nap


def start_control_plane(
    group: ProcessGroup,
    *,
    naps: tuple[str, ...] = (),
    vims: dict[str, dict[str, Any]] | None = None,
    catalogue: Path | None = CATALOGUE,
    sfemc: dict[str, Any] | None = None,
) -> ControlPlane:
    """Start NAP agents first (their admin ports go into the SFEMC's config), then `flame up`."""
    ports = {k: free_port() for k in KEYS}
    emulated = free_port()
    work = group.workdir / "control-plane"
    work.mkdir(parents=True, exist_ok=True)
    cp = ControlPlane(group, ports, emulated, work / "config.json", work / "state", metrics_port=free_port())
    for nap_id in naps:
        cp.add_nap(nap_id)
    config: dict[str, Any] = {
        "state_dir": str(cp.state_dir),
        "listen": {"ports": ports},
        "metrics": {"port": cp.metrics_port},
        "services": {
            "pce": {"emulated_port": emulated},
            "sfemc": {
                "nap_admin": {n: f"127.0.0.1:{p.admin_port}" for n, p in cp.naps.items()},
                "vims": vims or {"process": {}},
                "health_interval_s": 0.5,
                **(sfemc or {}),
            },
            "orchestrator": {"catalogue_file": str(catalogue)} if catalogue else {},
        },
    }
    cp.config_path.write_text(json.dumps(config))
    cp.start()
    return cp
