"""One schema, both backends (CLMC-7, CLMC-9, CLMC-10, issue 15): the CLMC knows every field's type per measurement
(the information model, then the first write) and refuses, before writing anything, batches whose types conflict
(within the batch or with what is stored), that use the reserved name ``time``, or carry oversized values. Both
backends answer the same INVALID_ARGUMENT with field violations; what a backend refuses and retrying cannot fix is
never UNAVAILABLE (publishers retry UNAVAILABLE)."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, kpi_pb2
from flame_control.runtime.testing import channel, running_server
from tests.integration.clmc.helpers import S, clmc_spec, point, publish
from tests.integration.clmc.test_clmc_service import violations
from tests.support.influxdb import Influxd, start_influxd
from tests.support.procs import ProcessGroup

BACKENDS = ["embedded", pytest.param("influxdb", marks=pytest.mark.influxdb)]


def now_ns() -> int:
    return (time.time_ns() // S - 600) * S


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[dict[str, Any], Influxd | None]]:
    group = ProcessGroup(tmp_path)
    try:
        if request.param == "embedded":
            yield {}, None
        else:
            server = start_influxd(group, tmp_path)
            yield {"backend": "influxdb", "influx_url": server.url, "influx_database": "schema"}, server
    finally:
        group.stop_all()


def batch(*points: Any) -> clmc_pb2.PublishMeasurementsRequest:
    return clmc_pb2.PublishMeasurementsRequest(points=list(points))


async def refused(stub: Any, req: clmc_pb2.PublishMeasurementsRequest) -> list[str]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await publish(stub, req)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    return violations(exc.value)


async def count(stub: Any, measurement: str) -> int:
    return len((await stub.Query(clmc_pb2.QueryRequest(measurement=measurement))).points)


def test_clmc7_conflicting_field_types_refused_whole_on_both_backends(
    backend: tuple[dict[str, Any], Influxd | None], tmp_path: Path
) -> None:
    settings, _ = backend
    t0 = now_ns()
    tags = {"flame_location": "a", "flame_sfc": "s"}

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path, **settings)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            # Float and integer for one field of a measurement outside the model, in one batch: refused whole.
            fields = await refused(stub, batch(point("app", t0, tags, v=1.5), point("app", t0 + S, tags, v=2)))
            assert fields == ["points[1].fields.v"]
            assert await count(stub, "app") == 0
            # The first write decides; a later batch with another type is refused, nothing of it stored.
            await publish(stub, batch(point("app", t0, tags, v=1.5)))
            fields = await refused(stub, batch(point("app", t0 + 2 * S, tags, w=1.0), point("app", t0 + S, tags, v=7)))
            assert fields == ["points[1].fields.v"]
            assert await count(stub, "app") == 1
            # Model fields take the model's type: an integer for the double latency_ms is stored as a double.
            ok = batch(point("nap_http", t0, tags, latency_ms=250.0), point("nap_http", t0 + S, tags, latency_ms=70))
            assert (await publish(stub, ok)).accepted_points == 2
            values = [
                p.fields["latency_ms"] for p in (await stub.Query(clmc_pb2.QueryRequest(measurement="nap_http"))).points
            ]
            assert [v.WhichOneof("value") for v in values] == ["double_value", "double_value"]
            # A bool for a numeric model field is refused (it used to pass as "not a string").
            assert await refused(stub, batch(point("nap_http", t0, tags, requests=True))) == [
                "points[0].fields.requests"
            ]
        # After a restart the stored types still decide.
        async with running_server(clmc_spec(tmp_path, **settings)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            assert await refused(stub, batch(point("app", t0 + 3 * S, tags, v="text"))) == ["points[0].fields.v"]
            assert await count(stub, "app") == 1

    asyncio.run(scenario())


def test_clmc7_reserved_names_and_oversized_values_refused_on_both_backends(
    backend: tuple[dict[str, Any], Influxd | None], tmp_path: Path
) -> None:
    settings, _ = backend
    t0 = now_ns()

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path, **settings)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            fields = await refused(stub, batch(point("app", t0, {"time": "x"}, v=1.0), point("app", t0, {}, time=1.0)))
            assert fields == ["points[0].tags.time", "points[1].fields.time"]
            big = "x" * (50 * 1024 * 1024)
            assert await refused(stub, batch(point("app", t0, {}, note=big))) == ["points[0].fields.note"]
            assert await count(stub, "app") == 0

    asyncio.run(scenario())


@pytest.mark.influxdb
def test_clmc10_backend_refusal_is_invalid_argument_not_unavailable(tmp_path: Path) -> None:
    """Another writer stored ``v`` as a string behind the CLMC's back: InfluxDB refuses our float (HTTP 400, field
    type conflict). Retrying cannot help, so the publisher gets INVALID_ARGUMENT, never UNAVAILABLE."""
    group = ProcessGroup(tmp_path)
    try:
        server = start_influxd(group, tmp_path)
        settings = {"backend": "influxdb", "influx_url": server.url, "influx_database": "schema"}
        t0 = now_ns()

        async def scenario() -> None:
            async with running_server(clmc_spec(tmp_path, **settings)) as target, channel(target) as ch:
                stub = clmc_pb2_grpc.ClmcServiceStub(ch)
                line = f'other v="text" {t0}'.encode()
                req = urllib.request.Request(f"{server.url}/write?db=schema&precision=ns", data=line, method="POST")
                with urllib.request.urlopen(req, timeout=5) as resp:
                    assert resp.status == 204
                start = time.monotonic()
                fields = await refused(stub, batch(point("other", t0 + S, {}, v=1.0)))
                assert fields == ["points"] and time.monotonic() - start < 5  # not retried for influx_retry_s

        asyncio.run(scenario())
    finally:
        group.stop_all()


def test_clmc19_define_kpi_refuses_unknown_measurements_and_fields_on_both_backends(
    backend: tuple[dict[str, Any], Influxd | None], tmp_path: Path
) -> None:
    """A KPI on a typo never fires: DefineKpi refuses measurements and fields the CLMC does not know (the model, or
    written before: also after a restart) and non-numeric fields."""
    settings, _ = backend

    def kpi(measurement: str, field: str) -> clmc_pb2.DefineKpiRequest:
        d = kpi_pb2.KpiDefinition(
            name="k",
            media_service="s",
            kind=kpi_pb2.KPI_KIND_THRESHOLD,
            measurement=measurement,
            field=field,
            comparison=kpi_pb2.COMPARISON_GREATER,
            threshold=1,
        )
        return clmc_pb2.DefineKpiRequest(request_id=uuid.uuid4().hex, kpi=d)

    async def define_refused(stub: Any, req: clmc_pb2.DefineKpiRequest) -> list[str]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.DefineKpi(req)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
        return violations(exc.value)

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path, **settings)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            assert await define_refused(stub, kpi("nap_htp", "latency_ms")) == ["kpi.measurement"]
            assert await define_refused(stub, kpi("nap_http", "latency")) == ["kpi.field"]
            assert await define_refused(stub, kpi("endpoint_config", "current_state")) == ["kpi.field"]  # a string
            assert await define_refused(stub, kpi("app", "v")) == ["kpi.measurement"]
            await publish(stub, batch(point("app", now_ns(), {"flame_sfc": "s"}, v=1.5)))
            await stub.DefineKpi(kpi("app", "v"))
            await stub.DefineKpi(kpi("nap_http", "latency_ms"))
        async with running_server(clmc_spec(tmp_path, **settings)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            await stub.DefineKpi(kpi("app", "v"))  # known from storage after the restart
            assert await define_refused(stub, kpi("app", "w")) == ["kpi.field"]

    asyncio.run(scenario())
