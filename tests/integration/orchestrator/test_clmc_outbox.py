"""Durable outbox of CLMC config events (issue 14 item 7, CLMC-4) over real gRPC: events published while the CLMC is
down survive the publisher's shutdown (and a crash: the outbox is SQLite) and are delivered by the next publisher on
the same file; a batch refused with INVALID_ARGUMENT is dropped and counted, not retried forever.

The receiving side is a recording ClmcService (a named stand-in: only PublishConfigEvents is served) so the test can
make it refuse batches; the CLMC's own refusal of poisoned batches is engineer i15's (issue 15)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, model_pb2
from flame_control.clmc_events import ConfigEventPublisher, config_event


class RecordingClmc(clmc_pb2_grpc.ClmcServiceServicer):
    """Stand-in CLMC: records config events, or refuses every batch with INVALID_ARGUMENT while ``refuse``."""

    def __init__(self) -> None:
        self.events: list[model_pb2.ConfigEvent] = []
        self.refuse = False

    async def PublishConfigEvents(
        self, request_iterator: AsyncIterator[clmc_pb2.PublishConfigEventsRequest], context: Any
    ) -> clmc_pb2.PublishConfigEventsResponse:
        async for req in request_iterator:
            if self.refuse:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "poisoned batch")
            self.events.extend(req.events)
        return clmc_pb2.PublishConfigEventsResponse()


def event(i: int) -> model_pb2.ConfigEvent:
    return config_event("sfemc", "endpoint", {"flame_sfe": f"vod/e{i}"}, message=f"event {i}")


async def until(predicate: Any, timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def test_clmc4_events_survive_shutdown_and_are_delivered_after_restart(tmp_path: Path) -> None:
    async def main() -> None:
        outbox = tmp_path / "outbox.sqlite"
        dead = grpc.aio.insecure_channel("127.0.0.1:1")
        first = ConfigEventPublisher(lambda: dead, outbox=outbox, interval_s=0.05)
        first.start()
        for i in range(5):
            first.publish(event(i))
        await first.stop(flush_timeout_s=0.5)
        assert first.published == 0
        await dead.close(None)

        clmc = RecordingClmc()
        server = grpc.aio.server()
        clmc_pb2_grpc.add_ClmcServiceServicer_to_server(clmc, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        second = ConfigEventPublisher(lambda: channel, outbox=outbox, interval_s=0.05)
        assert second.pending == 5
        second.start()
        await until(lambda: second.published == 5)
        assert [e.message for e in clmc.events] == [f"event {i}" for i in range(5)]
        assert second.pending == 0

        # A poisoned batch: dropped at once and counted, later events still delivered.
        clmc.refuse = True
        second.publish(event(5))
        await until(lambda: second.rejected == 1)
        assert second.pending == 0
        clmc.refuse = False
        second.publish(event(6))
        await until(lambda: second.published == 6)
        assert clmc.events[-1].message == "event 6"
        await second.stop()
        await channel.close(None)
        await server.stop(None)

    asyncio.run(main())
