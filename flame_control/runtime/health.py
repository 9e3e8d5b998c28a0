"""``grpc.health.v1`` with reasons: every FLAME server answers Check with SERVING / NOT_SERVING and, when not serving,
says why in the trailing metadata key ``flame-health-reason`` (``flame status`` prints it).

A service reports its own readiness through ``ServiceSpec.health`` (a callable returning ``None`` when healthy or a
reason string, e.g. the NAP agent while its PCE session is down); :class:`HealthReporter` polls it. On shutdown the
runtime calls :meth:`ReasonedHealth.enter_graceful_shutdown` first, so probes see NOT_SERVING for the whole drain period
while the server still answers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from grpc_health.v1 import _async as health_aio  # the module behind health.aio
from grpc_health.v1 import health_pb2

log = logging.getLogger("flame.runtime")

#: Trailing metadata key carrying why a service is NOT_SERVING.
REASON_KEY = "flame-health-reason"
SHUTTING_DOWN = "shutting down (draining in-flight calls)"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ReasonedHealth(health_aio.HealthServicer):  # type: ignore[misc]
    """The reference asyncio health servicer plus a reason per service name."""

    def __init__(self) -> None:
        super().__init__()
        self.reasons: dict[str, str] = {}

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        reply = await super().Check(request, context)
        reason = self.reasons.get(request.service, "")
        if reason and context is not None:
            # gRPC metadata values must be printable ASCII.
            context.set_trailing_metadata(((REASON_KEY, reason.encode("ascii", "replace").decode()),))
        return reply

    async def report(self, names: Sequence[str], reason: str | None) -> None:
        """SERVING for ``names`` when ``reason`` is None, else NOT_SERVING with that reason (ignored once shutting
        down: the shutdown status is final)."""
        if self._gracefully_shutting_down:
            return
        for name in names:
            self.reasons[name] = reason or ""
            await self.set(name, SERVING if reason is None else NOT_SERVING)

    async def enter_graceful_shutdown(self) -> None:
        for name in list(self._server_status):
            self.reasons[name] = SHUTTING_DOWN
        await super().enter_graceful_shutdown()


class HealthReporter:
    """Polls a service's ``health`` callable and reports transitions (logged once each, with the reason)."""

    def __init__(
        self, health: ReasonedHealth, names: Sequence[str], probe: Callable[[], str | None], interval_s: float = 0.25
    ) -> None:
        self.health, self.names, self.probe, self.interval_s = health, list(names), probe, interval_s
        self.last: str | None = "unknown"
        self._task: asyncio.Task[None] | None = None

    async def update(self) -> None:
        """Ask the service once and report the answer."""
        try:
            reason = self.probe()
        except Exception as exc:  # a failing probe is a reason to be NOT_SERVING, not a crash
            reason = f"health probe failed: {exc}"
        if reason != self.last:
            log.info("health", extra={"fields": {"service": self.names[-1], "reason": reason or "SERVING"}})
            self.last = reason
        await self.health.report(self.names, reason)

    def start(self) -> None:
        """Poll in the background until :meth:`stop`."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.update()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
