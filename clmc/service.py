"""The CLMC service for the runtime: Settings and build() (storage backend, optional Kafka, KPI state, dashboard)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from clmc.ingest import Limits
from clmc.kpi_engine import KpiEngine
from clmc.kpi_state import ClmcState
from clmc.servicer import ClmcServicer, wall_clock_ns
from clmc.storage.base import MetricStore
from clmc.storage.embedded import EmbeddedStore
from clmc.storage.influx import InfluxStore
from flame_control.api.flame.clmc.v1 import clmc_pb2_grpc
from flame_control.runtime.service import ALL_ROLES, OPERATORS, AccessRules, Role, ServiceContext, ServiceSpec


class Settings(BaseModel):
    """`services.clmc` config section."""

    model_config = ConfigDict(extra="forbid")

    #: Storage backend: "embedded" (a SQLite file under the state dir, the default) or "influxdb" (v1 HTTP API).
    backend: Literal["embedded", "influxdb"] = "embedded"
    #: Embedded database file (default: <state_dir>/metrics.sqlite).
    embedded_path: Path | None = None
    #: InfluxDB base URL (backend influxdb).
    influx_url: str = "http://127.0.0.1:8086"
    #: InfluxDB database (created if missing).
    influx_database: str = "flame"
    #: Retention of measurements, as an InfluxQL duration (e.g. "30d"); empty = keep forever (CLMC-10).
    retention: str = ""
    #: How long failed InfluxDB writes are retried before the publisher gets UNAVAILABLE.
    influx_retry_s: float = Field(default=10.0, gt=0)
    #: Most points accepted in one batch.
    max_points_per_batch: int = Field(default=200_000, gt=0)
    #: How often every KPI is evaluated (also right after new points of a watched measurement), seconds.
    kpi_interval_s: float = Field(default=1.0, gt=0)
    #: How far in the future a point's time may be (clock skew allowance), seconds.
    max_future_s: float = Field(default=3600.0, gt=0)


def open_store(settings: Settings, state_dir: Path) -> MetricStore:
    """The configured storage backend."""
    if settings.backend == "influxdb":
        return InfluxStore(
            settings.influx_url, settings.influx_database, settings.retention, retry_for_s=settings.influx_retry_s
        )
    return EmbeddedStore(settings.embedded_path or state_dir / "metrics.sqlite")


ACCESS = AccessRules(
    default=ALL_ROLES,
    methods={
        "PublishMeasurements": OPERATORS,
        "PublishConfigEvents": OPERATORS,
        "DefineKpi": frozenset({Role.PLATFORM_OPERATOR, Role.MEDIA_SERVICE_PROVIDER}),
        "DeleteKpi": frozenset({Role.PLATFORM_OPERATOR, Role.MEDIA_SERVICE_PROVIDER}),
        "QueryDataSubject": frozenset({Role.PLATFORM_OPERATOR}),
        "DeleteDataSubject": frozenset({Role.PLATFORM_OPERATOR}),
        "DeleteMeasurements": frozenset({Role.PLATFORM_OPERATOR}),
    },
)


def build(ctx: ServiceContext) -> ServiceSpec:
    """The CLMC service for the runtime."""
    settings: Settings = ctx.settings if isinstance(ctx.settings, Settings) else Settings()
    store = open_store(settings, Path(ctx.state_dir))
    limits = Limits(settings.max_points_per_batch, int(settings.max_future_s * 1e9))
    state = ClmcState(Path(ctx.state_dir) / "clmc_state.sqlite")
    engine = KpiEngine(store, state, wall_clock_ns, settings.kpi_interval_s)
    servicer = ClmcServicer(store, limits, engine=engine, state=state)

    async def on_start() -> None:
        engine.started_ns = wall_clock_ns()
        await engine.start()

    async def on_stop() -> None:
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
    )
