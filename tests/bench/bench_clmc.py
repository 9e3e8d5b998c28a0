"""CLMC benchmarks (`flame bench clmc`): ingest over gRPC per backend, Kafka vs direct, KPI event latency, 1M-point
aggregation per backend. Real gRPC server with the full runtime, real influxd, real tansu broker; one process,
2-core host. ``--quick`` runs the same ids with smaller sizes."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from clmc.kafka_bus import KafkaIngestor, MeasurementProducer, Topics, ensure_topics
from clmc.storage.embedded import EmbeddedStore
from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, kpi_pb2, model_pb2
from flame_control.benchmark import Figure, median, percentile
from flame_control.runtime.testing import channel, running_server
from tests.integration.clmc.helpers import clmc_spec, point
from tests.support.influxdb import start_influxd
from tests.support.kafka import start_tansu
from tests.support.procs import ProcessGroup

CONDITIONS = "one process (server + client), 127.0.0.1, 2 vCPU, Python 3.11, SQLite 3.40 / InfluxDB 1.6 / tansu 0.6"
S = 1_000_000_000
LOCATIONS = [f"loc-{i}" for i in range(10)]


def make_batches(total: int, t0: int, span_s: int, per_series: int = 5000) -> list[clmc_pb2.PublishMeasurementsRequest]:
    """Columnar batches: 10 locations, points spread evenly over ``span_s`` seconds; ~50k points per message."""
    step = span_s * S // max(1, total // len(LOCATIONS))
    batches, done = [], 0
    index = [0] * len(LOCATIONS)
    while done < total:
        req = clmc_pb2.PublishMeasurementsRequest()
        for li, loc in enumerate(LOCATIONS):
            n = min(per_series, (total - done) // (len(LOCATIONS) - li) if li < len(LOCATIONS) else 0)
            if n <= 0:
                continue
            times = [t0 + (index[li] + i) * step + li for i in range(n)]
            s = model_pb2.SeriesBatch(
                name="nap_http", tags={"flame_location": loc, "flame_sfc": "svc"}, times_unix_nano=times
            )
            s.columns.add(field="latency_ms", values=[float((index[li] + i) % 100) for i in range(n)])
            req.series.append(s)
            index[li] += n
            done += n
        batches.append(req)
    return batches


async def stream(stub: Any, batches: list[clmc_pb2.PublishMeasurementsRequest]) -> int:
    async def gen() -> AsyncIterator[clmc_pb2.PublishMeasurementsRequest]:
        for b in batches:
            yield b

    resp = await stub.PublishMeasurements(gen())
    return int(resp.accepted_points)


@contextlib.contextmanager
def backend(kind: str, workdir: Path, group: ProcessGroup) -> Iterator[dict[str, Any]]:
    if kind == "embedded":
        yield {}
    else:
        server = start_influxd(group, workdir)
        yield {"backend": "influxdb", "influx_url": server.url, "influx_database": "bench"}


async def ingest_and_aggregate(
    kind: str, total: int, agg_runs: int, workdir: Path, group: ProcessGroup
) -> tuple[float, float]:
    t0 = (time.time_ns() // S - 2 * 3600) * S
    batches = make_batches(total, t0, 3600)
    with backend(kind, workdir, group) as settings:
        async with running_server(clmc_spec(workdir, **settings)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            started = time.perf_counter()
            accepted = await stream(stub, batches)
            rate = accepted / (time.perf_counter() - started)
            req = clmc_pb2.AggregateRequest(
                measurement="nap_http",
                field="latency_ms",
                aggregation=kpi_pb2.AGGREGATION_MEAN,
                group_by=["flame_location"],
            )
            req.start.FromNanoseconds(t0)
            req.end.FromNanoseconds(t0 + 3600 * S)
            req.window.FromSeconds(60)
            samples = []
            for _ in range(agg_runs):
                started = time.perf_counter()
                resp = await stub.Aggregate(req, timeout=300)
                samples.append((time.perf_counter() - started) * 1000)
                assert len(resp.series) == len(LOCATIONS)
                assert sum(p.count for s in resp.series for p in s.points) == total
    return rate, median(samples)


def kafka_rate(total: int, workdir: Path, group: ProcessGroup) -> float:
    broker = start_tansu(group)
    topics = Topics(*(f"{n}-{uuid.uuid4().hex[:6]}" for n in ("m", "s", "k")))
    ensure_topics(broker.bootstrap, topics)
    store = EmbeddedStore(workdir / "kafka.sqlite")
    t0 = (time.time_ns() // S - 2 * 3600) * S
    batches = make_batches(total, t0, 3600)
    producer = MeasurementProducer(broker.bootstrap, topics)
    ingestor = KafkaIngestor(
        broker.bootstrap, f"bench-{uuid.uuid4().hex[:6]}", store.write, topics, session_timeout_ms=2000
    )
    deadline = time.perf_counter() + 60
    while not ingestor.assigned() and time.perf_counter() < deadline:  # group join is not part of the rate
        ingestor.run_once(timeout=0.1)

    def produce() -> None:
        for b in batches:
            producer.publish(b)
        producer.flush()

    started = time.perf_counter()
    sender = threading.Thread(target=produce)
    sender.start()
    while ingestor.stored_points < total and time.perf_counter() - started < 600:
        ingestor.run_once(max_messages=50, timeout=0.05)
    rate = ingestor.stored_points / (time.perf_counter() - started)
    sender.join()
    ingestor.close()
    store.close()
    return rate


async def kpi_latency(samples: int, workdir: Path) -> list[float]:
    tags = {"flame_location": "a", "flame_sfc": "svc"}
    async with running_server(clmc_spec(workdir, kpi_interval_s=1.0)) as target, channel(target) as ch:
        stub = clmc_pb2_grpc.ClmcServiceStub(ch)
        kpi = kpi_pb2.KpiDefinition(
            name="lat",
            media_service="svc",
            kind=kpi_pb2.KPI_KIND_THRESHOLD,
            measurement="nap_http",
            field="latency_ms",
            comparison=kpi_pb2.COMPARISON_GREATER,
            threshold=100,
        )
        kpi.window.FromSeconds(5)
        await stub.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="b", kpi=kpi))
        events = stub.SubscribeKpiEvents(clmc_pb2.SubscribeKpiEventsRequest())
        await asyncio.sleep(0.2)
        out = []
        for i in range(samples):
            value = 500.0 if i % 2 == 0 else 1.0
            req = clmc_pb2.PublishMeasurementsRequest(
                points=[point("nap_http", time.time_ns(), tags, latency_ms=value)]
            )
            started = time.perf_counter()
            await stub.PublishMeasurements(iter([req]))
            await asyncio.wait_for(events.read(), 10)
            out.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.05)
        events.cancel()
    return out


def run(quick: bool) -> list[Figure]:
    total = 100_000 if quick else 1_000_000
    agg_runs = 3 if quick else 5
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-clmc-") as tmp:
        root = Path(tmp)
        group = ProcessGroup(root)
        try:
            (root / "e").mkdir()
            (root / "i").mkdir()
            (root / "k").mkdir()
            (root / "l").mkdir()
            emb_rate, emb_agg = asyncio.run(ingest_and_aggregate("embedded", total, agg_runs, root / "e", group))
            inf_rate, inf_agg = asyncio.run(ingest_and_aggregate("influxdb", total, agg_runs, root / "i", group))
            k_rate = kafka_rate(total // 2, root / "k", group)
            latencies = asyncio.run(kpi_latency(10 if quick else 40, root / "l"))
        finally:
            group.stop_all()
    cond = f"{total} points, 10 locations, columnar batches of 50k points over one gRPC stream; {CONDITIONS}"
    figures.append(
        Figure(
            "ingest_points_per_s_embedded",
            emb_rate,
            "points/s",
            baseline=inf_rate,
            goal=">= 100000",
            conditions=cond + "; baseline = same run into InfluxDB",
        )
    )
    figures.append(
        Figure(
            "ingest_points_per_s_influxdb",
            inf_rate,
            "points/s",
            baseline=emb_rate,
            conditions=cond + "; baseline = embedded",
        )
    )
    figures.append(
        Figure(
            "kafka_ratio_vs_direct",
            k_rate / emb_rate,
            "ratio",
            baseline=emb_rate,
            conditions=f"{total // 2} points produced to tansu and consumed into the embedded store "
            f"({k_rate:.0f} points/s) vs direct gRPC ingest (baseline, points/s)",
        )
    )
    figures.append(
        Figure(
            "kpi_event_latency_ms_p50",
            statistics.median(latencies),
            "ms",
            goal="< 1000",
            conditions=f"{len(latencies)} samples: publish one breaching/clearing point -> event on "
            f"SubscribeKpiEvents; p99 {percentile(latencies, 99):.1f} ms; evaluation interval 1 s",
        )
    )
    figures.append(
        Figure(
            "agg_query_ms_1m_embedded",
            emb_agg,
            "ms",
            baseline=inf_agg,
            conditions=f"mean over {total} points grouped by location and 1-minute windows, median of "
            f"{agg_runs}; baseline = InfluxDB same query",
        )
    )
    figures.append(
        Figure(
            "agg_query_ms_1m_influxdb",
            inf_agg,
            "ms",
            baseline=emb_agg,
            conditions="same query on InfluxDB (GROUP BY time(1m), flame_location); baseline = embedded",
        )
    )
    return figures


if __name__ == "__main__":
    import sys

    from flame_control.benchmark import format_table

    print(format_table(run("--quick" in sys.argv)))
