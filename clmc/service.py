"""The CLMC service for the runtime: Settings and build() (storage backend, optional Kafka, KPI state, dashboard)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clmc import metrics
from clmc.dashboard import Dashboard
from clmc.dimensions import DimensionConfig, DimensionMap, check_dimensions
from clmc.ingest import Limits
from clmc.kafka_bus import (
    KafkaEventSink,
    KafkaIngestor,
    MeasurementProducer,
    Topics,
    ensure_topics,
    erase_subject,
)
from clmc.kafka_security import KafkaSecuritySettings
from clmc.kpi_engine import KpiEngine
from clmc.kpi_state import ClmcState
from clmc.servicer import ClmcServicer, wall_clock_ns
from clmc.storage.base import MetricStore, Selection, SeriesData
from clmc.storage.embedded import EmbeddedStore
from clmc.storage.influx import InfluxStore
from flame_control.api.flame.clmc.v1 import clmc_pb2_grpc
from flame_control.runtime.service import ALL_ROLES, OPERATORS, AccessRules, Role, ServiceContext, ServiceSpec

log = logging.getLogger("flame.clmc")


class Settings(BaseModel):
    """`services.clmc` config section."""

    model_config = ConfigDict(extra="forbid")

    #: Storage backend: "embedded" (a SQLite file under the state dir, the default) or "influxdb" (v1 HTTP API).
    backend: Literal["embedded", "influxdb"] = "embedded"
    #: Embedded database file (default: <state_dir>/metrics.sqlite).
    embedded_path: Path | None = None
    #: InfluxDB base URL (backend influxdb).
    influx_url: str = "http://127.0.0.1:8086"
    #: CA certificate (PEM) an https influx_url is verified against (default: the system CAs).
    influx_ca_file: Path | None = None
    #: Verify the InfluxDB server certificate (https); false only for a lab (encrypted, not authenticated).
    influx_verify_tls: bool = True
    #: InfluxDB database (created if missing).
    influx_database: str = "flame"
    #: Retention of measurements, as an InfluxQL duration (e.g. "30d"); empty = keep forever (CLMC-10).
    retention: str = ""

    @field_validator("retention")
    @classmethod
    def _valid_retention(cls, value: str) -> str:
        retention_ns(value)
        return value

    #: How long failed InfluxDB writes are retried before the publisher gets UNAVAILABLE.
    influx_retry_s: float = Field(default=10.0, gt=0)
    #: Most points accepted in one batch.
    max_points_per_batch: int = Field(default=200_000, gt=0)
    #: KPI events kept for subscribers resuming by sequence number; older ones are dropped (a resumed subscription
    #: past them gets a gap marker).
    kpi_events_retained: int = Field(default=10_000, ge=1)
    #: How often every KPI is evaluated (also right after new points of a watched measurement), seconds.
    kpi_interval_s: float = Field(default=1.0, gt=0)
    #: Kafka bootstrap servers ("host:port,..."); empty = no Kafka (gRPC ingest only).
    kafka_bootstrap: str = ""
    #: TLS / SASL of every Kafka client (producer, consumer, admin); PLAINTEXT by default (CLMC-27).
    kafka_security: KafkaSecuritySettings = Field(default_factory=KafkaSecuritySettings)
    #: Consumer group of the CLMC's Kafka ingest.
    kafka_group: str = "flame-clmc"
    #: Topic of measurement batches without personal data.
    kafka_measurements_topic: str = "clmc.measurements"
    #: Compacted topic of points carrying a data-subject tag (keyed by point identity, tombstoned on erasure).
    kafka_subject_topic: str = "clmc.subject-points"
    #: Topic KPI events are published to.
    kafka_kpi_topic: str = "clmc.kpi-events"
    #: Port of the built-in web dashboard on 127.0.0.1 (CLMC-17); 0 = off.
    dashboard_port: int = Field(default=0, ge=0, le=65535)
    #: How far in the future a point's time may be (clock skew allowance), seconds.
    max_future_s: float = Field(default=3600.0, gt=0)
    #: Dimensions derived at ingest from a tag (CLMC-6), e.g. {region: {source_tag: flame_location, mapping: {...}}}.
    dimensions: dict[str, DimensionConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _tls_needs_https(self) -> Settings:
        if not self.influx_url.startswith("https://") and (self.influx_ca_file or not self.influx_verify_tls):
            raise ValueError("influx_ca_file / influx_verify_tls apply to an https:// influx_url only")
        return self

    @field_validator("dimensions")
    @classmethod
    def _valid_dimensions(cls, value: dict[str, DimensionConfig]) -> dict[str, DimensionConfig]:
        check_dimensions(value)
        return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def retention_ns(text: str) -> int:
    """An InfluxQL-style duration ("90m", "30d", "2w") in ns; "" = 0 (keep forever)."""
    if not text:
        return 0
    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if match is None:
        raise ValueError(f"retention {text!r} must look like 30d, 12h, 90m or 2w")
    return int(match.group(1)) * _UNITS[match.group(2)] * 1_000_000_000


def apply_retention(store: MetricStore, now_ns: int, keep_ns: int) -> int:
    """Delete every point older than ``keep_ns`` (embedded backend; InfluxDB enforces its retention policy)."""
    return store.delete(Selection(None, {}, None, now_ns - keep_ns)) if keep_ns else 0


def open_store(settings: Settings, state_dir: Path) -> MetricStore:
    """The configured storage backend."""
    if settings.backend == "influxdb":
        return InfluxStore(
            settings.influx_url,
            settings.influx_database,
            settings.retention,
            retry_for_s=settings.influx_retry_s,
            ca_file=settings.influx_ca_file,
            verify_tls=settings.influx_verify_tls,
        )
    return EmbeddedStore(settings.embedded_path or state_dir / "metrics.sqlite")


ACCESS = AccessRules(
    default=ALL_ROLES,
    methods={
        "PublishMeasurements": OPERATORS,
        "PublishConfigEvents": OPERATORS,
        # Infrastructure providers define KPIs on infrastructure measurements only (checked by the servicer).
        "DefineKpi": frozenset({Role.PLATFORM_OPERATOR, Role.MEDIA_SERVICE_PROVIDER, Role.INFRASTRUCTURE_PROVIDER}),
        "DeleteKpi": frozenset({Role.PLATFORM_OPERATOR, Role.MEDIA_SERVICE_PROVIDER, Role.INFRASTRUCTURE_PROVIDER}),
        "QueryDataSubject": frozenset({Role.PLATFORM_OPERATOR}),
        "DeleteDataSubject": frozenset({Role.PLATFORM_OPERATOR}),
        "DeleteMeasurements": frozenset({Role.PLATFORM_OPERATOR}),
    },
)


class KafkaWiring:
    """Kafka ingest (consumer thread storing through the servicer), KPI events and subject tombstones."""

    def __init__(self, settings: Settings, servicer: ClmcServicer, engine: KpiEngine, limits: Limits) -> None:
        self.settings = settings
        self.servicer = servicer
        self.limits = limits
        self.topics = Topics(settings.kafka_measurements_topic, settings.kafka_subject_topic, settings.kafka_kpi_topic)
        self.security = settings.kafka_security.resolve()
        self.producer = MeasurementProducer(settings.kafka_bootstrap, self.topics, self.security)
        self.sink = KafkaEventSink(settings.kafka_bootstrap, self.topics, self.security)
        engine.sinks.append(self.sink)
        servicer.subject_eraser = lambda subject, points: erase_subject(self.producer, subject, self.security)
        self.ingestor: KafkaIngestor | None = None

    async def start(self) -> None:
        """Create topics and start consuming."""
        loop = asyncio.get_running_loop()

        def store(batch: list[SeriesData]) -> int:
            return asyncio.run_coroutine_threadsafe(self.servicer.store_batch(batch), loop).result()

        await asyncio.to_thread(
            lambda: ensure_topics(self.settings.kafka_bootstrap, self.topics, security=self.security)
        )
        self.ingestor = KafkaIngestor(
            self.settings.kafka_bootstrap,
            self.settings.kafka_group,
            store,
            self.topics,
            self.limits,
            security=self.security,
            convert=self.servicer.convert,
            erased=self.servicer.is_erased,
            tombstone=self.producer.tombstone,
        )
        self.ingestor.start()

    async def stop(self) -> None:
        """Stop consuming and flush KPI events."""
        if self.ingestor is not None:
            await asyncio.to_thread(self.ingestor.close)
        left = await asyncio.to_thread(self.sink.close)
        if left:
            log.error("%d KPI events not delivered to Kafka at shutdown", left)
        try:  # tombstones of late copies the ingestor queued
            await asyncio.to_thread(self.producer.flush, 10.0)
        except RuntimeError as exc:
            log.warning("kafka producer: %s", exc)


def build(ctx: ServiceContext) -> ServiceSpec:
    """The CLMC service for the runtime."""
    settings: Settings = ctx.settings if isinstance(ctx.settings, Settings) else Settings()
    store = open_store(settings, Path(ctx.state_dir))
    limits = Limits(settings.max_points_per_batch, int(settings.max_future_s * 1e9))
    state = ClmcState(Path(ctx.state_dir) / "clmc_state.sqlite", settings.kpi_events_retained)
    engine = KpiEngine(store, state, wall_clock_ns, settings.kpi_interval_s)
    servicer = ClmcServicer(store, limits, engine=engine, state=state, dimensions=DimensionMap(settings.dimensions))
    ingest = metrics.IngestStats()
    servicer.stored_hooks.append(ingest.on_stored)
    kafka = KafkaWiring(settings, servicer, engine, limits) if settings.kafka_bootstrap else None
    dashboard = Dashboard(store, engine, wall_clock_ns, settings.dashboard_port) if settings.dashboard_port else None

    keep_ns = retention_ns(settings.retention) if settings.backend == "embedded" else 0
    retention_task: list[asyncio.Task[None]] = []

    async def enforce_retention() -> None:
        while True:
            try:
                removed = await asyncio.to_thread(apply_retention, store, wall_clock_ns(), keep_ns)
                if removed:
                    log.info("retention removed %d points older than %s", removed, settings.retention)
            except Exception:
                log.exception("retention pass failed; retrying in a minute")
            await asyncio.sleep(60)

    async def on_start() -> None:
        if keep_ns:
            retention_task.append(asyncio.get_running_loop().create_task(enforce_retention()))
        engine.started_ns = wall_clock_ns()
        await engine.start()
        if kafka is not None:
            await kafka.start()
        if dashboard is not None:
            dashboard.start()

    async def on_stop() -> None:
        for task in retention_task:
            task.cancel()
        if dashboard is not None:
            dashboard.stop()
        if kafka is not None:
            await kafka.stop()
        await engine.stop()
        state.close()
        store.close()

    return ServiceSpec(
        "flame.clmc.v1.ClmcService",
        servicer,
        clmc_pb2_grpc.add_ClmcServiceServicer_to_server,
        ACCESS,
        on_start=on_start,
        on_stop=on_stop,
        metrics=lambda: metrics.collect(ingest, engine, state),
    )
