"""Python's own ``http.server`` as an origin for the NAP's HTTP-proxy tests (issue 12), and a ``websockets`` echo
server. Each runs in its own process and prints ``{"port": N}`` when listening.

    python -m tests.support.stdlib_origin [--websocket]

Routes of the HTTP origin (bodies are deterministic so every client can check what the origin produced for its exact
request, see :func:`expected`):
    GET  /bytes/<n>[?delay=ms]    n bytes (tests.support.origin.body), single byte Ranges answered with 206
    GET  /who[?delay=ms&cc=...&vary=...]   who asked: Cookie, Authorization (not when ``cc`` says public) and the
                                  fields named in vary, as the body; ``cc`` becomes Cache-Control, ``vary`` Vary
    GET  /early                   103 Early Hints, then 200 "after hints"
    POST /upload                  sha256 and length of the request body (http.server answers Expect: 100-continue)
    GET  /headers                 the request head as JSON (Via, Forwarded, X-Forwarded-For checks)
    GET  /cut-length              promises 1000 bytes, sends 10, closes
    GET  /cut-chunked             one chunk, then closes without the last chunk
    GET  /big-head                a 100 KB response head
    GET  /count                   requests served so far, per path, as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.support.origin import body

COUNTS: Counter[str] = Counter()
LOCK = threading.Lock()


def who_body(cookie: str, auth: str, varied: dict[str, str]) -> bytes:
    """The body of /who for these request fields."""
    return json.dumps({"cookie": cookie, "authorization": auth, "varied": varied}, sort_keys=True).encode()


def range_of(n: int, header: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"bytes=(\d+)-(\d+)", header.strip())
    if not m:
        return None
    first, last = int(m.group(1)), min(int(m.group(2)), n - 1)
    return (first, last) if first <= last else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, data: bytes, fields: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (fields or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        with LOCK:
            COUNTS[url.path] += 1
        if "delay" in q:
            time.sleep(int(q["delay"]) / 1000)
        parts = url.path.strip("/").split("/")
        if parts[0] == "bytes":
            n = int(parts[1])
            data = body(n)
            r = range_of(n, self.headers.get("Range", "")) if self.headers.get("Range") else None
            if r is not None:
                self._send(206, data[r[0] : r[1] + 1], {"Content-Range": f"bytes {r[0]}-{r[1]}/{n}"})
            else:
                self._send(200, data)
        elif parts[0] == "who":
            vary = [v.strip() for v in q.get("vary", "").split(",") if v.strip()]
            varied = {v.lower(): self.headers.get(v, "") for v in vary}
            fields = {"Cache-Control": q["cc"]} if "cc" in q else {}
            if vary:
                fields["Vary"] = ", ".join(vary)
            # an honest origin: a response it marks public says nothing personal
            personal = "public" not in q.get("cc", "")
            cookie, auth = (
                (self.headers.get("Cookie", ""), self.headers.get("Authorization", "")) if personal else ("", "")
            )
            data = who_body(cookie, auth, varied)
            self._send(200, data, fields)
        elif parts[0] == "early":
            self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            self._send(200, b"after hints")
        elif parts[0] == "headers":
            self._send(200, json.dumps([[k, v] for k, v in self.headers.items()]).encode())
        elif parts[0] == "cut-length":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            self.wfile.flush()
            self.close_connection = True
        elif parts[0] == "cut-chunked":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            self.wfile.flush()
            self.close_connection = True
        elif parts[0] == "big-head":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\nContent-Length: 2\r\n\r\nok")
        elif parts[0] == "count":
            with LOCK:
                self._send(200, json.dumps(COUNTS).encode())
        else:
            self._send(404, b"not found")

    def do_POST(self) -> None:
        with LOCK:
            COUNTS[self.path] += 1
        digest, total = hashlib.sha256(), 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                data = self.rfile.read(size + 2)
                if size == 0:
                    break
                digest.update(data[:-2])
                total += size
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                data = self.rfile.read(min(left, 1 << 16))
                if not data:
                    return
                digest.update(data)
                total += len(data)
                left -= len(data)
        self._send(200, json.dumps({"sha256": digest.hexdigest(), "length": total}).encode())


def serve_http() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


async def serve_websocket() -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(json.dumps({"port": port}), flush=True)
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--websocket", action="store_true")
    ns = p.parse_args(argv)
    if ns.websocket:
        asyncio.run(serve_websocket())
    else:
        serve_http()
    return 0


if __name__ == "__main__":
    sys.exit(main())
