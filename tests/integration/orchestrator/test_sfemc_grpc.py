"""SfemcService over real gRPC with token auth (SFEMC-5, SFEMC-6, SFEMC-7): bad input answered with field
violations and nothing applied, delegated name registration checked on ApplyEndpoints, endpoint images registered,
listed, refused deletion while in use, operator overrides validated, and a media service provider's viewpoint."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from flame_control.api.flame.common.v1 import common_pb2
from flame_control.api.flame.sfemc.v1 import sfemc_pb2, sfemc_pb2_grpc
from flame_control.runtime import testing
from flame_control.runtime.auth import hash_token
from flame_control.runtime.config import AuthConfig, TokenEntry
from flame_control.runtime.service import ServiceContext
from flame_control.sfemc.service import Settings, build

TOKENS = {
    "ops": ("component", "tok-ops"),
    "alice": ("media_service_provider", "tok-alice"),
    "bob": ("media_service_provider", "tok-bob"),
}


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                br = error_details_pb2.BadRequest()
                if detail.Unpack(br):
                    return {v.field: v.description for v in br.field_violations}
    return {}


def spec(node: str, fqdn: str, **kw: Any) -> sfemc_pb2.EndpointSpec:
    base: dict[str, Any] = dict(
        node_name=node,
        fqdn=fqdn,
        site="site-dc",
        nap_id="nap-dc",
        image="vod-media-server",
        vim="process",
        initial_state=common_pb2.ENDPOINT_STATE_PLACED,
    )
    base.update(kw)
    return sfemc_pb2.EndpointSpec(**base)


def serve(tmp_path: Path, scenario: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """Run ``scenario`` against a real SFEMC server with tokens for ops (component), alice and bob (providers)."""

    async def main() -> None:
        dead = testing.channel("127.0.0.1:1")  # no PCE/CLMC: the RPCs under test must not need them
        ctx = ServiceContext("sfemc", Settings(), tmp_path, channel_to=lambda key: dead)
        spec_ = build(ctx)
        auth = AuthConfig(
            enabled=True, tokens=[TokenEntry(subject=s, role=r, sha256=hash_token(t)) for s, (r, t) in TOKENS.items()]
        )
        async with testing.running_server(spec_, auth=auth) as target:
            stubs: dict[str, Any] = {
                s: sfemc_pb2_grpc.SfemcServiceStub(testing.channel(target, token=t)) for s, (_, t) in TOKENS.items()
            }
            stubs["servicer"] = spec_.servicer
            await scenario(stubs)
        await dead.close(None)

    asyncio.run(main())


def test_apply_endpoints_bad_input_lists_every_violation_and_applies_nothing(tmp_path: Path) -> None:
    async def scenario(stubs: dict[str, Any]) -> None:
        bad = sfemc_pb2.ApplyEndpointsRequest(
            request_id="r1",
            media_service="Not A Name",
            owner="alice",
            endpoints=[
                spec("origin", "not a fqdn!"),
                spec("origin", "vod.example.org", vim="nosuchvim"),
                spec("edge", "vod.example.org", image="unregistered", initial_state=common_pb2.ENDPOINT_STATE_FAILED),
            ],
            policies=[sfemc_pb2.SurrogatePolicy(name="p", targets=["ghost"], trigger=sfemc_pb2.Trigger(kpi="k"))],
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stubs["ops"].ApplyEndpoints(bad)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        fields = violations(info.value)
        for f in (
            "media_service",
            "endpoints[0].fqdn",
            "endpoints[1].node_name",
            "endpoints[1].vim",
            "endpoints[2].image",
            "endpoints[2].initial_state",
            "policies[0].targets[0]",
        ):
            assert f in fields, (f, fields)
        listed = await stubs["ops"].ListEndpoints(sfemc_pb2.ListEndpointsRequest())
        assert list(listed.endpoints) == []

    serve(tmp_path, scenario)


def test_sfemc7_delegated_name_registration_is_checked(tmp_path: Path) -> None:
    async def scenario(stubs: dict[str, Any]) -> None:
        """SFEMC-7/SFR-21: alice's service claims video.alice.example; bob may serve a name under it only after alice
        delegated the zone to him."""
        ops = stubs["ops"]
        await ops.ApplyEndpoints(
            sfemc_pb2.ApplyEndpointsRequest(
                request_id=uuid.uuid4().hex,
                media_service="alice-vod",
                owner="alice",
                endpoints=[spec("origin", "video.alice.example")],
            )
        )
        bob_req = sfemc_pb2.ApplyEndpointsRequest(
            request_id=uuid.uuid4().hex,
            media_service="bob-vod",
            owner="bob",
            endpoints=[spec("origin", "hd.video.alice.example")],
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ops.ApplyEndpoints(bob_req)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "DelegateName" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:  # bob cannot delegate alice's zone to himself
            await stubs["bob"].DelegateName(
                sfemc_pb2.DelegateNameRequest(request_id="d0", fqdn="video.alice.example", delegate="bob")
            )
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        got = await stubs["alice"].DelegateName(
            sfemc_pb2.DelegateNameRequest(request_id="d1", fqdn="video.alice.example", delegate="bob")
        )
        assert list(got.delegates) == ["bob"]
        bob_req.request_id = uuid.uuid4().hex
        await ops.ApplyEndpoints(bob_req)
        # The delegate's endpoint registers its name on the zone owner's behalf.
        servicer = stubs["servicer"]
        rec = servicer.table.endpoints["bob-vod/origin"]
        assert servicer._registrant(rec) == "alice"
        # Revoked: a new name under the zone is refused again.
        await stubs["alice"].DelegateName(
            sfemc_pb2.DelegateNameRequest(request_id="d2", fqdn="video.alice.example", delegate="bob", revoke=True)
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ops.ApplyEndpoints(
                sfemc_pb2.ApplyEndpointsRequest(
                    request_id=uuid.uuid4().hex,
                    media_service="bob-vod2",
                    owner="bob",
                    endpoints=[spec("origin", "sd.video.alice.example")],
                )
            )
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED

    serve(tmp_path, scenario)


def test_sfemc6_images_register_list_and_refuse_delete_in_use(tmp_path: Path) -> None:
    async def scenario(stubs: dict[str, Any]) -> None:
        ops = stubs["ops"]
        img = sfemc_pb2.EndpointImage(name="vod-docker", vim="docker", reference="flame/media:1")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ops.RegisterEndpointImage(
                sfemc_pb2.RegisterEndpointImageRequest(
                    request_id="i0", image=sfemc_pb2.EndpointImage(name="BAD NAME", vim="vmware", reference="")
                )
            )
        assert set(violations(info.value)) >= {"image.name", "image.vim", "image.reference"}
        await ops.RegisterEndpointImage(sfemc_pb2.RegisterEndpointImageRequest(request_id="i1", image=img))
        names = [i.name for i in (await ops.ListEndpointImages(sfemc_pb2.ListEndpointImagesRequest())).images]
        assert names == ["vod-docker", "vod-media-server"]
        await ops.ApplyEndpoints(
            sfemc_pb2.ApplyEndpointsRequest(
                request_id=uuid.uuid4().hex,
                media_service="vod",
                owner="alice",
                endpoints=[spec("origin", "vod.example.org")],
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ops.DeleteEndpointImage(
                sfemc_pb2.DeleteEndpointImageRequest(request_id="x1", name="vod-media-server")
            )
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        await ops.DeleteEndpointImage(sfemc_pb2.DeleteEndpointImageRequest(request_id="x2", name="vod-docker"))
        names = [i.name for i in (await ops.ListEndpointImages(sfemc_pb2.ListEndpointImagesRequest())).images]
        assert names == ["vod-media-server"]

    serve(tmp_path, scenario)


def test_override_validation_and_viewpoints(tmp_path: Path) -> None:
    async def scenario(stubs: dict[str, Any]) -> None:
        ops = stubs["ops"]
        await ops.ApplyEndpoints(
            sfemc_pb2.ApplyEndpointsRequest(
                request_id=uuid.uuid4().hex,
                media_service="vod",
                owner="alice",
                endpoints=[spec("origin", "vod.example.org")],
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ops.SetEndpointState(
                sfemc_pb2.SetEndpointStateRequest(
                    request_id="s1", endpoint_id="vod/origin", desired_state=common_pb2.ENDPOINT_STATE_BOOTING
                )
            )
        assert "desired_state" in violations(info.value)
        got = await ops.SetEndpointState(
            sfemc_pb2.SetEndpointStateRequest(
                request_id="s2", endpoint_id="vod/origin", desired_state=common_pb2.ENDPOINT_STATE_UNPLACED
            )
        )
        assert got.endpoint.overridden and got.endpoint.desired_state == common_pb2.ENDPOINT_STATE_UNPLACED
        # alice sees her service's endpoint, bob does not (and cannot tell it exists).
        assert [e.id for e in (await stubs["alice"].ListEndpoints(sfemc_pb2.ListEndpointsRequest())).endpoints] == [
            "vod/origin"
        ]
        assert list((await stubs["bob"].ListEndpoints(sfemc_pb2.ListEndpointsRequest())).endpoints) == []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stubs["bob"].GetEndpoint(sfemc_pb2.GetEndpointRequest(endpoint_id="vod/origin"))
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:  # providers do not drive endpoints directly
            await stubs["alice"].ApplyEndpoints(sfemc_pb2.ApplyEndpointsRequest(request_id="a", media_service="vod"))
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED

    serve(tmp_path, scenario)


def test_sfemc7_name_claim_is_released_when_its_last_endpoint_is_deleted(tmp_path: Path) -> None:
    """Issue 14 item 4: after alice's service is deleted (its endpoints removed), bob may claim the name (before, the
    claim stayed forever and bob was refused)."""

    async def scenario(stubs: dict[str, Any]) -> None:
        ops, servicer = stubs["ops"], stubs["servicer"]
        await ops.ApplyEndpoints(
            sfemc_pb2.ApplyEndpointsRequest(
                request_id=uuid.uuid4().hex, media_service="vod", owner="alice",
                endpoints=[spec("origin", "vod.video.flame.example")],
            )
        )  # fmt: skip
        await ops.ApplyEndpoints(
            sfemc_pb2.ApplyEndpointsRequest(request_id=uuid.uuid4().hex, media_service="vod", owner="alice")
        )
        for _ in range(300):
            if not servicer.table.endpoints:
                break
            await asyncio.sleep(0.05)
        assert not servicer.table.endpoints
        await ops.ApplyEndpoints(
            sfemc_pb2.ApplyEndpointsRequest(
                request_id=uuid.uuid4().hex, media_service="bob-vod", owner="bob",
                endpoints=[spec("origin", "VOD.video.flame.example")],
            )
        )  # fmt: skip
        assert servicer._registrant(servicer.table.endpoints["bob-vod/origin"]) == "bob"

    serve(tmp_path, scenario)
