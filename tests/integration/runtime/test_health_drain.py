"""Health that probes can see (issue 11 item 5), over real gRPC on loopback with the tiny echo service:

- on shutdown the server reports NOT_SERVING *over the wire* (with the reason in trailing metadata) for the whole
  drain period, still answers new calls during it, lets in-flight calls finish, and is gone after drain + grace;
- an open response stream (a watch that never ends by itself) ends with UNAVAILABLE when the server stops taking
  calls, so a SIGTERM never waits out the whole grace period for it;
- a service's own health callback drives SERVING / NOT_SERVING with its reason;
- the interceptor's metrics count every call by method and code.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flame_control.runtime.config import FlameConfig
from flame_control.runtime.health import REASON_KEY
from flame_control.runtime.server import ServiceHost
from flame_control.runtime.service import ServiceSpec
from flame_control.runtime.testing import channel

sys.path.insert(0, str(Path(__file__).parent / "protos"))
protos, services = grpc.protos_and_services("runtimetest/echo.proto")
NAME = "runtimetest.EchoService"


class Slow(services.EchoServiceServicer):  # type: ignore[misc,name-defined]
    async def Echo(self, request: Any, context: Any) -> Any:
        if request.text == "slow":
            await asyncio.sleep(1.5)
        return protos.EchoResponse(text=request.text, calls=1)

    async def Count(self, request: Any, context: Any) -> Any:
        """A watch: ``n`` items, then waits for more forever."""
        for i in range(request.n):
            yield protos.CountResponse(i=i)
        await asyncio.Event().wait()


async def probe(target: str) -> tuple[str, str]:
    """One health Check over the network: (status or error code, reason)."""
    async with channel(target) as ch:
        call = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=NAME), timeout=2)
        try:
            reply = await call
        except grpc.aio.AioRpcError as err:
            return err.code().name, ""
        reason = dict(await call.trailing_metadata() or ()).get(REASON_KEY, "")
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), str(reason)


def test_stop_answers_not_serving_over_the_wire_during_drain_then_in_flight_calls_finish() -> None:
    async def scenario() -> None:
        host = ServiceHost(FlameConfig(shutdown_drain_s=1.0, shutdown_grace_s=5.0), settings={})
        port = await host.start_spec("echo", ServiceSpec(NAME, Slow(), services.add_EchoServiceServicer_to_server), 0)
        target = f"127.0.0.1:{port}"
        assert await probe(target) == ("SERVING", "")
        async with channel(target) as ch:
            stub = services.EchoServiceStub(ch)
            in_flight = asyncio.ensure_future(stub.Echo(protos.EchoRequest(text="slow")))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            stopping = asyncio.create_task(host.stop())
            await asyncio.sleep(0.1)
            status, reason = await probe(target)
            assert status == "NOT_SERVING" and "shutting down" in reason, (status, reason)
            # Still answering new work while load balancers notice.
            assert (await stub.Echo(protos.EchoRequest(text="new"), timeout=2)).text == "new"
            assert (await in_flight).text == "slow"
            await stopping
            elapsed = time.monotonic() - started
            assert 0.9 <= elapsed < 1.0 + 5.0 + 3.0, elapsed
        assert (await probe(target))[0] == "UNAVAILABLE"

    asyncio.run(scenario())


def test_an_open_watch_stream_ends_unavailable_at_stop_instead_of_holding_the_grace_period() -> None:
    async def scenario() -> None:
        host = ServiceHost(FlameConfig(shutdown_drain_s=0.5, shutdown_grace_s=30.0), settings={})
        port = await host.start_spec("echo", ServiceSpec(NAME, Slow(), services.add_EchoServiceServicer_to_server), 0)
        async with channel(f"127.0.0.1:{port}") as ch:
            stub = services.EchoServiceStub(ch)
            watch = stub.Count(protos.CountRequest(n=2))
            assert [(await watch.read()).i, (await watch.read()).i] == [0, 1]
            in_flight = asyncio.ensure_future(stub.Echo(protos.EchoRequest(text="slow")))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await host.stop()
            elapsed = time.monotonic() - started
            assert (await in_flight).text == "slow"  # unary calls still finish within the grace
            assert elapsed < 0.5 + 1.5 + 5.0, elapsed  # not 30 s of grace for the watch
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await watch.read()
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
            assert "shutting down" in (ended.value.details() or "")

    asyncio.run(scenario())


def test_service_health_callback_turns_not_serving_with_its_reason_and_back() -> None:
    async def scenario() -> None:
        problem: list[str | None] = ["backend session DOWN (pce 127.0.0.1:1)"]
        spec = ServiceSpec(NAME, Slow(), services.add_EchoServiceServicer_to_server, health=lambda: problem[0])
        host = ServiceHost(FlameConfig(shutdown_drain_s=0), settings={})
        try:
            target = f"127.0.0.1:{await host.start_spec('echo', spec, 0)}"
            assert await probe(target) == ("NOT_SERVING", "backend session DOWN (pce 127.0.0.1:1)")
            problem[0] = None
            deadline = time.monotonic() + 10
            while (await probe(target))[0] != "SERVING":
                assert time.monotonic() < deadline, "never turned SERVING"
                await asyncio.sleep(0.1)
        finally:
            await host.stop()

    asyncio.run(scenario())


def test_interceptor_counts_rpcs_by_method_and_code_with_latency() -> None:
    async def scenario() -> None:
        host = ServiceHost(FlameConfig(shutdown_drain_s=0), settings={})
        try:
            port = await host.start_spec(
                "echo", ServiceSpec(NAME, Slow(), services.add_EchoServiceServicer_to_server), 0
            )
            async with channel(f"127.0.0.1:{port}") as ch:
                stub = services.EchoServiceStub(ch)
                for _ in range(3):
                    await stub.Echo(protos.EchoRequest(text="x"))
                try:
                    await stub.NotBuilt(protos.EchoRequest(text="x"))
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
            reg = host.metrics.registry
            labels = {"service": NAME, "method": "Echo", "code": "OK"}
            assert reg.get_sample_value("flame_rpc_requests_total", labels) == 3
            assert reg.get_sample_value("flame_rpc_duration_seconds_count", {"service": NAME, "method": "Echo"}) == 3
            not_built = {"service": NAME, "method": "NotBuilt", "code": "UNIMPLEMENTED"}
            assert reg.get_sample_value("flame_rpc_requests_total", not_built) == 1
        finally:
            await host.stop()

    asyncio.run(scenario())
