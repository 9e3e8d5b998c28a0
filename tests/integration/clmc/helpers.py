"""Helpers for CLMC tests over real gRPC: build the service, make points and batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clmc.service import Settings, build
from flame_control.api.flame.clmc.v1 import clmc_pb2, model_pb2
from flame_control.runtime.auth import hash_token
from flame_control.runtime.config import AuthConfig, TokenEntry
from flame_control.runtime.service import ServiceContext, ServiceSpec

S = 1_000_000_000

#: One token per role; the media service provider owns "svc-a" only.
TOKENS = {
    "platform_operator": "tok-ops",
    "infrastructure_provider": "tok-infra",
    "media_service_provider": "tok-msp",
    "analyst": "tok-ana",
    "component": "tok-comp",
}
AUTH = AuthConfig(
    enabled=True,
    tokens=[
        TokenEntry(subject=role, role=role, sha256=hash_token(tok), media_services=["svc-a"])
        for role, tok in TOKENS.items()
    ],
)


def clmc_spec(tmp_path: Path, **settings: Any) -> ServiceSpec:
    """The CLMC ServiceSpec with state under tmp_path."""
    ctx = ServiceContext("clmc", Settings(**settings), tmp_path, lambda key: None)  # type: ignore[arg-type,return-value]
    return build(ctx)


def point(name: str, t_ns: int, tags: dict[str, str], **fields: float | int | str | bool) -> model_pb2.Measurement:
    """A Measurement."""
    m = model_pb2.Measurement(name=name, tags=tags)
    m.time.FromNanoseconds(t_ns)
    for k, v in fields.items():
        if isinstance(v, bool):
            m.fields[k].bool_value = v
        elif isinstance(v, int):
            m.fields[k].int_value = v
        elif isinstance(v, float):
            m.fields[k].double_value = v
        else:
            m.fields[k].string_value = v
    return m


def series_batch(name: str, tags: dict[str, str], times: list[int], **columns: list[float]) -> model_pb2.SeriesBatch:
    """A columnar SeriesBatch."""
    s = model_pb2.SeriesBatch(name=name, tags=tags, times_unix_nano=times)
    for field, values in columns.items():
        s.columns.add(field=field, values=values)
    return s


async def publish(stub: Any, *batches: clmc_pb2.PublishMeasurementsRequest) -> clmc_pb2.PublishMeasurementsResponse:
    """Publish batches on one stream."""

    async def gen() -> Any:
        for b in batches:
            yield b

    return await stub.PublishMeasurements(gen())
