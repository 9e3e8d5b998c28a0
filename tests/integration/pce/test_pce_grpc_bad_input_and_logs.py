"""PceService over real gRPC: requests naming things the topology lacks are refused with the field named and nothing
applied (no registration, no claim, no link change, no version bump, no push); ACKs and NACKs of snapshots are logged
with the NAP and the version (issue: ACK/NACK visible in an RPC and in logs)."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from flame_control.api.flame.pce.v1 import nap_session_pb2, pce_pb2, pce_pb2_grpc
from flame_control.runtime.service import ServiceSpec
from flame_control.runtime.testing import channel, running_server
from pce.core import PceCore
from pce.service import ACCESS, PceServicer
from tests.integration.pce.test_pce_grpc import VOD, Nap, example


def field_violations(err: grpc.aio.AioRpcError) -> list[str]:
    """Fields named by the google.rpc.BadRequest detail of a status."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return [v.field for v in bad.field_violations]
    return []


def serve() -> tuple[PceServicer, ServiceSpec]:
    servicer = PceServicer(PceCore())
    return servicer, ServiceSpec(
        "flame.pce.v1.PceService", servicer, pce_pb2_grpc.add_PceServiceServicer_to_server, ACCESS
    )


def test_register_fqdn_behind_an_unknown_nap_is_invalid_argument_and_applies_nothing() -> None:
    async def scenario() -> None:
        servicer, spec = serve()
        async with running_server(spec) as target, channel(target) as ch:
            stub = pce_pb2_grpc.PceServiceStub(ch)
            await stub.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=example()))
            nap = Nap(stub, "nap-edge-a1")
            first = (await nap.next()).snapshot
            for nap_id in ("nap-nowhere", "sw-dc"):  # unknown, and a node that is not a NAP
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn=VOD, nap_id=nap_id))
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert field_violations(err.value) == ["nap_id"]
                assert nap_id in (err.value.details() or "")
            listed = await stub.ListRegistrations(pce_pb2.ListRegistrationsRequest())
            assert list(listed.registrations) == []
            assert servicer.core.registry.claims == {}  # the name was not claimed either
            with pytest.raises(asyncio.TimeoutError):
                await nap.next(timeout=0.3)  # nothing pushed
            # the same name behind a real NAP is then accepted and pushed
            await stub.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn=VOD, nap_id="nap-dc"))
            later = (await nap.next()).snapshot
            assert later.version == first.version + 1 and [r.fqdn for r in later.routes] == [VOD]
            await nap.close()

    asyncio.run(scenario())


def test_update_link_state_of_an_unknown_link_is_invalid_argument_and_applies_nothing() -> None:
    async def scenario() -> None:
        servicer, spec = serve()
        async with running_server(spec) as target, channel(target) as ch:
            stub = pce_pb2_grpc.PceServiceStub(ch)
            await stub.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=example()))
            await stub.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn=VOD, nap_id="nap-dc"))
            nap = Nap(stub, "nap-edge-a1")
            await nap.next()
            before = await stub.GetTopology(pce_pb2.GetTopologyRequest())
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.UpdateLinkState(pce_pb2.UpdateLinkStateRequest(link_id="dc-nowhere", up=False))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field_violations(err.value) == ["link_id"]
            assert "dc-nowhere" in (err.value.details() or "")
            after = await stub.GetTopology(pce_pb2.GetTopologyRequest())
            assert after.version == before.version and after.topology == before.topology
            assert not any(link.down for link in servicer.core.topology.links.values())
            with pytest.raises(asyncio.TimeoutError):
                await nap.next(timeout=0.3)
            await nap.close()

    asyncio.run(scenario())


def test_acks_and_nacks_are_logged_with_the_nap_and_the_version(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        servicer, spec = serve()
        servicer.sessions.backoff_start_s = 0.05
        async with running_server(spec) as target, channel(target) as ch:
            stub = pce_pb2_grpc.PceServiceStub(ch)
            await stub.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=example()))
            nap = Nap(stub, "nap-edge-b1")
            snap = (await nap.next()).snapshot
            nap.send(ack=nap_session_pb2.Ack(version=snap.version))
            record = servicer.sessions.records["nap-edge-b1"]
            while record.acked_version != snap.version:
                await asyncio.sleep(0.01)
            await stub.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn=VOD, nap_id="nap-dc"))
            second = (await nap.next()).snapshot
            error = {"code": code_pb2.INVALID_ARGUMENT, "message": "cannot program"}
            nap.send(nack=nap_session_pb2.Nack(version=second.version, error=error))
            while record.nack_count == 0:
                await asyncio.sleep(0.01)
            assert record.acked_version == snap.version
            await nap.close()
            versions[:] = [snap.version, second.version]

    versions: list[int] = []
    with caplog.at_level(logging.INFO, logger="flame.pce"):
        asyncio.run(scenario())
    logged = [(r.getMessage(), getattr(r, "fields", {})) for r in caplog.records if r.name == "flame.pce"]
    acks = [f for m, f in logged if m == "snapshot acked"]
    nacks = [f for m, f in logged if m == "snapshot nacked"]
    assert acks == [{"nap": "nap-edge-b1", "version": versions[0], "acked_version": versions[0], "pushed_version": 1}]
    assert len(nacks) == 1
    assert nacks[0]["nap"] == "nap-edge-b1" and nacks[0]["version"] == versions[1]
    assert nacks[0]["error"] == "cannot program"
    ack_record = next(r for r in caplog.records if r.getMessage() == "snapshot acked")
    assert ack_record.levelno == logging.INFO
