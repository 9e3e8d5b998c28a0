"""PCE replicas on a real 3-member etcd (issue 13, SFR-20), as real gRPC servers in one process: the leader accepts
writes, a follower answers them FAILED_PRECONDITION naming the leader, keeps a watched copy, serves reads and NAP
sessions with changes pushed; when the leader resigns the follower leads and accepts writes; a NAP that fails over
to another replica resumes its version with no re-push when nothing changed.

Replicas as separate processes, killed with SIGKILL under HTTP traffic, are in test_pce_replica_failover.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from flame_control.api.flame.pce.v1 import nap_session_pb2, pce_pb2, pce_pb2_grpc
from flame_control.runtime.config import FlameConfig
from flame_control.runtime.server import ServiceHost
from flame_control.runtime.service import ServiceContext
from flame_control.runtime.testing import channel
from pce.service import PceServicer, Settings, build
from tests.integration.pce.test_pce_grpc import VOD, Nap, example
from tests.support.etcd import EtcdCluster, start_etcd_cluster
from tests.support.procs import ProcessGroup, free_port

pytestmark = pytest.mark.etcd


@pytest.fixture
def cluster(procs: ProcessGroup, tmp_path: Path) -> Iterator[EtcdCluster]:
    c = start_etcd_cluster(procs, tmp_path)
    try:
        yield c
    finally:
        c.stop()


class Replicas:
    """PCE replicas served by one ServiceHost, each on its own port, all on one etcd."""

    def __init__(self, cluster: EtcdCluster, tmp: Path) -> None:
        self.cluster, self.tmp = cluster, tmp
        self.host = ServiceHost(FlameConfig(shutdown_grace_s=0.5), settings={})
        self.servicers: dict[str, PceServicer] = {}
        self.targets: dict[str, str] = {}

    async def start(self, name: str) -> pce_pb2_grpc.PceServiceStub:
        port = free_port()
        target = f"127.0.0.1:{port}"
        settings = Settings(
            fabric="none",
            store={"kind": "etcd", "endpoints": self.cluster.endpoints},  # type: ignore[arg-type]
            replica_id=name,
            advertise_address=target,
        )
        ctx = ServiceContext("pce", settings, self.tmp / name, channel_to=lambda key: None)  # type: ignore[arg-type,return-value]
        spec = build(ctx)
        self.servicers[name] = spec.servicer
        await self.host.start_spec(name, spec, port)
        self.targets[name] = target
        return pce_pb2_grpc.PceServiceStub(channel(target))

    async def stop(self, name: str) -> None:
        running = self.host.running.pop(name)
        await running.server.stop(0.2)
        if running.spec.on_stop is not None:
            await running.spec.on_stop()

    async def wait(self, predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)


def leader_of(err: grpc.aio.AioRpcError) -> str:
    """The LEADER precondition violation's description in a FAILED_PRECONDITION status."""
    status = status_pb2.Status.FromString(dict(err.trailing_metadata() or ())["grpc-status-details-bin"])
    for detail in status.details:
        pf = error_details_pb2.PreconditionFailure()
        if detail.Unpack(pf):
            return next(v.description for v in pf.violations if v.type == "LEADER")
    return ""


def test_sfr20_follower_refuses_writes_naming_the_leader_serves_reads_and_sessions_then_leads(
    cluster: EtcdCluster, tmp_path: Path
) -> None:
    async def scenario() -> None:
        r = Replicas(cluster, tmp_path)
        try:
            a = await r.start("a")
            await r.wait(lambda: r.servicers["a"].leads(), what="a leads")
            b = await r.start("b")
            fb = r.servicers["b"]
            await r.wait(lambda: fb.replica.leader is not None, what="b knows the leader")
            assert not fb.leads()

            with pytest.raises(grpc.aio.AioRpcError) as info:
                await b.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=example()))
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert r.targets["a"] in leader_of(info.value)

            await a.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=example()))
            await a.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn=VOD, nap_id="nap-dc", owner="acme"))
            await r.wait(lambda: (VOD, "nap-dc") in fb.core.registry.registrations, what="b's watched copy")
            assert await b.GetTopology(pce_pb2.GetTopologyRequest()) == await a.GetTopology(
                pce_pb2.GetTopologyRequest()
            )
            # a NAP session on the follower: a snapshot now, and a new one when the leader changes a link
            nap = Nap(b, "nap-edge-a1")
            first = (await nap.next()).snapshot
            assert [r.fqdn for r in first.routes] == [VOD]
            nap.send(ack=nap_session_pb2.Ack(version=first.version))
            await a.UpdateLinkState(pce_pb2.UpdateLinkStateRequest(link_id="dc-a", up=False))
            second = (await nap.next()).snapshot
            assert second.version == first.version + 1 and second.routes != first.routes
            nap.send(ack=nap_session_pb2.Ack(version=second.version))
            await asyncio.sleep(0.3)  # the session record reaches etcd
            await nap.close()

            # the leader resigns: b leads, accepts writes
            await r.stop("a")
            await r.wait(lambda: fb.leads(), what="b leads")
            await b.UpdateLinkState(pce_pb2.UpdateLinkStateRequest(link_id="dc-a", up=True))

            # a third replica: the NAP fails over to it with the version it applied; nothing changed -> no re-push
            c = await r.start("c")
            fc = r.servicers["c"]
            await r.wait(lambda: not fc.core.topology.links["dc-a"].down, what="c's copy has dc-a up")
            third_nap = Nap(b, "nap-edge-a1", last=second.version)
            third = (await third_nap.next()).snapshot  # dc-a came back up: the view changed, a new version
            assert third.version == second.version + 1
            third_nap.send(ack=nap_session_pb2.Ack(version=third.version))
            await asyncio.sleep(0.3)
            await third_nap.close()
            await r.wait(lambda: fc.sessions.records.get("nap-edge-a1") is not None, what="c knows the session")
            resumed = Nap(c, "nap-edge-a1", last=third.version)
            with pytest.raises(asyncio.TimeoutError):
                await resumed.next(timeout=1.0)
            await resumed.close()
        finally:
            for name in list(r.host.running):
                await r.stop(name)

    asyncio.run(scenario())
