"""Issue 14 (item 7) and issue 12 item 6 on the emulated fabric: NAP agents re-attach to a restarted emulated fabric by
themselves. Before, a NAP's ``attached`` flag stayed set after ``flame up`` restarted the PCE (and with it the fabric),
so the new fabric knew no NAP and the data plane stayed dead until the NAPs restarted. Now the NAP's new PCE session
hands it the new fabric's secret, the fabric answers its keep-alive or its frames with ``not attached``, and the NAP
attaches again: traffic flows within seconds, NAPs untouched."""

from __future__ import annotations

import asyncio
import http.client
import time
from pathlib import Path

from nap_agent.agent import LocalServiceConfig
from nap_agent.fabric_port import EmulatedPort
from tests.support.nap_env import VOD, emulated_edge, start_origin
from tests.support.origin import body
from tests.support.procs import process_group

CLIENT = "nap-edge-a1"


def fetch(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": VOD})
        r = c.getresponse()
        return r.status, r.read()
    except OSError as exc:
        return -1, repr(exc).encode()
    finally:
        c.close()


def test_naps_reattach_to_a_restarted_fabric_and_traffic_flows_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            port = start_origin(group, "dc")
            naps = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{port}")], CLIENT: []}
            async with emulated_edge(tmp_path, naps, response_timeout_s=5.0) as env:
                await env.route_to(CLIENT, VOD)
                assert await asyncio.to_thread(fetch, env.http(CLIENT), "/bytes/5000") == (200, body(5000))
                ports = {n: a.port for n, a in env.agents.items()}
                assert all(isinstance(p, EmulatedPort) and p.attaches == 1 for p in ports.values())
                old_secret = env.pce.driver.secret_for(CLIENT)

                await env.restart_fabric()
                assert env.pce.driver.secret_for(CLIENT) != old_secret  # a new fabric: new secrets
                assert not env.pce.driver.naps  # and nobody attached
                t0 = time.monotonic()
                result: tuple[int, bytes] = (0, b"")
                while time.monotonic() - t0 < 20:
                    result = await asyncio.to_thread(fetch, env.http(CLIENT), "/bytes/5000", 3.0)
                    if result == (200, body(5000)):
                        break
                    await asyncio.sleep(0.2)
                elapsed = time.monotonic() - t0
                assert result == (200, body(5000)), result[:1]
                assert elapsed < 15, elapsed  # within seconds (PCE reconnect backoff + re-attach)
                assert set(env.pce.driver.naps) == {"nap-dc", CLIENT}
                assert all(p.attaches >= 2 for p in ports.values())  # type: ignore[union-attr]

    asyncio.run(scenario())
