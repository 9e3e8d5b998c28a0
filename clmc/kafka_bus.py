"""Kafka transport of the CLMC (CLMC-3, CLMC-22, CLMC-26) with confluent-kafka.

- :class:`MeasurementProducer` (components and the CLMC use it): idempotent producer (``enable.idempotence``,
  ``acks=all``); a batch without personal data goes to the measurements topic as one message (a serialized
  ``PublishMeasurementsRequest``); points carrying the data-subject tag go one per message to a *compacted* topic,
  keyed by the point's identity, so erasing a subject can tombstone every one of its messages.
- :class:`KafkaIngestor`: consumer group reading both topics, at-least-once: offsets are committed only after the
  points are stored; a crash between store and commit redelivers, and storage dedups by point identity (measurement,
  tags, time), so no point is ever stored twice. Invalid messages are logged and counted, never block the partition.
- :class:`KafkaEventSink`: KPI events to a topic, keyed by media service and KPI.
- :func:`erase_subject`: tombstones (null values) for every message on the subject topic that carries an erased
  subject, keyed as the messages were produced (read back from the topic); the ingestor tombstones late copies.

Every client takes a :class:`~clmc.kafka_security.KafkaSecurity` (TLS, SASL; PLAINTEXT by default) merged into its
librdkafka config by :func:`producer_config`, :func:`consumer_config` and :func:`admin_config`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from clmc.ingest import Limits, convert_batch
from clmc.kafka_security import PLAINTEXT, KafkaSecurity
from clmc.model import SUBJECT_TAG
from clmc.storage.base import SeriesData, canonical_tags
from flame_control.api.flame.clmc.v1 import clmc_pb2, kpi_pb2, model_pb2
from flame_control.runtime.errors import DomainError

log = logging.getLogger("flame.clmc.kafka")


@dataclass(frozen=True)
class Topics:
    """Topic names."""

    measurements: str = "clmc.measurements"
    subject_points: str = "clmc.subject-points"
    kpi_events: str = "clmc.kpi-events"


def admin_config(bootstrap: str, security: KafkaSecurity = PLAINTEXT) -> dict[str, Any]:
    """An admin client's config."""
    return {"bootstrap.servers": bootstrap, **security.client_config()}


def ensure_topics(
    bootstrap: str,
    topics: Topics,
    partitions: int = 1,
    timeout: float = 10.0,
    security: KafkaSecurity = PLAINTEXT,
) -> None:
    """Create the topics if missing (the subject topic compacted)."""
    admin = AdminClient(admin_config(bootstrap, security))
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(topics.measurements, partitions, 1),
        NewTopic(topics.subject_points, partitions, 1, config={"cleanup.policy": "compact"}),
        NewTopic(topics.kpi_events, partitions, 1),
    ]
    futures = admin.create_topics([t for t in wanted if t.topic not in existing])
    for name, fut in futures.items():
        try:
            fut.result(timeout)
        except Exception as exc:  # created concurrently by another process is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
        log.info("created topic %s", name)


def point_key(measurement: str, tags: Iterable[tuple[str, str]], time_ns: int) -> bytes:
    """The identity of a point as a Kafka key (the same identity storage dedups on)."""
    return f"{measurement}|{'|'.join(f'{k}={v}' for k, v in tags)}|{time_ns}".encode()


def producer_config(bootstrap: str, security: KafkaSecurity = PLAINTEXT) -> dict[str, Any]:
    """An idempotent producer; librdkafka retries a message for 15 s, then MeasurementProducer re-sends it."""
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 15_000,
        "compression.type": "none",
        **security.client_config(),
    }


