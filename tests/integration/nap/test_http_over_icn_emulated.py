"""HTTP-over-ICN (SFR-1) on the emulated fabric, no root: a real PCE with the roadmap topology programs the fabric and
pushes routes over real NAP sessions; real NAP agents carry real clients' requests (curl and http.client) to origin
servers in their own processes. Byte-exact bodies (1 KB, 50 MB, chunked, close-delimited), a 10 MB upload, 100
parallel requests, keep-alive, explicit proxy, in-session switching (SFR-14), coincidental multicast (KPI F3.5), TLS by
SNI (SFR-19) and the bad-input cases (unknown Host, garbage, oversized heads, slowloris)."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nap_agent.agent import LocalServiceConfig
from tests.support.nap_env import VOD, emulated_edge, start_origin
from tests.support.origin import body
from tests.support.procs import process_group

CLIENT = "nap-edge-a1"


def fetch(port: int, path: str, host: str = VOD, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", path, headers={"Host": host})
    r = c.getresponse()
    return r.status, r.read()


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (scripts/install.sh --test installs it)")
    return subprocess.run(["curl", "-sS", "--max-time", "120", *args], capture_output=True, timeout=150)


def run(scenario: object) -> None:
    asyncio.run(scenario)  # type: ignore[arg-type]


def test_sfr1_bodies_byte_exact_upload_parallel_and_keepalive(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            port = start_origin(group, "dc")
            local = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{port}")], CLIENT: []}
            async with emulated_edge(tmp_path, local) as env:
                await env.route_to(CLIENT, VOD)
                nap = env.http(CLIENT)
                # 1 KB through a transparent-style request (Host header) and through the explicit proxy form (curl -x)
                assert await asyncio.to_thread(fetch, nap, "/bytes/1024") == (200, body(1024))
                out = await asyncio.to_thread(curl, "-x", f"http://127.0.0.1:{nap}", f"http://{VOD}/bytes/1024")
                assert out.returncode == 0 and out.stdout == body(1024), out.stderr
                # 50 MB by curl: checksum equal to the origin's body
                big = tmp_path / "big"
                out = await asyncio.to_thread(
                    curl, "-o", str(big), "-H", f"Host: {VOD}", f"http://127.0.0.1:{nap}/bytes/{50 << 20}"
                )
                assert out.returncode == 0, out.stderr
                assert hashlib.sha256(big.read_bytes()).digest() == hashlib.sha256(body(50 << 20)).digest()
                # chunked and close-delimited responses are relayed raw and byte-exact
                status, data = await asyncio.to_thread(fetch, nap, "/chunked/300000")
                assert status == 200 and data == body(300000)
                status, data = await asyncio.to_thread(fetch, nap, "/close/200000")
                assert status == 200 and data == body(200000)
                # 10 MB upload
                payload = tmp_path / "up"
                payload.write_bytes(body(10 << 20)[::-1])
                out = await asyncio.to_thread(
                    curl, "-H", f"Host: {VOD}", "--data-binary", f"@{payload}", f"http://127.0.0.1:{nap}/upload"
                )
                answer = json.loads(out.stdout)
                assert answer == {"sha256": hashlib.sha256(payload.read_bytes()).hexdigest(), "length": 10 << 20}
                # keep-alive: five requests on one connection, one TCP connection at the NAP
                before = env.agents[CLIENT].client.counters.connections
                conn = http.client.HTTPConnection("127.0.0.1", nap, timeout=30)
                for n in (10, 20000, 0, 5, 70000):
                    assert await asyncio.to_thread(fetch, nap, f"/bytes/{n}", VOD, conn) == (200, body(n))
                conn.close()
                assert env.agents[CLIENT].client.counters.connections == before + 1

                # 100 parallel requests
                def many() -> list[tuple[int, bytes]]:
                    with ThreadPoolExecutor(100) as pool:
                        return list(pool.map(lambda i: fetch(nap, f"/bytes/{1000 + i}"), range(100)))

                results = await asyncio.to_thread(many)
                assert [r for r in results] == [(200, body(1000 + i)) for i in range(100)]

    run(scenario())


def test_sfr14_connection_survives_a_surrogate_switch(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            dc, edge = start_origin(group, "dc"), start_origin(group, "edge")
            local = {
                "nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{dc}")],
                CLIENT: [],
                "nap-edge-a2": [],
            }
            async with emulated_edge(tmp_path, local) as env:
                await env.route_to(CLIENT, VOD, "nap-dc")
                conn = http.client.HTTPConnection("127.0.0.1", env.http(CLIENT), timeout=30)
                assert await asyncio.to_thread(fetch, 0, "/name", VOD, conn) == (200, b"dc")
                # SFEMC connects an edge surrogate next to the client: the PCE pushes the closer route
                env.agents["nap-edge-a2"].register(VOD, f"127.0.0.1:{edge}")
                await env.route_to(CLIENT, VOD, "nap-edge-a2")
                sock = conn.sock
                assert await asyncio.to_thread(fetch, 0, "/name", VOD, conn) == (200, b"edge")
                assert conn.sock is sock  # the same TCP connection carried both requests
                conn.close()

    run(scenario())


def test_sfr14_request_refused_by_a_nap_whose_surrogate_just_left_goes_to_the_next_server_nap(tmp_path: Path) -> None:
    """The edge surrogate is unregistered at its NAP before the client NAP has the PCE's new routes (here: it never
    gets them): the edge NAP refuses the request before serving anything, and a request without a body goes to the
    next server NAP on the client's route list instead of becoming a 502."""

    async def scenario() -> None:
        with process_group(tmp_path) as group:
            dc, edge = start_origin(group, "dc"), start_origin(group, "edge")
            local = {
                "nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{dc}")],
                CLIENT: [],
                "nap-edge-a2": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{edge}")],
            }
            async with emulated_edge(tmp_path, local) as env:
                await env.route_to(CLIENT, VOD, "nap-edge-a2")
                conn = http.client.HTTPConnection("127.0.0.1", env.http(CLIENT), timeout=30)
                assert await asyncio.to_thread(fetch, 0, "/name", VOD, conn) == (200, b"edge")
                routes = env.agents[CLIENT].dp.routes
                assert {r.server_nap_id for r in routes.by_fqdn[VOD]} >= {"nap-edge-a2", "nap-dc"}
                link = env.agents[CLIENT].pce
                assert link is not None
                await link.stop()  # the client NAP keeps its last routes: nap-edge-a2 first
                assert env.agents["nap-edge-a2"].unregister(VOD)
                assert await asyncio.to_thread(fetch, 0, "/name", VOD, conn) == (200, b"dc")
                assert await asyncio.to_thread(fetch, 0, "/bytes/5000", VOD, conn) == (200, body(5000))
                stale = env.agents[CLIENT].dp.routes.best(VOD)
                assert stale is not None and stale.server_nap_id == "nap-edge-a2"  # the routes are still the old ones
                conn.close()

    run(scenario())


