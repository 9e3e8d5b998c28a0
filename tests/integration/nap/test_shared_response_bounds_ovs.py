"""Issue 12 item 4 on real Open vSwitch (markers `ovs`, `e2e`; root): a user who stops reading a shared response
(coincidental multicast, F3.5) no longer freezes the other user's download. The stalled client sits in nap-edge-b1's
namespace, the fast one in nap-edge-a1's; both ask for the same 16 MB while the origin holds the answer 800 ms, so the
server NAP answers both with one stream. Before: the fast download stopped for good once the stalled member's buffers
were full (12.3 MB of 30 MB in the issue's reproduction)."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from pathlib import Path

import pytest

from tests.support.nap_ovs import HTTP_PORT, ovs_edge
from tests.support.origin import body
from tests.support.ovs import available
from tests.support.procs import ProcessGroup

pytestmark = [pytest.mark.ovs, pytest.mark.e2e]
VOD = "vod.video.flame.example"
SIZE = 16 << 20

STALLED = (
    "import socket,time;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,4096);"
    f"s.connect(('127.0.0.1',{HTTP_PORT}));"
    f"s.sendall(b'GET /slow/800/{SIZE} HTTP/1.1\\r\\nHost: {VOD}\\r\\n\\r\\n');time.sleep(40)"
)


@pytest.fixture(autouse=True)
def _ovs() -> None:
    reason = available()
    if reason:
        pytest.skip(reason)


def test_f35_a_stalled_member_does_not_freeze_a_shared_response_on_ovs(tmp_path: Path, procs: ProcessGroup) -> None:
    async def scenario() -> None:
        naps = {"nap-dc": [(VOD, "dc")], "nap-edge-a1": [], "nap-edge-b1": []}
        async with ovs_edge(tmp_path, procs, naps, member_stall_s=1.0, receive_buffer=2 << 20) as edge:
            for nap in ("nap-edge-a1", "nap-edge-b1"):
                agent = edge.agents[nap]
                async with asyncio.timeout(20):
                    while agent.dp.routes.best(VOD) is None:
                        await asyncio.sleep(0.05)
            stalled = edge.bed.popen_in("nap-edge-b1", [sys.executable, "-c", STALLED])
            edge.popens.append(stalled)  # stopped with the edge
            await asyncio.sleep(0.5)
            t0 = time.monotonic()
            fast = await asyncio.to_thread(edge.client, "nap-edge-a1", VOD, [f"/slow/800/{SIZE}"])
            elapsed = time.monotonic() - t0
            assert fast["statuses"] == [200] and fast["sha256"] == [hashlib.sha256(body(SIZE)).hexdigest()]
            assert elapsed < 30, elapsed  # not held until the stalled client gives up (40 s)
            server = edge.agents["nap-dc"].dp.counters
            assert server.multicast_responses >= 1 and server.members_dropped >= 1, server

    asyncio.run(scenario())
