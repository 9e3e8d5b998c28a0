"""A real HTTP/1.1 client for NAP tests and benchmarks, runnable inside a network namespace (stdlib only).

    python -m tests.support.http_client --port 8080 --host vod.video.flame.example --path /bytes/1024 \
        [--requests 100] [--concurrency 10] [--keepalive] [--target-port 0]

Prints one JSON object: statuses, sha256 of each body, lengths, per-request latencies (s) and wall time. Each worker
thread uses one connection (``--keepalive``) or a new connection per request.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import sys
import threading
import time


def run(
    port: int, host: str, paths: list[str], concurrency: int, keepalive: bool, timeout: float, addr: str = "127.0.0.1"
) -> dict[str, object]:
    results: list[tuple[int, str, int, float]] = [(0, "", 0, 0.0)] * len(paths)
    errors: dict[str, str] = {}
    next_index = iter(range(len(paths)))
    lock = threading.Lock()

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            t0 = time.perf_counter()
            try:
                if conn is None or not keepalive:
                    conn = http.client.HTTPConnection(addr, port, timeout=timeout)
                conn.request("GET", paths[i], headers={"Host": host})
                resp = conn.getresponse()
                digest, length = hashlib.sha256(), 0
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    length += len(chunk)
                    if resp.status != 200:
                        errors.setdefault(str(resp.status), chunk[:200].decode(errors="replace"))
                results[i] = (resp.status, digest.hexdigest(), length, time.perf_counter() - t0)
                if not keepalive:
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                results[i] = (-1, repr(exc), 0, time.perf_counter() - t0)
                errors.setdefault("-1", repr(exc))
                conn = None

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "statuses": [r[0] for r in results],
        "sha256": [r[1] for r in results],
        "lengths": [r[2] for r in results],
        "latencies": [r[3] for r in results],
        "seconds": time.perf_counter() - t0,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--path", action="append", required=True, help="repeatable; cycled over --requests")
    p.add_argument("--requests", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--keepalive", action="store_true")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--addr", default="127.0.0.1", help="server address (the NAP, or an origin for direct runs)")
    ns = p.parse_args(argv)
    paths = [ns.path[i % len(ns.path)] for i in range(ns.requests)]
    print(json.dumps(run(ns.port, ns.host, paths, ns.concurrency, ns.keepalive, ns.timeout, ns.addr)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
