"""Client-side checks of the NAP as an HTTP proxy (issue 12), runnable inside a network namespace; prints JSON.

python -m tests.support.proxy_checks websocket --port 8080 --host ws.example      # echo through a WebSocket
python -m tests.support.proxy_checks users --port 8080 --host vod.example         # concurrent Cookie users
python -m tests.support.proxy_checks raw --port 8080 --hex 474554...               # raw bytes in, answer out
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor


async def websocket(port: int, host: str) -> dict[str, object]:
    from websockets.asyncio.client import connect

    echoed = []
    async with connect(f"ws://{host}/chat", host="127.0.0.1", port=port) as ws:
        for message in ("hello", "x" * 100_000):
            await ws.send(message)
            echoed.append(await asyncio.wait_for(ws.recv(), 20) == message)
    return {"echoed": echoed}


def users(port: int, host: str) -> dict[str, object]:
    def one(user: str) -> tuple[str, int, str]:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("GET", "/who?delay=500", headers={"Host": host, "Cookie": f"user={user}"})
        r = c.getresponse()
        return user, r.status, r.read().decode()

    names = ["alice", "bob", "carol", "dave"]
    with ThreadPoolExecutor(len(names)) as pool:
        got = list(pool.map(one, names))
    return {"answers": [[u, s, json.loads(b)["cookie"] if s == 200 else b] for u, s, b in got]}


def raw(port: int, payload: bytes) -> dict[str, object]:
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(payload)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    return {"head": data.split(b"\r\n", 1)[0].decode("latin-1"), "length": len(data), "seconds": time.monotonic() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("check", choices=["websocket", "users", "raw"])
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="")
    p.add_argument("--hex", default="")
    ns = p.parse_args(argv)
    if ns.check == "websocket":
        out = asyncio.run(websocket(ns.port, ns.host))
    elif ns.check == "users":
        out = users(ns.port, ns.host)
    else:
        out = raw(ns.port, bytes.fromhex(ns.hex))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
