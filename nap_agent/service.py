"""The NAP agent's local admin service (NapAgentService). Built so far: GetStatus and ListMappings over the agent's
state; the data plane (HTTP/IP over ICN) and the PCE session are the NAP agent issue (see docs/nap-agent.md), so
RegisterLocalService, UnregisterLocalService and ListSessions answer UNIMPLEMENTED for now."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from flame_control.api.flame.nap.v1 import nap_pb2, nap_pb2_grpc
from flame_control.runtime.service import ALL_ROLES, AccessRules, ServiceContext, ServiceSpec


class Settings(BaseModel):
    """`services.nap` config section."""

    model_config = ConfigDict(extra="forbid")

    #: This NAP's node id in the PCE topology.
    nap_id: str = "nap-1"
    #: Fabric transport: "emulated" (loopback, no root) or "raw" (AF_PACKET on an OVS-attached interface).
    transport: str = "emulated"
    #: PCE endpoints to connect to (host:port), tried in order with jittered backoff; empty = no PCE session.
    pce_endpoints: list[str] = []


class NapAgentServicer(nap_pb2_grpc.NapAgentServiceServicer):
    """NapAgentService."""

    def __init__(self, settings: Settings, wall: Any = time.time) -> None:
        self.settings = settings
        self.started_at = wall()

    async def GetStatus(self, request: nap_pb2.GetStatusRequest, context: Any) -> nap_pb2.GetStatusResponse:
        state = (
            nap_pb2.PCE_SESSION_STATE_DISABLED
            if not self.settings.pce_endpoints
            else nap_pb2.PCE_SESSION_STATE_CONNECTING
        )
        reply = nap_pb2.GetStatusResponse(
            nap_id=self.settings.nap_id, transport=self.settings.transport, pce_state=state
        )
        reply.started_at.FromNanoseconds(int(self.started_at * 1e9))
        return reply

    async def ListMappings(self, request: nap_pb2.ListMappingsRequest, context: Any) -> nap_pb2.ListMappingsResponse:
        return nap_pb2.ListMappingsResponse()


def build(ctx: ServiceContext) -> ServiceSpec:
    """The NAP agent's admin service for the runtime."""
    servicer = NapAgentServicer(ctx.settings)  # type: ignore[abstract]  # RPCs not overridden answer UNIMPLEMENTED
    return ServiceSpec(
        "flame.nap.v1.NapAgentService",
        servicer,
        nap_pb2_grpc.add_NapAgentServiceServicer_to_server,
        AccessRules(default=ALL_ROLES),
    )
