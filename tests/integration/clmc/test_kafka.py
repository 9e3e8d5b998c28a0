"""Kafka pipeline against the real Kafka-protocol broker tansu (CLMC-3, CLMC-22, CLMC-26): at-least-once ingest with
no duplicates after a consumer crash, nothing lost across a broker restart (producer side), KPI events on the topic,
subject erasure with tombstones on the compacted topic."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from clmc.kafka_bus import KafkaIngestor, MeasurementProducer, Topics, ensure_topics, point_key
from clmc.storage.base import Selection
from clmc.storage.embedded import EmbeddedStore
from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, kpi_pb2
from flame_control.runtime.testing import channel, running_server
from tests.integration.clmc.helpers import S, clmc_spec, point, series_batch
from tests.support.kafka import start_tansu
from tests.support.procs import ProcessGroup, wait_for

pytestmark = pytest.mark.kafka


def batches(n: int, t0: int, per: int = 50) -> list[clmc_pb2.PublishMeasurementsRequest]:
    out = []
    for b in range(n):
        times = [t0 + (b * per + i) * S for i in range(per)]
        out.append(
            clmc_pb2.PublishMeasurementsRequest(
                series=[series_batch("nap_http", {"flame_location": "a"}, times, latency_ms=[1.0] * per)],
                points=[point("nap_http", t0 + b * S, {"flame_location": "b", "flame_ue": f"ue-{b % 3}"}, requests=b)],
            )
        )
    return out


def drain(ingestor: KafkaIngestor, store: EmbeddedStore, expected: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while store.count(Selection("nap_http")) < expected and time.monotonic() < deadline:
        ingestor.run_once(timeout=0.2)
    assert store.count(Selection("nap_http")) == expected


def test_clmc3_consumer_crash_between_store_and_commit_redelivers_without_duplicates(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    try:
        broker = start_tansu(group)
        topics = Topics(*(f"{name}-{uuid.uuid4().hex[:6]}" for name in ("m", "s", "k")))
        ensure_topics(broker.bootstrap, topics)
        store = EmbeddedStore(tmp_path / "m.sqlite")
        t0 = (time.time_ns() // S - 3600) * S
        producer = MeasurementProducer(broker.bootstrap, topics)
        for b in batches(10, t0):
            producer.publish(b)
        producer.flush()
        total = 10 * 51
        crashed = KafkaIngestor(broker.bootstrap, "g1", store.write, topics)
        deadline = time.monotonic() + 30
        while crashed.stored_points < total and time.monotonic() < deadline:
            crashed.run_once(timeout=0.2, commit=False)  # stores but dies before committing
        assert crashed.stored_points == total
        crashed.close()
        survivor = KafkaIngestor(broker.bootstrap, "g1", store.write, topics)
        deadline = time.monotonic() + 30
        while survivor.stored_points < total and time.monotonic() < deadline:
            survivor.run_once(timeout=0.2)
        assert survivor.stored_points == total  # every message was delivered again...
        assert store.count(Selection("nap_http")) == total  # ...and stored once
        survivor.close()
    finally:
        group.stop_all()


@pytest.mark.slow
def test_clmc3_broker_restart_loses_nothing_the_producer_sent(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    try:
        broker = start_tansu(group)
        topics = Topics(*(f"{name}-{uuid.uuid4().hex[:6]}" for name in ("m", "s", "k")))
        ensure_topics(broker.bootstrap, topics)
        store = EmbeddedStore(tmp_path / "m.sqlite")
        t0 = (time.time_ns() // S - 3600) * S
        producer = MeasurementProducer(broker.bootstrap, topics)
        ingestor = KafkaIngestor(broker.bootstrap, "g2", store.write, topics)
        for b in batches(5, t0):
            producer.publish(b)
        producer.flush()
        drain(ingestor, store, 5 * 51)
        broker.stop()
        for b in batches(5, t0 + 1800 * S):  # produced while the broker is down: queued by the producer
            producer.publish(b)
        broker.start()
        producer.flush(90)  # re-sends what the in-memory broker forgot (and what timed out while it was down)
        # tansu's memory storage also lost the old log and the group's offsets: the same ingestor notices that its
        # position is beyond the new log's end and re-reads from the start (safe: storage keeps one point per identity)
        ingestor.start()
        wait_for(lambda: store.count(Selection("nap_http")) >= 10 * 51, 90, 0.2, "points after broker restart")
        time.sleep(1)
        assert store.count(Selection("nap_http")) == 10 * 51
        ingestor.close()
    finally:
        group.stop_all()


def test_clmc22_clmc26_service_with_kafka_kpi_events_and_subject_tombstones(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    try:
        broker = start_tansu(group)
        topics = Topics(*(f"{name}-{uuid.uuid4().hex[:6]}" for name in ("m", "s", "k")))
        settings = dict(
            kafka_bootstrap=broker.bootstrap,
            kafka_measurements_topic=topics.measurements,
            kafka_subject_topic=topics.subject_points,
            kafka_kpi_topic=topics.kpi_events,
            kpi_interval_s=0.3,
        )
        now = time.time_ns()
        producer = MeasurementProducer(broker.bootstrap, topics)

        async def scenario() -> None:
            async with running_server(clmc_spec(tmp_path, **settings)) as target, channel(target) as ch:
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
                await stub.DefineKpi(clmc_pb2.DefineKpiRequest(request_id="k", kpi=kpi))
                # Measurements arrive over Kafka (one personal point per subject, one breaching point).
                req = clmc_pb2.PublishMeasurementsRequest(
                    points=[
                        point("nap_http", now - i * S, {"flame_sfc": "svc", "flame_ue": ue}, latency_ms=10.0)
                        for i, ue in enumerate(["ue-1", "ue-1", "ue-2"])
                    ]
                    + [point("nap_http", now, {"flame_sfc": "svc"}, latency_ms=500.0)]
                )
                await asyncio.to_thread(producer.publish, req)
                await asyncio.to_thread(producer.flush)
                for _ in range(100):
                    found = await stub.QueryDataSubject(clmc_pb2.QueryDataSubjectRequest(subject_id="ue-1"))
                    if len(found.points) == 2:
                        break
                    await asyncio.sleep(0.2)
                assert len(found.points) == 2
                erased = await stub.DeleteDataSubject(
                    clmc_pb2.DeleteDataSubjectRequest(request_id="e", subject_id="ue-1")
                )
                assert erased.points_deleted == 2 and erased.kafka_tombstones == 2
                after = await stub.QueryDataSubject(clmc_pb2.QueryDataSubjectRequest(subject_id="ue-1"))
                assert len(after.points) == 0
                other = await stub.QueryDataSubject(clmc_pb2.QueryDataSubjectRequest(subject_id="ue-2"))
                assert len(other.points) == 1

        asyncio.run(scenario())
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": "check",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 2000,
            }
        )
        consumer.subscribe([topics.subject_points, topics.kpi_events])
        seen: dict[str, list[tuple[bytes | None, bytes | None]]] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            len(seen.get(topics.kpi_events, [])) >= 1 and len(seen.get(topics.subject_points, [])) >= 5
        ):
            m = consumer.poll(0.3)
            if m is not None and m.error() is None:
                seen.setdefault(str(m.topic()), []).append((m.key(), m.value()))
        consumer.close()
        (kpi_key, kpi_value), *_ = seen[topics.kpi_events]
        event = kpi_pb2.KpiEvent.FromString(kpi_value or b"")
        assert kpi_key == b"svc/lat" and event.state == kpi_pb2.KPI_STATE_FIRING and event.value == 500.0
        tombstoned = {k for k, v in seen[topics.subject_points] if v is None}
        ue1_keys = {k for k, v in seen[topics.subject_points] if v is not None and b"flame_ue=ue-1" in (k or b"")}
        assert len(ue1_keys) == 2 and tombstoned == ue1_keys
        expected_key = point_key("nap_http", (("flame_sfc", "svc"), ("flame_ue", "ue-1")), now)
        assert expected_key in tombstoned
    finally:
        group.stop_all()


_WORKER = """
import sys, time
from clmc.kafka_bus import KafkaIngestor, Topics
from clmc.storage.embedded import EmbeddedStore
bootstrap, db, m, s, k = sys.argv[1:6]
store = EmbeddedStore(db)
ingestor = KafkaIngestor(bootstrap, "g-kill", store.write, Topics(m, s, k), session_timeout_ms=2000)
while True:
    ingestor.run_once(max_messages=2, timeout=0.2, commit=False)
    time.sleep(0.3)  # the window between storing and committing that a crash can hit
    ingestor.commit()
