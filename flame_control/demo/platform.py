"""The platform ``flame demo`` runs on, as child processes: the multicast origin, six NAP agents (their admin ports
go into the SFEMC's config), then ``flame up`` (orchestrator, SFEMC, PCE, CLMC in one process) with the packaged
Figure 25 catalogue applied at start -- the order tests/support/control_plane.py uses for the integration tests.
Everything is a child in :class:`~.procs.ProcessGroup` and is stopped by PID."""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from flame_control.api.flame.clmc.v1 import clmc_pb2_grpc
from flame_control.api.flame.orchestrator.v1 import orchestrator_pb2 as O
from flame_control.api.flame.orchestrator.v1 import orchestrator_pb2_grpc
from flame_control.api.flame.pce.v1 import pce_pb2, pce_pb2_grpc
from flame_control.api.flame.sfemc.v1 import sfemc_pb2_grpc
from flame_control.demo import scenario as sc
from flame_control.demo.clients import Attachment
from flame_control.demo.docker import DemoVim, ProcessVimSetup
from flame_control.demo.fabrics import Backend
from flame_control.demo.procs import Proc, ProcessGroup, free_port, port_open

KEYS = ("orchestrator", "sfemc", "pce", "clmc")


@dataclass
class Nap:
    """A NAP agent process."""

    nap_id: str
    proc: Proc
    status_path: Path
    admin_port: int
    netns: str
    http_port: int = 0

    def status(self) -> dict[str, Any]:
        try:
            data = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


@dataclass
class Stubs:
    """gRPC stubs of the control plane."""

    channels: list[grpc.Channel] = field(default_factory=list)
    orchestrator: Any = None
    sfemc: Any = None
    clmc: Any = None
    pce: Any = None

    def close(self) -> None:
        for ch in self.channels:
            ch.close()


