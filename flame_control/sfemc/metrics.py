"""What the SFEMC exposes to Prometheus: media services and endpoints by state, and VIM call latency (ORCH-6).

States are read from the endpoint table at scrape time (every state appears, zeros included, so dashboards show
transitions to 0); VIM latency is observed by the actuator's one VIM call path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from prometheus_client import Histogram
from prometheus_client.core import Metric

from flame_control.api.flame.common.v1 import common_pb2
from flame_control.runtime.metrics import gauge

VIM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def state_name(state: int) -> str:
    """``ENDPOINT_STATE_CONNECTED`` -> ``connected``."""
    return (
        common_pb2.EndpointState.Name(common_pb2.EndpointState.ValueType(state)).removeprefix("ENDPOINT_STATE_").lower()
    )


def vim_call_histogram() -> Histogram:
    """VIM call durations by operation and VIM (exposed through the SFEMC's collect callback)."""
    return Histogram(
        "flame_sfemc_vim_call_duration_seconds",
        "Duration of VIM calls (create, start, stop, delete, status), by operation and VIM",
        ["operation", "vim"],
        buckets=VIM_BUCKETS,
        registry=None,
    )


def collect(servicer: Any) -> Iterable[Metric]:
    """The SFEMC's metric families, from a :class:`flame_control.sfemc.service.SfemcServicer`."""
    table = servicer.table
    by_state: Counter[tuple[str, ...]] = Counter({(state_name(s),): 0 for s in common_pb2.EndpointState.values() if s})
    for rec in table.endpoints.values():
        by_state[(state_name(rec.state),)] += 1
    return [
        gauge("flame_sfemc_media_services", "Media services the SFEMC manages", len(table.services)),
        gauge("flame_sfemc_endpoints", "SF endpoints by lifecycle state", dict(by_state), ["state"]),
        *servicer.actuator.vim_latency.collect(),
    ]
