"""The CLMC's gRPC adapter. Built so far: GetInformationModel. Every other ClmcService RPC answers UNIMPLEMENTED
until the CLMC issue lands (see docs/clmc.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from clmc.model import information_model
from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc
from flame_control.runtime.service import ALL_ROLES, AccessRules, ServiceContext, ServiceSpec


class Settings(BaseModel):
    """`services.clmc` config section."""

    model_config = ConfigDict(extra="forbid")

    #: Storage backend: "embedded" (a local file database, the default).
    backend: str = "embedded"


class ClmcServicer(clmc_pb2_grpc.ClmcServiceServicer):
    """ClmcService."""

    async def GetInformationModel(
        self, request: clmc_pb2.GetInformationModelRequest, context: Any
    ) -> clmc_pb2.GetInformationModelResponse:
        return clmc_pb2.GetInformationModelResponse(model=information_model())


def build(ctx: ServiceContext) -> ServiceSpec:
    """The CLMC service for the runtime."""
    servicer = ClmcServicer()  # type: ignore[abstract]  # RPCs not overridden answer UNIMPLEMENTED
    return ServiceSpec(
        "flame.clmc.v1.ClmcService",
        servicer,
        clmc_pb2_grpc.add_ClmcServiceServicer_to_server,
        AccessRules(default=ALL_ROLES),
    )
