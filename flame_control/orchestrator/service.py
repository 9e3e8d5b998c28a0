"""The orchestrator's gRPC adapter. Built so far: the read RPCs over its (initially empty) service store
(ListMediaServices, GetMediaService, GetInfrastructure). Deploy, update, delete, watch, validation, catalogues and
export answer UNIMPLEMENTED until the orchestrator issue lands (see docs/orchestrator.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from flame_control.api.flame.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from flame_control.runtime.errors import FieldViolation, InvalidArgument, NotFound
from flame_control.runtime.service import ALL_ROLES, AccessRules, ServiceContext, ServiceSpec


class Settings(BaseModel):
    """`services.orchestrator` config section."""

    model_config = ConfigDict(extra="forbid")

    #: VIM driver for endpoints: "process" (embedded default).
    vim: str = "process"


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """OrchestratorService."""

    def __init__(self) -> None:
        self.services: dict[str, orchestrator_pb2.MediaService] = {}

    async def ListMediaServices(
        self, request: orchestrator_pb2.ListMediaServicesRequest, context: Any
    ) -> orchestrator_pb2.ListMediaServicesResponse:
        return orchestrator_pb2.ListMediaServicesResponse(services=[self.services[n] for n in sorted(self.services)])

    async def GetMediaService(
        self, request: orchestrator_pb2.GetMediaServiceRequest, context: Any
    ) -> orchestrator_pb2.GetMediaServiceResponse:
        if not request.name:
            raise InvalidArgument([FieldViolation("name", "required")])
        if request.name not in self.services:
            raise NotFound("media service", request.name)
        return orchestrator_pb2.GetMediaServiceResponse(service=self.services[request.name])

    async def GetInfrastructure(
        self, request: orchestrator_pb2.GetInfrastructureRequest, context: Any
    ) -> orchestrator_pb2.GetInfrastructureResponse:
        return orchestrator_pb2.GetInfrastructureResponse()


def build(ctx: ServiceContext) -> ServiceSpec:
    """The orchestrator service for the runtime."""
    servicer = OrchestratorServicer()  # type: ignore[abstract]  # RPCs not overridden answer UNIMPLEMENTED
    return ServiceSpec(
        "flame.orchestrator.v1.OrchestratorService",
        servicer,
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server,
        AccessRules(default=ALL_ROLES),
    )
