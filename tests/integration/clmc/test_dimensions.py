"""CLMC-6, CLMC-12, CLMC-18: dimensional abstractions configured by the operator (`services.clmc.dimensions`) are
derived at ingest, so filters and Aggregate group-by work on them like on any tag; the mapping in force is in
GetInformationModel; a bad configuration is refused with a clear message."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from clmc.service import Settings
from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, kpi_pb2
from flame_control.runtime.testing import channel, running_server
from tests.integration.clmc.helpers import clmc_spec, point

S = 1_000_000_000
REGIONS = {"nap-edge-a1": "harbourside", "nap-edge-a2": "harbourside", "nap-edge-b1": "cabot"}


def test_clmc6_dimension_from_location_groups_and_filters(tmp_path: Path) -> None:
    dims = {"region": {"source_tag": "flame_location", "mapping": REGIONS, "default": "elsewhere"}}

    async def scenario() -> None:
        async with running_server(clmc_spec(tmp_path, dimensions=dims)) as target, channel(target) as ch:
            stub = clmc_pb2_grpc.ClmcServiceStub(ch)
            t0 = (time.time_ns() // S - 600) * S
            points = []
            for i, (nap, value) in enumerate(
                [("nap-edge-a1", 10.0), ("nap-edge-a2", 20.0), ("nap-edge-b1", 5.0), ("nap-dc", 1.0)]
            ):
                points.append(point("nap_http", t0 + i * S, {"flame_location": nap}, latency_ms=value, requests=1))

            async def batches():  # type: ignore[no-untyped-def]
                yield clmc_pb2.PublishMeasurementsRequest(points=points)

            await stub.PublishMeasurements(batches())
            start, end = clmc_pb2.QueryRequest().start, clmc_pb2.QueryRequest().end
            start.FromNanoseconds(t0 - S)
            end.FromNanoseconds(t0 + 60 * S)
            agg = clmc_pb2.AggregateRequest(
                measurement="nap_http", field="latency_ms", aggregation=kpi_pb2.AGGREGATION_MEAN, group_by=["region"]
            )
            agg.start.CopyFrom(start)
            agg.end.CopyFrom(end)
            reply = await stub.Aggregate(agg)
            means = {s.group["region"]: (s.points[0].value, s.points[0].count) for s in reply.series}
            assert means == {"harbourside": (15.0, 2), "cabot": (5.0, 1), "elsewhere": (1.0, 1)}
            q = clmc_pb2.QueryRequest(measurement="nap_http", tags={"region": "harbourside"})
            q.start.CopyFrom(start)
            q.end.CopyFrom(end)
            got = await stub.Query(q)
            assert sorted(p.tags["flame_location"] for p in got.points) == ["nap-edge-a1", "nap-edge-a2"]
            model = await stub.GetInformationModel(clmc_pb2.GetInformationModelRequest())
            (dim,) = model.dimensions
            assert (dim.name, dim.source_tag, dict(dim.mapping), dim.default_value) == (
                "region", "flame_location", REGIONS, "elsewhere",
            )  # fmt: skip

    asyncio.run(scenario())


def test_clmc6_bad_dimension_configuration_is_refused() -> None:
    for bad in (
        {"flame_region": {"source_tag": "flame_location"}},  # FLAME tag namespace
        {"region": {"source_tag": "region"}},  # derived from itself
        {"1x": {"source_tag": "flame_location"}},  # not an identifier
        {"region": {"source_tag": "flame_location", "mapping": {"a": ""}}},  # empty value
        {"region": {"source_tag": "flame_location", "typo": 1}},  # unknown key
    ):
        with pytest.raises(ValidationError):
            Settings(dimensions=bad)  # type: ignore[arg-type]
