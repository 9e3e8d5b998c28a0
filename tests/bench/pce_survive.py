"""PCE survival figures on real Open vSwitch (issue 13, SFR-20; root, private OVS instance), used by bench_pce:

- ``restart_requests_failed``: HTTP requests through NAP agents (own processes, raw interfaces in namespaces) that fail
  while the single PCE restarts under that traffic (stop, start on its embedded store, switches reconnect), beside
  the same traffic with no restart (baseline); bodies are checked byte-exact against the origin's.
- ``resync_ms_integration``: the integration topology's three switches reconnect to a running PCE (controller removed
  and set again): time until every switch's flows were read, diffed and confirmed (ListSwitches: connected and
  flow_count == desired_flow_count). Tables intact (nothing to change) and, beside it, tables wiped while away (every
  rule re-added).
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from flame_control.api.flame.pce.v1 import pce_pb2
from flame_control.benchmark import Figure
from tests.support.procs import ProcessGroup

VOD = "vod.video.flame.example"
CLIENTS = ("nap-edge-a1", "nap-edge-b1")


def _failed(result: dict[str, Any], size: int) -> int:
    want = hashlib.sha256(_body(size)).hexdigest()
    return sum(1 for s, h in zip(result["statuses"], result["sha256"], strict=True) if s != 200 or h != want)


def _body(n: int) -> bytes:
    from tests.support.origin import body

    return body(n)


async def restart_figures(quick: bool) -> list[Figure]:
    """Failed requests while the PCE restarts under traffic vs the same traffic without a restart."""
    from tests.support.nap_ovs import ovs_edge

    size, n, rounds, batch = 4096, (150 if quick else 300), (1 if quick else 3), 20
    paths = [f"/bytes/{size}?r={i}" for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="flame-bench-restart-") as tmp:
        group = ProcessGroup(Path(tmp))
        try:
            naps: dict[str, list[tuple[str, str]]] = {"nap-dc": [(VOD, "dc")], **{c: [] for c in CLIENTS}}
            async with ovs_edge(Path(tmp), group, naps, processes=True) as edge:
                for c in CLIENTS:
                    while VOD not in edge.processes[c].status().get("routes", []):
                        await asyncio.sleep(0.1)
                fabric = edge.fabric
                steady: list[int] = []
                during: list[int] = []
                restart_s: list[float] = []
                sent: list[int] = []
                repushed: list[int] = []
                for _ in range(rounds):
                    results = await asyncio.gather(
                        *[asyncio.to_thread(edge.client, c, VOD, paths, n, 2) for c in CLIENTS]
                    )
                    steady.append(sum(_failed(r, size) for r in results))
                    before = {c: edge.processes[c].status()["snapshot_version"] for c in (*CLIENTS, "nap-dc")}
                    window = _Window()
                    restarter = threading.Thread(target=_restart, args=(fabric, window, restart_s))
                    restarter.start()

                    def traffic(c: str, window: _Window = window) -> tuple[int, int]:
                        failed = total = 0
                        window.started.set()
                        while not window.done.is_set():  # batches until the PCE is back, then one more
                            r = edge.client(c, VOD, paths[:batch], batch, 2)
                            failed, total = failed + _failed(r, size), total + batch
                        r = edge.client(c, VOD, paths[:batch], batch, 2)
                        return failed + _failed(r, size), total + batch

                    counts = await asyncio.gather(*[asyncio.to_thread(traffic, c) for c in CLIENTS])
                    await asyncio.to_thread(restarter.join, 120)
                    during.append(sum(f for f, _ in counts))
                    sent.append(sum(t for _, t in counts))
                    await asyncio.sleep(6)  # NAP sessions reconnect (backoff up to 5 s); a re-push would show here
                    after = {c: edge.processes[c].status()["snapshot_version"] for c in before}
                    repushed.append(sum(1 for c in before if after[c] != before[c]))
        finally:
            group.stop_all()
    cond = (
        f"{len(CLIENTS)} client NAPs sending GETs of {size} B (2 connections each, batches of {batch}) to an origin "
        f"behind nap-dc, NAP agents as own processes on real OVS, without pause from before the PCE process is "
        f"stopped until after it was started again on its embedded store and every switch resynced "
        f"({statistics.median(restart_s):.1f} s; {sum(sent)} requests in that window); failed = non-200 or body "
        f"not byte-exact; baseline = {len(CLIENTS)} x {n} GETs with no restart; sum over {rounds} round(s); NAPs "
        f"whose snapshot version changed across the restart (a re-push): {sum(repushed)} of {len(CLIENTS) + 1}"
    )
    return [Figure("restart_requests_failed", float(sum(during)), "requests", float(sum(steady)), "<= 0", cond)]


class _Window:
    """The restart window: traffic starts, then the PCE is stopped; ``done`` once it is back with switches synced."""

    def __init__(self) -> None:
        self.started, self.done = threading.Event(), threading.Event()


def _restart(fabric: Any, window: _Window, took: list[float]) -> None:
    try:
        window.started.wait(30)
        time.sleep(0.3)
        t = time.perf_counter()
        fabric.procs.stop(fabric.pce)
        fabric.channel.close()
        fabric.start_pce()
        fabric.wait_switches()
        took.append(time.perf_counter() - t)
    finally:
        window.done.set()


def resync_figures(quick: bool) -> list[Figure]:
    """Switch reconnect -> tables reconciled on the integration topology (tables intact, and wiped while away)."""
    from tests.integration.pce.test_pce_ovs import Fabric
    from tests.support.ovs import ovs_testbed

    repeats = 3 if quick else 7
    intact: list[float] = []
    wiped: list[float] = []
    with tempfile.TemporaryDirectory(prefix="flame-bench-resync-") as tmp:
        group = ProcessGroup(Path(tmp))
        try:
            with ovs_testbed(Path(tmp) / "ovs") as bed:
                fabric = Fabric(bed, group, Path(tmp) / "state")
                for i in range(repeats * 2):
                    wipe = i % 2 == 1
                    (wiped if wipe else intact).append(_reconnect(fabric, wipe))
                fabric.channel.close()
        finally:
            group.stop_all()
    cond = (
        "3 OVS userspace bridges of the integration topology (Figure 25) reconnect to a running PCE (os-ken driver): "
        "from set-controller until ListSwitches shows every switch connected with flow_count == desired_flow_count "
        f"(polled every 10 ms); median of {repeats}; baseline = the same with every flow deleted while disconnected"
    )
    return [Figure("resync_ms_integration", statistics.median(intact), "ms", statistics.median(wiped), None, cond)]


def _reconnect(fabric: Any, wipe: bool) -> float:
    bed = fabric.bed

    def switches() -> list[Any]:
        return list(fabric.stub.ListSwitches(pce_pb2.ListSwitchesRequest()).switches)

    for br in fabric.bridges.values():
        bed.vsctl("del-controller", br)
    deadline = time.monotonic() + 30
    while any(s.connected for s in switches()):
        if time.monotonic() > deadline:
            raise RuntimeError("switches did not disconnect")
        time.sleep(0.05)
    if wipe:
        for br in fabric.bridges.values():
            bed.ofctl("del-flows", br)
    t = time.perf_counter()
    for br in fabric.bridges.values():
        bed.set_controller(br, fabric.of_port)
    while True:
        sws = switches()
        if all(s.connected and s.flow_count == s.desired_flow_count and not s.degraded_reason for s in sws):
            return (time.perf_counter() - t) * 1000
        if time.perf_counter() - t > 60:
            raise RuntimeError(f"switches did not resync: {sws}")
        time.sleep(0.01)
