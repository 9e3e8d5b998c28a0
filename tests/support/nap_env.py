"""An emulated-fabric FLAME edge for NAP tests and benchmarks: a real PCE gRPC server with the emulated fabric and the
roadmap topology, real NAP agents attached over UDP on loopback with real NAP sessions, origin servers in their own
processes. Everything stops and is cleaned up on exit. The PCE can be killed and replaced by a fresh one on the same
port while the fabric (the emulated switches) keeps forwarding, as real switches outlive a PCE."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flame_control.api.flame.pce.v1 import pce_pb2_grpc
from flame_control.runtime import testing
from flame_control.runtime.config import FlameConfig
from flame_control.runtime.server import ServiceHost
from flame_control.runtime.service import ServiceContext, ServiceSpec
from nap_agent.agent import LocalServiceConfig, NapAgent, Settings
from pce import topology as topolib
from pce.core import PceCore
from pce.service import ACCESS, PceServicer
from pce.service import Settings as PceSettings
from pce.service import build as build_pce
from tests.support.nap_procs import NapProcess
from tests.support.procs import ProcessGroup, free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "topologies" / "flame-integration.yaml"
VOD = "vod.video.flame.example"


@dataclass
class Env:
    """What a test gets."""

    pce_target: str
    pce: Any
    agents: dict[str, NapAgent] = field(default_factory=dict)
    processes: dict[str, NapProcess] = field(default_factory=dict)
    hosts: list[ServiceHost] = field(default_factory=list)
    #: Fabrics replaced by :meth:`restart_fabric` (already closed).
    stale_drivers: list[Any] = field(default_factory=list)

    async def kill_pce(self) -> None:
        """Stop the PCE's gRPC server at once (no grace: open NAP sessions are cut). The fabric keeps forwarding."""
        for running in self.hosts[-1].running.values():
            await running.server.stop(None)

    async def restart_pce(self) -> None:
        """A fresh PCE (new core from the topology file, no memory of sessions or registrations) on the same port,
        taking over the same fabric and resyncing it from its own desired state (crash-only)."""
        core = PceCore()
        core.apply_topology(topolib.load_file(EXAMPLE))
        driver = self.pce.driver
        servicer = PceServicer(core, driver=driver)
        driver.topology = lambda: core.topology
        spec = ServiceSpec("flame.pce.v1.PceService", servicer, pce_pb2_grpc.add_PceServiceServicer_to_server, ACCESS)
        host = ServiceHost(FlameConfig(shutdown_grace_s=1.0, shutdown_drain_s=0), settings={})
        await host.start_spec("pce", spec, int(self.pce_target.rsplit(":", 1)[1]))
        self.hosts.append(host)
        self.pce = servicer
        await servicer.program()

    async def restart_fabric(self) -> None:
        """The PCE *process* restarts (as ``flame up`` does): its gRPC server and its emulated fabric go away and a
        fresh PCE with a fresh fabric (new fabric key: new NAP secrets, no attached NAPs) comes up on the same ports."""
        from pce.switch.emulated import EmulatedDriver

        await self.kill_pce()
        old = self.pce.driver
        old.close()
        core = PceCore()
        core.apply_topology(topolib.load_file(EXAMPLE))
        driver = EmulatedDriver("127.0.0.1", old.port, topology=lambda: core.topology)
        servicer = PceServicer(core, driver=driver)
        spec = ServiceSpec("flame.pce.v1.PceService", servicer, pce_pb2_grpc.add_PceServiceServicer_to_server, ACCESS)
        host = ServiceHost(FlameConfig(shutdown_grace_s=1.0), settings={})
        await host.start_spec("pce", dataclasses.replace(spec, on_start=servicer.start_driver), self._pce_port())
        self.hosts.append(host)
        self.pce = servicer
        self.stale_drivers.append(old)

    def _pce_port(self) -> int:
        return int(self.pce_target.rsplit(":", 1)[1])

    def http(self, nap_id: str) -> int:
        if nap_id in self.processes:
            return self.processes[nap_id].http_port
        return self.agents[nap_id].http_port

    async def route_to(self, nap_id: str, fqdn: str, server_nap: str | None = None, timeout: float = 10.0) -> None:
        """Wait until ``nap_id`` has a route for ``fqdn`` (to ``server_nap`` first, when given)."""
        async with asyncio.timeout(timeout):
            while nap_id in self.processes:
                if fqdn in self.processes[nap_id].status().get("routes", []):
                    return
                await asyncio.sleep(0.1)
            while True:
                best = self.agents[nap_id].dp.routes.best(fqdn)
                if best is not None and (server_nap is None or best.server_nap_id == server_nap):
                    return
                await asyncio.sleep(0.02)


