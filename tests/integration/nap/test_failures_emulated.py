"""Failures under load on the emulated fabric, no root (issue 4 proof; SFR-13, SFR-20 PCE failure):

- a link on the path fails (PCE `UpdateLinkState` over gRPC) in the middle of a 20 MB download through two NAPs: the PCE
  pushes new FIDs, the transport resends on the alternate path and the client gets every byte, exactly;
- the PCE itself is killed (its gRPC server stopped without grace, every NAP session cut) in the middle of a request:
  the request completes and new ones are served on the last good routes; a fresh PCE on the same address gets every
  NAP back (they reconnect with jittered backoff), relearns the NAPs' registrations from their Hellos and continues
  their snapshot versions.
"""

from __future__ import annotations

import asyncio
import http.client
import threading
from pathlib import Path

from flame_control.api.flame.nap.v1 import nap_pb2
from flame_control.api.flame.pce.v1 import pce_pb2, pce_pb2_grpc
from flame_control.runtime.testing import channel
from nap_agent.agent import LocalServiceConfig
from tests.support.nap_env import VOD, emulated_edge, start_origin
from tests.support.origin import body
from tests.support.procs import process_group

CLIENT = "nap-edge-a1"
SIZE = 20 << 20


def streaming_get(port: int, path: str, progress: threading.Event, after: int) -> tuple[int, bytes]:
    """GET through the NAP, reading in chunks; sets ``progress`` once ``after`` bytes have arrived."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("GET", path, headers={"Host": VOD})
    r = c.getresponse()
    chunks, got = [], 0
    while chunk := r.read(64 << 10):
        chunks.append(chunk)
        got += len(chunk)
        if got >= after:
            progress.set()
    progress.set()
    return r.status, b"".join(chunks)


def get(port: int, path: str) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", path, headers={"Host": VOD})
    r = c.getresponse()
    return r.status, r.read()


def test_sfr13_download_survives_a_link_failure_on_its_path(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            port = start_origin(group, "dc")
            local = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{port}")], CLIENT: []}
            async with emulated_edge(tmp_path, local, rto_s=0.1) as env, channel(env.pce_target) as ch:
                stub = pce_pb2_grpc.PceServiceStub(ch)
                await env.route_to(CLIENT, VOD)
                resolve = pce_pb2.ResolvePathRequest(client_nap_id=CLIENT, fqdn=VOD)
                before = (await stub.ResolvePath(resolve)).path
                assert list(before.link_ids) == ["a-nap-a1", "dc-a", "dc-nap-dc"]
                client = env.agents[CLIENT]
                version = client.dp.routes.version
                progress = threading.Event()
                download = asyncio.create_task(
                    asyncio.to_thread(streaming_get, env.http(CLIENT), f"/bytes/{SIZE}", progress, 2 << 20)
                )
                assert await asyncio.to_thread(progress.wait, 60)
                assert not download.done(), "download finished before the failure"
                fabric = env.pce.driver.counters
                lost_before = fabric.received - fabric.forwarded  # unicast: one output per frame on a healthy path
                reply = await stub.UpdateLinkState(pce_pb2.UpdateLinkStateRequest(link_id="dc-a", up=False))
                assert list(reply.affected_nap_ids) == [CLIENT]  # the server NAP answers on the FID it is given
                status, data = await asyncio.wait_for(download, 180)
                assert status == 200 and len(data) == SIZE and data == body(SIZE), client.dp.counters
                assert client.dp.routes.version > version  # new FIDs were pushed to the client NAP
                after = (await stub.ResolvePath(resolve)).path
                assert list(after.node_ids) == [CLIENT, "sw-edge-a", "sw-edge-b", "sw-dc", "nap-dc"]
                # frames already on their way with the old FIDs were really lost on the dead link
                assert fabric.received - fabric.forwarded > lost_before
                # and the next request takes the alternate path from the start
                assert await asyncio.to_thread(get, env.http(CLIENT), "/bytes/300000") == (200, body(300000))

    asyncio.run(scenario())


def test_pce_killed_mid_request_naps_keep_forwarding_and_reconnect_to_a_new_pce(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            port = start_origin(group, "dc")
            local = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{port}")], CLIENT: []}
            async with emulated_edge(tmp_path, local) as env:
                await env.route_to(CLIENT, VOD)
                links = {n: a.pce for n, a in env.agents.items()}
                assert all(link is not None for link in links.values())
                connects = {n: link.connects for n, link in links.items() if link is not None}
                versions = {n: link.version for n, link in links.items() if link is not None}
                # a request is in flight (the origin holds it 1.5 s) when the PCE dies
                job = asyncio.create_task(asyncio.to_thread(get, env.http(CLIENT), "/slow/1500/200000"))
                await asyncio.sleep(0.3)
                await env.kill_pce()
                async with asyncio.timeout(10):
                    while any(link.state == nap_pb2.PCE_SESSION_STATE_CONNECTED for link in links.values() if link):
                        await asyncio.sleep(0.02)
                assert await asyncio.wait_for(job, 30) == (200, body(200000))
                # with no PCE at all, new requests go on over the last good routes
                assert await asyncio.to_thread(get, env.http(CLIENT), "/bytes/100000") == (200, body(100000))
                # a fresh PCE on the same address: every NAP comes back on its own
                await env.restart_pce()
                async with asyncio.timeout(20):
                    while not all(
                        link.state == nap_pb2.PCE_SESSION_STATE_CONNECTED and link.connects > connects[n]
                        for n, link in links.items()
                        if link is not None
                    ):
                        await asyncio.sleep(0.05)
                async with channel(env.pce_target) as ch:
                    stub = pce_pb2_grpc.PceServiceStub(ch)
                    regs = (await stub.ListRegistrations(pce_pb2.ListRegistrationsRequest())).registrations
                    assert [(r.fqdn, r.nap_id) for r in regs] == [(VOD, "nap-dc")]  # relearnt from the Hello
                    sessions = (await stub.ListNapSessions(pce_pb2.ListNapSessionsRequest())).sessions
                    assert {s.nap_id for s in sessions if s.connected} == set(links)
                    for s in sessions:  # versions continue above what each NAP last applied
                        assert s.pushed_version > versions[s.nap_id]
                await env.route_to(CLIENT, VOD)
                assert await asyncio.to_thread(get, env.http(CLIENT), "/bytes/100000") == (200, body(100000))

    asyncio.run(scenario())
