"""Per-VIM pools with per-service slots (issue 14 item 1, SFEMC-4): a service whose calls hang uses up its own slots
only; probes never wait behind steps; a timed-out call keeps its slot until its thread really returns."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from flame_control.sfemc.vim_calls import Bounds, CallTimedOut, VimCalls


def test_sfemc4_hung_service_keeps_its_slots_and_others_run_at_once() -> None:
    release = threading.Event()

    async def main() -> None:
        calls = VimCalls({"process": Bounds(step_workers=8, service_slots=2, probe_workers=2, probe_slots=1)})
        hung = [asyncio.create_task(calls.run("process", "hung", 30, release.wait)) for _ in range(6)]
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        assert await calls.run("process", "other", 5, lambda: "ok") == "ok"
        assert await calls.run("process", "hung", 5, lambda: "probe", probe=True) == "probe"
        assert time.monotonic() - t0 < 1.0
        # The hung service's third call waits for a slot, and times out waiting.
        with pytest.raises(CallTimedOut):
            await calls.run("process", "hung", 0.2, lambda: "never")
        release.set()
        await asyncio.gather(*hung)
        calls.close()

    asyncio.run(main())


def test_sfemc4_timed_out_call_holds_its_slot_until_the_thread_returns() -> None:
    release = threading.Event()

    async def main() -> None:
        calls = VimCalls({"docker": Bounds(step_workers=4, service_slots=1)})
        with pytest.raises(CallTimedOut):
            await calls.run("docker", "svc", 0.1, release.wait)
        # The thread still runs: the next call of the same service cannot start.
        with pytest.raises(CallTimedOut):
            await calls.run("docker", "svc", 0.2, lambda: 1)
        release.set()
        assert await calls.run("docker", "svc", 5, lambda: 2) == 2
        calls.close()

    asyncio.run(main())