def start_origin(group: ProcessGroup, name: str) -> int:
    """Start an origin server process; returns its port."""
    proc = group.start(
        f"origin-{name}",
        [sys.executable, "-m", "tests.support.origin", "--name", name],
        ready=lambda: "port" in (group.workdir / f"origin-{name}.log").read_text(errors="replace"),
    )
    return int(json.loads(proc.output().splitlines()[0])["port"])


@asynccontextmanager
async def emulated_edge(
    tmp: Path,
    naps: dict[str, list[LocalServiceConfig]],
    processes: ProcessGroup | None = None,
    pce_before: list[str] | None = None,
    per_nap: dict[str, dict[str, Any]] | None = None,
    **nap_settings: Any,
) -> AsyncIterator[Env]:
    """PCE + emulated fabric + one NAP agent per entry of ``naps`` (with its local services): in this loop, or as
    `flame-nap` processes of ``processes`` when given. ``pce_before``: PCE endpoints listed before the real one
    (e.g. a dead replica). ``per_nap``: settings for single NAPs."""
    spec = build_pce(
        ServiceContext(
            "pce",
            PceSettings(topology_file=EXAMPLE, fabric="emulated", emulated_port=0),
            tmp,
            channel_to=lambda key: None,  # type: ignore[arg-type,return-value]
        )
    )
    # The fabric is closed once at the very end (not when a killed PCE's server stops): on_stop runs last, below.
    host = ServiceHost(FlameConfig(shutdown_grace_s=1.0, shutdown_drain_s=0), settings={})
    target = f"127.0.0.1:{await host.start_spec('pce', dataclasses.replace(spec, on_stop=None), 0)}"
    servicer: Any = spec.servicer
    env = Env(target, servicer, hosts=[host])
    try:
        for nap_id, services in naps.items():
            settings = Settings(
                nap_id=nap_id,
                fabric=f"127.0.0.1:{servicer.driver.port}",
                pce_endpoints=[*(pce_before or []), target],
                http_listen="127.0.0.1:0",
                tls_listen="127.0.0.1:0",
                local_services=services,
                **{**nap_settings, **(per_nap or {}).get(nap_id, {})},
            )
            if processes is not None:
                if settings.http_listen.endswith(":0"):
                    settings = settings.model_copy(update={"http_listen": f"127.0.0.1:{free_port()}"})
                settings = settings.model_copy(update={"tls_listen": ""})
                env.processes[nap_id] = await asyncio.to_thread(NapProcess, processes, settings)
                continue
            agent = NapAgent(settings, channel=testing.channel)
            env.agents[nap_id] = agent
            await agent.start()
        for agent in env.agents.values():
            await agent.wait_ready()
        yield env
    finally:
        for agent in env.agents.values():
            await agent.stop()
        for h in env.hosts:
            await h.stop()
        if spec.on_stop is not None:
            await spec.on_stop()
        if env.stale_drivers:
            env.pce.driver.close()


def start_stdlib_origin(group: ProcessGroup, name: str, websocket: bool = False) -> int:
    """Start Python's http.server (or, with ``websocket``, a websockets echo server) as an origin; returns its port
    (tests/support/stdlib_origin.py)."""
    argv = [sys.executable, "-m", "tests.support.stdlib_origin", *(["--websocket"] if websocket else [])]
    proc = group.start(name, argv, ready=lambda: "port" in (group.workdir / f"{name}.log").read_text(errors="replace"))
    return int(json.loads(proc.output().splitlines()[0])["port"])
