"""Coincidental multicast (KPI F3.5) as the demo measures it: N viewers fetch the same segment at once through their
NAPs from one server NAP (``scenario.MULTICAST_NAP``, which holds a new cacheable fetch for
``scenario.MULTICAST_COALESCE_S`` to collect identical requests); the server NAP's own ``bytes_sent`` counter (from its
status file) before and after a burst of one viewer and a burst of N viewers gives the capacity gain
``N x bytes(one) / bytes(N)``. Every body is checked byte-exact."""

from __future__ import annotations

import asyncio
from typing import Any

from flame_control.demo import scenario as sc
from flame_control.demo.clients import fetch_once
from flame_control.demo.platform import Platform
from flame_control.vim.media_server import expected_segment

#: NAPs the viewers attach at (every NAP except the server NAP itself).
CLIENT_NAPS = ("nap-edge-a2", "nap-edge-b2", "nap-edge-a1", "nap-edge-b1", "nap-dc")


async def _server_bytes(platform: Platform) -> int:
    await asyncio.sleep(0.7)  # the agent refreshes its status file every 0.5 s
    return int(platform.naps[sc.MULTICAST_NAP].status().get("bytes_sent", 0))


async def measure(platform: Platform, clients: int, size: int) -> dict[str, Any]:
    """One viewer, then ``clients`` at once (distinct segments, so nothing is shared between the two bursts)."""
    naps = [n for n in CLIENT_NAPS if platform.alive(n)]

    async def burst(n: int, seg: int) -> tuple[int, list[tuple[bool, str, float]]]:
        expected = expected_segment("live", seg, size)
        before = await _server_bytes(platform)
        jobs = []
        for i in range(n):
            att = platform.attachment(naps[i % len(naps)])
            assert att is not None
            jobs.append(fetch_once(att, sc.MULTICAST_FQDN, f"/vod/live/seg{seg}.ts?size={size}", expected, f"mc{i}"))
        results = await asyncio.gather(*jobs)
        return await _server_bytes(platform) - before, list(results)

    one, r1 = await burst(1, 100)
    many, rn = await burst(clients, 101)
    bad = [r for r in r1 + rn if not r[0]]
    return {
        "server_nap": sc.MULTICAST_NAP,
        "fqdn": sc.MULTICAST_FQDN,
        "client_naps": naps,
        "clients": clients,
        "size": size,
        "coalesce_window_s": sc.MULTICAST_COALESCE_S,
        "bytes_one": one,
        "bytes_n": many,
        "failed": len(bad),
        "failures": [r[1] for r in bad][:5],
        "multicast_responses": int(platform.naps[sc.MULTICAST_NAP].status().get("multicast_responses", 0)),
    }
