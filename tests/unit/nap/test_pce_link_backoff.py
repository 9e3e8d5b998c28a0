"""The NAP's PCE session reconnects with jittered exponential backoff across replicas (nap_agent/pce_link.py):
each wait is the nominal delay (doubling from backoff_start_s, capped at backoff_max_s) times a random factor in
[0.5, 1.5], so NAPs that lost the same PCE do not come back in lockstep; each attempt goes to the next replica."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from nap_agent import pce_link
from nap_agent.pce_link import PceLink


def waits_of(link: PceLink, monkeypatch: pytest.MonkeyPatch, attempts: int) -> tuple[list[float], list[str]]:
    """The sleeps between ``attempts`` failed sessions, and the endpoints tried."""
    delays: list[float] = []
    tried: list[str] = []
    real_sleep = asyncio.sleep

    async def failing_session(endpoint: str) -> None:
        tried.append(endpoint)
        raise ConnectionError("pce unreachable")

    async def recording_sleep(delay: float, *args: Any) -> None:
        delays.append(delay)
        if len(delays) >= attempts:
            raise asyncio.CancelledError
        await real_sleep(0)

    monkeypatch.setattr(link, "_session", failing_session)
    monkeypatch.setattr(pce_link.asyncio, "sleep", recording_sleep)

    async def run() -> None:
        link.start()
        assert link._task is not None
        await asyncio.gather(link._task, return_exceptions=True)

    asyncio.run(run())
    monkeypatch.setattr(pce_link.asyncio, "sleep", real_sleep)
    return delays, tried


def make_link() -> PceLink:
    return PceLink(
        "nap-x",
        ["127.0.0.1:1", "127.0.0.1:2"],
        channel=lambda target: None,  # type: ignore[arg-type,return-value]
        apply=lambda table: None,
        local_fqdns=list,
        backoff_start_s=0.2,
        backoff_max_s=5.0,
    )


def test_reconnect_waits_are_jittered_around_a_capped_doubling_and_rotate_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    random.seed(20251201)
    delays, tried = waits_of(make_link(), monkeypatch, 12)
    nominal = [min(0.2 * 2**i, 5.0) for i in range(12)]
    factors = [d / n for d, n in zip(delays, nominal, strict=True)]
    assert all(0.5 <= f <= 1.5 for f in factors), factors
    assert len({round(f, 6) for f in factors}) == len(factors)  # a fresh random factor every time
    assert min(factors) < 0.9 and max(factors) > 1.1  # really spread, not a constant offset
    assert max(delays) <= 1.5 * 5.0  # the cap holds with jitter
    assert tried == ["127.0.0.1:1", "127.0.0.1:2"] * 6  # each attempt goes to the next replica


def test_two_naps_that_lose_the_pce_together_do_not_retry_in_lockstep(monkeypatch: pytest.MonkeyPatch) -> None:
    random.seed(1)
    first, _ = waits_of(make_link(), monkeypatch, 6)
    second, _ = waits_of(make_link(), monkeypatch, 6)
    assert first != second
    assert all(abs(a - b) > 1e-9 for a, b in zip(first, second, strict=True))