def consumer_config(
    bootstrap: str, group: str, session_timeout_ms: int = 6000, security: KafkaSecurity = PLAINTEXT
) -> dict[str, Any]:
    """A consumer-group member that commits offsets itself (after storing)."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(100, session_timeout_ms // 4),
        **security.client_config(),
    }


class MeasurementProducer:
    """Publishes measurement batches to Kafka (see module doc for the topic layout)."""

    def __init__(self, bootstrap: str, topics: Topics = Topics(), security: KafkaSecurity = PLAINTEXT) -> None:
        self.topics = topics
        self.bootstrap = bootstrap
        self._security = security
        self._producer = Producer(producer_config(bootstrap, security))
        self._undelivered: list[tuple[str, bytes | None, bytes | None]] = []
        self.resent = 0

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            # Kept for re-sending by flush(): a duplicate is harmless, consumers dedup by point identity.
            log.warning("kafka delivery failed (%s); will re-send", err)
            self._undelivered.append((str(msg.topic()), msg.key(), msg.value()))

    def publish(self, req: clmc_pb2.PublishMeasurementsRequest) -> int:
        """Queue a batch; returns Kafka messages queued. Delivery errors are kept in ``failed`` (see flush)."""
        plain = clmc_pb2.PublishMeasurementsRequest()
        queued = 0
        for m in req.points:
            if SUBJECT_TAG in m.tags:
                key = point_key(m.name, canonical_tags(m.tags), m.time.ToNanoseconds())
                one = clmc_pb2.PublishMeasurementsRequest(points=[m])
                self._produce(self.topics.subject_points, key, one.SerializeToString())
                queued += 1
            else:
                plain.points.append(m)
        for s in req.series:
            if SUBJECT_TAG in s.tags:
                for i, t in enumerate(s.times_unix_nano):
                    one_series = model_pb2.SeriesBatch(name=s.name, tags=s.tags, times_unix_nano=[t])
                    for col in s.columns:
                        one_series.columns.add(field=col.field, values=[col.values[i]])
                    key = point_key(s.name, canonical_tags(s.tags), t)
                    msg = clmc_pb2.PublishMeasurementsRequest(series=[one_series])
                    self._produce(self.topics.subject_points, key, msg.SerializeToString())
                    queued += 1
            else:
                plain.series.append(s)
        if plain.points or plain.series:
            self._produce(self.topics.measurements, None, plain.SerializeToString())
            queued += 1
        return queued

    def _produce(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=self._delivered)
                self._producer.poll(0)
                return
            except BufferError:  # local queue full: wait for deliveries
                self._producer.poll(0.1)

    def tombstone(self, key: bytes) -> None:
        """Queue a tombstone on the subject topic."""
        self._produce(self.topics.subject_points, key, None)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every message is delivered, re-sending failed ones on a fresh producer (a broker that lost its
        state, e.g. after a restart, no longer knows the idempotent producer id); raises RuntimeError at timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = self._producer.flush(max(0.0, min(5.0, deadline - time.monotonic())))
            if left == 0 and not self._undelivered:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{left + len(self._undelivered)} messages undelivered after {timeout:.0f} s")
            if self._undelivered and left == 0:
                retry, self._undelivered = self._undelivered, []
                self._producer = Producer(producer_config(self.bootstrap, self._security))
                for topic, key, value in retry:
                    self._produce(topic, key, value)
                self.resent += len(retry)


def carried_subjects(req: clmc_pb2.PublishMeasurementsRequest) -> set[str]:
    """The data subjects a message carries (their ``flame_ue`` tag values)."""
    return {x.tags[SUBJECT_TAG] for x in req.points if SUBJECT_TAG in x.tags} | {
        x.tags[SUBJECT_TAG] for x in req.series if SUBJECT_TAG in x.tags
    }


def subject_message_keys(
    bootstrap: str, topic: str, subject: str, security: KafkaSecurity = PLAINTEXT, timeout: float = 30.0
) -> list[bytes]:
    """The keys of every message on the (compacted) subject topic that carries ``subject`` and is not tombstoned
    yet: read from the topic itself, so they are the keys the messages were produced with (ingest may have rewritten
    the tags since: dimensions, FQDN attribution) and include messages the CLMC has not consumed yet."""
    # Read to the end of each partition as the broker reports it (end-of-partition events; offsets alone are not
    # trusted: the tansu broker counts a record batch as one offset in its high watermark).
    consumer = Consumer(
        {
            **consumer_config(bootstrap, f"clmc-erasure-{uuid.uuid4().hex}", security=security),
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        ends = set()
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
            if high > low:
                ends.add(p)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        keys: dict[bytes, bool] = {}
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise RuntimeError(f"reading {topic} for an erasure took more than {timeout:.0f} s")
            m = consumer.poll(0.5)
            if m is None:
                continue
            error = m.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                ends.discard(int(m.partition() or 0))
                continue
            key, value = m.key(), m.value()
            if key is not None:
                carries = value is not None and subject in carried_subjects(
                    clmc_pb2.PublishMeasurementsRequest.FromString(value)
                )
                keys[key] = carries  # a later message (or tombstone) under the key decides
        return sorted(k for k, carries in keys.items() if carries)
    finally:
        consumer.close()


def erase_subject(producer: MeasurementProducer, subject: str, security: KafkaSecurity = PLAINTEXT) -> int:
    """Tombstone every subject-topic message carrying ``subject`` (by the keys it was produced with); returns the
    tombstones written. Copies arriving later are tombstoned by the ingestor (KafkaIngestor ``erased``)."""
    keys = subject_message_keys(producer.bootstrap, producer.topics.subject_points, subject, security)
    for key in keys:
        producer.tombstone(key)
    producer.flush()
    return len(keys)


class KafkaEventSink:
    """KPI events to the KPI topic (serialized KpiEvent, key ``media_service/kpi``), with delivery reports: a failed
    delivery is re-sent (on a fresh producer) up to ``max_attempts`` times in all, then counted in ``failed`` and
    logged as an error, never lost without notice. A background thread serves the reports."""

    def __init__(
        self,
        bootstrap: str,
        topics: Topics = Topics(),
        security: KafkaSecurity = PLAINTEXT,
        max_attempts: int = 3,
        message_timeout_ms: int = 15_000,
    ) -> None:
        self._config = {**producer_config(bootstrap, security), "message.timeout.ms": message_timeout_ms}
        self._producer = Producer(self._config)
        self._topic = topics.kpi_events
        self.max_attempts = max_attempts
        self.delivered = self.resent = self.failed = 0
        self._lock = threading.Lock()
        self._retry: list[tuple[bytes, bytes, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="clmc-kpi-sink", daemon=True)
        self._thread.start()

    def __call__(self, event: kpi_pb2.KpiEvent) -> None:
        key = f"{event.media_service}/{event.kpi}".encode()
        self._produce(key, event.SerializeToString(), 1)

    def _produce(self, key: bytes, value: bytes, attempt: int) -> None:
        def report(err: KafkaError | None, _msg: Any) -> None:
            self._report(err, key, value, attempt)

        with self._lock:
            producer = self._producer
        while True:
            try:
                producer.produce(self._topic, key=key, value=value, on_delivery=report)
                producer.poll(0)
                return
            except BufferError:  # local queue full: serve reports first
                producer.poll(0.1)

    def _report(self, err: KafkaError | None, key: bytes, value: bytes, attempt: int) -> None:
        if err is None:
            self.delivered += 1
        elif attempt < self.max_attempts:
            log.warning("KPI event %s not delivered (%s); re-sending (attempt %d)", key.decode(), err, attempt + 1)
            with self._lock:
                self._retry.append((key, value, attempt + 1))
        else:
            self.failed += 1
            log.error("KPI event %s lost after %d attempts: %s", key.decode(), attempt, err)

    def _resend(self) -> None:
        with self._lock:
            retry, self._retry = self._retry, []
            if retry:  # an idempotent producer that timed out may be stuck on the old producer id: a fresh one
                self._producer = Producer(self._config)
        for key, value, attempt in retry:
            self.resent += 1
            self._produce(key, value, attempt)

    def _serve(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                producer = self._producer
            producer.poll(0.2)
            self._resend()

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for queued events (re-sends included); returns how many are still queued or awaiting a re-send."""
        deadline = time.monotonic() + timeout
        while True:
            self._resend()
            with self._lock:
                producer = self._producer
            left = int(producer.flush(max(0.0, min(1.0, deadline - time.monotonic()))))
            with self._lock:
                pending = len(self._retry)
            if (left == 0 and pending == 0) or time.monotonic() >= deadline:
                return left + pending

    def close(self, timeout: float = 10.0) -> int:
        """Flush, then stop the report thread; returns events not delivered."""
        left = self.flush(timeout)
        self._stop.set()
        self._thread.join(5)
        return left


