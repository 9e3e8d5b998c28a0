"""NAP data-plane benchmarks (`flame bench nap`): direct HTTP vs through NAP -> fabric -> NAP, side by side in one run.

On real OVS when root (the roadmap topology: three userspace bridges programmed by the PCE through os-ken, NAP agents
on raw interfaces in per-host namespaces; the direct baseline goes over a plain veth between the client's and the
origin's namespaces), on the emulated fabric otherwise (PCE, fabric and NAP agents in this process; direct = loopback).
Clients and origins are separate processes (tests/support/http_client.py, tests/support/origin.py).

Figures: added latency of a small GET (p50/p99), 100 MB download throughput and its ratio to direct, requests/s with 50
concurrent clients and its ratio, and server-link bytes for N concurrent clients of one resource (KPI F3.5).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flame_control.benchmark import Figure, median, percentile
from nap_agent.agent import LocalServiceConfig
from tests.support.procs import ProcessGroup

VOD = "vod.video.flame.example"
CLIENT_NAPS = ("nap-edge-a1", "nap-edge-a2", "nap-edge-b1")
#: Fabric MTU on OVS links and the direct baseline link (FLAME_BENCH_MTU; 9000 lost many frames in OVS userspace here).
MTU = int(os.environ.get("FLAME_BENCH_MTU", "1500"))
#: Event loop of the NAP agent processes (FLAME_BENCH_LOOP: auto, uvloop or asyncio).
LOOP = os.environ.get("FLAME_BENCH_LOOP", "auto")
CONDITIONS = "2-core host; Python NAP agents (asyncio); clients and origins are separate processes"


@dataclass
class Rig:
    """One fabric under test: how to run a client through the NAP or directly, and what the server link carried."""

    kind: str
    #: (client NAP, paths, requests, concurrency, direct) -> http_client JSON
    client: Callable[[str, list[str], int, int, bool], dict[str, Any]]
    server_bytes: Callable[[], int]


def _local_client(addr: str, tcp_port: int, paths: list[str], requests: int, concurrency: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "tests.support.http_client", "--port", str(tcp_port), "--host", VOD]
    argv += ["--addr", addr, "--requests", str(requests), "--concurrency", str(concurrency), "--keepalive"]
    for p in paths:
        argv += ["--path", p]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@asynccontextmanager
async def emulated_rig(tmp: Path) -> AsyncIterator[Rig]:
    from tests.support.nap_env import emulated_edge, start_origin

    with _group(tmp) as group:
        origin = start_origin(group, "dc")
        naps: dict[str, list[LocalServiceConfig]] = {
            "nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{origin}")],
            **{n: [] for n in CLIENT_NAPS},
        }
        async with emulated_edge(tmp, naps, processes=group, event_loop=LOOP) as env:
            for n in CLIENT_NAPS:
                await env.route_to(n, VOD)

            def client(nap: str, paths: list[str], requests: int, concurrency: int, direct: bool) -> dict[str, Any]:
                port = origin if direct else env.http(nap)
                return _local_client("127.0.0.1", port, paths, requests, concurrency)

            def server_bytes() -> int:
                time.sleep(0.6)  # the agent refreshes its status file every 0.5 s
                return int(env.processes["nap-dc"].status()["bytes_sent"])

            yield Rig("emulated", client, server_bytes)


@asynccontextmanager
async def ovs_rig(tmp: Path) -> AsyncIterator[Rig]:
    from tests.support.nap_ovs import ovs_edge

    with _group(tmp) as group:
        naps: dict[str, list[tuple[str, str]]] = {"nap-dc": [(VOD, "dc")], **{n: [] for n in CLIENT_NAPS}}
        async with ovs_edge(tmp, group, naps, processes=True, mtu=MTU, event_loop=LOOP) as edge:
            for n in CLIENT_NAPS:
                while VOD not in edge.processes[n].status().get("routes", []):
                    await asyncio.sleep(0.1)
            _, origin_addr = edge.direct_link("nap-edge-a1", "nap-dc", MTU)
            direct_port = edge.start_origin("nap-dc", "direct", addr=origin_addr)

            def client(nap: str, paths: list[str], requests: int, concurrency: int, direct: bool) -> dict[str, Any]:
                if direct:
                    return edge.client(nap, VOD, paths, requests, concurrency, addr=origin_addr, port=direct_port)
                return edge.client(nap, VOD, paths, requests, concurrency)

            yield Rig("ovs", client, lambda: edge.tx_bytes_from("nap-dc"))


class _group:
    """ProcessGroup as a context manager that always stops everything."""

    def __init__(self, tmp: Path) -> None:
        self.group = ProcessGroup(tmp)

    def __enter__(self) -> ProcessGroup:
        return self.group

    def __exit__(self, *exc: object) -> None:
        self.group.stop_all()


def _ok(result: dict[str, Any]) -> dict[str, Any]:
    bad = [s for s in result["statuses"] if s != 200]
    if bad:
        raise RuntimeError(f"benchmark requests failed: {bad[:5]} {result.get('errors')}")
    return result


async def measure(rig: Rig, quick: bool) -> list[Figure]:
    cond = f"{rig.kind} fabric; {CONDITIONS}"
    call = asyncio.to_thread
    nap = CLIENT_NAPS[0]
    repeats = 2 if quick else 3
    # added latency: sequential 1 KB GETs on one keep-alive connection
    n_lat = 100 if quick else 300
    lat_nap: list[float] = []
    lat_direct: list[float] = []
    for _ in range(repeats):
        lat_direct += _ok(await call(rig.client, nap, ["/bytes/1024"], n_lat, 1, True))["latencies"][5:]
        lat_nap += _ok(await call(rig.client, nap, ["/bytes/1024"], n_lat, 1, False))["latencies"][5:]
    p50 = (percentile(lat_nap, 50) - percentile(lat_direct, 50)) * 1000
    p99 = (percentile(lat_nap, 99) - percentile(lat_direct, 99)) * 1000
    figures = [
        Figure("added_latency_ms_p50", p50, "ms", percentile(lat_direct, 50) * 1000, "< 1", cond),
        Figure("added_latency_ms_p99", p99, "ms", percentile(lat_direct, 99) * 1000, None, cond),
    ]
    # throughput of one large download
    size = (20 if quick else 100) << 20
    t_nap, t_direct = [], []
    for _ in range(repeats):
        t_direct.append(_ok(await call(rig.client, nap, [f"/bytes/{size}"], 1, 1, True))["seconds"])
        t_nap.append(_ok(await call(rig.client, nap, [f"/bytes/{size}"], 1, 1, False))["seconds"])
    mbit_nap, mbit_direct = size * 8 / median(t_nap) / 1e6, size * 8 / median(t_direct) / 1e6
    figures += [
        Figure("throughput_mbit_s", mbit_nap, "Mbit/s", mbit_direct, None, f"{size >> 20} MB download; {cond}"),
        Figure("throughput_ratio_vs_direct", mbit_nap / mbit_direct, "x", None, None, f"{size >> 20} MB; {cond}"),
    ]
    # requests per second with 50 concurrent clients
    n_rps = 1000 if quick else 3000
    distinct = [f"/bytes/1024?r={i}" for i in range(n_rps)]  # distinct resources: no coincidental multicast here
    rps_nap, rps_direct = [], []
    for _ in range(repeats):
        rps_direct.append(n_rps / _ok(await call(rig.client, nap, distinct, n_rps, 50, True))["seconds"])
        rps_nap.append(n_rps / _ok(await call(rig.client, nap, distinct, n_rps, 50, False))["seconds"])
    figures += [
        Figure("rps_nap", median(rps_nap), "req/s", median(rps_direct), None, f"50 clients, 1 KB; {cond}"),
        Figure("rps_ratio_vs_direct", median(rps_nap) / median(rps_direct), "x", None, None, f"50 clients; {cond}"),
    ]
    # coincidental multicast: server-link bytes for N concurrent clients of one resource
    body = 1 << 20
    per_n: dict[int, float] = {}
    for n in (1, 5, 10, 20):
        samples = []
        for _ in range(1 if quick else 2):
            before = rig.server_bytes()
            split = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]
            jobs = [
                call(rig.client, CLIENT_NAPS[i], [f"/slow/700/{body}"], k, k, False) for i, k in enumerate(split) if k
            ]
            for result in await asyncio.gather(*jobs):
                _ok(result)
            samples.append(rig.server_bytes() - before)
        per_n[n] = median(samples)
    for n in (5, 10, 20):
        figures.append(
            Figure(
                f"multicast_bytes_ratio_n{n}",
                per_n[n] / (n * per_n[1]),
                "x",
                per_n[1],
                f"<= {2 / n:.2f}",
                f"{n} clients at 3 NAPs, 1 MiB resource; goal ~1/N (F3.5); baseline = bytes for one client; {cond}",
            )
        )
    return figures


async def flood_figures(tmp: Path, quick: bool) -> list[Figure]:
    """``flood_success_ratio`` (issue 12 item 5): real users' requests that succeed while one local process sends
    forged frames as fast as it can (tests/support/flood.py). Emulated fabric (the flooder attaches over UDP), NAP
    agents as `flame-nap` processes. The flooder is a compromised NAP (``nap-edge-b2``, holding its fabric secret) aiming
    at the server NAP; the users' NAP had answered exchanges before the flood (a live service's users)."""
    from tests.support.flood import flood_while_fetching
    from tests.support.nap_env import emulated_edge, start_origin

    client, attacker = CLIENT_NAPS[0], "nap-edge-b2"
    with _group(tmp) as group:
        origin = start_origin(group, "dc")
        naps = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{origin}")], client: []}
        async with emulated_edge(tmp, naps, processes=group, event_loop=LOOP) as env:
            await env.route_to(client, VOD)
            _ok(await asyncio.to_thread(_local_client, "127.0.0.1", env.http(client), ["/bytes/1024"], 20, 2))
            core, driver = env.pce.core, env.pce.driver
            route = core.resolve(attacker, VOD)[0]
            avoid = core.plan.tables[route.table].ilids["nap-dc"]
            seconds, users = (8.0, 4) if quick else (20.0, 8)
            r = await flood_while_fetching(
                driver.port, attacker, driver.secret_for(attacker), (route.fid, route.table), avoid, env.http(client),
                VOD, seconds=seconds, users=users,
            )  # fmt: skip
    cond = (
        f"emulated fabric; {r.sent:,} forged frames offered in {seconds:g} s by one process attached as {attacker} "
        f"(never-completing heads, GETs with forged reply paths, duplicated out-of-order frames); {users} users "
        f"fetching 2 kB one after another: {r.ok}/{r.total} succeeded, median {r.median_s * 1000:.0f} ms; {CONDITIONS}"
    )
    return [Figure("flood_success_ratio", r.success_ratio, "ratio", None, ">= 0.99", cond)]


def run(quick: bool) -> list[Figure]:
    """All NAP figures (OVS when root and OVS is installed, emulated otherwise)."""

    async def go() -> list[Figure]:
        from tests.support.ovs import available

        with tempfile.TemporaryDirectory(prefix="flame-bench-nap-") as tmp:
            forced = os.environ.get("FLAME_BENCH_FABRIC", "")  # "emulated" or "ovs" to choose explicitly
            use_ovs = forced == "ovs" or (not forced and os.geteuid() == 0 and not available())
            rig_cm = ovs_rig(Path(tmp)) if use_ovs else emulated_rig(Path(tmp))
            async with rig_cm as rig:
                figures = await measure(rig, quick)
            (Path(tmp) / "flood").mkdir()
            return figures + await flood_figures(Path(tmp) / "flood", quick)

    return asyncio.run(go())
