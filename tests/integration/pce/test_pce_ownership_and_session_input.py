"""Issue 13 items 6 and 7 over real gRPC with bearer-token roles: only a registration's owner (or an operator) removes
it, so a provider refused a name cannot unregister it and then claim it (SFR-21); every malformed NapSession message,
FQDN or enum answers INVALID_ARGUMENT with the field named (garbage bytes first or after the Hello, unvalidated
interested FQDNs, an unknown metric number, an origin latitude of 1000), and every stream that ends is logged with its
reason."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from flame_control.api.flame.pce.v1 import nap_session_pb2, pce_pb2, pce_pb2_grpc, routing_pb2
from flame_control.runtime.auth import hash_token
from flame_control.runtime.config import AuthConfig, TokenEntry
from flame_control.runtime.testing import channel, running_server
from tests.integration.pce.test_pce_grpc import VOD, example, spec
from tests.integration.pce.test_pce_grpc_bad_input_and_logs import field_violations

TOKENS = {
    "ops": ("component", "tok-ops"),
    "admin": ("platform_operator", "tok-admin"),
    "alice": ("media_service_provider", "tok-alice"),
    "mallory": ("media_service_provider", "tok-mallory"),
    "nap2": ("component", "tok-nap2"),
}
AUTH = AuthConfig(
    enabled=True,
    tokens=[
        TokenEntry(subject=s, role=r, sha256=hash_token(t), nap_id="nap-dc-2" if s == "nap2" else "")
        for s, (r, t) in TOKENS.items()
    ],
)


def as_(who: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {TOKENS[who][1]}"),)


def serve(scenario: Callable[[pce_pb2_grpc.PceServiceStub, Any], Awaitable[None]], auth: bool = True) -> None:
    async def main() -> None:
        async with running_server(spec(), auth=AUTH if auth else None) as target, channel(target) as ch:
            stub = pce_pb2_grpc.PceServiceStub(ch)
            md = as_("ops") if auth else None
            await stub.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=example()), metadata=md)
            await scenario(stub, ch)

    asyncio.run(main())


def test_sfr21_only_the_owner_or_an_operator_unregisters_a_name_no_hijack() -> None:
    """Registrations come from the control plane on a provider's behalf or from the NAP itself (issue 12 item 6); a
    provider refused another's name can neither unregister it nor claim it, and a NAP cannot attach to a provider's
    name by naming the provider as owner."""

    async def scenario(stub: pce_pb2_grpc.PceServiceStub, ch: Any) -> None:
        def register(nap: str, owner: str = "") -> pce_pb2.RegisterFqdnRequest:
            return pce_pb2.RegisterFqdnRequest(fqdn=VOD, nap_id=nap, owner=owner)

        async def refused(call: Awaitable[Any]) -> None:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

        await stub.RegisterFqdn(register("nap-dc", "alice"), metadata=as_("ops"))
        await refused(stub.RegisterFqdn(register("nap-dc-2", "mallory"), metadata=as_("ops")))
        await refused(stub.RegisterFqdn(register("nap-dc-2"), metadata=as_("mallory")))
        unregister = pce_pb2.UnregisterFqdnRequest(fqdn=VOD, nap_id="nap-dc")
        await refused(stub.UnregisterFqdn(unregister, metadata=as_("mallory")))
        await refused(stub.UnregisterFqdn(unregister, metadata=as_("nap2")))
        await refused(stub.RegisterFqdn(register("nap-dc-2", "alice"), metadata=as_("nap2")))
        listed = await stub.ListRegistrations(pce_pb2.ListRegistrationsRequest(), metadata=as_("alice"))
        assert [(r.fqdn, r.nap_id, r.owner) for r in listed.registrations] == [(VOD, "nap-dc", "alice")]
        # the control plane removes it on the owner's behalf; an operator may remove anyone's
        await stub.RegisterFqdn(register("nap-dc-2", "alice"), metadata=as_("ops"))
        await stub.UnregisterFqdn(unregister, metadata=as_("ops"))
        await stub.UnregisterFqdn(pce_pb2.UnregisterFqdnRequest(fqdn=VOD, nap_id="nap-dc-2"), metadata=as_("admin"))
        listed = await stub.ListRegistrations(pce_pb2.ListRegistrationsRequest(), metadata=as_("alice"))
        assert list(listed.registrations) == []

    serve(scenario)


def raw_session(ch: Any) -> Any:
    return ch.stream_stream(
        "/flame.pce.v1.PceService/NapSession",
        request_serializer=lambda b: b,
        response_deserializer=nap_session_pb2.NapSessionResponse.FromString,
    )


async def run_stream(ch: Any, frames: list[bytes], pause: float = 0.3) -> tuple[grpc.StatusCode, list[str], str]:
    """Send raw frames (with a pause after each); (final code, response kinds, details)."""

    async def requests() -> AsyncIterator[bytes]:
        for f in frames:
            yield f
            await asyncio.sleep(pause)
        await asyncio.sleep(3)

    call = raw_session(ch)(requests())
    kinds = []
    try:
        async for msg in call:
            kinds.append(msg.WhichOneof("message"))
    except grpc.aio.AioRpcError as err:
        return err.code(), kinds, err.details() or ""
    return await call.code(), kinds, ""


def hello(**kw: Any) -> bytes:
    return nap_session_pb2.NapSessionRequest(hello=nap_session_pb2.Hello(**kw)).SerializeToString()


GARBAGE = b"\xff\xff\xff\x01garbage"


def test_napsession_garbage_first_or_after_hello_is_invalid_argument_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(stub: pce_pb2_grpc.PceServiceStub, ch: Any) -> None:
        code, kinds, details = await run_stream(ch, [GARBAGE])
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "hello" in details and kinds == []
        code, kinds, details = await run_stream(ch, [hello(nap_id="nap-dc"), GARBAGE])
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "messages[1]" in details and kinds == ["snapshot"]
        empty = nap_session_pb2.NapSessionRequest().SerializeToString()
        code, _, details = await run_stream(ch, [hello(nap_id="nap-dc"), empty])
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "messages[1]" in details
        code, _, details = await run_stream(ch, [hello(nap_id="nap-dc"), hello(nap_id="nap-dc")])
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "messages[1].hello" in details

    with caplog.at_level(logging.INFO, logger="flame.pce"):
        serve(scenario, auth=False)
    closed = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "nap session closed"]
    assert len(closed) == 3 and all(c["reason"].startswith("bad input: ") for c in closed), closed
    refused = [r for r in caplog.records if r.getMessage() == "nap session refused"]
    assert len(refused) == 1


def test_napsession_bad_fqdns_in_hello_are_each_named() -> None:
    async def scenario(stub: pce_pb2_grpc.PceServiceStub, ch: Any) -> None:
        frame = hello(nap_id="nap-dc", interested_fqdns=[VOD, "not a name!", "x"], local_fqdns=["-bad-.example"])
        code, kinds, details = await run_stream(ch, [frame])
        assert code == grpc.StatusCode.INVALID_ARGUMENT and kinds == []
        for path in ("hello.interested_fqdns[1]", "hello.interested_fqdns[2]", "hello.local_fqdns[0]"):
            assert path in details
        assert "interested_fqdns[0]" not in details

    serve(scenario, auth=False)


def test_a_closed_stream_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(stub: pce_pb2_grpc.PceServiceStub, ch: Any) -> None:
        async def requests() -> AsyncIterator[nap_session_pb2.NapSessionRequest]:
            yield nap_session_pb2.NapSessionRequest(hello=nap_session_pb2.Hello(nap_id="nap-dc"))
            await asyncio.sleep(0.3)  # then the NAP half-closes

        call = stub.NapSession(requests())
        async for _ in call:
            pass
        assert await call.code() == grpc.StatusCode.OK

    with caplog.at_level(logging.INFO, logger="flame.pce"):
        serve(scenario, auth=False)
    closed = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "nap session closed"]
    assert closed == [{"nap": "nap-dc", "reason": "the NAP closed its stream"}]


@pytest.mark.parametrize(
    ("constraints", "field"),
    [
        (routing_pb2.PathConstraints(metric=99), "constraints.metric"),  # type: ignore[arg-type]
        (routing_pb2.PathConstraints(geo=routing_pb2.GeoConstraint(origin={"latitude": 1000})), "latitude"),
        (routing_pb2.PathConstraints(geo=routing_pb2.GeoConstraint(origin={"longitude": -181})), "longitude"),
    ],
)
def test_resolve_path_bad_enum_or_origin_is_invalid_argument_in_rpc_and_on_the_stream(
    constraints: routing_pb2.PathConstraints, field: str
) -> None:
    async def scenario(stub: pce_pb2_grpc.PceServiceStub, ch: Any) -> None:
        await stub.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn=VOD, nap_id="nap-dc"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ResolvePath(
                pce_pb2.ResolvePathRequest(client_nap_id="nap-edge-a1", fqdn=VOD, constraints=constraints)
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert any(field in f for f in field_violations(err.value)), field_violations(err.value)
        ask = nap_session_pb2.NapSessionRequest(
            path_request=nap_session_pb2.PathRequest(correlation_id="p1", fqdn=VOD, constraints=constraints)
        )
        _, kinds, _ = await run_stream(ch, [hello(nap_id="nap-edge-a1"), ask.SerializeToString()], pause=0.5)
        assert "path_reply" in kinds

    serve(scenario, auth=False)
