"""Retention on a real InfluxDB (CLMC-10): `retention` becomes the database's default retention policy duration
(`CREATE DATABASE ... WITH DURATION`), a changed setting is applied to an existing database on the next start
(CREATE DATABASE alone ignores it: found by this test), and a point older than the retention is reported, not dropped
silently."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from clmc.service import Settings, open_store
from clmc.storage.base import Selection, SeriesData, StorageError
from clmc.storage.influx import InfluxStore
from tests.support.influxdb import start_influxd
from tests.support.procs import ProcessGroup

S = 1_000_000_000
pytestmark = pytest.mark.influxdb


def default_policy(store: InfluxStore) -> tuple[str, str]:
    series = store.influxql("SHOW RETENTION POLICIES")[0]
    rows = [dict(zip(series["columns"], row, strict=True)) for row in series["values"]]
    (default,) = [r for r in rows if r["default"]]
    return str(default["name"]), str(default["duration"])


def test_clmc10_influx_retention_is_the_default_policy_and_follows_a_changed_setting(
    tmp_path: Path, procs: ProcessGroup
) -> None:
    server = start_influxd(procs, tmp_path)

    def store(retention: str) -> InfluxStore:
        s = open_store(
            Settings(backend="influxdb", influx_url=server.url, influx_database="ret", retention=retention), tmp_path
        )
        assert isinstance(s, InfluxStore)
        return s

    first = store("2h")
    assert default_policy(first) == ("autogen", "2h0m0s")
    first.close()
    longer = store("3h")  # an existing database: the policy is altered, not left at 2h
    assert default_policy(longer) == ("autogen", "3h0m0s")
    longer.close()
    unset = store("")  # "" = the CLMC does not manage retention: an existing policy is left as it is
    assert default_policy(unset) == ("autogen", "3h0m0s")

    now = time.time_ns()
    unset.write([SeriesData("nap_http", (("flame_location", "a"),), [now - 60 * S], {"requests": [1]})])
    with pytest.raises(StorageError, match="beyond retention policy"):
        unset.write([SeriesData("nap_http", (("flame_location", "b"),), [now - 4 * 3600 * S], {"requests": [1]})])
    assert unset.count(Selection("nap_http")) == 1
    unset.close()
