"""A user attached at the very NAP that fronts the surrogate (SFR-1, SFR-14, SFR-19) on the emulated fabric, no root.

The PCE's nearest-surrogate choice for clients at NAP X is X itself (cost 0) once X fronts the FQDN, e.g. after the
SFEMC connected an edge surrogate there. X then replays the request straight to its local endpoint (the server side's
pooled connections, nothing on the fabric): byte-exact small and large bodies, an upload, HTTPS by SNI to the local
``tls_endpoint``, a dead local endpoint -> clean 502, a silent one -> 504; and a kept-alive client connection moves
from a remote server NAP to the local endpoint and back as the local service is registered and unregistered through
the admin service, without its TCP connection breaking. The requests still count in ``nap_http`` at X.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from flame_control.api.flame.nap.v1 import nap_pb2, nap_pb2_grpc
from flame_control.api.flame.pce.v1 import pce_pb2, pce_pb2_grpc
from flame_control.runtime.service import ALL_ROLES, AccessRules, ServiceSpec
from flame_control.runtime.testing import channel, running_server
from nap_agent.agent import LocalServiceConfig
from nap_agent.service import NapAgentServicer
from tests.support.nap_env import VOD, emulated_edge, start_origin
from tests.support.origin import body
from tests.support.procs import free_port, process_group

NAP = "nap-edge-a1"
DEAD = "dead.video.flame.example"
SLOW = "slow.video.flame.example"


def fetch(conn: http.client.HTTPConnection, path: str, host: str = VOD) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn.request("GET", path, headers={"Host": host})
    r = conn.getresponse()
    return r.status, r.read(), r


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (scripts/install.sh --test installs it)")
    return subprocess.run(["curl", "-sS", "--max-time", "120", *args], capture_output=True, timeout=150)


def test_sfr1_sfr19_client_at_the_serving_nap_is_served_by_its_local_endpoint(tmp_path: Path) -> None:
    from tests.support.tls_origin import start_tls_origin

    async def scenario() -> None:
        with process_group(tmp_path) as group:
            edge = start_origin(group, "edge")
            tls_port, ca = start_tls_origin(group, tmp_path, VOD)
            services = [
                LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{edge}", tls_endpoint=f"127.0.0.1:{tls_port}"),
                LocalServiceConfig(fqdn=DEAD, endpoint=f"127.0.0.1:{free_port()}"),  # nothing listens there
            ]
            async with emulated_edge(tmp_path, {NAP: services, "nap-dc": []}, response_timeout_s=1.0) as env:
                agent = env.agents[NAP]
                # the PCE's nearest surrogate for a client at the NAP is the NAP itself (cost 0); its snapshot keeps
                # the NAP out of its own route list and confirms the name among its local FQDNs instead
                async with channel(env.pce_target) as ch:
                    path = await pce_pb2_grpc.PceServiceStub(ch).ResolvePath(
                        pce_pb2.ResolvePathRequest(client_nap_id=NAP, fqdn=VOD)
                    )
                assert path.path.server_nap_id == NAP and path.path.cost == 0
                assert VOD in agent.dp.routes.local_fqdns and agent.dp.routes.best(VOD, exclude=NAP) is None
                port = env.http(NAP)
                exchanges = agent.dp.counters.client_exchanges
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                # 1 KB, then more on the same kept-alive connection (length, chunked), byte-exact
                status, data, r = await asyncio.to_thread(fetch, conn, "/bytes/1024")
                assert (status, data, r.getheader("X-Origin")) == (200, body(1024), "edge")
                sock = conn.sock
                for path, n in (("/chunked/300000", 300000), ("/bytes/0", 0), ("/bytes/70000", 70000)):
                    status, data, _ = await asyncio.to_thread(fetch, conn, path)
                    assert (status, data) == (200, body(n))
                assert conn.sock is sock
                conn.close()
                # 50 MB by curl (explicit proxy form), sha256 equal to the origin's body
                big = tmp_path / "big"
                out = await asyncio.to_thread(
                    curl, "-o", str(big), "-x", f"http://127.0.0.1:{port}", f"http://{VOD}/bytes/{50 << 20}"
                )
                assert out.returncode == 0, out.stderr
                assert hashlib.sha256(big.read_bytes()).digest() == hashlib.sha256(body(50 << 20)).digest()
                # close-delimited response: relayed, then the NAP closes the client connection
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                assert (await asyncio.to_thread(fetch, conn, "/close/200000"))[:2] == (200, body(200000))
                conn.close()
                # 10 MB upload
                payload = tmp_path / "up"
                payload.write_bytes(body(10 << 20)[::-1])
                out = await asyncio.to_thread(
                    curl, "-H", f"Host: {VOD}", "--data-binary", f"@{payload}", f"http://127.0.0.1:{port}/upload"
                )
                assert json.loads(out.stdout) == {
                    "sha256": hashlib.sha256(payload.read_bytes()).hexdigest(),
                    "length": 10 << 20,
                }
                # HTTPS by SNI straight to the local tls_endpoint
                nap_tls = agent.tls_port
                out = await asyncio.to_thread(
                    curl,
                    "--cacert",
                    str(ca),
                    "--resolve",
                    f"{VOD}:{nap_tls}:127.0.0.1",
                    f"https://{VOD}:{nap_tls}/bytes/100000",
                )
                assert out.returncode == 0, out.stderr
                assert out.stdout == body(100000)
                # a local service without a TLS endpoint: closed without forwarding anything
                assert await asyncio.to_thread(_tls_hello_answer, nap_tls, DEAD) == b""
                # nothing of this went over the fabric, and the local side did the serving
                assert agent.dp.counters.client_exchanges == exchanges
                assert (agent.client.counters.local_requests, agent.client.counters.local_tunnels) == (7, 1)
                # a dead local endpoint: a clean 502 from the NAP, quickly, nothing hangs
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                t0 = time.monotonic()
                status, data, r = await asyncio.to_thread(fetch, conn, "/bytes/10", DEAD)
                assert status == 502 and b"local endpoint" in data and r.getheader("X-Flame-Nap-Error") == "1"
                assert time.monotonic() - t0 < 3
                conn.close()
                # nap_http counts them at this NAP (demand here), errors as errors
                stats = agent.client.stats.by_fqdn
                assert stats[VOD].requests == 7 and stats[VOD].errors == 0
                assert stats[VOD].bytes_out >= 50 << 20 and stats[VOD].bytes_in >= 10 << 20
                assert stats[DEAD].requests == 1 and stats[DEAD].errors == 1

    asyncio.run(scenario())


def _tls_hello_answer(port: int, name: str) -> bytes:
    """Send a real ClientHello for ``name``; what the NAP answers (b"" = closed without forwarding)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(outgoing.read())
        return raw.recv(100)


