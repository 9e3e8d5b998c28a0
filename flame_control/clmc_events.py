"""Lifecycle config events to the CLMC (CLMC-4, CLMC-5) from the orchestrator and the SFEMC.

Events are queued and sent in batches on ``PublishConfigEvents`` by a background task; a CLMC that is down loses
nothing: the batch stays queued and is retried with backoff. Only past ``max_pending`` are the oldest dropped, and
then they are counted and logged, never silently lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping

import grpc

from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, model_pb2

log = logging.getLogger("flame.clmc_events")


def config_event(
    source: str,
    subject_kind: str,
    tags: Mapping[str, str],
    *,
    event: str = "",
    from_state: int = 0,
    to_state: int = 0,
    failure: int = 0,
    message: str = "",
    location: tuple[float, float, str] | None = None,
    at_ns: int | None = None,
) -> model_pb2.ConfigEvent:
    """One ConfigEvent stamped now (or at ``at_ns``)."""
    e = model_pb2.ConfigEvent(
        source=source,
        subject_kind=subject_kind,
        tags=dict(tags),
        event=event,
        from_state=from_state,  # type: ignore[arg-type]
        to_state=to_state,  # type: ignore[arg-type]
        failure=failure,  # type: ignore[arg-type]
        message=message[:1000],
    )
    e.time.FromNanoseconds(time.time_ns() if at_ns is None else at_ns)
    if location is not None:
        e.location.latitude, e.location.longitude, e.location.name = location
    return e


class ConfigEventPublisher:
    """Queues config events and publishes them to the CLMC in the background, retrying on failure."""

    def __init__(
        self,
        channel: Callable[[], grpc.aio.Channel],
        *,
        interval_s: float = 0.2,
        max_pending: int = 100_000,
        max_batch: int = 1000,
    ) -> None:
        self.channel, self.interval_s, self.max_pending, self.max_batch = channel, interval_s, max_pending, max_batch
        self.pending: list[model_pb2.ConfigEvent] = []
        self.published = 0
        self.dropped = 0
        self.failures = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def publish(self, event: model_pb2.ConfigEvent) -> None:
        """Queue one event (never blocks)."""
        self.pending.append(event)
        if len(self.pending) > self.max_pending:
            lost = len(self.pending) - self.max_pending
            del self.pending[:lost]
            self.dropped += lost
            log.warning("clmc unreachable: dropped oldest config events", extra={"fields": {"dropped": self.dropped}})
        self._wake.set()

    def start(self) -> None:
        """Start the background sender (inside the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Stop the sender after one last attempt to deliver what is queued."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), flush_timeout_s)
        if self.pending:
            log.warning("stopping with config events not delivered", extra={"fields": {"pending": len(self.pending)}})

    async def flush(self) -> bool:
        """Send everything queued; False when the CLMC refused or was unreachable (events stay queued)."""
        while self.pending:
            batch = self.pending[: self.max_batch]
            request = clmc_pb2.PublishConfigEventsRequest(events=batch, request_id=uuid.uuid4().hex)

            async def one(
                r: clmc_pb2.PublishConfigEventsRequest = request,
            ) -> AsyncIterator[clmc_pb2.PublishConfigEventsRequest]:
                yield r

            try:
                await clmc_pb2_grpc.ClmcServiceStub(self.channel()).PublishConfigEvents(one(), timeout=5)
            except grpc.aio.AioRpcError as err:
                self.failures += 1
                if err.code() is grpc.StatusCode.INVALID_ARGUMENT:
                    # A batch the CLMC will never take: report and drop it instead of retrying forever.
                    log.error("clmc rejected config events", extra={"fields": {"error": err.details()}})
                    del self.pending[: len(batch)]
                    self.dropped += len(batch)
                    continue
                log.warning("config events to clmc failed; will retry", extra={"fields": {"error": err.code().name}})
                return False
            del self.pending[: len(batch)]
            self.published += len(batch)
        return True

    async def _loop(self) -> None:
        backoff = self.interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(backoff, self.interval_s))
            self._wake.clear()
            if not self.pending:
                continue
            ok = await self.flush()
            backoff = self.interval_s if ok else min(backoff * 2, 10.0)
