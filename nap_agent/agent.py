"""One NAP agent: fabric port + data plane + client and server sides + PCE session + local registrations.

Used by ``flame-nap`` (through nap_agent/service.py), by ``flame demo`` and by the tests, which start several agents in
one process or one per network namespace.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import grpc
from pydantic import BaseModel, ConfigDict

from flame_control.icn import cid as cidlib
from nap_agent.admission import Limits
from nap_agent.client_side import ClientSettings, ClientSide
from nap_agent.dataplane import DataPlane
from nap_agent.fabric_port import EmulatedPort, FabricPort, RawPort, payload_size
from nap_agent.ip_over_icn import IpOverIcn
from nap_agent.monitoring import Reporter
from nap_agent.pce_link import PceLink
from nap_agent.proxy_settings import HttpProxySettings
from nap_agent.routes import RouteTable
from nap_agent.server_side import ServerSettings, ServerSide
from nap_agent.transport import TransportSettings
from nap_agent.tun import Tun

log = logging.getLogger("flame.nap")


class LocalServiceConfig(BaseModel):
    """An FQDN this NAP fronts (SFR-10): HTTP endpoint and optional TLS endpoint, both ``host:port``."""

    model_config = ConfigDict(extra="forbid")

    fqdn: str
    endpoint: str
    tls_endpoint: str = ""


class Settings(BaseModel):
    """`services.nap` config section."""

    model_config = ConfigDict(extra="forbid")

    #: This NAP's node id in the PCE topology.
    nap_id: str = "nap-1"
    #: Fabric transport: "emulated" (loopback, no root; the embedded default) or "raw" (AF_PACKET; root).
    transport: Literal["emulated", "raw"] = "emulated"
    #: Emulated fabric address (the PCE's `services.pce.emulated_port`).
    fabric: str = "127.0.0.1:50070"
    #: Fabric MTU on the emulated transport (the raw transport uses the interface's MTU).
    emulated_mtu: int = 16384
    #: Interface attached to the OVS bridge (raw transport).
    interface: str = ""
    #: Network namespace of the data plane (fabric interface, user listeners, local endpoints); the PCE session stays
    #: in the agent's own namespace. Empty = the agent's namespace. Needs root.
    netns: str = ""
    #: PCE endpoints (host:port), tried in order with jittered backoff; empty = the configured PCE peer.
    pce_endpoints: list[str] = []
    #: Where users' HTTP connections are accepted (explicit proxy or transparent redirect); port 0 = any.
    http_listen: str = "127.0.0.1:8080"
    #: Where TLS connections are accepted and routed by SNI (SFR-19); empty = off.
    tls_listen: str = ""
    #: FQDNs this NAP fronts, announced to the PCE (SFR-10/11).
    local_services: list[LocalServiceConfig] = []
    #: Frames in flight per stream (at most), bytes in flight per stream (at most), first retransmission timeout.
    window: int = 256
    window_bytes: int = 1 << 20
    rto_s: float = 0.05
    #: Bytes one exchange (stream) may hold for a reader that has not read them yet, out-of-order frames included;
    #: the receive window advertised to the sender protects it (issue 12 item 4: every buffer has a bound).
    receive_buffer: int = 8 << 20
    #: A member of a shared (coincidental-multicast) response that alone holds the others back for this long leaves
    #: the group and its connection is closed; the others go on at their own pace.
    member_stall_s: float = 5.0
    #: A stream with data waiting whose receiver makes no progress for this long fails (its connection closes).
    progress_timeout_s: float = 60.0
    #: Server exchanges in flight, in total and per source NAP (issue 12 item 5: forged first frames cost little).
    max_server_exchanges: int = 4096
    max_exchanges_per_source: int = 1024
    #: Exchanges from client NAPs not (yet) verified that may reach the local endpoint at once (the rest wait).
    max_unverified_active: int = 64
    #: Client side: request-head timeout (slowloris guard) and response timeout (504 after it).
    header_timeout_s: float = 10.0
    response_timeout_s: float = 30.0
    #: HTTP proxy limits (connections, body size and timeouts, CONNECT, access log).
    http: HttpProxySettings = HttpProxySettings()
    #: Server side: hold a new cacheable fetch this long to collect identical requests (coincidental multicast).
    coalesce_window_s: float = 0.0
    #: Event loop of the `flame-nap` process: "auto" (uvloop when installed), "uvloop" or "asyncio".
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    #: IPv4 prefixes behind this NAP (IP-over-ICN, SFR-2), and the TUN interface carrying them (empty = off; root).
    ip_prefixes: list[str] = []
    tun_name: str = ""
    #: Where this NAP is (reported with its lifecycle events, CLMC-5); unset = not reported.
    latitude: float | None = None
    longitude: float | None = None
    location_name: str = ""
    #: CLMC to report nap_http/nap_fabric points to (host:port; empty = no reports), and how often.
    clmc_endpoint: str = ""
    report_interval_s: float = 1.0
    #: Where a live status file is written (for `flame demo` and tests; empty = none).
    status_file: str = ""


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


class NapAgent:
    """The running agent."""

    def __init__(self, settings: Settings, channel: Callable[[str], grpc.aio.Channel] | None = None) -> None:
        self.settings = settings
        self.channel = channel
        self.local: dict[str, LocalServiceConfig] = {}
        for svc in settings.local_services:
            self.local[cidlib.normalise_fqdn(svc.fqdn)] = svc
        self.port: FabricPort | None = None
        transport = TransportSettings(
            window=settings.window,
            rto_s=settings.rto_s,
            receive_buffer=settings.receive_buffer,
            member_stall_s=settings.member_stall_s,
            progress_timeout_s=settings.progress_timeout_s,
        )
        limits = Limits(
            settings.max_server_exchanges, settings.max_exchanges_per_source, settings.max_unverified_active
        )
        self.dp = DataPlane(settings.nap_id, self._send, transport, limits=limits)
        http = settings.http
        self.server = ServerSide(
            self.dp,
            self._endpoint,
            ServerSettings(coalesce_window_s=settings.coalesce_window_s, via=settings.nap_id),
            settings.netns,
        )
        self.client = ClientSide(
            self.dp,
            ClientSettings(
                header_timeout_s=settings.header_timeout_s,
                response_timeout_s=settings.response_timeout_s,
                idle_timeout_s=http.idle_timeout_s,
                body_timeout_s=http.body_timeout_s,
                max_body=http.max_body_bytes,
                max_connections=http.max_connections,
                connect_method=http.connect,
                via=settings.nap_id,
                access_log=http.access_log,
            ),
            settings.netns,
            local=self.server,
        )
        self.pce: PceLink | None = None
        self.reporter: Reporter | None = None
        self.ip: IpOverIcn | None = None
        self.tun: Tun | None = None
        self.http_port = 0
        self.tls_port = 0
        self._status_task: asyncio.Task[None] | None = None

    def _send(self, frame: bytes) -> None:
        if self.port is not None:
            self.port.send(frame)

    def _endpoint(self, fqdn: str, tls: bool) -> tuple[str, int] | None:
        svc = self.local.get(fqdn)
        if svc is None:
            return None
        text = svc.tls_endpoint if tls else svc.endpoint
        return _hostport(text) if text else None

    def local_fqdns(self) -> list[str]:
        return sorted(set(self.local) | set(self.ip.names() if self.ip is not None else ()))

    def apply(self, table: RouteTable) -> None:
        """A new snapshot from the PCE (local services the PCE has not confirmed yet still count as local)."""
        table.local_fqdns = table.local_fqdns | frozenset(self.local)
        for name in self.local:
            table.by_cid[cidlib.http_cid(name)] = name
        self.dp.set_routes(table)
        if self.ip is not None:
            self.ip.set_routes(table)

    async def start(self) -> None:
        s = self.settings
        if s.transport == "raw":
            raw = RawPort(s.interface, self.dp.on_frame, s.netns)
            await raw.open()
            self.port = raw
        else:
            emu = EmulatedPort(s.nap_id, _hostport(s.fabric), self.dp.on_frame, s.emulated_mtu)
            await emu.open()
            self.port = emu
        self.dp.src_mac = self.port.mac
        self.dp.settings.segment = payload_size(self.port)
        self.dp.settings.window = max(8, min(s.window, s.window_bytes // self.dp.settings.segment))
        if s.tun_name:
            self._start_ip()
        self.apply(RouteTable())
        self.dp.start()
        host, port = _hostport(s.http_listen)
        self.http_port = await self.client.listen_http(host, port)
        if s.tls_listen:
            host, port = _hostport(s.tls_listen)
            self.tls_port = await self.client.listen_tls(host, port)
        if self.channel is not None and s.pce_endpoints:
            secret = self.port.set_secret if isinstance(self.port, EmulatedPort) else lambda secret: None
            self.pce = PceLink(
                s.nap_id, s.pce_endpoints, self.channel, self.apply, self.local_fqdns, on_fabric_secret=secret
            )
            self.pce.start()
        if self.channel is not None and s.clmc_endpoint:
            channel, target = self.channel, s.clmc_endpoint
            self.reporter = Reporter(
                s.nap_id, self.client.stats, self.fabric_counters, lambda: channel(target), s.report_interval_s
            )
            self.reporter.event("started", f"transport {s.transport}, http {self.http_port}", self._location())
            self.reporter.start()
        log.info(
            "nap agent started",
            extra={"fields": {"nap": s.nap_id, "transport": s.transport, "http": self.http_port, "tls": self.tls_port}},
        )
        self.write_status()
        if s.status_file:
            self._status_task = asyncio.get_running_loop().create_task(self._status_loop())

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.write_status()

    def _start_ip(self) -> None:
        s = self.settings
        dp = self.dp
        self.ip = IpOverIcn(
            s.nap_id, s.ip_prefixes, dp.send, lambda p: None, lambda: dp.settings.segment, lambda: dp.src_mac
        )
        self.tun = Tun(s.tun_name, self.ip.from_tun, s.netns, mtu=dp.settings.segment)
        self.ip.write_packet = self.tun.write
        dp.on_ip = self.ip.from_fabric
        self.tun.start()

    def _location(self) -> tuple[float, float, str] | None:
        s = self.settings
        if s.latitude is None or s.longitude is None:
            return None
        return s.latitude, s.longitude, s.location_name

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Until the fabric accepted this NAP and the first snapshot from the PCE is applied."""
        async with asyncio.timeout(timeout):
            if isinstance(self.port, EmulatedPort):
                await self.port.attached.wait()
            if self.pce is not None:
                await self.pce.first_snapshot.wait()

    def fabric_counters(self) -> dict[str, int]:
        """Cumulative fabric counters (nap_fabric)."""
        c = self.dp.counters
        retx = sum(ex.up.retransmissions for ex in self.dp.exchanges.values())
        retx += sum(g.stream.retransmissions for g in self.dp.groups.values())
        return {
            "frames_sent": c.frames_sent,
            "frames_received": c.frames_received,
            "frames_dropped": c.frames_garbage + c.frames_not_for_us + c.frames_unknown_session + c.frames_invalid_path,
            "retransmissions": self.dp.retransmissions_done + retx,
        }

    async def stop(self) -> None:
        if self._status_task is not None:
            self._status_task.cancel()
        if self.reporter is not None:
            self.reporter.event("stopped", "", self._location())
            await self.reporter.stop()
        await self.client.close()
        if self.pce is not None:
            await self.pce.stop()
        await self.dp.stop()
        self.server.close()
        if self.tun is not None:
            self.tun.close()
        if self.port is not None:
            self.port.close()

    def register(self, fqdn: str, endpoint: str, tls_endpoint: str = "") -> LocalServiceConfig:
        """Front a local endpoint under an FQDN and announce it to the PCE."""
        svc = LocalServiceConfig(fqdn=cidlib.normalise_fqdn(fqdn), endpoint=endpoint, tls_endpoint=tls_endpoint)
        self.local[svc.fqdn] = svc
        self.apply(self.dp.routes)
        if self.pce is not None:
            self.pce.announce(svc.fqdn)
        return svc

    def unregister(self, fqdn: str) -> bool:
        name = cidlib.normalise_fqdn(fqdn)
        if self.local.pop(name, None) is None:
            return False
        self.dp.routes.local_fqdns = self.dp.routes.local_fqdns - {name}
        if self.pce is not None:
            self.pce.announce(name, unregister=True)
        return True

    def status(self) -> dict[str, object]:
        """A JSON-able summary (status file, demo, benchmarks)."""
        c = self.dp.counters
        return {
            "nap_id": self.settings.nap_id,
            "http_port": self.http_port,
            "tls_port": self.tls_port,
            "snapshot_version": self.dp.routes.version,
            "requests": self.client.counters.requests,
            "served": self.server.requests_served,
            "frames_sent": c.frames_sent,
            "frames_received": c.frames_received,
            "bytes_sent": c.bytes_sent,
            "routes": sorted(self.dp.routes.by_fqdn),
            "multicast_responses": c.multicast_responses,
            "pid": os.getpid(),
        }

    def write_status(self) -> None:
        if self.settings.status_file:
            path = Path(self.settings.status_file)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.status()))
            tmp.replace(path)