def test_504_when_the_local_endpoint_does_not_answer_in_time(tmp_path: Path) -> None:
    async def scenario() -> None:
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections, never answers
        try:
            svc = LocalServiceConfig(fqdn=SLOW, endpoint=f"127.0.0.1:{silent.getsockname()[1]}")
            async with emulated_edge(tmp_path, {NAP: [svc]}, response_timeout_s=0.5) as env:
                conn = http.client.HTTPConnection("127.0.0.1", env.http(NAP), timeout=10)
                t0 = time.monotonic()
                status, data, r = await asyncio.to_thread(fetch, conn, "/x", SLOW)
                assert status == 504 and b"in time" in data and r.getheader("X-Flame-Nap-Error") == "1"
                assert time.monotonic() - t0 < 3
                conn.close()
        finally:
            silent.close()

    asyncio.run(scenario())


def test_sfr14_kept_alive_connection_moves_to_the_local_endpoint_and_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            dc, edge = start_origin(group, "dc"), start_origin(group, "edge")
            local = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{dc}")], NAP: []}
            async with emulated_edge(tmp_path, local) as env:
                agent = env.agents[NAP]
                await env.route_to(NAP, VOD, "nap-dc")
                spec = ServiceSpec(
                    "flame.nap.v1.NapAgentService",
                    NapAgentServicer(agent),
                    nap_pb2_grpc.add_NapAgentServiceServicer_to_server,
                    AccessRules(default=ALL_ROLES),
                )
                async with running_server(spec) as target, channel(target) as ch:
                    stub = nap_pb2_grpc.NapAgentServiceStub(ch)
                    conn = http.client.HTTPConnection("127.0.0.1", env.http(NAP), timeout=30)
                    # only the DC fronts the FQDN: served by the remote server NAP over the fabric
                    status, data, r = await asyncio.to_thread(fetch, conn, "/name")
                    assert (status, data, r.getheader("X-Origin")) == (200, b"dc", "dc")
                    sock = conn.sock
                    exchanges = agent.dp.counters.client_exchanges
                    # the SFEMC connects a surrogate at this very NAP: the PCE's best route becomes the NAP itself
                    await stub.RegisterLocalService(
                        nap_pb2.RegisterLocalServiceRequest(fqdn=VOD, endpoint=f"127.0.0.1:{edge}")
                    )
                    for n in (1024, 3 << 20):
                        status, data, r = await asyncio.to_thread(fetch, conn, f"/bytes/{n}")
                        assert (status, data, r.getheader("X-Origin")) == (200, body(n), "edge")
                    assert (await asyncio.to_thread(fetch, conn, "/name"))[:2] == (200, b"edge")
                    assert agent.dp.counters.client_exchanges == exchanges  # nothing over the fabric
                    # unregistered: the very next request goes to the remote NAP again, even before the PCE's
                    # push (the NAP no longer fronts it, so it takes the next route), and after it
                    await stub.UnregisterLocalService(nap_pb2.UnregisterLocalServiceRequest(fqdn=VOD))
                    assert (await asyncio.to_thread(fetch, conn, "/name"))[:2] == (200, b"dc")
                    await env.route_to(NAP, VOD, "nap-dc")
                    status, data, r = await asyncio.to_thread(fetch, conn, f"/bytes/{1 << 20}")
                    assert (status, data, r.getheader("X-Origin")) == (200, body(1 << 20), "dc")
                    assert conn.sock is sock  # one TCP connection carried every request
                    assert agent.client.counters.connections == 1
                    conn.close()
                    assert agent.client.stats.by_fqdn[VOD].requests == 6

    asyncio.run(scenario())
