"""Data-subject erasure that holds (CLMC-25, CLMC-26, issue 15), proven by reading what is left: the compacted Kafka
topic (every message that carried the subject, keyed as it was *produced*, ends in a tombstone, also when ingest
rewrote its tags and for a copy arriving after the delete) and the embedded database's files, WAL included (the
erased id is in no byte of them when the delete returns)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from clmc.kafka_bus import MeasurementProducer, Topics
from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc
from flame_control.runtime.testing import channel, running_server
from tests.integration.clmc.helpers import S, clmc_spec, point, publish
from tests.support.kafka import start_tansu
from tests.support.procs import ProcessGroup


def read_topic(bootstrap: str, topic: str, settle_s: float = 3.0) -> list[tuple[bytes | None, bytes | None]]:
    """Every message of a topic from the beginning, in order (a fresh group)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 2000,
        }
    )
    consumer.subscribe([topic])
    out: list[tuple[bytes | None, bytes | None]] = []
    quiet_since = time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and time.monotonic() - quiet_since < settle_s:
        m = consumer.poll(0.3)
        if m is not None and m.error() is None:
            out.append((m.key(), m.value()))
            quiet_since = time.monotonic()
    consumer.close()
    return out


def last_value_per_key(messages: list[tuple[bytes | None, bytes | None]]) -> dict[bytes | None, bytes | None]:
    latest: dict[bytes | None, bytes | None] = {}
    for key, value in messages:
        latest[key] = value
    return latest


@pytest.mark.kafka
def test_clmc26_tombstones_hit_the_keys_produced_even_when_ingest_rewrote_the_tags_and_late_copies(
    tmp_path: Path,
) -> None:
    group = ProcessGroup(tmp_path)
    try:
        broker = start_tansu(group)
        topics = Topics(*(f"{name}-{uuid.uuid4().hex[:6]}" for name in ("m", "s", "k")))
        settings = dict(
            kafka_bootstrap=broker.bootstrap,
            kafka_measurements_topic=topics.measurements,
            kafka_subject_topic=topics.subject_points,
            kafka_kpi_topic=topics.kpi_events,
            # CLMC-6: a dimension derived at ingest: stored tags differ from the tags the messages were keyed by.
            dimensions={"region": {"source_tag": "flame_location", "mapping": {"bristol": "uk-west"}}},
        )
        now = time.time_ns()
        producer = MeasurementProducer(broker.bootstrap, topics)

        def subject_points(ue: str, *offsets: int) -> clmc_pb2.PublishMeasurementsRequest:
            tags = {"flame_location": "bristol", "flame_sfc": "svc", "flame_ue": ue}
            return clmc_pb2.PublishMeasurementsRequest(
                points=[point("nap_http", now - i * S, tags, latency_ms=10.0) for i in offsets]
            )

        async def scenario() -> None:
            async with running_server(clmc_spec(tmp_path, **settings)) as target, channel(target) as ch:
                stub = clmc_pb2_grpc.ClmcServiceStub(ch)
                await asyncio.to_thread(producer.publish, subject_points("ue-1", 1, 2, 3))
                await asyncio.to_thread(producer.publish, subject_points("ue-2", 1))
                await asyncio.to_thread(producer.flush)
                for _ in range(150):
                    found = await stub.QueryDataSubject(clmc_pb2.QueryDataSubjectRequest(subject_id="ue-1"))
                    if len(found.points) == 3:
                        break
                    await asyncio.sleep(0.2)
                assert len(found.points) == 3 and found.points[0].tags["region"] == "uk-west"
                erased = await stub.DeleteDataSubject(
                    clmc_pb2.DeleteDataSubjectRequest(request_id="e", subject_id="ue-1")
                )
                assert erased.points_deleted == 3 and erased.kafka_tombstones == 3
                # A copy produced before the delete reached the broker after it (a publisher's retry): it is dropped
                # at ingest and tombstoned too.
                await asyncio.to_thread(producer.publish, subject_points("ue-1", 4))
                await asyncio.to_thread(producer.flush)
                await asyncio.sleep(3)
                assert (
                    len((await stub.QueryDataSubject(clmc_pb2.QueryDataSubjectRequest(subject_id="ue-1"))).points) == 0
                )

        asyncio.run(scenario())
        latest = last_value_per_key(read_topic(broker.bootstrap, topics.subject_points))
        ue1 = {k for k in latest if k is not None and b"flame_ue=ue-1" in k}
        ue2 = {k for k in latest if k is not None and b"flame_ue=ue-2" in k}
        assert len(ue1) == 4 and len(ue2) == 1
        assert {k: latest[k] for k in ue1} == {k: None for k in ue1}  # every ue-1 message ends in a tombstone
        assert all(latest[k] is not None for k in ue2)  # the other subject is untouched
    finally:
        group.stop_all()


def test_clmc26_erased_id_is_in_no_byte_of_the_embedded_files_when_the_delete_returns(tmp_path: Path) -> None:
    subject = f"ue-secret-{uuid.uuid4().hex[:8]}"
    now = time.time_ns()

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            tags = {"flame_location": "bristol", "flame_sfc": "svc", "flame_ue": subject}
            other = {"flame_location": "bristol", "flame_sfc": "svc", "flame_ue": "ue-other"}
            await publish(
                stub,
                clmc_pb2.PublishMeasurementsRequest(
                    points=[point("nap_http", now - i * S, tags, latency_ms=1.0 * i) for i in range(1, 50)]
                    + [point("nap_http", now, other, latency_ms=5.0)]
                ),
            )
            files = sorted(tmp_path.glob("metrics.sqlite*"))
            assert any(subject.encode() in f.read_bytes() for f in files)  # the test can see it before
            await stub.DeleteDataSubject(clmc_pb2.DeleteDataSubjectRequest(request_id="e", subject_id=subject))
            for f in sorted(tmp_path.glob("*.sqlite*")):
                assert subject.encode() not in f.read_bytes(), f.name
            assert len((await stub.Query(clmc_pb2.QueryRequest(measurement="nap_http"))).points) == 1

    asyncio.run(scenario())
