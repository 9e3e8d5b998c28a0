"""What the CLMC exposes to Prometheus: points ingested, KPI evaluations, alerts firing (CLMC-19..22).

Points are counted by a stored hook (the servicer's existing extension point), evaluations by the engine, and firing
alerts are read from the persisted alert state at scrape time, so the figure survives a restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import Metric

from clmc.kpi_engine import KpiEngine
from clmc.kpi_state import ClmcState
from clmc.storage.base import SeriesData
from flame_control.runtime.metrics import counter, gauge


@dataclass
class IngestStats:
    """Points and batches stored since start (a stored hook)."""

    points: int = 0
    batches: int = 0

    def on_stored(self, batch: Sequence[SeriesData]) -> None:
        self.points += sum(len(s) for s in batch)
        self.batches += 1


def collect(ingest: IngestStats, engine: KpiEngine, state: ClmcState) -> Iterable[Metric]:
    """The CLMC's metric families."""
    firing = {key: sum(1 for g in state.alerts(key).values() if g.firing) for key in list(engine.specs)}
    return [
        counter("flame_clmc_points_ingested", "Measurement points and config events stored", ingest.points),
        counter("flame_clmc_batches_ingested", "Batches stored (gRPC requests, Kafka messages)", ingest.batches),
        counter("flame_clmc_kpi_evaluations", "Evaluations of one KPI", engine.evaluations),
        gauge("flame_clmc_kpis", "KPIs defined", len(engine.specs)),
        gauge(
            "flame_clmc_alerts_firing",
            "Groups of a KPI whose alert is firing",
            {key: n for key, n in firing.items()},
            ["media_service", "kpi"],
        ),
        gauge("flame_clmc_kpi_subscribers", "Open SubscribeKpiEvents streams", len(engine.subscribers)),
    ]
