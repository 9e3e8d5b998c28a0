"""Issue 12 item 4 on the emulated fabric (F3.5 coincidental multicast, SFR-1): one member of a shared response that
stops reading leaves the group and the others finish at their own pace, and a NAP never holds more for a member than
its configured receive buffer. Before: a fast client sharing a 30 MB response with a stalled one stopped at 12.3 MB for
good; a non-reading second member at the same NAP buffered 59 MB of a 60 MB response."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import socket
import time
from pathlib import Path

from nap_agent.agent import LocalServiceConfig
from tests.support.nap_env import VOD, emulated_edge, start_origin
from tests.support.origin import body
from tests.support.procs import process_group

SIZE = 16 << 20
BOUND = 2 << 20


def stalled_client(port: int, path: str) -> socket.socket:
    """Sends a request and never reads (a small receive buffer, so the NAP feels it at once)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {VOD}\r\n\r\n".encode())
    return s


def fetch_digest(port: int, path: str) -> tuple[int, int, str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path, headers={"Host": VOD})
    r = c.getresponse()
    h, n = hashlib.sha256(), 0
    while chunk := r.read(1 << 20):
        h.update(chunk)
        n += len(chunk)
    return r.status, n, h.hexdigest()


def test_f35_a_stalled_member_at_another_nap_leaves_and_the_fast_one_finishes(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            port = start_origin(group, "dc")
            naps = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{port}")], "nap-edge-a1": [],
                    "nap-edge-b1": []}  # fmt: skip
            async with emulated_edge(tmp_path, naps, receive_buffer=BOUND, member_stall_s=1.0) as env:
                for nap in ("nap-edge-a1", "nap-edge-b1"):
                    await env.route_to(nap, VOD)
                path = f"/slow/800/{SIZE}"
                slow = await asyncio.to_thread(stalled_client, env.http("nap-edge-b1"), path)
                try:
                    fast = asyncio.create_task(asyncio.to_thread(fetch_digest, env.http("nap-edge-a1"), path))
                    status, n, digest = await fast
                    assert (status, n) == (200, SIZE)
                    assert digest == hashlib.sha256(body(SIZE)).hexdigest()
                    server = env.agents["nap-dc"].dp.counters
                    assert server.multicast_responses >= 1  # they did share the response
                    assert server.members_dropped >= 1  # and the stalled one left it
                finally:
                    slow.close()

    asyncio.run(scenario())


def test_f35_a_non_reading_member_at_the_same_nap_holds_at_most_the_bound(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            port = start_origin(group, "dc")
            naps = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{port}")], "nap-edge-a1": []}
            async with emulated_edge(tmp_path, naps, receive_buffer=BOUND, member_stall_s=1.0) as env:
                await env.route_to("nap-edge-a1", VOD)
                client = env.agents["nap-edge-a1"].dp
                path = f"/slow/800/{SIZE}"
                slow = await asyncio.to_thread(stalled_client, env.http("nap-edge-a1"), path)
                try:
                    fast = asyncio.create_task(asyncio.to_thread(fetch_digest, env.http("nap-edge-a1"), path))
                    held = 0
                    shared = False
                    while not fast.done():
                        downs = [ex.down for ex in client.exchanges.values() if ex.down is not None]
                        shared = shared or (len(downs) == 2 and downs[0] is downs[1])
                        for ex in list(client.exchanges.values()):
                            held = max(held, len(ex.buffer))
                        await asyncio.sleep(0.01)
                    status, n, digest = await fast
                    assert (status, n) == (200, SIZE)
                    assert digest == hashlib.sha256(body(SIZE)).hexdigest()
                    assert shared  # one down stream fed both local members
                    assert held <= BOUND, held
                finally:
                    slow.close()

    asyncio.run(scenario())


def test_sfr1_a_client_that_never_reads_frees_the_server_nap_after_the_progress_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            port = start_origin(group, "dc")
            naps = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{port}")], "nap-edge-a1": []}
            async with emulated_edge(tmp_path, naps, receive_buffer=BOUND, progress_timeout_s=2.0) as env:
                await env.route_to("nap-edge-a1", VOD)
                server = env.agents["nap-dc"].dp
                slow = await asyncio.to_thread(stalled_client, env.http("nap-edge-a1"), f"/bytes/{SIZE}")
                try:
                    t0 = time.monotonic()
                    while not server.groups and time.monotonic() - t0 < 10:
                        await asyncio.sleep(0.05)
                    assert server.groups  # the response started
                    while server.groups and time.monotonic() - t0 < 30:
                        await asyncio.sleep(0.1)
                    # before: keep-alive ACKs with a closed window held it (and its buffers) for good
                    assert not server.groups and not server.server
                finally:
                    slow.close()

    asyncio.run(scenario())
