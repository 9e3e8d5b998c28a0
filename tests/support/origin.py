"""A small real HTTP/1.1 origin server for NAP tests and benchmarks (its own process; keep-alive; stdlib only).

    python -m tests.support.origin --port 0 [--host 127.0.0.1] [--name dc]     # prints {"port": N} when listening

Routes (bodies are deterministic so clients can check them byte for byte, see :func:`body`):
    GET  /bytes/<n>          n bytes, Content-Length
    GET  /chunked/<n>        n bytes, Transfer-Encoding: chunked (16 KiB chunks)
    GET  /close/<n>          n bytes delimited by closing the connection (HTTP/1.1 without length)
    GET  /slow/<ms>/<n>      waits ms, then n bytes (coincidental multicast tests hold requests in flight)
    GET  /name               which origin answered (X-Origin header and body)
    POST /upload             sha256 and length of the request body (Content-Length or chunked)
    GET  /count              requests served so far (per path) as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import sys
from collections import Counter

PATTERN = hashlib.sha256(b"flame").digest() * 2048  # 64 KiB


def body(n: int) -> bytes:
    """The deterministic body of ``n`` bytes every route serves."""
    reps = n // len(PATTERN) + 1
    return (PATTERN * reps)[:n]


class Origin:
    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: Counter[str] = Counter()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                self.counts[path] += 1
                keep = headers.get("connection", "").lower() != "close"
                if not await self.route(method, path, headers, reader, writer) or not keep:
                    return
        finally:
            writer.close()

    async def route(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        parts = path.split("?", 1)[0].strip("/").split("/")
        extra = f"X-Origin: {self.name}\r\n"
        if method == "POST" and parts[0] == "upload":
            digest = hashlib.sha256()
            total = 0
            if headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    data = await reader.readexactly(size + 2)
                    if size == 0:
                        break
                    digest.update(data[:-2])
                    total += size
            else:
                left = int(headers.get("content-length", "0"))
                while left:
                    data = await reader.read(min(left, 1 << 16))
                    if not data:
                        return False
                    digest.update(data)
                    total += len(data)
                    left -= len(data)
            await self.send(writer, 200, json.dumps({"sha256": digest.hexdigest(), "length": total}).encode(), extra)
            return True
        if parts[0] == "bytes" and len(parts) == 2:
            await self.send(writer, 200, body(int(parts[1])), extra, head_only=method == "HEAD")
            return True
        if parts[0] == "slow" and len(parts) == 3:
            await asyncio.sleep(int(parts[1]) / 1000)
            await self.send(writer, 200, body(int(parts[2])), extra)
            return True
        if parts[0] == "chunked" and len(parts) == 2:
            data = body(int(parts[1]))
            writer.write(f"HTTP/1.1 200 OK\r\n{extra}Transfer-Encoding: chunked\r\n\r\n".encode())
            for i in range(0, len(data), 16384):
                chunk = data[i : i + 16384]
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if parts[0] == "close" and len(parts) == 2:
            writer.write(f"HTTP/1.1 200 OK\r\n{extra}Connection: close\r\n\r\n".encode() + body(int(parts[1])))
            await writer.drain()
            return False
        if parts[0] == "name":
            await self.send(writer, 200, self.name.encode(), extra)
            return True
        if parts[0] == "count":
            await self.send(writer, 200, json.dumps(self.counts).encode(), extra)
            return True
        await self.send(writer, 404, b"not found\n", extra)
        return True

    async def send(
        self, writer: asyncio.StreamWriter, status: int, data: bytes, extra: str, head_only: bool = False
    ) -> None:
        reason = "OK" if status == 200 else "Not Found"
        writer.write(f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: {len(data)}\r\n\r\n".encode())
        if not head_only:
            for i in range(0, len(data), 1 << 20):
                writer.write(data[i : i + (1 << 20)])
                await writer.drain()
        await writer.drain()


async def serve(host: str, port: int, name: str) -> None:
    origin = Origin(name)
    server = await asyncio.start_server(origin.handle, host, port)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--name", default="origin")
    ns = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(ns.host, ns.port, ns.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
