"""The roadmap topology on real Open vSwitch for NAP tests and benchmarks (root): three userspace bridges programmed
by a PCE process through os-ken, one network namespace per NAP host, NAP agents on raw interfaces in those namespaces
(their PCE sessions over host loopback), origin servers and clients inside the namespaces."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flame_control.runtime import testing
from nap_agent.agent import LocalServiceConfig, NapAgent, Settings
from tests.support.nap_procs import NapProcess
from tests.support.ovs import OvsTestbed, ovs_testbed
from tests.support.procs import ProcessGroup

HTTP_PORT = 8080
TLS_PORT = 8443


@dataclass
class OvsEdge:
    """What a test or benchmark gets."""

    fabric: Any  # tests.integration.pce.test_pce_ovs.Fabric
    agents: dict[str, NapAgent] = field(default_factory=dict)
    processes: dict[str, NapProcess] = field(default_factory=dict)
    popens: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def bed(self) -> OvsTestbed:
        return self.fabric.bed  # type: ignore[no-any-return]

    def start_origin(self, host: str, name: str, tls: tuple[str, str] | None = None, addr: str = "127.0.0.1") -> int:
        """An origin server process inside ``host``'s namespace; returns its port there."""
        argv = [sys.executable, "-m", "tests.support.origin", "--name", name, "--host", addr]
        if name.startswith(("stdlib", "websocket")):  # Python's http.server or a websockets server (issue 12)
            argv = [sys.executable, "-m", "tests.support.stdlib_origin", *(["--websocket"] if name[0] == "w" else [])]
        if tls is not None:
            argv = [sys.executable, "-m", "tests.support.tls_origin", "--cert", tls[0], "--key", tls[1]]
        p = self.bed.popen_in(host, argv)
        self.popens.append(p)
        assert p.stdout is not None
        return int(json.loads(p.stdout.readline())["port"])

    def client(
        self,
        host: str,
        fqdn: str,
        paths: list[str],
        requests: int = 1,
        concurrency: int = 1,
        addr: str = "127.0.0.1",
        port: int = HTTP_PORT,
    ) -> dict[str, Any]:
        """Run the test HTTP client inside ``host``'s namespace against its NAP, or ``addr:port`` (blocking: call via
        to_thread)."""
        argv = [sys.executable, "-m", "tests.support.http_client", "--port", str(port), "--host", fqdn, "--addr", addr]
        for path in paths:
            argv += ["--path", path]
        argv += ["--requests", str(requests), "--concurrency", str(concurrency), "--keepalive"]
        out = self.bed.exec_in(host, argv, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def set_mtu(self, mtu: int) -> None:
        """Jumbo frames on every fabric link (both veth ends, and OVS's own port MTU)."""
        ends: list[tuple[str, str]] = []  # (namespace or "", interface)
        for a, b in self.fabric.trunk_ifaces.values():
            ends += [("", a), ("", b)]
        for host in self.bed.hosts.values():
            ends += [("", host.outer), (host.netns, host.inner)]
        for netns, iface in ends:
            prefix = ["ip", "-n", netns] if netns else ["ip"]
            subprocess.run([*prefix, "link", "set", iface, "mtu", str(mtu)], check=True, capture_output=True)
            if not netns:
                self.bed.vsctl("set", "interface", iface, f"mtu_request={mtu}")

    def direct_link(self, a: str, b: str, mtu: int = 1500) -> tuple[str, str]:
        """A plain IP veth link between two hosts' namespaces (the benchmarks' direct baseline, bypassing NAPs and
        OVS); returns (address in a, address in b). Removed with the namespaces."""
        ns_a, ns_b = self.bed.hosts[a].netns, self.bed.hosts[b].netns
        va, vb = f"{self.bed.prefix}da"[:15], f"{self.bed.prefix}db"[:15]
        cmds = [
            ["ip", "link", "add", va, "type", "veth", "peer", "name", vb],
            ["ip", "link", "set", va, "netns", ns_a],
            ["ip", "link", "set", vb, "netns", ns_b],
            ["ip", "-n", ns_a, "addr", "add", "10.99.0.1/30", "dev", va],
            ["ip", "-n", ns_b, "addr", "add", "10.99.0.2/30", "dev", vb],
            ["ip", "-n", ns_a, "link", "set", va, "up"],
            ["ip", "-n", ns_b, "link", "set", vb, "up"],
            ["ip", "-n", ns_a, "link", "set", va, "mtu", str(mtu)],
            ["ip", "-n", ns_b, "link", "set", vb, "mtu", str(mtu)],
        ]
        for cmd in cmds:
            subprocess.run(cmd, check=True, capture_output=True)
        return "10.99.0.1", "10.99.0.2"

    def tx_bytes_from(self, host: str) -> int:
        """Bytes the NAP host sent into its switch port (rx on the bridge-side veth end)."""
        outer = self.bed.hosts[host].outer
        return int(Path(f"/sys/class/net/{outer}/statistics/rx_bytes").read_text())

    def stop_popens(self) -> None:
        for p in self.popens:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
        self.popens.clear()


@asynccontextmanager
async def ovs_edge(
    tmp: Path,
    procs: ProcessGroup,
    naps: dict[str, list[tuple[str, str]]],
    processes: bool = False,
    mtu: int = 1500,
    per_nap: dict[str, dict[str, Any]] | None = None,
    **nap_settings: Any,
) -> AsyncIterator[OvsEdge]:
    """``naps``: NAP host -> [(fqdn, origin name)] it fronts (an origin process is started per entry). With
    ``processes`` every NAP agent is its own `flame-nap` process (benchmarks), else they run in the caller's loop."""
    from tests.integration.pce.test_pce_ovs import Fabric

    with ovs_testbed(tmp / "ovs") as bed:
        fabric = await asyncio.to_thread(Fabric, bed, procs, tmp / "state")
        edge = OvsEdge(fabric)
        if mtu != 1500:
            edge.set_mtu(mtu)
        try:
            for nap_id, services in naps.items():
                local = [
                    LocalServiceConfig(fqdn=fqdn, endpoint=f"127.0.0.1:{edge.start_origin(nap_id, name)}")
                    for fqdn, name in services
                ]
                host = bed.hosts[nap_id]
                settings = Settings(
                    nap_id=nap_id,
                    transport="raw",
                    interface=host.inner,
                    netns=host.netns,
                    pce_endpoints=[f"127.0.0.1:{fabric.grpc_port}"],
                    http_listen=f"127.0.0.1:{HTTP_PORT}",
                    tls_listen=f"127.0.0.1:{TLS_PORT}",
                    local_services=local,
                    **{**nap_settings, **(per_nap or {}).get(nap_id, {})},
                )
                if processes:
                    edge.processes[nap_id] = await asyncio.to_thread(NapProcess, procs, settings)
                    continue
                agent = NapAgent(settings, channel=testing.channel)
                edge.agents[nap_id] = agent
                await agent.start()
            for agent in edge.agents.values():
                await agent.wait_ready(30)
            yield edge
        finally:
            for agent in edge.agents.values():
                await agent.stop()
            edge.stop_popens()
            fabric.channel.close()
            procs.stop_all()
