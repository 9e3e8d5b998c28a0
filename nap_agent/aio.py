"""asyncio helpers for the data plane's hot paths."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(seconds: float, aw: Awaitable[T]) -> T:
    """``await aw`` with a timeout (TimeoutError), without the extra task ``asyncio.wait_for`` creates per call on
    Python 3.11 (it shows on every request and every body chunk)."""
    async with asyncio.timeout(seconds):
        return await aw
