"""What the orchestrator exposes to Prometheus: media services by status (read from its store at scrape time)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import Metric

from flame_control.api.flame.orchestrator.v1 import orchestrator_pb2
from flame_control.runtime.metrics import gauge


def collect(servicer: Any) -> Iterable[Metric]:
    """The orchestrator's metric families, from an ``OrchestratorServicer``."""
    names = orchestrator_pb2.ServiceStatus
    by_status: Counter[tuple[str, ...]] = Counter(
        {(names.Name(v).removeprefix("SERVICE_STATUS_").lower(),): 0 for v in names.values() if v}
    )
    for rec in servicer.store.services.values():
        by_status[(names.Name(rec.status).removeprefix("SERVICE_STATUS_").lower(),)] += 1
    return [gauge("flame_orchestrator_media_services", "Media services by status", dict(by_status), ["status"])]
