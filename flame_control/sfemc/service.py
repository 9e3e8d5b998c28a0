"""The SFEMC's gRPC adapter. Built so far: ListEndpoints and GetEndpoint over its (initially empty) endpoint table.
Policies, overrides, watches, images and delegation answer UNIMPLEMENTED until the SFEMC issue lands (see
docs/sfemc.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from flame_control.api.flame.sfemc.v1 import sfemc_pb2, sfemc_pb2_grpc
from flame_control.runtime.errors import FieldViolation, InvalidArgument, NotFound
from flame_control.runtime.service import ALL_ROLES, AccessRules, ServiceContext, ServiceSpec


class Settings(BaseModel):
    """`services.sfemc` config section."""

    model_config = ConfigDict(extra="forbid")

    #: Minimum seconds between two actions of one surrogate policy.
    default_cooldown_s: float = 30.0


class SfemcServicer(sfemc_pb2_grpc.SfemcServiceServicer):
    """SfemcService."""

    def __init__(self) -> None:
        self.endpoints: dict[str, sfemc_pb2.Endpoint] = {}

    async def ListEndpoints(
        self, request: sfemc_pb2.ListEndpointsRequest, context: Any
    ) -> sfemc_pb2.ListEndpointsResponse:
        chosen = [
            e
            for _, e in sorted(self.endpoints.items())
            if not request.media_service or e.media_service == request.media_service
        ]
        return sfemc_pb2.ListEndpointsResponse(endpoints=chosen)

    async def GetEndpoint(self, request: sfemc_pb2.GetEndpointRequest, context: Any) -> sfemc_pb2.GetEndpointResponse:
        if not request.endpoint_id:
            raise InvalidArgument([FieldViolation("endpoint_id", "required")])
        if request.endpoint_id not in self.endpoints:
            raise NotFound("endpoint", request.endpoint_id)
        return sfemc_pb2.GetEndpointResponse(endpoint=self.endpoints[request.endpoint_id])


def build(ctx: ServiceContext) -> ServiceSpec:
    """The SFEMC service for the runtime."""
    servicer = SfemcServicer()  # type: ignore[abstract]  # RPCs not overridden answer UNIMPLEMENTED
    return ServiceSpec(
        "flame.sfemc.v1.SfemcService",
        servicer,
        sfemc_pb2_grpc.add_SfemcServiceServicer_to_server,
        AccessRules(default=ALL_ROLES),
    )
