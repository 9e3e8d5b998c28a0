"""Embedded analytics engine comparison (issue 15): 1M points (100 series x 10k, 1 s apart, 10 locations), mean and
p95 by location x 1 min, in process: SQLite EAV (the EmbeddedStore) vs DuckDB, and their insert rates.
DuckDB is not a dependency (measurement only, docs/decisions.md): ``pip install duckdb`` first.
Usage: ``python -m tests.bench.clmc_engine_compare DIR``."""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from clmc.storage.base import AggKind, AggQuery, SeriesData
from clmc.storage.embedded import EmbeddedStore

S = 10**9
T0 = 1_700_000_000 * S
N_SERIES, PER = 100, 10_000


def median_ms(fn: Callable[[], object], n: int = 5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main(workdir: Path) -> None:
    import duckdb  # type: ignore[import-not-found]

    rnd = random.Random(1)
    batch = []
    for i in range(N_SERIES):
        tags = (("flame_location", f"loc{i % 10}"), ("flame_sfc", "svc"), ("node", f"n{i}"))
        times = [T0 + k * S for k in range(PER)]
        batch.append(SeriesData("nap_http", tags, times, {"latency_ms": [rnd.random() * 100 for _ in range(PER)]}))
    store = EmbeddedStore(workdir / "m.sqlite")
    t = time.perf_counter()
    store.write(batch)
    sqlite_insert = N_SERIES * PER / (time.perf_counter() - t)
    end = T0 + PER * S

    def query(kind: AggKind) -> AggQuery:
        return AggQuery("nap_http", "latency_ms", kind, T0, end, 60 * S, ("flame_location",), {}, 95.0)

    sqlite_mean = median_ms(lambda: store.aggregate(query(AggKind.MEAN)))
    sqlite_p95 = median_ms(lambda: store.aggregate(query(AggKind.PERCENTILE)), 3)
    con = duckdb.connect(str(workdir / "m.duckdb"))
    con.execute("CREATE TABLE p (series INTEGER, loc VARCHAR, t BIGINT, v DOUBLE)")
    t = time.perf_counter()
    for i, s in enumerate(batch):  # columnar: one INSERT per series, columns as list parameters
        sql = f"INSERT INTO p SELECT {i}, 'loc{i % 10}', unnest($1::BIGINT[]), unnest($2::DOUBLE[])"
        con.execute(sql, [list(s.times_ns), list(s.fields["latency_ms"])])
    duck_insert = N_SERIES * PER / (time.perf_counter() - t)
    group = f"loc, (t - {T0}) // {60 * S}"
    where = f"FROM p WHERE t >= {T0} AND t < {end} GROUP BY {group}"
    duck_mean = median_ms(lambda: con.execute(f"SELECT {group}, avg(v), count(*) {where}").fetchall())
    duck_p95 = median_ms(lambda: con.execute(f"SELECT {group}, quantile_disc(v, 0.95), count(*) {where}").fetchall())
    print(f"sqlite EAV: insert {sqlite_insert:,.0f} points/s; mean {sqlite_mean:.0f} ms; p95 {sqlite_p95:.0f} ms")
    print(
        f"duckdb {duckdb.__version__}: insert {duck_insert:,.0f} points/s; mean {duck_mean:.1f} ms; p95 {duck_p95:.1f} ms"
    )
    print(f"ratio duckdb/sqlite: mean {duck_mean / sqlite_mean:.3f}, p95 {duck_p95 / sqlite_p95:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
