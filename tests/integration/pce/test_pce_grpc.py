"""PceService over real gRPC with the full runtime: atomic topology, NAP sessions (xDS-style snapshots, ACK/NACK),
link failure pushes to affected NAPs only (SFR-13), registrations over the stream (SFR-11)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2

from flame_control.api.flame.pce.v1 import nap_session_pb2, pce_pb2, pce_pb2_grpc
from flame_control.runtime.service import ServiceSpec
from flame_control.runtime.testing import channel, running_server
from pce import topology as topolib
from pce.core import PceCore
from pce.service import ACCESS, PceServicer

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "topologies" / "flame-integration.yaml"
VOD = "vod.video.flame.example"


def spec() -> ServiceSpec:
    return ServiceSpec(
        "flame.pce.v1.PceService", PceServicer(PceCore()), pce_pb2_grpc.add_PceServiceServicer_to_server, ACCESS
    )


def example() -> Any:
    return topolib.to_proto(topolib.load_file(EXAMPLE))


class Nap:
    """A NAP's side of a NapSession: sends requests from a queue, collects responses."""

    def __init__(self, stub: pce_pb2_grpc.PceServiceStub, nap_id: str, last: int = 0) -> None:
        self.outbox: asyncio.Queue[nap_session_pb2.NapSessionRequest | None] = asyncio.Queue()
        self.inbox: asyncio.Queue[nap_session_pb2.NapSessionResponse] = asyncio.Queue()
        hello = nap_session_pb2.Hello(nap_id=nap_id, last_applied_version=last)
        self.outbox.put_nowait(nap_session_pb2.NapSessionRequest(hello=hello))
        self.call = stub.NapSession(self._requests())
        self.reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[nap_session_pb2.NapSessionRequest]:
        while (item := await self.outbox.get()) is not None:
            yield item

    async def _read(self) -> None:
        async for msg in self.call:
            self.inbox.put_nowait(msg)

    async def next(self, timeout: float = 5.0) -> nap_session_pb2.NapSessionResponse:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    def send(self, **kwargs: Any) -> None:
        self.outbox.put_nowait(nap_session_pb2.NapSessionRequest(**kwargs))

    async def close(self) -> None:
        self.outbox.put_nowait(None)
        self.call.cancel()
        self.reader.cancel()


def test_sfr7_bad_topology_applies_nothing() -> None:
    async def scenario() -> None:
        async with running_server(spec()) as target, channel(target) as ch:
            stub = pce_pb2_grpc.PceServiceStub(ch)
            good = await stub.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=example()))
            bad = example()
            bad.links[0].weight = -3
            bad.links[1].b.node_id = "ghost"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=bad))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "topology.links[0].weight" in (info.value.details() or "")
            now = await stub.GetTopology(pce_pb2.GetTopologyRequest())
            assert now.version == good.version
            assert now.topology == example()

    asyncio.run(scenario())


