"""Idempotent retries of mutating RPCs by their client ``request_id`` (ARCHITECTURE section 3).

A retry with the same method, caller and request_id gets the first call's response without running it again; a
concurrent duplicate waits for the first; the same request_id with a *different* request is rejected. Entries live
for ``ttl_s`` and at most ``capacity`` are kept (oldest dropped first). Only successful responses are remembered, so a
failed call may be retried. Pure: the clock is injected.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from flame_control.runtime.errors import FieldViolation, InvalidArgument


def request_id_of(request: object) -> str | None:
    """The non-empty ``request_id`` of a protobuf request, or None when it has none."""
    if not isinstance(request, Message) or "request_id" not in request.DESCRIPTOR.fields_by_name:
        return None
    value = getattr(request, "request_id", "")
    return value or None


def fingerprint(request: Message) -> str:
    """Digest of the request without its request_id (deterministic serialization)."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


@dataclass
class _Entry:
    fingerprint: str
    expires: float
    result: asyncio.Future[Any]


class IdempotencyCache:
    """Remembers responses of mutating calls by (method, subject, request_id)."""

    def __init__(self, clock: Callable[[], float], ttl_s: float = 600.0, capacity: int = 10_000) -> None:
        self._clock = clock
        self._ttl = ttl_s
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now and len(self._entries) <= self._capacity:
                break
            self._entries.pop(key)

    async def run(self, method: str, subject: str, request: Message, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``call`` once per (method, subject, request_id); replay its response for retries."""
        rid = request_id_of(request)
        if rid is None:
            return await call()
        now = self._clock()
        self._expire(now)
        key = (method, subject, rid)
        fp = fingerprint(request)
        entry = self._entries.get(key)
        if entry is not None:
            if entry.fingerprint != fp:
                raise InvalidArgument(
                    [FieldViolation("request_id", "already used for a different request; use a new request_id")]
                )
            return await asyncio.shield(entry.result)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._entries[key] = _Entry(fp, now + self._ttl, future)
        try:
            response = await call()
        except BaseException as exc:
            self._entries.pop(key, None)
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else needs to
            raise
        future.set_result(response)
        return response
