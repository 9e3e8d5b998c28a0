"""A property test of the NAP's HTTP proxy (issue 12, SFR-1, KPI F3.5): many concurrent clients with random mixes of
Range, Cookie, Authorization, Vary responses, ``Expect: 100-continue`` uploads, pipelining and early disconnects go
through two client NAPs and the server NAP to Python's ``http.server``. Every response is checked against what the
origin produces for that exact request (its bodies are functions of the request: tests/support/stdlib_origin.py), so
a client that received another client's bytes -- a merged personal response, a wrong Range, an answer left on a
pooled connection -- fails the test. Seeded and bounded: ``FLAME_PROPERTY_SEEDS=1,2,3`` runs more seeds."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import io
import json
import os
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from nap_agent.agent import LocalServiceConfig
from tests.support.nap_env import VOD, emulated_edge, start_stdlib_origin
from tests.support.origin import body
from tests.support.procs import process_group
from tests.support.stdlib_origin import who_body

SERVER = "nap-dc"
CLIENTS = ("nap-edge-a1", "nap-edge-b1")
SEEDS = [int(s) for s in os.environ.get("FLAME_PROPERTY_SEEDS", "12,34").split(",")]
SIZES = (0, 1, 1000, 70_000)


@dataclass
class Req:
    """One request and what the origin answers to it."""

    raw: bytes
    method: str
    status: int
    expected: bytes
    upload: bytes = b""


def random_request(rng: random.Random) -> Req:
    kind = rng.choice(["bytes", "range", "who", "who", "vary", "upload"])
    delay = rng.choice([0, 0, 150, 400])
    h = f"Host: {VOD}\r\n"
    if kind in ("bytes", "range"):
        n = rng.choice(SIZES[1:])
        path = f"/bytes/{n}?delay={delay}"
        if kind == "range":
            first = rng.randrange(n)
            last = rng.randrange(first, n)
            return Req(
                f"GET {path} HTTP/1.1\r\n{h}Range: bytes={first}-{last}\r\n\r\n".encode(),
                "GET",
                206,
                body(n)[first : last + 1],
            )
        method = rng.choice(["GET", "GET", "HEAD"])
        return Req(f"{method} {path} HTTP/1.1\r\n{h}\r\n".encode(), method, 200, b"" if method == "HEAD" else body(n))
    if kind in ("who", "vary"):
        cookie = rng.choice(["", "", "user=alice", "user=bob", "user=carol"])
        auth = rng.choice(["", "", "Bearer alice", "Bearer bob"])
        lang = rng.choice(["de", "fr", "en"])
        cc = rng.choice(["", "", "private", "public", "no-store"])
        q = f"/who?delay={delay}" + (f"&cc={cc}" if cc else "") + ("&vary=Accept-Language" if kind == "vary" else "")
        fields = "".join(
            f"{k}: {v}\r\n" for k, v in (("Cookie", cookie), ("Authorization", auth), ("Accept-Language", lang)) if v
        )
        varied = {"accept-language": lang} if kind == "vary" else {}
        if "public" in cc:
            cookie = auth = ""  # the origin says nothing personal in a public response
        return Req(f"GET {q} HTTP/1.1\r\n{h}{fields}\r\n".encode(), "GET", 200, who_body(cookie, auth, varied))
    data = rng.randbytes(rng.choice([10, 5000, 300_000]))
    expected = json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "length": len(data)}).encode()
    head = f"POST /upload HTTP/1.1\r\n{h}Content-Length: {len(data)}\r\nExpect: 100-continue\r\n\r\n".encode()
    return Req(head, "POST", 200, expected, data)


class _Shared:
    """One buffered stream that several http.client responses read in turn (pipelined responses): a response's
    close does not close it."""

    def __init__(self, f: io.BufferedReader) -> None:
        self.f = f

    def __getattr__(self, name: str) -> object:
        return getattr(self.f, name)

    def close(self) -> None:
        pass


class _Sock:
    def __init__(self, f: io.BufferedReader) -> None:
        self.f = _Shared(f)

    def makefile(self, mode: str) -> _Shared:
        return self.f


def client(port: int, seed: int) -> list[str]:
    """One user: a keep-alive connection with 1-4 steps; returns the mismatches it saw."""
    rng = random.Random(seed)
    problems: list[str] = []
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        f = s.makefile("rb")
        for _ in range(rng.randint(1, 4)):
            step = rng.random()
            if step < 0.1:  # early disconnect: a request and gone, perhaps after a few bytes of the answer
                s.sendall(random_request(rng).raw)
                if rng.random() < 0.5:
                    f.read(rng.randint(1, 20))
                return problems
            batch = [random_request(rng)]
            if step < 0.35 and not batch[0].upload:  # pipelining: more requests in one write (no uploads)
                batch += [r for r in (random_request(rng) for _ in range(rng.randint(1, 3))) if not r.upload]
            if batch[0].upload:
                s.sendall(batch[0].raw)
                line = f.readline()
                while f.readline() not in (b"\r\n", b""):
                    pass
                if not line.startswith(b"HTTP/1.1 100"):
                    problems.append(f"no 100 Continue: {line!r}")
                    return problems
                s.sendall(batch[0].upload)
            else:
                s.sendall(b"".join(r.raw for r in batch))
            for r in batch:
                resp = http.client.HTTPResponse(_Sock(f), method=r.method)  # type: ignore[arg-type]
                try:
                    resp.begin()
                    data = resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    at = f"{batch.index(r) + 1} of {len(batch)}"
                    problems.append(f"{r.raw.splitlines()[0]!r} ({at}, t={time.monotonic() - t0:.1f}s): {exc!r}")
                    return problems
                if (resp.status, data) != (r.status, r.expected):
                    problems.append(f"{r.raw.splitlines()[0]!r}: got {resp.status} {data[:80]!r}")
                if resp.will_close:
                    return problems
    return problems


@pytest.mark.parametrize("seed", SEEDS)
def test_issue12_property_no_client_ever_receives_another_clients_bytes(tmp_path: Path, seed: int) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            origin = start_stdlib_origin(group, "stdlib-origin")
            local = {SERVER: [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{origin}")], **{c: [] for c in CLIENTS}}
            async with emulated_edge(tmp_path, local) as env:
                for c in CLIENTS:
                    await env.route_to(c, VOD)
                ports = [env.http(c) for c in CLIENTS]
                users = 40

                def everyone() -> list[list[str]]:
                    with ThreadPoolExecutor(users) as pool:
                        return list(pool.map(lambda i: client(ports[i % 2], seed * 1000 + i), range(users)))

                results = await asyncio.wait_for(asyncio.to_thread(everyone), 240)
                problems = [p for r in results for p in r]
                assert not problems, problems[:10]
                # and the NAPs are fine afterwards: nothing left half-read on a pooled origin connection
                for port in ports:
                    assert await asyncio.to_thread(client_ok, port)

    asyncio.run(scenario())


def client_ok(port: int) -> bool:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for n in SIZES:
            c.request("GET", f"/bytes/{n}", headers={"Host": VOD})
            r = c.getresponse()
            if (r.status, r.read()) != (200, body(n)):
                return False
        return True
    finally:
        c.close()