def test_sfr11_sfr13_nap_sessions_get_snapshots_and_only_affected_naps_get_new_versions() -> None:
    async def scenario() -> None:
        async with running_server(spec()) as target, channel(target) as ch:
            stub = pce_pb2_grpc.PceServiceStub(ch)
            await stub.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=example()))
            server = Nap(stub, "nap-dc")
            first = (await server.next()).snapshot
            assert first.version == 1 and len(first.ilid) == 32
            server.send(ack=nap_session_pb2.Ack(version=1))
            # the server NAP registers its FQDN over the stream
            server.send(registration=nap_session_pb2.LocalRegistration(correlation_id="c1", fqdn=VOD))
            replies = [await server.next(), await server.next()]
            reply = next(r for r in replies if r.HasField("registration_reply"))
            assert reply.registration_reply.status.code == code_pb2.OK
            clients = {n: Nap(stub, n) for n in ("nap-edge-a1", "nap-edge-b1")}
            snaps = {n: (await c.next()).snapshot for n, c in clients.items()}
            for n, s in snaps.items():
                (route,) = s.routes
                assert route.fqdn == VOD and route.servers[0].server_nap_id == "nap-dc", n
                clients[n].send(ack=nap_session_pb2.Ack(version=s.version))
            # a link on edge-a's path fails: only edge-a gets a new version
            change = await stub.UpdateLinkState(
                pce_pb2.UpdateLinkStateRequest(link_id="dc-a", up=False, request_id="x1")
            )
            assert "nap-edge-a1" in change.affected_nap_ids and "nap-edge-b1" not in change.affected_nap_ids
            new_a = (await clients["nap-edge-a1"].next()).snapshot
            assert new_a.version == snaps["nap-edge-a1"].version + 1
            assert new_a.routes[0].servers[0].fid != snaps["nap-edge-a1"].routes[0].servers[0].fid
            with pytest.raises(asyncio.TimeoutError):
                await clients["nap-edge-b1"].next(timeout=0.3)
            clients["nap-edge-a1"].send(ack=nap_session_pb2.Ack(version=new_a.version))
            await asyncio.sleep(0.1)
            sessions = {s.nap_id: s for s in (await stub.ListNapSessions(pce_pb2.ListNapSessionsRequest())).sessions}
            assert sessions["nap-edge-a1"].acked_version == new_a.version
            assert sessions["nap-edge-b1"].pushed_version == snaps["nap-edge-b1"].version
            # path requests travel on the stream too
            clients["nap-edge-b1"].send(path_request=nap_session_pb2.PathRequest(correlation_id="p1", fqdn=VOD))
            path = (await clients["nap-edge-b1"].next()).path_reply
            assert path.correlation_id == "p1" and path.path.server_nap_id == "nap-dc"
            for nap in (server, *clients.values()):
                await nap.close()

    asyncio.run(scenario())


def test_nack_loop_is_held_back_and_recorded() -> None:
    async def scenario() -> None:
        servicer = PceServicer(PceCore())
        servicer.sessions.backoff_start_s = 0.6
        s = ServiceSpec("flame.pce.v1.PceService", servicer, pce_pb2_grpc.add_PceServiceServicer_to_server, ACCESS)
        async with running_server(s) as target, channel(target) as ch:
            stub = pce_pb2_grpc.PceServiceStub(ch)
            await stub.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=example()))
            nap = Nap(stub, "nap-edge-a1")
            snap = (await nap.next()).snapshot
            error = {"code": code_pb2.INVALID_ARGUMENT, "message": "cannot program"}
            nap.send(nack=nap_session_pb2.Nack(version=snap.version, error=error))
            while servicer.sessions.records["nap-edge-a1"].nack_count == 0:
                await asyncio.sleep(0.01)
            # changes during the hold-back are not pushed at once...
            await stub.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn=VOD, nap_id="nap-dc"))
            with pytest.raises(asyncio.TimeoutError):
                await nap.next(timeout=0.2)
            # ...but after the backoff the latest view goes out once
            later = (await nap.next(timeout=2)).snapshot
            assert later.version == snap.version + 1 and later.routes[0].fqdn == VOD
            sessions = (await stub.ListNapSessions(pce_pb2.ListNapSessionsRequest())).sessions
            rec = next(x for x in sessions if x.nap_id == "nap-edge-a1")
            assert rec.nack_count == 1 and rec.last_nack.message == "cannot program"
            await nap.close()

    asyncio.run(scenario())


def test_session_without_hello_or_unknown_nap_is_refused() -> None:
    async def scenario() -> None:
        async with running_server(spec()) as target, channel(target) as ch:
            stub = pce_pb2_grpc.PceServiceStub(ch)
            await stub.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=example()))

            async def only_ack() -> AsyncIterator[nap_session_pb2.NapSessionRequest]:
                yield nap_session_pb2.NapSessionRequest(ack=nap_session_pb2.Ack(version=1))

            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.NapSession(only_ack()):
                    pass
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            nap = Nap(stub, "nap-nowhere")
            with pytest.raises(grpc.aio.AioRpcError) as info2:
                await nap.call.read()
            assert info2.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            await nap.close()

    asyncio.run(scenario())
