"""The service runtime over real gRPC on loopback: error details, idempotent retries, UNIMPLEMENTED, roles, mTLS.

Uses a tiny test-only service (tests/integration/runtime/protos) so the runtime is proven independently of any FLAME
service; the per-service proofs through `flame up` are in tests/integration/test_flame_up.py.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from flame_control.runtime.auth import hash_token
from flame_control.runtime.config import AuthConfig, TlsConfig, TokenEntry
from flame_control.runtime.errors import Violations
from flame_control.runtime.service import AccessRules, Role, ServiceSpec
from flame_control.runtime.testing import channel, running_server
from flame_control.runtime.tlsgen import write_dev_pki

sys.path.insert(0, str(Path(__file__).parent / "protos"))
protos, services = grpc.protos_and_services("runtimetest/echo.proto")


class Echo(services.EchoServiceServicer):  # type: ignore[misc,name-defined]
    def __init__(self) -> None:
        self.calls = 0

    async def Echo(self, request: Any, context: Any) -> Any:
        v = Violations()
        v.check(bool(request.text), "text", "must not be empty")
        v.check(len(request.text) <= 10, "text", "at most 10 characters")
        v.raise_if_any()
        self.calls += 1
        if request.text == "boom":
            raise RuntimeError("secret internal detail")
        return protos.EchoResponse(text=request.text, calls=self.calls)

    async def Count(self, request: Any, context: Any) -> AsyncIterator[Any]:
        for i in range(request.n):
            yield protos.CountResponse(i=i)


def spec(access: AccessRules | None = None) -> tuple[ServiceSpec, Echo]:
    servicer = Echo()
    return ServiceSpec(
        "runtimetest.EchoService", servicer, services.add_EchoServiceServicer_to_server, access or AccessRules()
    ), servicer


def rich_status(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no google.rpc.Status in trailers")


def test_invalid_argument_lists_every_field_violation() -> None:
    async def scenario() -> None:
        s, _ = spec()
        async with running_server(s) as target, channel(target) as ch:
            stub = services.EchoServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Echo(protos.EchoRequest(text=""))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            bad = error_details_pb2.BadRequest()
            assert rich_status(info.value).details[0].Unpack(bad)
            assert [(f.field, f.description) for f in bad.field_violations] == [("text", "must not be empty")]

    asyncio.run(scenario())


def test_unexpected_errors_become_internal_without_leaking_details() -> None:
    async def scenario() -> None:
        s, _ = spec()
        async with running_server(s) as target, channel(target) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await services.EchoServiceStub(ch).Echo(protos.EchoRequest(text="boom"))
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert "secret" not in (info.value.details() or "")

    asyncio.run(scenario())


def test_retry_with_same_request_id_runs_once() -> None:
    async def scenario() -> None:
        s, servicer = spec()
        async with running_server(s) as target, channel(target) as ch:
            stub = services.EchoServiceStub(ch)
            a = await stub.Echo(protos.EchoRequest(request_id="r-1", text="hi"))
            b = await stub.Echo(protos.EchoRequest(request_id="r-1", text="hi"))
            assert (a.calls, b.calls, servicer.calls) == (1, 1, 1)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Echo(protos.EchoRequest(request_id="r-1", text="other"))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            c = await stub.Echo(protos.EchoRequest(text="hi"))
            assert c.calls == 2

    asyncio.run(scenario())


def test_rpc_not_built_answers_unimplemented_and_streams_work() -> None:
    async def scenario() -> None:
        s, _ = spec()
        async with running_server(s) as target, channel(target) as ch:
            stub = services.EchoServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.NotBuilt(protos.EchoRequest(text="x"))
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert [r.i async for r in stub.Count(protos.CountRequest(n=3))] == [0, 1, 2]

    asyncio.run(scenario())


def test_token_roles_permission_denied_and_allowed() -> None:
    tokens = AuthConfig(
        enabled=True,
        tokens=[
            TokenEntry(subject="ana", role="analyst", sha256=hash_token("tok-analyst")),
            TokenEntry(subject="ops", role="platform_operator", sha256=hash_token("tok-ops")),
            TokenEntry(subject="msp", role="media_service_provider", sha256=hash_token("tok-msp")),
        ],
    )
    rules = AccessRules(default=frozenset({Role.MEDIA_SERVICE_PROVIDER}), methods={"Count": frozenset({Role.ANALYST})})

    async def call(target: str, token: str | None) -> grpc.StatusCode:
        async with channel(target, token) as ch:
            try:
                await services.EchoServiceStub(ch).Echo(protos.EchoRequest(text="hi"))
            except grpc.aio.AioRpcError as err:
                return err.code()
            return grpc.StatusCode.OK

    async def scenario() -> None:
        s, _ = spec(rules)
        async with running_server(s, auth=tokens) as target:
            assert await call(target, None) == grpc.StatusCode.UNAUTHENTICATED
            assert await call(target, "wrong") == grpc.StatusCode.UNAUTHENTICATED
            assert await call(target, "tok-analyst") == grpc.StatusCode.PERMISSION_DENIED
            assert await call(target, "tok-msp") == grpc.StatusCode.OK
            assert await call(target, "tok-ops") == grpc.StatusCode.OK

    asyncio.run(scenario())


def test_mtls_refuses_a_client_without_certificate(tmp_path: Path) -> None:
    pki = write_dev_pki(tmp_path)
    server_tls = TlsConfig(enabled=True, cert=pki["server_cert"], key=pki["server_key"], client_ca=pki["ca"])
    with_cert = TlsConfig(
        enabled=True, client_ca=pki["ca"], client_cert=pki["client_cert"], client_key=pki["client_key"]
    )
    without_cert = TlsConfig(enabled=True, client_ca=pki["ca"])

    async def call(target: str, tls: TlsConfig) -> grpc.StatusCode:
        async with channel(target, tls=tls) as ch:
            try:
                await services.EchoServiceStub(ch).Echo(protos.EchoRequest(text="hi"), timeout=5)
            except grpc.aio.AioRpcError as err:
                return err.code()
            return grpc.StatusCode.OK

    async def scenario() -> None:
        s, _ = spec()
        async with running_server(s, tls=server_tls) as target:
            target = target.replace("127.0.0.1", "localhost")
            assert await call(target, with_cert) == grpc.StatusCode.OK
            assert await call(target, without_cert) == grpc.StatusCode.UNAVAILABLE
            async with grpc.aio.insecure_channel(target) as plain:
                with pytest.raises(grpc.aio.AioRpcError):
                    await services.EchoServiceStub(plain).Echo(protos.EchoRequest(text="hi"), timeout=5)

    asyncio.run(scenario())


def test_graceful_shutdown_reports_not_serving_and_lets_in_flight_calls_finish() -> None:
    from grpc_health.v1 import health_pb2

    from flame_control.runtime.config import FlameConfig
    from flame_control.runtime.server import ServiceHost

    class Slow(Echo):
        async def Echo(self, request: Any, context: Any) -> Any:
            await asyncio.sleep(0.5)
            return protos.EchoResponse(text=request.text, calls=1)

    async def scenario() -> None:
        host = ServiceHost(FlameConfig(shutdown_grace_s=5.0), settings={})
        slow = Slow()
        port = await host.start_spec(
            "echo", ServiceSpec("runtimetest.EchoService", slow, services.add_EchoServiceServicer_to_server), 0
        )
        async with channel(f"127.0.0.1:{port}") as ch:
            in_flight = asyncio.ensure_future(services.EchoServiceStub(ch).Echo(protos.EchoRequest(text="hi")))
            await asyncio.sleep(0.1)
            health = host.running["echo"].health
            stopping = asyncio.create_task(host.stop())
            await asyncio.sleep(0.05)
            status = await health.Check(health_pb2.HealthCheckRequest(service="runtimetest.EchoService"), None)
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
            reply = await in_flight
            assert reply.text == "hi"
            await stopping

    asyncio.run(scenario())
