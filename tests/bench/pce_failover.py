"""PCE replica failover (issue 13, SFR-20): a 3-member etcd on loopback, two PCE replicas as their own `flame up
--services pce` processes, NAP sessions through the NAP agent's own session client (``nap_agent.pce_link.PceLink``,
endpoint list [leader, follower]). The leader is killed with SIGKILL; measured: kill -> the other replica accepts a
write (elected, fenced, state reloaded) and kill -> every NAP session re-established on it (first message or, when
nothing changed, the stream up with no re-push). ``failover_ms`` is the later of the two.

Used by ``flame bench pce`` (bench_pce.failover_figures) and by the etcd-marked test of the same scenario.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from flame_control.api.flame.nap.v1 import nap_pb2
from flame_control.api.flame.pce.v1 import pce_pb2, pce_pb2_grpc
from nap_agent.pce_link import PceLink
from pce import topology as topolib
from tests.support.etcd import EtcdCluster
from tests.support.procs import Proc, ProcessGroup, free_port, port_open

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "examples" / "topologies" / "flame-integration.yaml"
VOD = "vod.video.flame.example"


@dataclass
class PceReplica:
    """One `flame up --services pce` process on the shared etcd."""

    name: str
    port: int
    proc: Proc | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_replica(group: ProcessGroup, cluster: EtcdCluster, name: str) -> PceReplica:
    r = PceReplica(name, free_port())
    work = group.workdir / f"pce-{name}"
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "state_dir": str(work / "state"),
        "listen": {"ports": {"pce": r.port}},
        "services": {
            "pce": {
                "fabric": "none",
                "store": {"kind": "etcd", "endpoints": cluster.endpoints},
                "replica_id": name,
                "advertise_address": r.address,
            }
        },
    }
    path = work / "config.json"
    path.write_text(json.dumps(config))
    r.proc = group.start(
        f"pce-{name}",
        [sys.executable, "-m", "flame_control.cli.main", "up", "--config", str(path), "--services", "pce"],
        cwd=ROOT,
        env={"PYTHONUNBUFFERED": "1"},
        ready=lambda: port_open(r.port),
        timeout=60,
    )
    return r


async def leads(address: str) -> bool:
    """The replica at ``address`` accepts a write (a registration of a name nobody uses)."""
    async with grpc.aio.insecure_channel(address) as ch:
        try:
            await pce_pb2_grpc.PceServiceStub(ch).RegisterFqdn(
                pce_pb2.RegisterFqdnRequest(fqdn="failover-probe.bench.example", nap_id="nap-dc"), timeout=1.0
            )
            return True
        except grpc.aio.AioRpcError:
            return False


async def sessions_open(address: str, naps: list[str]) -> bool:
    """Every NAP has a session open at the replica at ``address`` (its ListNapSessions: a resumed session with
    nothing to push sends the NAP nothing, so the NAP's side cannot tell)."""
    async with grpc.aio.insecure_channel(address) as ch:
        try:
            reply = await pce_pb2_grpc.PceServiceStub(ch).ListNapSessions(pce_pb2.ListNapSessionsRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return False
    return {s.nap_id for s in reply.sessions if s.connected} >= set(naps)


@dataclass
class Sessions:
    """NAP sessions of every NAP of the topology, through the NAP agent's PceLink."""

    links: list[PceLink] = field(default_factory=list)
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    snapshots: dict[str, int] = field(default_factory=dict)

    def channel(self, endpoint: str) -> grpc.aio.Channel:
        if endpoint not in self.channels:
            self.channels[endpoint] = grpc.aio.insecure_channel(endpoint)
        return self.channels[endpoint]

    def start(self, naps: list[str], endpoints: list[str]) -> None:
        for nap in naps:
            link = PceLink(nap, endpoints, self.channel, lambda table, nap=nap: self._applied(nap), lambda: [])
            link.start()
            self.links.append(link)

    def _applied(self, nap: str) -> None:
        self.snapshots[nap] = self.snapshots.get(nap, 0) + 1

    def all_on(self, endpoint: str) -> bool:
        return all(
            link.endpoint == endpoint and link.state == nap_pb2.PCE_SESSION_STATE_CONNECTED for link in self.links
        )

    async def stop(self) -> None:
        for link in self.links:
            await link.stop()
        for ch in self.channels.values():
            await ch.close()


async def _until(predicate: object, timeout: float) -> float:
    """Seconds until the async or sync ``predicate`` is true (polled every 10 ms)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        result = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - t0
        await asyncio.sleep(0.01)
    raise TimeoutError(f"not within {timeout}s")


@dataclass
class Failover:
    """One measured failover."""

    elected_ms: float
    sessions_ms: float
    repushed: int

    @property
    def failover_ms(self) -> float:
        return max(self.elected_ms, self.sessions_ms)


async def one_failover(group: ProcessGroup, cluster: EtcdCluster) -> Failover:
    """Start two replicas (a leads), NAP sessions on a, kill -9 a, measure, stop everything it started."""
    a = start_replica(group, cluster, f"a{free_port()}")
    sessions = Sessions()
    b: PceReplica | None = None
    try:
        async with grpc.aio.insecure_channel(a.address) as ch:
            stub = pce_pb2_grpc.PceServiceStub(ch)
            topology = topolib.to_proto(topolib.load_file(TOPOLOGY))

            async def applied() -> bool:  # a write: accepted once a leads
                try:
                    await stub.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=topology), timeout=2.0)
                    return True
                except grpc.aio.AioRpcError:
                    return False

            await _until(applied, 30)
            await stub.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn=VOD, nap_id="nap-dc"))
        b = start_replica(group, cluster, f"b{free_port()}")
        naps = sorted(topolib.load_file(TOPOLOGY).naps())
        sessions.start(naps, [a.address, b.address])
        await _until(lambda: sessions.all_on(a.address) and len(sessions.snapshots) == len(naps), 30)
        await asyncio.sleep(1.0)  # acks and session records reach etcd and b
        before = sum(sessions.snapshots.values())
        assert a.proc is not None
        a.proc.popen.send_signal(signal.SIGKILL)
        elected = asyncio.create_task(_until(lambda: leads(b.address), 30))
        on_b = asyncio.create_task(_until(lambda: sessions_open(b.address, naps), 30))
        await asyncio.gather(elected, on_b)
        took_elect = elected.result()
        took_sessions = on_b.result()
        await asyncio.sleep(0.5)
        repushed = sum(sessions.snapshots.values()) - before
        return Failover(took_elect * 1000, took_sessions * 1000, repushed)
    finally:
        await sessions.stop()
        for r in (a, b):
            if r is not None and r.proc is not None:
                group.stop(r.proc)


def measure(workdir: Path, repeats: int) -> list[Failover]:
    """``repeats`` failovers on one 3-member etcd cluster."""
    from tests.support.etcd import start_etcd_cluster

    group = ProcessGroup(workdir)
    try:
        cluster = start_etcd_cluster(group, workdir)
        return [asyncio.run(one_failover(group, cluster)) for _ in range(repeats)]
    finally:
        group.stop_all()


def summary(results: list[Failover]) -> dict[str, float]:
    return {
        "failover_ms": statistics.median(r.failover_ms for r in results),
        "elected_ms": statistics.median(r.elected_ms for r in results),
        "sessions_ms": statistics.median(r.sessions_ms for r in results),
        "max_failover_ms": max(r.failover_ms for r in results),
        "repushed": max(r.repushed for r in results),
    }
