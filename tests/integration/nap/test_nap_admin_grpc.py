"""The NAP agent's admin service over real gRPC (flame.nap.v1.NapAgentService) on a running agent: status and mappings
reflect the PCE session, RegisterLocalService validates its input (INVALID_ARGUMENT with field violations) and is
announced to the PCE (SFR-11: another NAP gets the route), UnregisterLocalService of an unknown name is NOT_FOUND,
ListSessions shows exchanges."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2

from flame_control.api.flame.nap.v1 import nap_pb2, nap_pb2_grpc
from flame_control.runtime.service import ALL_ROLES, AccessRules, ServiceSpec
from flame_control.runtime.testing import channel, running_server
from nap_agent.service import NapAgentServicer
from tests.support.nap_env import emulated_edge, start_origin
from tests.support.procs import free_port, process_group

FQDN = "live.video.flame.example"


def violations(err: grpc.aio.AioRpcError) -> list[str]:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return [v.field for v in bad.field_violations]
    return []


def test_sfr11_admin_rpcs_register_announce_validate(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            origin = start_origin(group, "live")
            async with emulated_edge(tmp_path, {"nap-dc-2": [], "nap-edge-b2": []}) as env:
                agent = env.agents["nap-dc-2"]
                spec = ServiceSpec(
                    "flame.nap.v1.NapAgentService",
                    NapAgentServicer(agent),
                    nap_pb2_grpc.add_NapAgentServiceServicer_to_server,
                    AccessRules(default=ALL_ROLES),
                )
                async with running_server(spec) as target, channel(target) as ch:
                    stub = nap_pb2_grpc.NapAgentServiceStub(ch)
                    status = await stub.GetStatus(nap_pb2.GetStatusRequest())
                    assert status.nap_id == "nap-dc-2" and status.pce_state == nap_pb2.PCE_SESSION_STATE_CONNECTED
                    assert status.snapshot_version >= 1
                    for bad, fields in (
                        (nap_pb2.RegisterLocalServiceRequest(fqdn="bad name!", endpoint="127.0.0.1:1"), ["fqdn"]),
                        (nap_pb2.RegisterLocalServiceRequest(fqdn=FQDN, endpoint="nohost"), ["endpoint"]),
                        (nap_pb2.RegisterLocalServiceRequest(fqdn=FQDN, endpoint="127.0.0.1:70000"), ["endpoint"]),
                    ):
                        try:
                            await stub.RegisterLocalService(bad)
                            raise AssertionError("accepted bad input")
                        except grpc.aio.AioRpcError as err:
                            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
                            assert violations(err) == fields
                    reply = await stub.RegisterLocalService(
                        nap_pb2.RegisterLocalServiceRequest(fqdn=FQDN.upper(), endpoint=f"127.0.0.1:{origin}")
                    )
                    assert reply.service.fqdn == FQDN
                    await env.route_to("nap-edge-b2", FQDN, "nap-dc-2")  # announced over the NAP session
                    mappings = await stub.ListMappings(nap_pb2.ListMappingsRequest())
                    assert [s.fqdn for s in mappings.local_services] == [FQDN]
                    assert FQDN in [m.fqdn for m in mappings.fqdns]
                    sessions = await stub.ListSessions(nap_pb2.ListSessionsRequest())
                    assert list(sessions.sessions) == []
                    try:
                        await stub.UnregisterLocalService(nap_pb2.UnregisterLocalServiceRequest(fqdn="x.flame.example"))
                        raise AssertionError("unknown name unregistered")
                    except grpc.aio.AioRpcError as err:
                        assert err.code() == grpc.StatusCode.NOT_FOUND
                    await stub.UnregisterLocalService(nap_pb2.UnregisterLocalServiceRequest(fqdn=FQDN))
                    async with asyncio.timeout(10):
                        while env.agents["nap-edge-b2"].dp.routes.best(FQDN) is not None:
                            await asyncio.sleep(0.05)

    asyncio.run(scenario())


def test_pce_session_skips_a_dead_replica_and_reconnects(tmp_path: Path) -> None:
    async def scenario() -> None:
        dead = f"127.0.0.1:{free_port()}"
        async with emulated_edge(tmp_path, {"nap-edge-a1": []}, pce_before=[dead]) as env:
            link = env.agents["nap-edge-a1"].pce
            assert link is not None
            assert link.state == nap_pb2.PCE_SESSION_STATE_CONNECTED and link.endpoint == env.pce_target
            version = link.version
            # the PCE drops every session (as a PCE restart would): the NAP comes back by itself
            for queue in list(env.pce.queues.values()):
                queue.put_nowait(None)
            async with asyncio.timeout(15):
                while link.connects < 2:
                    await asyncio.sleep(0.05)
            assert link.state == nap_pb2.PCE_SESSION_STATE_CONNECTED and link.version >= version

    asyncio.run(scenario())
