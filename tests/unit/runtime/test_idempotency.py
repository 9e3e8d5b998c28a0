"""request_id idempotency for mutating RPCs (ARCHITECTURE section 3)."""

from __future__ import annotations

import asyncio

import pytest
from grpc_health.v1 import health_pb2

from flame_control.api.flame.common.v1 import common_pb2
from flame_control.runtime.errors import InvalidArgument
from flame_control.runtime.idempotency import IdempotencyCache, fingerprint, request_id_of


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_messages_without_request_id_field_are_not_cached() -> None:
    assert request_id_of(health_pb2.HealthCheckRequest(service="x")) is None
    assert request_id_of(common_pb2.GeoLocation(name="x")) is None


def _req(rid: str, service: str = "a") -> object:
    # HealthCheckRequest has no request_id; build a dynamic message that has one via the descriptor pool.
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    fdp = descriptor_pb2.FileDescriptorProto(name="t.proto", package="t")
    m = fdp.message_type.add(name="Req")
    m.field.add(name="request_id", number=1, type=9, label=1)
    m.field.add(name="service", number=2, type=9, label=1)
    pool.Add(fdp)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Req"))
    return cls(request_id=rid, service=service)


def test_retry_with_same_request_id_replays_without_running_again() -> None:
    cache = IdempotencyCache(Clock())
    calls = []

    async def call() -> str:
        calls.append(1)
        return f"response-{len(calls)}"

    async def scenario() -> tuple[str, str]:
        req = _req("r1")
        return await cache.run("/m", "alice", req, call), await cache.run("/m", "alice", req, call)  # type: ignore[arg-type]

    assert asyncio.run(scenario()) == ("response-1", "response-1")
    assert len(calls) == 1


def test_same_request_id_with_different_request_is_rejected() -> None:
    cache = IdempotencyCache(Clock())

    async def call() -> str:
        return "ok"

    async def scenario() -> None:
        await cache.run("/m", "alice", _req("r1", "a"), call)  # type: ignore[arg-type]
        await cache.run("/m", "alice", _req("r1", "b"), call)  # type: ignore[arg-type]

    with pytest.raises(InvalidArgument, match="request_id"):
        asyncio.run(scenario())


def test_failed_call_is_not_remembered_and_can_be_retried() -> None:
    cache = IdempotencyCache(Clock())
    attempts = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("backend down")
        return "ok"

    async def scenario() -> str:
        req = _req("r1")
        with pytest.raises(RuntimeError):
            await cache.run("/m", "alice", req, flaky)  # type: ignore[arg-type]
        return await cache.run("/m", "alice", req, flaky)  # type: ignore[arg-type]

    assert asyncio.run(scenario()) == "ok"
    assert len(attempts) == 2


def test_entries_expire_after_ttl_and_are_scoped_per_caller() -> None:
    clock = Clock()
    cache = IdempotencyCache(clock, ttl_s=10)
    n = []

    async def call() -> int:
        n.append(1)
        return len(n)

    async def scenario() -> list[int]:
        req = _req("r1")
        out = [await cache.run("/m", "alice", req, call)]  # type: ignore[arg-type]
        out.append(await cache.run("/m", "bob", req, call))  # type: ignore[arg-type]
        clock.now = 11
        out.append(await cache.run("/m", "alice", req, call))  # type: ignore[arg-type]
        return out

    assert asyncio.run(scenario()) == [1, 2, 3]


def test_concurrent_duplicates_wait_for_the_first() -> None:
    cache = IdempotencyCache(Clock())
    n = []

    async def slow() -> int:
        n.append(1)
        await asyncio.sleep(0.05)
        return 42

    async def scenario() -> list[int]:
        req = _req("r1")
        return list(await asyncio.gather(*(cache.run("/m", "a", req, slow) for _ in range(5))))  # type: ignore[arg-type]

    assert asyncio.run(scenario()) == [42] * 5
    assert len(n) == 1


def test_fingerprint_ignores_request_id() -> None:
    assert fingerprint(_req("a")) == fingerprint(_req("b"))  # type: ignore[arg-type]
    assert fingerprint(_req("a", "x")) != fingerprint(_req("a", "y"))  # type: ignore[arg-type]