"""


def _stored(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])


def test_clmc3_ingest_process_killed_with_sigkill_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    import os
    import signal
    import sys

    group = ProcessGroup(tmp_path)
    try:
        broker = start_tansu(group)
        topics = Topics(*(f"{name}-{uuid.uuid4().hex[:6]}" for name in ("m", "s", "k")))
        ensure_topics(broker.bootstrap, topics)
        t0 = (time.time_ns() // S - 3600) * S
        producer = MeasurementProducer(broker.bootstrap, topics)
        for b in batches(20, t0):
            producer.publish(b)
        producer.flush()
        total = 20 * 51
        db = tmp_path / "m.sqlite"
        EmbeddedStore(db).close()
        script = tmp_path / "worker.py"
        script.write_text(_WORKER)
        root = Path(__file__).resolve().parents[3]
        worker = group.start(
            "ingest-worker",
            [sys.executable, str(script), broker.bootstrap, str(db), *topics.__dict__.values()],
            env={"PYTHONPATH": str(root)},
            cwd=root,
        )
        wait_for(lambda: _stored(db) >= 300, 60, 0.05, "the worker to store some points")
        os.killpg(worker.popen.pid, signal.SIGKILL)  # crash: no commit, no leaving the group
        worker.popen.wait(10)
        at_kill = _stored(db)
        assert 0 < at_kill < total
        store = EmbeddedStore(db)
        survivor = KafkaIngestor(broker.bootstrap, "g-kill", store.write, topics, session_timeout_ms=2000)
        deadline = time.monotonic() + 60
        while store.count(Selection("nap_http")) < total and time.monotonic() < deadline:
            survivor.run_once(timeout=0.2)
        time.sleep(0.5)
        survivor.run_once(timeout=0.5)
        assert store.count(Selection("nap_http")) == total  # nothing lost, nothing twice
        assert survivor.stored_points > total - at_kill  # some points were delivered again (and deduplicated)
        survivor.close()
    finally:
        group.stop_all()
