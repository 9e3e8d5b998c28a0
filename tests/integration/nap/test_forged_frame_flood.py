"""Issue 12 item 5, the flood test (emulated fabric): one local process sends forged frames as fast as it can while
real users fetch through the NAPs; their success ratio is reported and must stay >= 0.99.

The flooder is the worst a local process can be now: a compromised NAP holding its fabric secret (nap-edge-b2), aiming
at the server NAP with one-frame requests whose head never completes, complete GETs with forged reply paths and
duplicated out-of-order frames. Before: ~4,200 such one-frame requests filled ``max_server_exchanges`` and real users
got 502 for 25 s. Without the secret the fabric drops everything before any allocation."""

from __future__ import annotations

import asyncio
import http.client
from pathlib import Path

from nap_agent.agent import LocalServiceConfig
from tests.support.flood import flood_while_fetching
from tests.support.nap_env import VOD, emulated_edge, start_origin
from tests.support.procs import process_group

CLIENT = "nap-edge-a1"
ATTACKER = "nap-edge-b2"


def fetch(port: int) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/bytes/10", headers={"Host": VOD})
    status = c.getresponse().status
    c.close()
    return status


def test_forged_frame_flood_leaves_real_users_at_least_99_percent_success(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            port = start_origin(group, "dc")
            naps = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{port}")], CLIENT: []}
            async with emulated_edge(tmp_path, naps, max_server_exchanges=512) as env:
                await env.route_to(CLIENT, VOD)
                # the users were there before the flood: their NAP had answered exchanges (it is trusted)
                assert await asyncio.to_thread(fetch, env.http(CLIENT)) == 200
                driver = env.pce.driver
                route = env.pce.core.resolve(ATTACKER, VOD)[0]
                server = env.agents["nap-dc"].dp
                avoid = server.routes.ilids[route.table]
                result = await flood_while_fetching(
                    driver.port, ATTACKER, driver.secret_for(ATTACKER), (route.fid, route.table), avoid,
                    env.http(CLIENT), VOD,
                )  # fmt: skip
                c = server.counters
                print(f"flood: {result}, ratio {result.success_ratio:.4f}, server counters {c}")
                assert result.attached and result.sent > 10_000
                assert c.exchanges_evicted > 0  # the flood did fill the table
                assert result.total >= 20
                assert result.success_ratio >= 0.99, result

                # without the NAP's secret nothing gets past the fabric: no exchange is created for it anywhere
                exchanges = -1
                while exchanges != c.server_exchanges:  # the first flood's backlog drains from the socket queues
                    exchanges = c.server_exchanges
                    await asyncio.sleep(0.5)
                result = await flood_while_fetching(
                    driver.port, ATTACKER, b"", (route.fid, route.table), avoid, env.http(CLIENT), VOD, seconds=4.0
                )
                print(f"unattached flood: {result}, ratio {result.success_ratio:.4f}")
                assert not result.attached and result.sent > 10_000
                assert c.server_exchanges - exchanges <= result.total  # only the real users' requests
                assert result.success_ratio >= 0.99, result

    asyncio.run(scenario())
