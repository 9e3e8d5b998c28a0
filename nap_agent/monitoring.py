"""The NAP's reports to the CLMC (CLMC information model: ``nap_http`` per FQDN, ``nap_fabric`` counters): what the
SFEMC's surrogate policies and the KPIs of the roadmap's Table 24 (F3.2 service latency) are computed from.

Pure accumulator + a thin reporter: every ``interval`` the reporter turns what was counted into points and publishes
them with ``PublishMeasurements``. A failed publish is retried at the next interval with everything still pending;
only past ``max_pending`` points are the oldest dropped, and then they are counted and logged, never silently lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, model_pb2

log = logging.getLogger("flame.nap.monitoring")


@dataclass
class _Http:
    requests: int = 0
    latency_s: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: int = 0


@dataclass
class HttpStats:
    """Requests per FQDN since the last report."""

    by_fqdn: dict[str, _Http] = field(default_factory=dict)

    def record(self, fqdn: str, seconds: float, bytes_in: int, bytes_out: int, error: bool) -> None:
        s = self.by_fqdn.setdefault(fqdn, _Http())
        s.requests += 1
        s.latency_s += seconds
        s.bytes_in += bytes_in
        s.bytes_out += bytes_out
        s.errors += int(error)

    def drain(self, nap_id: str, t_ns: int) -> list[model_pb2.Measurement]:
        """``nap_http`` points for the interval just ended (one per FQDN that saw requests); resets the counts."""
        out = []
        for fqdn, s in sorted(self.by_fqdn.items()):
            m = model_pb2.Measurement(name="nap_http", tags={"flame_location": nap_id, "fqdn": fqdn})
            m.time.FromNanoseconds(t_ns)
            m.fields["requests"].int_value = s.requests
            m.fields["latency_ms"].double_value = s.latency_s / s.requests * 1000 if s.requests else 0.0
            m.fields["bytes_in"].int_value = s.bytes_in
            m.fields["bytes_out"].int_value = s.bytes_out
            m.fields["errors"].int_value = s.errors
            out.append(m)
        self.by_fqdn.clear()
        return out


def fabric_point(nap_id: str, t_ns: int, counters: dict[str, int]) -> model_pb2.Measurement:
    """One ``nap_fabric`` point from counter deltas."""
    m = model_pb2.Measurement(name="nap_fabric", tags={"flame_location": nap_id})
    m.time.FromNanoseconds(t_ns)
    for name in ("frames_sent", "frames_received", "frames_dropped", "retransmissions"):
        m.fields[name].int_value = counters.get(name, 0)
    return m


class Reporter:
    """Publishes the NAP's points every ``interval`` seconds to the CLMC."""

    def __init__(
        self,
        nap_id: str,
        stats: HttpStats,
        fabric_counters: Callable[[], dict[str, int]],
        channel: Callable[[], grpc.aio.Channel],
        interval: float = 1.0,
        max_pending: int = 10_000,
    ) -> None:
        self.nap_id, self.stats, self.fabric_counters, self.channel = nap_id, stats, fabric_counters, channel
        self.interval, self.max_pending = interval, max_pending
        self.pending: list[model_pb2.Measurement] = []
        self.events: list[model_pb2.ConfigEvent] = []
        self.published = 0
        self.dropped = 0
        self.failures = 0
        self._last_fabric: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()  # what was counted since the last tick is not lost on a clean stop

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    def event(self, name: str, message: str = "", location: tuple[float, float, str] | None = None) -> None:
        """Queue a lifecycle config event about this NAP (CLMC-4/5: with its geolocation when known)."""
        e = model_pb2.ConfigEvent(
            source="nap", subject_kind="nap", event=name, message=message, tags={"flame_location": self.nap_id}
        )
        e.time.FromNanoseconds(time.time_ns())
        if location is not None:
            e.location.latitude, e.location.longitude, e.location.name = location
        self.events.append(e)

    def collect(self) -> None:
        """Move this interval's counts into the pending batch."""
        t_ns = time.time_ns()
        self.pending += self.stats.drain(self.nap_id, t_ns)
        now = self.fabric_counters()
        delta = {k: v - self._last_fabric.get(k, 0) for k, v in now.items()}
        self._last_fabric = now
        if any(delta.values()):
            self.pending.append(fabric_point(self.nap_id, t_ns, delta))
        if len(self.pending) > self.max_pending:
            lost = len(self.pending) - self.max_pending
            self.dropped += lost
            del self.pending[:lost]
            log.warning("clmc unreachable: dropped oldest points", extra={"fields": {"dropped_total": self.dropped}})

    async def flush(self) -> None:
        """Collect and publish; on failure keep everything for the next attempt."""
        self.collect()
        if self.events:
            await self._publish_events()
        if not self.pending:
            return
        batch = list(self.pending)
        request = clmc_pb2.PublishMeasurementsRequest(points=batch, request_id=uuid.uuid4().hex)

        async def one() -> AsyncIterator[clmc_pb2.PublishMeasurementsRequest]:
            yield request

        try:
            stub = clmc_pb2_grpc.ClmcServiceStub(self.channel())
            await stub.PublishMeasurements(one(), timeout=5)
        except grpc.aio.AioRpcError as err:
            self.failures += 1
            log.warning("publish to clmc failed; will retry", extra={"fields": {"error": err.code().name}})
            return
        del self.pending[: len(batch)]
        self.published += len(batch)

    async def _publish_events(self) -> None:
        batch = list(self.events)
        request = clmc_pb2.PublishConfigEventsRequest(events=batch, request_id=uuid.uuid4().hex)

        async def one() -> AsyncIterator[clmc_pb2.PublishConfigEventsRequest]:
            yield request

        try:
            await clmc_pb2_grpc.ClmcServiceStub(self.channel()).PublishConfigEvents(one(), timeout=5)
        except grpc.aio.AioRpcError as err:
            self.failures += 1
            log.warning("config events to clmc failed; will retry", extra={"fields": {"error": err.code().name}})
            return
        del self.events[: len(batch)]
