"""A restarted single PCE resumes from its embedded durable store (issue 13, SFR-20): the topology that came over
ApplyTopology, its LIDs, link states, registrations with their owners, claims and delegations, and the version
counters are back; a NAP that reconnects with the version it applied gets no re-push when nothing changed, and the
next change continues the version sequence. Real gRPC servers built by ``pce.service.build`` on one state directory."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from flame_control.api.flame.pce.v1 import nap_session_pb2, pce_pb2, pce_pb2_grpc
from flame_control.runtime.testing import channel, running_server
from pce.service import PceServicer, Settings, build
from tests.integration.pce.test_pce_grpc import VOD, Nap, example


def pce(state: Path, **settings: Any) -> Any:
    from flame_control.runtime.service import ServiceContext

    ctx = ServiceContext(
        "pce",
        Settings(fabric="none", **settings),
        state,
        channel_to=lambda key: None,  # type: ignore[arg-type,return-value]
    )
    return build(ctx)


async def snapshot_state(stub: pce_pb2_grpc.PceServiceStub) -> tuple[Any, Any]:
    topo = await stub.GetTopology(pce_pb2.GetTopologyRequest())
    regs = await stub.ListRegistrations(pce_pb2.ListRegistrationsRequest())
    return topo, regs


def test_sfr20_restarted_pce_resumes_topology_lids_links_registrations_and_versions(tmp_path: Path) -> None:
    async def scenario() -> None:
        first = pce(tmp_path)
        async with running_server(first) as target, channel(target) as ch:
            stub = pce_pb2_grpc.PceServiceStub(ch)
            await stub.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=example()))
            await stub.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn=VOD, nap_id="nap-dc", owner="acme"))
            await stub.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn="live.flame.example", nap_id="nap-dc-2"))
            await stub.UpdateLinkState(pce_pb2.UpdateLinkStateRequest(link_id="dc-a", up=False))
            nap = Nap(stub, "nap-edge-a1")
            snap = (await nap.next()).snapshot
            nap.send(ack=nap_session_pb2.Ack(version=snap.version))
            await asyncio.sleep(0.2)
            await nap.close()
            before = await snapshot_state(stub)
            path_before = await stub.ResolvePath(pce_pb2.ResolvePathRequest(client_nap_id="nap-edge-a1", fqdn=VOD))
        servicer: PceServicer = first.servicer
        assert servicer.core.registry.claims[VOD] == "acme"

        second = pce(tmp_path)
        async with running_server(second) as target, channel(target) as ch:
            stub = pce_pb2_grpc.PceServiceStub(ch)
            after = await snapshot_state(stub)
            assert after == before  # topology (with dc-a down), every LID, version, registrations with owners
            assert next(lk for lk in after[0].topology.links if lk.id == "dc-a").down
            path_after = await stub.ResolvePath(pce_pb2.ResolvePathRequest(client_nap_id="nap-edge-a1", fqdn=VOD))
            assert path_after == path_before and "dc-a" not in path_after.path.link_ids
            assert second.servicer.core.registry.claims[VOD] == "acme"
            # the NAP resumes with the version it applied: nothing changed, nothing is pushed
            nap = Nap(stub, "nap-edge-a1", last=snap.version)
            with pytest.raises(asyncio.TimeoutError):
                await nap.next(timeout=0.5)
            # the next change continues the NAP's version sequence
            await stub.UpdateLinkState(pce_pb2.UpdateLinkStateRequest(link_id="dc-a", up=True))
            new = (await nap.next()).snapshot
            assert new.version == snap.version + 1
            await nap.close()

    asyncio.run(scenario())


def test_sfr20_a_nap_with_an_older_version_gets_the_current_snapshot_after_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_server(pce(tmp_path)) as target, channel(target) as ch:
            stub = pce_pb2_grpc.PceServiceStub(ch)
            await stub.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=example()))
            await stub.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn=VOD, nap_id="nap-dc"))
            nap = Nap(stub, "nap-edge-b1")
            snap = (await nap.next()).snapshot
            await nap.close()
        async with running_server(pce(tmp_path)) as target, channel(target) as ch:
            stub = pce_pb2_grpc.PceServiceStub(ch)
            nap = Nap(stub, "nap-edge-b1", last=snap.version - 1)  # it never applied the last one
            again = (await nap.next()).snapshot
            assert again.version > snap.version and list(again.routes) == list(snap.routes)
            await nap.close()

    asyncio.run(scenario())


def test_sfr20_an_edited_topology_file_wins_over_stored_state_an_unchanged_one_does_not(tmp_path: Path) -> None:
    import yaml

    from pce.topology import load_file, to_proto

    src = Path(__file__).resolve().parents[3] / "examples" / "topologies" / "flame-integration.yaml"
    topo_file = tmp_path / "topo.yaml"
    topo_file.write_text(src.read_text())

    async def run(check: Any) -> None:
        async with running_server(pce(tmp_path / "state", topology_file=topo_file)) as target, channel(target) as ch:
            await check(pce_pb2_grpc.PceServiceStub(ch))

    async def take_down(stub: pce_pb2_grpc.PceServiceStub) -> None:
        await stub.UpdateLinkState(pce_pb2.UpdateLinkStateRequest(link_id="a-b", up=False))

    async def still_down(stub: pce_pb2_grpc.PceServiceStub) -> None:
        topo = (await stub.GetTopology(pce_pb2.GetTopologyRequest())).topology
        assert next(lk for lk in topo.links if lk.id == "a-b").down

    async def file_applied(stub: pce_pb2_grpc.PceServiceStub) -> None:
        topo = (await stub.GetTopology(pce_pb2.GetTopologyRequest())).topology
        assert next(lk for lk in topo.links if lk.id == "a-b").weight == 7

    asyncio.run(run(take_down))
    asyncio.run(run(still_down))
    data = yaml.safe_load(topo_file.read_text())
    next(lk for lk in data["links"] if lk["id"] == "a-b")["weight"] = 7
    topo_file.write_text(yaml.safe_dump(data))
    assert to_proto(load_file(topo_file)) != to_proto(load_file(src))
    asyncio.run(run(file_applied))
