"""Bounded, isolated calls into blocking VIM drivers (issue 14 item 1, SFEMC-4).

VIM drivers block (the docker SDK, openstacksdk, the process VIM waiting for a port). Each VIM gets two thread pools
of its own: ``steps`` (create, start, stop, delete, list) and ``probes`` (health checks: ``get`` and the endpoint's own
TCP answer), so probes never queue behind slow boots and one VIM never starves another. Within a VIM each media
service holds at most ``service_slots`` step threads and ``probe_slots`` probe threads at once: a service whose image
hangs uses up its own slots, never its neighbours'.

A slot is released only when its thread really returns, not when the caller's timeout fires: a call that timed out
keeps its thread until the driver gives up (the process VIM's own boot timeout), so the bound holds. Timeouts count
from the call, including the wait for a slot.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


class CallTimedOut(Exception):
    """The call (waiting for a slot included) did not finish within its timeout."""


@dataclass(frozen=True)
class Bounds:
    """Thread and slot counts of one VIM."""

    #: Step threads of the VIM (all services together).
    step_workers: int = 16
    #: Step threads one media service may hold at once.
    service_slots: int = 4
    #: Probe threads of the VIM.
    probe_workers: int = 8
    #: Probe threads one media service may hold at once.
    probe_slots: int = 2


@dataclass
class _Lane:
    """One VIM's pools and per-service slots."""

    name: str
    bounds: Bounds
    steps: concurrent.futures.ThreadPoolExecutor = field(init=False)
    probes: concurrent.futures.ThreadPoolExecutor = field(init=False)
    slots: dict[tuple[str, bool], asyncio.Semaphore] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.steps = concurrent.futures.ThreadPoolExecutor(self.bounds.step_workers, f"vim-{self.name}-step")
        self.probes = concurrent.futures.ThreadPoolExecutor(self.bounds.probe_workers, f"vim-{self.name}-probe")

    def slot(self, service: str, probe: bool) -> asyncio.Semaphore:
        key = (service, probe)
        sem = self.slots.get(key)
        if sem is None:
            sem = asyncio.Semaphore(self.bounds.probe_slots if probe else self.bounds.service_slots)
            self.slots[key] = sem
        return sem


def _release(loop: asyncio.AbstractEventLoop, sem: asyncio.Semaphore) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed while the driver call was still running
        loop.call_soon_threadsafe(sem.release)


class VimCalls:
    """Runs blocking VIM calls on the VIM's own pools, bounded per media service, with a timeout."""

    def __init__(self, bounds: dict[str, Bounds] | None = None) -> None:
        self._bounds = bounds or {}
        self._lanes: dict[str, _Lane] = {}

    def _lane(self, vim: str) -> _Lane:
        lane = self._lanes.get(vim)
        if lane is None:
            lane = self._lanes[vim] = _Lane(vim, self._bounds.get(vim, Bounds()))
        return lane

    async def run(
        self, vim: str, service: str, seconds: float, fn: Callable[..., T], *args: object, probe: bool = False
    ) -> T:
        """``fn(*args)`` on ``vim``'s step (or probe) pool within ``service``'s slots; CallTimedOut after
        ``seconds``."""
        lane = self._lane(vim)
        sem = lane.slot(service, probe)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            await asyncio.wait_for(sem.acquire(), max(0.0, deadline - loop.time()))
        except TimeoutError as exc:
            raise CallTimedOut(f"no free {vim} slot for {service} within {seconds:g} s") from exc
        try:
            cf = (lane.probes if probe else lane.steps).submit(fn, *args)
        except BaseException:
            sem.release()
            raise
        # The slot goes back when the thread is done, even if we stop waiting for it.
        cf.add_done_callback(lambda _f: _release(loop, sem))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(cf), max(0.0, deadline - loop.time()))
        except TimeoutError as exc:
            raise CallTimedOut(f"did not finish within {seconds:g} s") from exc

    def close(self) -> None:
        """Stop accepting calls; running driver calls finish in their threads."""
        for lane in self._lanes.values():
            lane.steps.shutdown(wait=False, cancel_futures=True)
            lane.probes.shutdown(wait=False, cancel_futures=True)
