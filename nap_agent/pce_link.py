"""The NAP's session with the PCE (flame.pce.v1 NapSession): Hello with its local FQDNs, versioned snapshots applied and
ACKed (NACKed with the reason when malformed, keeping the last good one), local registrations, and reconnection with
jittered exponential backoff across PCE replicas. While the PCE is away the NAP forwards on its last good snapshot."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import grpc

from flame_control.api.flame.nap.v1 import nap_pb2
from flame_control.api.flame.pce.v1 import nap_session_pb2, pce_pb2_grpc
from nap_agent.routes import RouteTable

log = logging.getLogger("flame.nap.pce")


class PceLink:
    """Keeps one NAP session open to some PCE replica."""

    def __init__(
        self,
        nap_id: str,
        endpoints: Sequence[str],
        channel: Callable[[str], grpc.aio.Channel],
        apply: Callable[[RouteTable], None],
        local_fqdns: Callable[[], list[str]],
        backoff_start_s: float = 0.2,
        backoff_max_s: float = 5.0,
        on_fabric_secret: Callable[[bytes], None] = lambda secret: None,
    ) -> None:
        self.nap_id, self.endpoints, self.channel, self.apply = nap_id, list(endpoints), channel, apply
        #: Called with this NAP's emulated-fabric secret when a session hands one out (FabricAccess).
        self.on_fabric_secret = on_fabric_secret
        self.local_fqdns = local_fqdns
        self.backoff_start_s, self.backoff_max_s = backoff_start_s, backoff_max_s
        self.state = nap_pb2.PCE_SESSION_STATE_DISABLED if not endpoints else nap_pb2.PCE_SESSION_STATE_CONNECTING
        self.endpoint = ""
        #: Why the last session ended (health reason while the session is down).
        self.last_error = ""
        self.version = 0
        self.nacks = 0
        self.connects = 0
        self.first_snapshot = asyncio.Event()
        self._outbox: asyncio.Queue[nap_session_pb2.NapSessionRequest] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.endpoints and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def announce(self, fqdn: str, unregister: bool = False) -> None:
        """Tell the PCE about a local registration now (it is also in every Hello)."""
        if self._outbox is not None:
            reg = nap_session_pb2.LocalRegistration(correlation_id=uuid.uuid4().hex, fqdn=fqdn, unregister=unregister)
            self._outbox.put_nowait(nap_session_pb2.NapSessionRequest(registration=reg))

    async def _run(self) -> None:
        delay = self.backoff_start_s
        i = 0
        while True:
            endpoint = self.endpoints[i % len(self.endpoints)]
            i += 1
            try:
                await self._session(endpoint)
                self.last_error = "the PCE ended the session"
                delay = self.backoff_start_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # grpc.aio.AioRpcError and friends: try the next replica
                self.last_error = (
                    (exc.details() or exc.code().name) if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                )
                log.warning("pce session ended", extra={"fields": {"pce": endpoint, "error": str(exc)[:200]}})
            if self.state == nap_pb2.PCE_SESSION_STATE_CONNECTED:
                delay = self.backoff_start_s
            self.state = nap_pb2.PCE_SESSION_STATE_DISCONNECTED
            self._outbox = None
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self.backoff_max_s)

    async def _session(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.state = nap_pb2.PCE_SESSION_STATE_CONNECTING
        outbox: asyncio.Queue[nap_session_pb2.NapSessionRequest] = asyncio.Queue()
        hello = nap_session_pb2.Hello(
            nap_id=self.nap_id, local_fqdns=self.local_fqdns(), last_applied_version=self.version
        )
        outbox.put_nowait(nap_session_pb2.NapSessionRequest(hello=hello))
        self._outbox = outbox

        async def requests() -> AsyncIterator[nap_session_pb2.NapSessionRequest]:
            while True:
                yield await outbox.get()

        stub = pce_pb2_grpc.PceServiceStub(self.channel(endpoint))
        call = stub.NapSession(requests())
        counted = False
        async for msg in call:
            if not counted:
                counted = True
                self.connects += 1
                log.info("pce session up", extra={"fields": {"pce": endpoint}})
            self.state = nap_pb2.PCE_SESSION_STATE_CONNECTED
            kind = msg.WhichOneof("message")
            if kind == "snapshot":
                self._on_snapshot(msg.snapshot, outbox)
            elif kind == "fabric_access" and msg.fabric_access.nap_id == self.nap_id:
                self.on_fabric_secret(msg.fabric_access.attach_secret)
            elif kind == "registration_reply" and msg.registration_reply.status.code:
                log.warning(
                    "registration refused by the pce",
                    extra={"fields": {"error": msg.registration_reply.status.message}},
                )

    def _on_snapshot(
        self, snap: nap_session_pb2.Snapshot, outbox: asyncio.Queue[nap_session_pb2.NapSessionRequest]
    ) -> None:
        try:
            table = RouteTable.from_snapshot(snap)
        except ValueError as exc:
            self.nacks += 1
            nack = nap_session_pb2.Nack(version=snap.version)
            nack.error.code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            nack.error.message = str(exc)
            outbox.put_nowait(nap_session_pb2.NapSessionRequest(nack=nack))
            log.warning("snapshot refused", extra={"fields": {"version": snap.version, "error": str(exc)}})
            return
        self.apply(table)
        self.version = snap.version
        self.first_snapshot.set()
        outbox.put_nowait(nap_session_pb2.NapSessionRequest(ack=nap_session_pb2.Ack(version=snap.version)))
        log.info("snapshot applied", extra={"fields": {"version": snap.version, "fqdns": len(table.by_fqdn)}})
