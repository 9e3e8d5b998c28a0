"""The SFEMC's view of monitoring (SFEMC-3): KPI events from the CLMC's ``SubscribeKpiEvents`` stream (seeded by
``ListKpis`` so alerts already firing count), and metric triggers evaluated by querying ``Aggregate`` over their window.

Both loops reconnect with jittered backoff; the subscription resumes after the last applied event sequence, so a
KPI that changed while the SFEMC (or the CLMC) was away is not missed while the CLMC retains it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, kpi_pb2

log = logging.getLogger("flame.sfemc.clmc")

_AGG = {
    "mean": kpi_pb2.AGGREGATION_MEAN,
    "min": kpi_pb2.AGGREGATION_MIN,
    "max": kpi_pb2.AGGREGATION_MAX,
    "sum": kpi_pb2.AGGREGATION_SUM,
    "count": kpi_pb2.AGGREGATION_COUNT,
}


def aggregation_of(name: str) -> tuple[int, float]:
    """(Aggregation enum, percentile) of "mean"/"max"/.../"p95"."""
    name = name.lower() or "mean"
    if name in _AGG:
        return _AGG[name], 0.0
    if name.startswith("p") and name[1:].replace(".", "", 1).isdigit():
        return kpi_pb2.AGGREGATION_PERCENTILE, float(name[1:])
    raise ValueError(f"unknown aggregation {name!r}")


@dataclass(frozen=True)
class MetricQuery:
    """One metric trigger to poll: its policy key and what to aggregate."""

    key: tuple[str, str]
    measurement: str
    field: str
    aggregation: str
    window_s: float
    scope: dict[str, str]


class ClmcLink:
    """Feeds KPI events and metric values into the SFEMC's decision logic."""

    def __init__(
        self,
        channel: Callable[[], grpc.aio.Channel],
        on_kpi: Callable[[kpi_pb2.KpiEvent], None],
        on_metric: Callable[[tuple[str, str], float | None], None],
        metric_queries: Callable[[], Iterable[MetricQuery]],
        resume_after: Callable[[], int],
        poll_s: float = 1.0,
    ) -> None:
        self.channel, self.on_kpi, self.on_metric = channel, on_kpi, on_metric
        self.metric_queries, self.resume_after, self.poll_s = metric_queries, resume_after, poll_s
        self.connected = False
        self.events_seen = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._subscribe_loop()), loop.create_task(self._metric_loop())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _subscribe_loop(self) -> None:
        backoff = 0.2
        while True:
            try:
                stub = clmc_pb2_grpc.ClmcServiceStub(self.channel())
                stream = stub.SubscribeKpiEvents(clmc_pb2.SubscribeKpiEventsRequest(after_sequence=self.resume_after()))
                # Seed with what fires now (events older than the retained window are not replayed).
                listing = await stub.ListKpis(clmc_pb2.ListKpisRequest(), timeout=5)
                for status in listing.kpis:
                    for ev in status.firing:
                        self.on_kpi(ev)
                self.connected = True
                backoff = 0.2
                async for msg in stream:
                    self.events_seen += 1
                    self.on_kpi(msg.event)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as err:
                if self.connected:
                    log.warning("kpi subscription lost; reconnecting", extra={"fields": {"error": err.code().name}})
            except Exception:
                log.exception("kpi subscription failed")
            self.connected = False
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, 5.0)

    async def _metric_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            queries = list(self.metric_queries())
            if not queries:
                continue
            stub = clmc_pb2_grpc.ClmcServiceStub(self.channel())
            for q in queries:
                try:
                    value = await self.query(stub, q)
                except grpc.aio.AioRpcError as err:
                    log.warning("metric query failed", extra={"fields": {"error": err.code().name, "policy": q.key}})
                    continue
                self.on_metric(q.key, value)

    @staticmethod
    async def query(stub: Any, q: MetricQuery) -> float | None:
        """The aggregate of the trigger's field over its last window, or None when no point arrived in it."""
        agg, pct = aggregation_of(q.aggregation)
        req = clmc_pb2.AggregateRequest(
            measurement=q.measurement,
            field=q.field,
            aggregation=agg,  # type: ignore[arg-type]
            percentile=pct,
            tags=q.scope,
        )
        end = time.time_ns()
        req.start.FromNanoseconds(end - int(q.window_s * 1e9))
        req.end.FromNanoseconds(end)
        resp = await stub.Aggregate(req, timeout=5)
        points = [p for s in resp.series for p in s.points if p.count]
        if not points:
            return None
        return float(points[-1].value)
