"""The NAP as a safe HTTP proxy (issue 12, SFR-1, KPI F3.5) on the emulated fabric: two NAPs (client ``nap-edge-a1``,
server ``nap-dc``), curl and Python's own ``http.server`` as origin, every defect the issue reproduced as a test.

- 1xx: ``Expect: 100-continue`` uploads (curl > 1 MB) and ``103 Early Hints`` reach the client with the final response
  on the same exchange, and the next user gets their own response (the origin connection was not pooled early).
- Upgrade: a real WebSocket client and server (``websockets``) talk through both NAPs; CONNECT is 405 by default and a
  tunnel with ``connect: tunnel``.
- Merging: concurrent Range, Cookie/Authorization, Vary and private responses each reach only whom they belong to.
- Limits: ambiguous framing refused with 400 and never forwarded, body size before forwarding, slow uploads cut,
  truncated upstream responses close the client connection at once, an oversized response head is 502,
  Via/Forwarded/X-Forwarded-For added, one access-log line per request, a connection cap.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nap_agent.agent import LocalServiceConfig
from nap_agent.proxy_settings import HttpProxySettings
from tests.support.nap_env import VOD, Env, emulated_edge, start_stdlib_origin
from tests.support.origin import body
from tests.support.procs import process_group
from tests.support.stdlib_origin import who_body

CLIENT = "nap-edge-a1"
SERVER = "nap-dc"


def curl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (scripts/install.sh --test installs it)")
    return subprocess.run(["curl", "-sS", "--max-time", str(timeout), *args], capture_output=True, timeout=timeout + 30)


def raw(port: int, payload: bytes, wait: float = 20.0, after: Callable[[socket.socket], None] | None = None) -> bytes:
    """Send ``payload``, read until the NAP closes (or ``wait`` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(payload)
        if after is not None:
            after(s)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            chunks.append(b"<timeout>")
        return b"".join(chunks)


def get(port: int, path: str, headers: dict[str, str] | None = None, host: str = VOD) -> tuple[int, bytes, Any]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request("GET", path, headers={"Host": host, **(headers or {})})
        r = c.getresponse()
        return r.status, r.read(), r
    finally:
        c.close()


def origin_count(port: int, path: str) -> int:
    counts = json.loads(get(port, "/count")[1])
    return int(counts.get(path, 0))


async def edge(tmp: Path, group: Any, **settings: Any) -> tuple[Any, int]:
    port = start_stdlib_origin(group, "stdlib-origin")
    local = {SERVER: [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{port}")], CLIENT: []}
    return emulated_edge(tmp, local, **settings), port


async def ready(env: Env) -> int:
    await env.route_to(CLIENT, VOD)
    return env.http(CLIENT)


def run(scenario: object) -> None:
    asyncio.run(scenario)  # type: ignore[arg-type]


def test_issue12_expect_100_continue_and_early_hints_through_two_naps(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            ctx, _ = await edge(tmp_path, group)
            async with ctx as env:
                nap = await ready(env)
                payload = tmp_path / "up"
                payload.write_bytes(body(3 << 20)[::-1])
                t0 = time.monotonic()
                out = await asyncio.to_thread(
                    curl, "-v", "-H", f"Host: {VOD}", "--data-binary", f"@{payload}", f"http://127.0.0.1:{nap}/upload"
                )
                assert b"Expect: 100-continue" in out.stderr and b"HTTP/1.1 100 Continue" in out.stderr, out.stderr
                assert b"Done waiting for 100-continue" not in out.stderr  # the 100 came through, curl did not guess
                assert json.loads(out.stdout) == {
                    "sha256": hashlib.sha256(payload.read_bytes()).hexdigest(),
                    "length": 3 << 20,
                }
                assert time.monotonic() - t0 < 30
                # 103 then 200 on one exchange; the next user (on the pooled origin connection) gets their own answer
                answer = await asyncio.to_thread(
                    raw, nap, f"GET /early HTTP/1.1\r\nHost: {VOD}\r\nConnection: close\r\n\r\n".encode()
                )
                assert answer.startswith(b"HTTP/1.1 103 Early Hints\r\n") and answer.endswith(b"after hints"), answer
                assert answer.count(b"HTTP/1.1 200 OK") == 1
                for n in (10, 5000):
                    status, data, _ = await asyncio.to_thread(get, nap, f"/bytes/{n}")
                    assert (status, data) == (200, body(n))

    run(scenario())


def test_issue12_websocket_upgrade_is_tunnelled_end_to_end_and_connect_is_405_or_a_tunnel(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect

    async def scenario() -> None:
        with process_group(tmp_path) as group:
            ws_port = start_stdlib_origin(group, "ws-origin", websocket=True)
            http_port = start_stdlib_origin(group, "stdlib-origin")
            local = {
                SERVER: [
                    LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{http_port}"),
                    LocalServiceConfig(fqdn="ws.flame.example", endpoint=f"127.0.0.1:{ws_port}"),
                ],
                CLIENT: [],
            }
            per_nap = {CLIENT: {"http": HttpProxySettings(connect="tunnel")}}
            async with emulated_edge(tmp_path, local, per_nap=per_nap) as env:
                await env.route_to(CLIENT, "ws.flame.example")
                nap = await ready(env)
                async with connect("ws://ws.flame.example/chat", host="127.0.0.1", port=nap) as ws:
                    for message in ("hello", "x" * 100_000, b"\x00\x01binary"):
                        await ws.send(message)
                        assert await asyncio.wait_for(ws.recv(), 20) == message
                # the upgraded origin connection never went back to the pool: plain requests still work
                for n in (10, 20000):
                    status, data, _ = await asyncio.to_thread(get, nap, f"/bytes/{n}")
                    assert (status, data) == (200, body(n))

                # CONNECT with connect: tunnel at the client NAP: a byte tunnel to the FQDN's endpoint
                def through_connect() -> bytes:
                    def inside(s: socket.socket) -> None:
                        got = b""
                        while b"\r\n\r\n" not in got:
                            got += s.recv(1024)
                        assert got.startswith(b"HTTP/1.1 200"), got
                        s.sendall(f"GET /bytes/100 HTTP/1.1\r\nHost: {VOD}\r\nConnection: close\r\n\r\n".encode())

                    return raw(nap, f"CONNECT {VOD}:80 HTTP/1.1\r\nHost: {VOD}:80\r\n\r\n".encode(), after=inside)

                tunnelled = await asyncio.to_thread(through_connect)
                assert tunnelled.startswith(b"HTTP/1.1 200 OK") and tunnelled.endswith(body(100))
                # the server NAP refuses CONNECT by default: 405, nothing forwarded
                refused = await asyncio.to_thread(
                    raw, env.http(SERVER), f"CONNECT {VOD}:80 HTTP/1.1\r\nHost: {VOD}:80\r\n\r\n".encode()
                )
                assert refused.startswith(b"HTTP/1.1 405"), refused

    run(scenario())


def test_issue12_merging_only_what_a_shared_cache_may_share(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            ctx, origin = await edge(tmp_path, group)
            async with ctx as env:
                nap = await ready(env)
                others = [env.http(n) for n in ("nap-edge-a2", "nap-edge-b1") if n in env.agents] or [nap]

                async def together(requests: list[tuple[str, dict[str, str]]]) -> list[tuple[int, bytes, Any]]:
                    ports = [nap, *others]
                    jobs = [
                        asyncio.to_thread(get, ports[i % len(ports)], path, headers)
                        for i, (path, headers) in enumerate(requests)
                    ]
                    return list(await asyncio.gather(*jobs))

                # three concurrent Ranges of one resource: each gets its own bytes
                n = 20000
                ranges = [(0, 999), (5000, 5999), (9000, 9099)]
                got = await together([(f"/bytes/{n}?delay=300", {"Range": f"bytes={a}-{b}"}) for a, b in ranges])
                assert [(s, d) for s, d, _ in got] == [(206, body(n)[a : b + 1]) for a, b in ranges]
                # Alice and Bob (Cookie, then Authorization): each gets their own response
                for field in ("Cookie", "Authorization"):
                    users = ["alice", "bob", "carol"]
                    got = await together([("/who?delay=300", {field: u}) for u in users])
                    for u, (status, data, _) in zip(users, got, strict=True):
                        expected = who_body(u if field == "Cookie" else "", u if field == "Authorization" else "", {})
                        assert (status, data) == (200, expected)
                # an explicitly public response may be shared among them (one fetch)
                before = origin_count(origin, "/who")
                got = await together([("/who?delay=1500&cc=public,max-age=60", {"Cookie": u}) for u in ("a", "b")])
                assert [s for s, _, _ in got] == [200, 200] and got[0][1] == got[1][1]
                assert origin_count(origin, "/who") - before == 1
                # Vary: members whose varied field differs are fetched on their own
                got = await together(
                    [("/who?delay=300&vary=Accept-Language", {"Accept-Language": lang}) for lang in ("de", "fr", "de")]
                )
                for lang, (_, data, _) in zip(("de", "fr", "de"), got, strict=True):
                    assert data == who_body("", "", {"accept-language": lang})
                # private is never shared: everyone's request reaches the origin
                before = origin_count(origin, "/who")
                got = await together([("/who?delay=300&cc=private", {}) for _ in range(3)])
                assert all(s == 200 for s, _, _ in got)
                assert origin_count(origin, "/who") - before == 3
                # plain identical requests are still merged (KPI F3.5)
                before = env.agents[SERVER].dp.counters.multicast_responses
                got = await together([(f"/bytes/{n}?delay=1000", {}) for _ in range(4)])
                assert all((s, d) == (200, body(n)) for s, d, _ in got)
                assert env.agents[SERVER].dp.counters.multicast_responses > before

    run(scenario())


def test_issue12_smuggling_framing_refused_with_400_and_never_forwarded(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            ctx, origin = await edge(tmp_path, group, http=HttpProxySettings(max_body_bytes=1000))
            async with ctx as env:
                nap = await ready(env)
                h = f"POST /upload HTTP/1.1\r\nHost: {VOD}\r\n"
                for bad in (
                    h + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    h + "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
                    h + "Transfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
                    h + "Transfer-Encoding: chunked\r\n\r\n0_5\r\nhello\r\n0\r\n\r\n",
                    h + "X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
                ):
                    answer = await asyncio.to_thread(raw, nap, bad.encode())
                    assert answer.startswith(b"HTTP/1.1 400"), (bad, answer)
                answer = await asyncio.to_thread(raw, nap, h.encode() + b"Content-Length: \xb2\r\n\r\n")
                assert answer.startswith(b"HTTP/1.1 400"), answer
                # the body limit is a setting, enforced before anything is forwarded
                answer = await asyncio.to_thread(raw, nap, (h + "Content-Length: 5000\r\n\r\n").encode() + b"x" * 5000)
                assert answer.startswith(b"HTTP/1.1 413"), answer
                assert origin_count(origin, "/upload") == 0
                # absolute-form wins, Host must agree; HTTP/1.0 without Host works
                answer = await asyncio.to_thread(raw, nap, f"GET http://{VOD}/bytes/7 HTTP/1.0\r\n\r\n".encode())
                assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(body(7)), answer
                answer = await asyncio.to_thread(
                    raw, nap, f"GET http://{VOD}/bytes/7 HTTP/1.1\r\nHost: other.example\r\n\r\n".encode()
                )
                assert answer.startswith(b"HTTP/1.1 400"), answer
                assert (await asyncio.to_thread(get, nap, "/bytes/10"))[:2] == (200, body(10))

    run(scenario())


def test_issue12_limits_slow_upload_truncated_upstream_big_head_forwarded_fields_access_log(tmp_path: Path) -> None:
    async def scenario() -> None:
        lines: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = lines.append  # type: ignore[method-assign]
        access = logging.getLogger("flame.nap.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        try:
            with process_group(tmp_path) as group:
                http = HttpProxySettings(body_timeout_s=1.0, max_connections=20)
                ctx, _ = await edge(tmp_path, group, http=http)
                async with ctx as env:
                    nap = await ready(env)
                    # a POST promising 100 bytes that sends 1 is cut after the body timeout
                    t0 = time.monotonic()
                    answer = await asyncio.to_thread(
                        raw, nap, f"POST /upload HTTP/1.1\r\nHost: {VOD}\r\nContent-Length: 100\r\n\r\nx".encode()
                    )
                    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 10, answer
                    # truncated upstream responses: the client connection closes at once (not after 30 s)
                    for path in ("/cut-length", "/cut-chunked"):
                        t0 = time.monotonic()
                        answer = await asyncio.to_thread(
                            raw, nap, f"GET {path} HTTP/1.1\r\nHost: {VOD}\r\n\r\n".encode()
                        )
                        # a 502 when nothing had left yet, else the head and what came, then the connection closes
                        assert b"<timeout>" not in answer and time.monotonic() - t0 < 10, answer
                        if answer.startswith(b"HTTP/1.1 200"):
                            assert len(answer.split(b"\r\n\r\n", 1)[1]) < 1000
                            assert not answer.endswith(b"0\r\n\r\n")  # never a last chunk the origin did not send
                        else:
                            assert answer.startswith(b"HTTP/1.1 502"), answer
                    # an oversized response head is the origin's fault: 502, not 431
                    status, _, _ = await asyncio.to_thread(get, nap, "/big-head")
                    assert status == 502
                    # Via, X-Forwarded-For (appended) and Forwarded reach the origin
                    _, data, resp = await asyncio.to_thread(get, nap, "/headers", {"X-Forwarded-For": "192.0.2.7"})
                    seen = {k.lower(): v for k, v in json.loads(data)}
                    assert seen["x-forwarded-for"] == "192.0.2.7, 127.0.0.1"
                    assert seen["forwarded"] == f"for=127.0.0.1;host={VOD};proto=http"
                    assert CLIENT in seen["via"] and SERVER in seen["via"]
                    assert SERVER in (resp.getheader("Via") or "")
                    # a connection cap: the 21st concurrent connection is answered 503
                    socks = [socket.create_connection(("127.0.0.1", nap)) for _ in range(20)]
                    try:
                        await asyncio.sleep(0.3)
                        answer = await asyncio.to_thread(raw, nap, b"")
                        assert answer.startswith(b"HTTP/1.1 503"), answer
                    finally:
                        for s in socks:
                            s.close()
        finally:
            access.removeHandler(handler)
        fields = [getattr(r, "fields", {}) for r in lines]
        heads = [f for f in fields if f.get("target") == "/headers"]
        assert heads and heads[0]["status"] == 200 and heads[0]["upstream"] == SERVER and heads[0]["host"] == VOD

    run(scenario())