def test_f35_coincidental_multicast_one_response_for_ten_clients(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            port = start_origin(group, "dc")
            clients = ["nap-edge-a1", "nap-edge-a2", "nap-edge-b1"]
            local = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{port}")], **{c: [] for c in clients}}
            async with emulated_edge(tmp_path, local) as env:
                for c in clients:
                    await env.route_to(c, VOD)
                server = env.agents["nap-dc"].dp.counters
                size = 400_000
                # one client alone: the bytes one response costs on the server NAP's link
                before = server.bytes_sent
                assert await asyncio.to_thread(fetch, env.http(clients[0]), f"/slow/300/{size}") == (200, body(size))
                single = server.bytes_sent - before

                def ten() -> list[tuple[int, bytes]]:
                    with ThreadPoolExecutor(10) as pool:
                        return list(pool.map(lambda i: fetch(env.http(clients[i % 3]), f"/slow/600/{size}"), range(10)))

                before = server.bytes_sent
                results = await asyncio.to_thread(ten)
                together = server.bytes_sent - before
                assert results == [(200, body(size))] * 10
                assert server.multicast_responses >= 1
                # ten clients cost about one response on the server's link, far from ten
                assert together < 2.0 * single, (together, single)

    run(scenario())


def test_sfr19_https_routed_by_sni_without_keys_at_the_nap(tmp_path: Path) -> None:
    from tests.support.tls_origin import start_tls_origin

    async def scenario() -> None:
        with process_group(tmp_path) as group:
            http_port = start_origin(group, "dc")
            tls_port, ca = start_tls_origin(group, tmp_path, VOD)
            svc = LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{http_port}", tls_endpoint=f"127.0.0.1:{tls_port}")
            async with emulated_edge(tmp_path, {"nap-dc": [svc], CLIENT: []}) as env:
                await env.route_to(CLIENT, VOD)
                nap_tls = env.agents[CLIENT].tls_port
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

                # no SNI / not TLS, or a name no NAP serves: the NAP closes without forwarding anything
                def plain() -> bytes:
                    with socket.create_connection(("127.0.0.1", nap_tls), timeout=5) as s:
                        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
                        return s.recv(100)

                assert await asyncio.to_thread(plain) == b""

                def unknown_name() -> None:
                    ctx = ssl.create_default_context(cafile=str(ca))
                    ctx.check_hostname = False
                    with (
                        socket.create_connection(("127.0.0.1", nap_tls), timeout=5) as raw,
                        ctx.wrap_socket(raw, server_hostname="unknown.flame.example") as tls,
                    ):
                        tls.recv(1)

                with pytest.raises((ssl.SSLError, ConnectionError)):
                    await asyncio.to_thread(unknown_name)

    run(scenario())


def test_bad_input_unknown_host_garbage_oversized_slowloris(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            port = start_origin(group, "dc")
            local = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{port}")], CLIENT: []}
            async with emulated_edge(tmp_path, local, header_timeout_s=1.0) as env:
                await env.route_to(CLIENT, VOD)
                nap = env.http(CLIENT)
                t0 = time.monotonic()
                status, data = await asyncio.to_thread(fetch, nap, "/x", "nobody.flame.example")
                assert status == 502 and b"no NAP serves nobody.flame.example" in data
                assert time.monotonic() - t0 < 2

                def raw(payload: bytes, wait: float = 5.0) -> bytes:
                    with socket.create_connection(("127.0.0.1", nap), timeout=wait) as s:
                        s.sendall(payload)
                        chunks = []
                        while chunk := s.recv(65536):
                            chunks.append(chunk)
                        return b"".join(chunks)

                assert (await asyncio.to_thread(raw, b"\x00\xffgarbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
                huge = b"GET / HTTP/1.1\r\nHost: " + VOD.encode() + b"\r\nX: " + b"a" * 100_000 + b"\r\n\r\n"
                assert (await asyncio.to_thread(raw, huge)).startswith(b"HTTP/1.1 431")
                assert (await asyncio.to_thread(raw, b"GET / HTTP/1.1\r\nHo")).startswith(b"HTTP/1.1 408")
                bad_len = b"POST /upload HTTP/1.1\r\nHost: " + VOD.encode() + b"\r\nContent-Length: x\r\n\r\n"
                assert (await asyncio.to_thread(raw, bad_len)).startswith(b"HTTP/1.1 400")
                # the NAP still serves after all that
                assert await asyncio.to_thread(fetch, nap, "/bytes/10") == (200, body(10))

    run(scenario())


def test_endpoint_down_gives_502_and_pce_gone_keeps_last_routes(tmp_path: Path) -> None:
    async def scenario() -> None:
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))
        dead_port = dead.getsockname()[1]
        dead.close()
        with process_group(tmp_path) as group:
            port = start_origin(group, "dc")
            local = {
                "nap-dc": [
                    LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{port}"),
                    LocalServiceConfig(fqdn="down.video.flame.example", endpoint=f"127.0.0.1:{dead_port}"),
                ],
                CLIENT: [],
            }
            async with emulated_edge(tmp_path, local) as env:
                await env.route_to(CLIENT, "down.video.flame.example")
                nap = env.http(CLIENT)
                status, data = await asyncio.to_thread(fetch, nap, "/x", "down.video.flame.example")
                assert status == 502 and b"local endpoint" in data
                # the PCE session breaks: forwarding goes on with the last good snapshot
                link = env.agents[CLIENT].pce
                assert link is not None
                await link.stop()
                assert await asyncio.to_thread(fetch, nap, "/bytes/5000") == (200, body(5000))

    run(scenario())


def test_504_pipelining_and_pce_gone_mid_request(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            port = start_origin(group, "dc")
            local = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{port}")], CLIENT: []}
            async with emulated_edge(tmp_path, local, response_timeout_s=1.0) as env:
                await env.route_to(CLIENT, VOD)
                nap = env.http(CLIENT)
                # no answer in time: a clean 504 from the client NAP, nothing hangs
                t0 = time.monotonic()
                status, data = await asyncio.to_thread(fetch, nap, "/slow/3000/10")
                assert status == 504 and b"in time" in data and time.monotonic() - t0 < 3

                # pipelining: three requests in one write, three responses in request order
                def pipelined() -> bytes:
                    reqs = b"".join(f"GET /bytes/{n} HTTP/1.1\r\nHost: {VOD}\r\n\r\n".encode() for n in (300, 10, 2000))
                    with socket.create_connection(("127.0.0.1", nap), timeout=10) as s:
                        s.sendall(reqs + f"GET /bytes/5 HTTP/1.1\r\nHost: {VOD}\r\nConnection: close\r\n\r\n".encode())
                        chunks = []
                        while chunk := s.recv(65536):
                            chunks.append(chunk)
                        return b"".join(chunks)

                raw = await asyncio.to_thread(pipelined)
                bodies = [part.split(b"\r\n\r\n", 1)[1] for part in raw.split(b"HTTP/1.1 200 OK")[1:]]
                assert [len(b) for b in bodies] == [300, 10, 2000, 5] and bodies[2] == body(2000)
                # the PCE session goes away in the middle of a request: the answer still arrives
                link = env.agents[CLIENT].pce
                assert link is not None
                job = asyncio.create_task(asyncio.to_thread(fetch, nap, "/slow/500/100000"))
                await asyncio.sleep(0.2)
                await link.stop()
                assert await job == (200, body(100000))

    run(scenario())
