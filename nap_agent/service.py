"""The NAP agent's local admin service (flame.nap.v1.NapAgentService) over a running :class:`NapAgent`: status,
mappings (FQDN -> CID -> server NAPs, local services, IP prefixes), local service registration (announced to the PCE)
and the ICN sessions in flight."""

from __future__ import annotations

import time
from typing import Any

from flame_control.api.flame.nap.v1 import nap_pb2, nap_pb2_grpc
from flame_control.icn import cid as cidlib
from flame_control.runtime.errors import FieldViolation, InvalidArgument, NotFound
from flame_control.runtime.service import ALL_ROLES, OPERATORS, AccessRules, ServiceContext, ServiceSpec
from nap_agent import metrics
from nap_agent.agent import NapAgent, Settings
from pce.registry import check_fqdn

__all__ = ["NapAgentServicer", "Settings", "build"]


def _check_endpoint(text: str, field: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument([FieldViolation(field, "must be host:port with a port in 1..65535")])
    return text


class NapAgentServicer(nap_pb2_grpc.NapAgentServiceServicer):
    """NapAgentService."""

    def __init__(self, agent: NapAgent, wall: Any = time.time) -> None:
        self.agent = agent
        self.started_at = wall()

    async def GetStatus(self, request: nap_pb2.GetStatusRequest, context: Any) -> nap_pb2.GetStatusResponse:
        a = self.agent
        pce = a.pce
        c = a.dp.counters
        reply = nap_pb2.GetStatusResponse(
            nap_id=a.settings.nap_id,
            transport=a.settings.transport,
            pce_state=pce.state if pce is not None else nap_pb2.PCE_SESSION_STATE_DISABLED,
            pce_endpoint=pce.endpoint if pce is not None else "",
            snapshot_version=a.dp.routes.version,
            http_listen=f"{a.settings.http_listen.rpartition(':')[0]}:{a.http_port}" if a.http_port else "",
            http_requests=a.client.counters.requests,
            frames_sent=c.frames_sent,
            frames_received=c.frames_received,
            frames_dropped=c.frames_garbage + c.frames_not_for_us + c.frames_unknown_session + c.frames_invalid_path,
        )
        reply.started_at.FromNanoseconds(int(self.started_at * 1e9))
        return reply

    async def ListMappings(self, request: nap_pb2.ListMappingsRequest, context: Any) -> nap_pb2.ListMappingsResponse:
        routes = self.agent.dp.routes
        reply = nap_pb2.ListMappingsResponse()
        for fqdn in sorted(routes.by_fqdn):
            reply.fqdns.add(
                fqdn=fqdn,
                cid=cidlib.http_cid(fqdn).hex(),
                server_nap_ids=[r.server_nap_id for r in routes.by_fqdn[fqdn]],
            )
        for name, svc in sorted(self.agent.local.items()):
            reply.local_services.add(fqdn=name, endpoint=svc.endpoint)
        ip = self.agent.ip
        if ip is not None:
            for net in ip.own:
                reply.prefixes.add(prefix=str(net), nap_id=self.agent.settings.nap_id)
            for net, route in ip.table.entries:
                reply.prefixes.add(prefix=str(net), nap_id=route.server_nap_id)
        return reply

    async def RegisterLocalService(
        self, request: nap_pb2.RegisterLocalServiceRequest, context: Any
    ) -> nap_pb2.RegisterLocalServiceResponse:
        fqdn = check_fqdn(request.fqdn, "fqdn")
        endpoint = _check_endpoint(request.endpoint, "endpoint")
        svc = self.agent.register(fqdn, endpoint)
        return nap_pb2.RegisterLocalServiceResponse(service=nap_pb2.LocalService(fqdn=svc.fqdn, endpoint=svc.endpoint))

    async def UnregisterLocalService(
        self, request: nap_pb2.UnregisterLocalServiceRequest, context: Any
    ) -> nap_pb2.UnregisterLocalServiceResponse:
        fqdn = check_fqdn(request.fqdn, "fqdn")
        if not self.agent.unregister(fqdn):
            raise NotFound("local service", fqdn, f"{fqdn} is not a local service of this NAP")
        return nap_pb2.UnregisterLocalServiceResponse()

    async def ListSessions(self, request: nap_pb2.ListSessionsRequest, context: Any) -> nap_pb2.ListSessionsResponse:
        dp = self.agent.dp
        reply = nap_pb2.ListSessionsResponse()
        for ex in dp.exchanges.values():
            reply.sessions.add(
                session_id=ex.session,
                fqdn=ex.route.fqdn,
                peer_nap_id=ex.route.server_nap_id,
                role="client",
                bytes_sent=ex.up.bytes_sent,
                bytes_received=ex.down.bytes_received if ex.down is not None else 0,
                retransmissions=ex.up.retransmissions,
            )
        for sx in dp.server.values():
            group = dp.groups.get(dp.member_group.get(sx.session, -1))
            reply.sessions.add(
                session_id=sx.session,
                fqdn=dp.routes.by_cid.get(sx.cid, ""),
                role="server",
                bytes_sent=group.stream.bytes_sent if group is not None else 0,
                bytes_received=sx.recv.bytes_received,
                retransmissions=group.stream.retransmissions if group is not None else 0,
            )
        return reply


def build(ctx: ServiceContext) -> ServiceSpec:
    """The NAP agent (data plane + admin service) for the runtime."""
    settings: Settings = ctx.settings
    channel = ctx.channel_for
    if not settings.pce_endpoints:
        settings = settings.model_copy(update={"pce_endpoints": ["pce"]})
        channel = ctx.channel_to
    agent = NapAgent(settings, channel)
    servicer = NapAgentServicer(agent)
    return ServiceSpec(
        "flame.nap.v1.NapAgentService",
        servicer,
        nap_pb2_grpc.add_NapAgentServiceServicer_to_server,
        AccessRules(
            default=ALL_ROLES,
            methods={"RegisterLocalService": OPERATORS, "UnregisterLocalService": OPERATORS},
        ),
        on_start=agent.start,
        on_stop=agent.stop,
        health=lambda: metrics.health_reason(agent),
        metrics=lambda: metrics.collect(agent),
    )
