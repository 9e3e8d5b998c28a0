"""Grafana dashboards-as-code (CLMC-17): the JSON is a valid dashboard and every panel's InfluxQL runs against a real
influxd holding data written by the CLMC's InfluxDB backend (Grafana macros expanded as Grafana would)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clmc.model import MEASUREMENTS
from clmc.storage.base import SeriesData
from clmc.storage.influx import InfluxStore
from tests.support.influxdb import start_influxd
from tests.support.procs import ProcessGroup

DASHBOARD = Path(__file__).resolve().parents[3] / "clmc" / "dashboards" / "flame-clmc.json"
S = 1_000_000_000


def expand(query: str) -> str:
    return (
        query.replace("$timeFilter", "time > now() - 1h").replace("$__interval", "10s").replace("$media_service", ".*")
    )


def test_clmc17_grafana_dashboard_is_valid_and_names_known_measurements() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "flame-clmc" and len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    known = set(MEASUREMENTS) | {"config_event", "kpi_event"}
    for panel in dash["panels"]:
        (target,) = panel["targets"]
        measurement = target["query"].split(' FROM "')[1].split('"')[0]
        assert measurement in known, panel["title"]


@pytest.mark.influxdb
def test_clmc17_every_grafana_panel_query_runs_on_influxdb(tmp_path: Path) -> None:
    import time

    group = ProcessGroup(tmp_path)
    try:
        server = start_influxd(group, tmp_path)
        store = InfluxStore(server.url, "flame")
        now = time.time_ns() // S * S
        times = [now - i * 10 * S for i in range(30)]
        store.write(
            [
                SeriesData(
                    "nap_http",
                    (("flame_location", "a"), ("flame_sfc", "svc")),
                    times,
                    {"requests": [5] * 30, "latency_ms": [12.5] * 30},
                ),
                SeriesData(
                    "endpoint_config",
                    (("flame_sfc", "svc"), ("flame_sfe", "ep1")),
                    [now],
                    {"current_state": ["connected"], "booting_sum": [3.0], "connected_sum": [10.0]},
                ),
                SeriesData(
                    "config_event",
                    (("failure", "FAILURE_CATEGORY_BOOT"), ("source", "sfemc")),
                    [now],
                    {"message": ["boot failed"]},
                ),
                SeriesData(
                    "kpi_event",
                    (("flame_sfc", "svc"), ("kpi", "lat"), ("kpi_state", "firing")),
                    [now],
                    {"message": ["x"], "value": [1.0]},
                ),
                SeriesData("pce_paths", (), [now], {"fid_updates": [3]}),
                SeriesData(
                    "switch_port", (("flame_location", "a"),), times, {"tx_bytes": [1000 * (30 - i) for i in range(30)]}
                ),
            ]
        )
        dash = json.loads(DASHBOARD.read_text())
        variable = next(v for v in dash["templating"]["list"] if v["name"] == "media_service")
        assert store.influxql(variable["query"])[0]["values"] == [["flame_sfc", "svc"]]
        for panel in dash["panels"]:
            series = store.influxql(expand(panel["targets"][0]["query"]))
            assert series and series[0]["values"], f"panel {panel['title']!r} returned nothing"
    finally:
        group.stop_all()