#: Stores converted points (blocking); raises on failure so offsets are not committed.
StoreFn = Callable[[list[SeriesData]], int]
#: True when a data subject was erased (its late copies are dropped and tombstoned).
ErasedFn = Callable[[str], bool]
#: Validates and converts one message's batch against the CLMC's schema (raises InvalidArgument: message dropped).
ConvertFn = Callable[[clmc_pb2.PublishMeasurementsRequest], list[SeriesData]]


class KafkaIngestor:
    """Consumer group writing Kafka measurement messages to storage at-least-once (without duplicates)."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        store: StoreFn,
        topics: Topics = Topics(),
        limits: Limits | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        session_timeout_ms: int = 6000,
        security: KafkaSecurity = PLAINTEXT,
        convert: ConvertFn | None = None,
        erased: ErasedFn | None = None,
        tombstone: Callable[[bytes], None] | None = None,
    ) -> None:
        self._consumer = Consumer(consumer_config(bootstrap, group, session_timeout_ms, security))
        self._convert = convert
        self._erased = erased
        self._tombstone = tombstone
        self._subject_topic = topics.subject_points
        self.tombstoned_late = 0
        self._consumer.subscribe([topics.measurements, topics.subject_points])
        self._store = store
        self._limits = limits or Limits()
        self._clock_ns = clock_ns
        self.stored_points = 0
        self.rejected_messages = 0
        self._idle_polls = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, max_messages: int = 500, timeout: float = 0.5, commit: bool = True) -> int:
        """Consume up to ``max_messages``, store them, then commit; returns points stored. On a storage error the
        partitions are rewound to the first uncommitted message (redelivered next time) and the error is raised."""
        msgs = self._consumer.consume(max_messages, timeout)
        if not msgs:
            self._idle_polls += 1
            if self._idle_polls % 10 == 0:
                self.rewind_if_log_lost()
            return 0
        self._idle_polls = 0
        parts: list[list[SeriesData]] = []
        first: dict[tuple[str, int], int] = {}
        for m in msgs:
            error = m.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka consume error: %s", error)
                continue
            first.setdefault((str(m.topic()), int(m.partition() or 0)), int(m.offset() or 0))
            value = m.value()
            if value is None:  # a tombstone: the subject's data was erased
                continue
            try:
                req = clmc_pb2.PublishMeasurementsRequest.FromString(value)
                if self._late_copy_of_erased(str(m.topic()), m.key(), req):
                    continue
                if self._convert is not None:
                    parts.append(self._convert(req))
                else:
                    parts.append(convert_batch(req, self._clock_ns(), self._limits))
            except (DomainError, ValueError) as exc:
                self.rejected_messages += 1
                log.error("dropping invalid message %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(), exc)
        if not first:
            return 0
        try:
            stored = self._store_parts(parts)
        except Exception:
            for (topic, partition), offset in first.items():
                self._consumer.seek(TopicPartition(topic, partition, offset))
            raise
        if commit:
            self._consumer.commit(asynchronous=False)
        self.stored_points += stored
        return stored

    def _late_copy_of_erased(self, topic: str, key: bytes | None, req: clmc_pb2.PublishMeasurementsRequest) -> bool:
        """A subject-topic message of an already erased subject (produced before, arrived after the erasure): not
        stored, and tombstoned so the compacted topic holds no copy."""
        if self._erased is None or topic != self._subject_topic or key is None:
            return False
        if not any(self._erased(subject) for subject in carried_subjects(req)):
            return False
        if self._tombstone is not None:
            self._tombstone(key)
            self.tombstoned_late += 1
        return True

    def _store_parts(self, parts: list[list[SeriesData]]) -> int:
        """Store every message's points in one write; when the backend refuses that write (retrying cannot help),
        store message by message and drop (count) the ones it refuses, so one message never blocks a partition."""
        batch = [s for part in parts for s in part]
        if not batch:
            return 0
        try:
            return self._store(batch)
        except DomainError:
            if len(parts) == 1:
                self.rejected_messages += 1
                log.error("dropping a message the backend refused", exc_info=True)
                return 0
        stored = 0
        for part in parts:
            try:
                stored += self._store(part) if part else 0
            except DomainError as exc:
                self.rejected_messages += 1
                log.error("dropping a message the backend refused: %s", exc)
        return stored

    def rewind_if_log_lost(self) -> int:
        """Seek to the start of every assigned partition whose log ends before our position: the broker lost its log
        (e.g. a broker with volatile storage restarted), so new messages sit below the old offsets. Re-reading is
        safe because storage dedups by point identity. Returns the partitions rewound."""
        rewound = 0
        try:
            for tp in self._consumer.position(self._consumer.assignment()):
                if tp.offset < 0:
                    continue
                low, high = self._consumer.get_watermark_offsets(tp, timeout=2.0, cached=False)
                if tp.offset > high:
                    log.warning(
                        "%s[%d]: position %d beyond log end %d; re-reading from %d",
                        tp.topic,
                        tp.partition,
                        tp.offset,
                        high,
                        low,
                    )
                    self._consumer.seek(TopicPartition(tp.topic, tp.partition, low))
                    rewound += 1
        except KafkaException as exc:
            log.warning("could not check partition ends: %s", exc)
        return rewound

    def commit(self) -> None:
        """Commit the consumed positions (run_once does this itself unless told not to); nothing consumed is fine."""
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                raise

    def assigned(self) -> bool:
        """True once the group gave this consumer partitions."""
        return bool(self._consumer.assignment())

    def _loop(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                self.run_once()
                delay = 0.1
            except Exception as exc:
                log.warning("kafka ingest failed (will retry in %.1f s): %s", delay, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def start(self) -> None:
        """Consume in a background thread."""
        self._thread = threading.Thread(target=self._loop, name="clmc-kafka-ingest", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (if any) and leave the group."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._consumer.close()
