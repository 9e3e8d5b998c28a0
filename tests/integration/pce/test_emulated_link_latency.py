"""The emulated fabric with ``link_latency`` (``services.pce.emulated_link_latency``, what ``flame demo`` turns on):
every frame reaches each NAP after the sum of the configured latencies of the links on its path, frames between the
same two NAPs stay in order, and the pure fabric reports that sum per NAP reached. Off (the default), frames go at
loopback speed."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from pce.switch.emulated import EmulatedDriver, PreciseTimer
from tests.integration.pce.test_emulated_fabric import VOD, Naps, example_core
from tests.support.frames import build as build_frame
from tests.support.frames import parse


def test_pure_fabric_reports_the_path_latency_per_nap() -> None:
    core = example_core()
    route = core.resolve("nap-edge-a2", VOD)[0]
    delivery = core.fabric().send("nap-edge-a2", route.fid, route.table)
    assert delivery.accepted == {"nap-dc"}
    # nap-edge-a2 -> sw-edge-a (0.1 ms) -> sw-dc (5 ms) -> nap-dc (0.1 ms)
    assert abs(delivery.latency_s["nap-dc"] - 0.0052) < 1e-9


async def _arrivals(link_latency: bool, frames: int) -> list[tuple[float, str]]:
    core = example_core()
    driver = EmulatedDriver(topology=lambda: core.topology, link_latency=link_latency)
    port = await driver.listen()
    driver.apply({core.topology.nodes[n].dpid: r for n, r in core.switch_rules().items()})
    naps = Naps(port, core.topology.naps())
    await naps.attach(driver)
    route = core.resolve("nap-edge-a2", VOD)[0]
    loop = asyncio.get_running_loop()
    sent = time.monotonic()
    for i in range(frames):
        naps.socks["nap-edge-a2"].sendto(
            build_frame(route.fid, route.table, f"f{i}".encode(), b"\x02" * 6), ("127.0.0.1", port)
        )
    got: list[tuple[float, str]] = []
    while len(got) < frames:
        data = await asyncio.wait_for(loop.sock_recv(naps.socks["nap-dc"], 65535), 2)
        frame = parse(data)
        if frame is not None:
            got.append((time.monotonic() - sent, str(frame["marker"])))
    naps.close()
    driver.close()
    return got


def test_frames_are_delayed_by_their_path_latency_and_stay_in_order() -> None:
    got = asyncio.run(_arrivals(True, 20))
    assert [m for _, m in got] == [f"f{i}" for i in range(20)]
    assert min(t for t, _ in got) >= 0.0052


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux only")
def test_the_delay_timer_is_not_rounded_up_to_whole_milliseconds() -> None:
    """asyncio's timers wake the loop on whole milliseconds (epoll's timeout is rounded up), which held the 0.2 ms
    edge-A local path for ~1.3 ms; the fabric's timer (a timerfd) fires when it is due. Best of five wake-ups of a
    timer armed 0.2 ms ahead: well under the 1 ms the loop's own timers cannot beat."""

    async def wakeups() -> tuple[bool, float]:
        fired = asyncio.Event()
        timer = PreciseTimer(fired.set)
        best = 1.0
        try:
            for _ in range(5):
                fired.clear()
                start = time.monotonic()
                timer.arm(start + 0.0002)
                await fired.wait()
                best = min(best, time.monotonic() - start)
                await asyncio.sleep(0.01)
            return timer.precise, best
        finally:
            timer.close()

    precise, best = asyncio.run(wakeups())
    assert precise
    assert 0.0002 <= best < 0.0009, best


def test_without_link_latency_frames_are_not_delayed() -> None:
    got = asyncio.run(_arrivals(False, 5))
    assert [m for _, m in got] == [f"f{i}" for i in range(5)]
    assert min(t for t, _ in got) < 0.0052  # the first frame is not held for the path latency