class Platform:
    """NAP agents + control plane for one demo run."""

    def __init__(self, backend: Backend, state: Path, vim: DemoVim | None = None) -> None:
        self.backend = backend
        #: Where the SFEMC runs the endpoints (process VIM, or docker on a private dockerd: demo/docker.py).
        self.vim: DemoVim = vim or ProcessVimSetup()
        self.state = state
        self.group = ProcessGroup(state / "logs")
        self.ports = {k: free_port() for k in KEYS}
        self.dashboard_port = free_port()
        self.naps: dict[str, Nap] = {}
        self.stubs = Stubs()
        self.control: Proc | None = None

    def attachment(self, nap_id: str) -> Attachment | None:
        """How a player reaches ``nap_id``'s HTTP port (None when that NAP has none)."""
        nap = self.naps.get(nap_id)
        if nap is None or not nap.http_port:
            return None
        return Attachment(nap_id, "127.0.0.1", nap.http_port, nap.netns)

    def alive(self, nap_id: str) -> bool:
        return nap_id in self.naps and self.naps[nap_id].proc.running()

    def start(self) -> None:
        """Fabric, multicast origin, NAP agents, then the control plane (StartError when one does not come up)."""
        self.backend.prepare(self.group, self.state)
        self.vim.prepare(self.group, self.state)
        origin_port = free_port()
        netns = self.backend.netns_of(sc.MULTICAST_NAP)
        argv = [sys.executable, "-m", "flame_control.vim.media_server", "--port", str(origin_port)]
        argv = self.backend.argv_in(sc.MULTICAST_NAP, [*argv, "--name", "live/origin"])
        self.group.start("multicast-origin", argv, ready=lambda: self._listening(netns, origin_port), timeout=20)
        work = self.state / "naps"
        pending = []
        for nap_id in sc.ALL_NAPS:
            d = work / nap_id
            d.mkdir(parents=True, exist_ok=True)
            status = d / "status.json"
            status.unlink(missing_ok=True)
            settings: dict[str, Any] = {
                "nap_id": nap_id,
                "pce_endpoints": [f"127.0.0.1:{self.ports['pce']}"],
                "http_listen": "127.0.0.1:0",
                "clmc_endpoint": f"127.0.0.1:{self.ports['clmc']}",
                "report_interval_s": 1.0,
                "status_file": str(status),
                **self.backend.nap_settings(nap_id),
            }
            if nap_id == sc.MULTICAST_NAP:
                settings["local_services"] = [{"fqdn": sc.MULTICAST_FQDN, "endpoint": f"127.0.0.1:{origin_port}"}]
                settings["coalesce_window_s"] = sc.MULTICAST_COALESCE_S
            admin = free_port()
            # Each NAP agent gets its own /metrics port (the default one is shared by every process on the host).
            config = {
                "listen": {"ports": {"nap": admin}},
                "metrics": {"port": free_port()},
                "services": {"nap": settings},
            }
            (d / "config.json").write_text(json.dumps(config, indent=2))
            argv = [sys.executable, "-m", "nap_agent.cli", "--config", str(d / "config.json")]
            proc = self.group.start(f"nap-{nap_id}", [*argv, "--state-dir", str(d / "state")])
            nap = Nap(nap_id, proc, status, admin, self.backend.netns_of(nap_id))
            self.naps[nap_id] = nap
            pending.append(nap)
        for nap in pending:
            self.group.wait_ready(nap.proc, nap.status_path.exists, 30)
            nap.http_port = int(nap.status().get("http_port") or 0)
        self._start_control_plane()

    def _listening(self, netns: str, port: int) -> bool:
        if not netns:
            return port_open(port)
        from flame_control.demo.ovs import port_open_in

        return port_open_in(netns, port)

    def _start_control_plane(self) -> None:
        cp = self.state / "control-plane"
        cp.mkdir(parents=True, exist_ok=True)
        config = {
            "state_dir": str(cp / "state"),
            "listen": {"ports": self.ports},
            "services": {
                "pce": self.backend.pce_settings(),
                "sfemc": {
                    "nap_admin": {n: f"127.0.0.1:{nap.admin_port}" for n, nap in self.naps.items()},
                    "vims": self.vim.sfemc_vims(),
                    "health_interval_s": 0.5,
                },
                "orchestrator": {"catalogue_file": str(self._catalogue_path())},
                "clmc": {"dashboard_port": self.dashboard_port},
            },
        }
        path = cp / "config.json"
        path.write_text(json.dumps(config, indent=2))
        argv = [sys.executable, "-m", "flame_control.cli.main", "up", "--config", str(path)]
        ports = list(self.ports.values())
        self.control = self.group.start(
            "flame-up", argv, {"PYTHONUNBUFFERED": "1"}, ready=lambda: all(port_open(p) for p in ports), timeout=60
        )
        self.backend.control_plane_started()
        for key in ("orchestrator", "sfemc", "clmc", "pce"):
            self.stubs.channels.append(grpc.insecure_channel(f"127.0.0.1:{self.ports[key]}"))
        o, s, c, pce = self.stubs.channels
        self.stubs.pce = pce_pb2_grpc.PceServiceStub(pce)
        self.stubs.orchestrator = orchestrator_pb2_grpc.OrchestratorServiceStub(o)
        self.stubs.sfemc = sfemc_pb2_grpc.SfemcServiceStub(s)
        self.stubs.clmc = clmc_pb2_grpc.ClmcServiceStub(c)
        self.vim.control_plane_started(self.stubs.sfemc)

    def _catalogue_path(self) -> Path:
        path = self.state / "flame-integration.yaml"
        path.write_text(sc.packaged("flame-integration.yaml"))
        return path

    def switches_connected(self) -> bool:
        try:
            reply = self.stubs.pce.ListSwitches(pce_pb2.ListSwitchesRequest(), timeout=2)
        except grpc.RpcError:
            return False
        return len(reply.switches) == 3 and all(s.connected for s in reply.switches)

    def catalogue_applied(self) -> bool:
        try:
            infra = self.stubs.orchestrator.GetInfrastructure(O.GetInfrastructureRequest(), timeout=2)
        except grpc.RpcError:
            return False
        return len(infra.sites) == 3

    def delete_services(self) -> str:
        """Delete every media service (the SFEMC removes their instances); then whatever instance is left."""
        try:
            return self._delete_services()
        finally:
            self.vim.remove_instances()

    def _delete_services(self) -> str:
        if self.stubs.orchestrator is None or self.control is None or not self.control.running():
            return "control plane not running: services not deleted"
        names: list[str] = []
        with contextlib.suppress(grpc.RpcError):
            listed = self.stubs.orchestrator.ListMediaServices(O.ListMediaServicesRequest(), timeout=5)
            names = [s.name for s in listed.services]
        for name in names:
            with contextlib.suppress(grpc.RpcError):
                self.stubs.orchestrator.DeleteMediaService(
                    O.DeleteMediaServiceRequest(request_id=uuid.uuid4().hex, name=name), timeout=10
                )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                left = self.stubs.orchestrator.ListMediaServices(O.ListMediaServicesRequest(), timeout=5).services
            except grpc.RpcError:
                break
            if not left:
                return f"{len(names)} media services deleted"
            time.sleep(0.2)
        return f"media services not all deleted within 30 s ({len(names)} asked)"
