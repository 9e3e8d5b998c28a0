"""What the PCE exposes to Prometheus: NAP sessions, snapshot pushes, flow-mods, switches, reconvergence time (SFR-13).

Counts the PCE already keeps (session records, the driver's flow-mods) are read at scrape time; the two the servicer
did not keep (pushes, reconvergence duration) live in :class:`PceStats`, which the servicer updates in one line each.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Histogram
from prometheus_client.core import Metric

from flame_control.runtime.metrics import counter, gauge

#: Reconvergence buckets (seconds): the goal is < 100 ms for 1k NAPs (docs/benchmarks/pce.md).
RECONVERGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _reconvergence() -> Histogram:
    return Histogram(
        "flame_pce_reconvergence_seconds",
        "From a link/topology change to new snapshots queued for every affected NAP and switches programmed",
        buckets=RECONVERGE_BUCKETS,
        registry=None,  # exposed through the PCE's collect callback, not a global registry
    )


@dataclass
class PceStats:
    """Counters the PCE servicer updates itself."""

    snapshots_pushed: int = 0
    reconvergence: Histogram = field(default_factory=_reconvergence)


def collect(servicer: Any) -> Iterable[Metric]:
    """The PCE's metric families, from a :class:`pce.service.PceServicer`."""
    records = servicer.sessions.records.values()
    connected = sum(1 for r in records if r.connected)
    driver = servicer.driver
    switches = driver.connected() if driver is not None else {}
    stats: PceStats = servicer.stats
    return [
        gauge(
            "flame_pce_nap_sessions",
            "NAP sessions known to the PCE, by state",
            {("connected",): connected, ("disconnected",): len(records) - connected},
            ["state"],
        ),
        counter("flame_pce_nap_session_nacks", "Snapshots NACKed by NAPs", sum(r.nack_count for r in records)),
        counter("flame_pce_snapshot_pushes", "Snapshots queued to NAP sessions", stats.snapshots_pushed),
        counter("flame_pce_flow_mods", "Flow rules added or removed in switches", getattr(driver, "flow_mods_sent", 0)),
        gauge("flame_pce_switches_connected", "Switches connected (and synced) to the PCE's driver", len(switches)),
        gauge("flame_pce_switch_flows", "Flow rules installed in connected switches", sum(switches.values())),
        gauge("flame_pce_topology_version", "Version of the PCE's topology and registrations", servicer.core.version),
        *stats.reconvergence.collect(),
    ]
