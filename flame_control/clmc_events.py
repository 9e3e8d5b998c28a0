"""Lifecycle config events to the CLMC (CLMC-4, CLMC-5) from the orchestrator and the SFEMC.

Events go into a durable outbox (SQLite, WAL) and are sent in batches on ``PublishConfigEvents`` by a background task;
a CLMC that is down, a shutdown or a crash loses nothing: the next start delivers what is left (issue 14). Batches the
CLMC refuses for good are dropped, logged and counted (see ``ConfigEventPublisher``); past ``max_pending`` the oldest
events are dropped, counted and logged, never silently lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

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


class Outbox:
    """Events waiting for the CLMC, in SQLite (WAL) when a path is given, else in memory. A crash or shutdown loses
    nothing that ``add`` returned for: the next publisher on the same file delivers it (issue 14 item 7)."""

    def __init__(self, path: Path | None) -> None:
        self._db = sqlite3.connect(str(path) if path is not None else ":memory:", isolation_level=None)
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # survives a process crash; fsync at checkpoints
        self._db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event BLOB)")

    def add(self, event: model_pb2.ConfigEvent) -> None:
        self._db.execute("INSERT INTO outbox (event) VALUES (?)", (event.SerializeToString(),))

    def head(self, n: int) -> tuple[int, list[model_pb2.ConfigEvent]]:
        """The oldest ``n`` events and the id of the last of them (0 when empty)."""
        rows = self._db.execute("SELECT id, event FROM outbox ORDER BY id LIMIT ?", (n,)).fetchall()
        return (rows[-1][0] if rows else 0), [model_pb2.ConfigEvent.FromString(r[1]) for r in rows]

    def remove_through(self, last_id: int) -> None:
        self._db.execute("DELETE FROM outbox WHERE id <= ?", (last_id,))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def trim(self, keep: int) -> int:
        """Drop the oldest events beyond ``keep``; how many were dropped."""
        extra = len(self) - keep
        if extra > 0:
            self._db.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (extra,))
        return max(0, extra)

    def close(self) -> None:
        self._db.close()


class ConfigEventPublisher:
    """Queues config events in a durable outbox and publishes them to the CLMC in the background.

    Retry rule (issue 14): a batch the CLMC refuses with INVALID_ARGUMENT will never be taken, so it is dropped from the
    outbox at once, logged and counted (``rejected``); UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED are
    retried with exponential backoff capped at ``max_backoff_s`` (the events wait durably); any other error is retried
    at most ``max_attempts`` times, then the batch is dropped, logged and counted (``rejected``). Past ``max_pending``
    the oldest events are dropped and counted (``dropped``)."""

    #: Errors that say "try again later".
    TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)

    def __init__(
        self,
        channel: Callable[[], grpc.aio.Channel],
        *,
        outbox: Path | None = None,
        interval_s: float = 0.2,
        max_pending: int = 100_000,
        max_batch: int = 1000,
        max_backoff_s: float = 10.0,
        max_attempts: int = 5,
    ) -> None:
        self.channel, self.interval_s, self.max_pending, self.max_batch = channel, interval_s, max_pending, max_batch
        self.max_backoff_s, self.max_attempts = max_backoff_s, max_attempts
        self.outbox = Outbox(outbox)
        self.published = 0
        #: Oldest events dropped because more than ``max_pending`` waited.
        self.dropped = 0
        #: Events dropped because the CLMC refused their batch for good (INVALID_ARGUMENT, or too many failures).
        self.rejected = 0
        self.failures = 0
        self._attempts = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Events waiting in the outbox."""
        return len(self.outbox)

    def publish(self, event: model_pb2.ConfigEvent) -> None:
        """Store one event in the outbox (never blocks on the CLMC)."""
        self.outbox.add(event)
        lost = self.outbox.trim(self.max_pending) if self.max_pending else 0
        if lost:
            self.dropped += lost
            log.warning("clmc unreachable: dropped oldest config events", extra={"fields": {"dropped": self.dropped}})
        self._wake.set()

    def start(self) -> None:
        """Start the background sender (inside the running loop); events left by a previous run go first."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
            self._wake.set()

    async def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Stop the sender after one last attempt to deliver what is queued; the rest stays in the outbox."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), flush_timeout_s)
        if self.pending:
            log.warning("stopping with config events in the outbox", extra={"fields": {"pending": self.pending}})
        self.outbox.close()

    async def flush(self) -> bool:
        """Send everything queued; False when a batch must be retried later (it stays in the outbox)."""
        while True:
            last_id, batch = self.outbox.head(self.max_batch)
            if not batch:
                return True
            request = clmc_pb2.PublishConfigEventsRequest(events=batch, request_id=uuid.uuid4().hex)

            async def one(
                r: clmc_pb2.PublishConfigEventsRequest = request,
            ) -> AsyncIterator[clmc_pb2.PublishConfigEventsRequest]:
                yield r

            try:
                await clmc_pb2_grpc.ClmcServiceStub(self.channel()).PublishConfigEvents(one(), timeout=5)
            except grpc.aio.AioRpcError as err:
                self.failures += 1
                self._attempts += 1
                permanent = err.code() is grpc.StatusCode.INVALID_ARGUMENT
                if permanent or (err.code() not in self.TRANSIENT and self._attempts >= self.max_attempts):
                    # A batch the CLMC will never take: report and drop it instead of retrying forever.
                    log.error(
                        "clmc refused config events; dropped",
                        extra={"fields": {"error": err.code().name, "details": err.details(), "events": len(batch)}},
                    )
                    self.outbox.remove_through(last_id)
                    self.rejected += len(batch)
                    self._attempts = 0
                    continue
                log.warning("config events to clmc failed; will retry", extra={"fields": {"error": err.code().name}})
                return False
            self.outbox.remove_through(last_id)
            self.published += len(batch)
            self._attempts = 0

    async def _loop(self) -> None:
        backoff = self.interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(backoff, self.interval_s))
            self._wake.clear()
            if not self.pending:
                continue
            ok = await self.flush()
            backoff = self.interval_s if ok else min(backoff * 2, self.max_backoff_s)
