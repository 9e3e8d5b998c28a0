"""What the SFEMC does to move an endpoint one step (the adapter under the controller): VIM calls for placing,
booting, stopping and removing instances, and FQDN registration for connecting (SFEMC-5).

Connected means routable: the FQDN is registered for the endpoint's NAP at the PCE. When the SFEMC knows the admin
address of that NAP agent (``nap_admin``), it registers through the agent (``RegisterLocalService``: the agent maps
the FQDN to the endpoint's address and announces it to the PCE, SFR-11) and waits until the PCE lists it; otherwise
it registers at the PCE directly (``RegisterFqdn``). Every step has a timeout; a VIM call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import http.client
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from flame_control.api.flame.clmc.v1 import model_pb2
from flame_control.api.flame.nap.v1 import nap_pb2, nap_pb2_grpc
from flame_control.api.flame.pce.v1 import pce_pb2, pce_pb2_grpc
from flame_control.sfemc.endpoints import EndpointRecord
from flame_control.sfemc.metrics import vim_call_histogram
from flame_control.sfemc.vim_calls import CallTimedOut, VimCalls
from flame_control.vim.base import InstanceSpec, InstanceStatus, VimDriver, VimError, VimErrorKind
from flame_control.vim.ports import accepts

T = TypeVar("T")
#: Detail of ``Actuator.running`` when the VIM does not know the instance.
GONE = "the instance disappeared from the VIM"

_VIM_FAILURE = {
    VimErrorKind.PLACEMENT: model_pb2.FAILURE_CATEGORY_PLACEMENT,
    VimErrorKind.BOOT: model_pb2.FAILURE_CATEGORY_BOOT,
    VimErrorKind.CONTROL_PLANE: model_pb2.FAILURE_CATEGORY_CONTROL_PLANE,
    VimErrorKind.NOT_FOUND: model_pb2.FAILURE_CATEGORY_PLACEMENT,
}


def tcp_answers(address: str) -> bool:
    """Does something accept TCP connections at ``host:port``?"""
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and accepts(host, int(port))


def http_probe(listen: str, fqdn: str, timeout_s: float) -> tuple[bool, str]:
    """GET / for ``fqdn`` through the NAP's HTTP listener at ``listen``: (answered, detail). Any response the NAP did
    not generate itself (no ``X-Flame-Nap-Error`` header) means the request reached an endpoint."""
    host, _, port = listen.rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout_s)
    try:
        conn.request("GET", "/", headers={"Host": fqdn, "Connection": "close", "User-Agent": "flame-sfemc-probe"})
        resp = conn.getresponse()
        body = resp.read(200)
    except (OSError, http.client.HTTPException) as exc:
        return False, f"no answer through the NAP at {listen}: {exc}"
    finally:
        conn.close()
    if resp.getheader("X-Flame-Nap-Error"):
        return False, f"the NAP at {listen} answered {resp.status} itself: {body.decode(errors='replace').strip()}"
    return True, f"HTTP {resp.status} through the NAP"


class StepFailed(Exception):
    """A step did not complete; ``failure`` is a flame.clmc.v1.FailureCategory value."""

    def __init__(self, failure: int, message: str) -> None:
        super().__init__(message)
        self.failure = failure


@dataclass(frozen=True)
class Timeouts:
    """Per-VIM step timeouts (seconds); the issue's anchors hard-code these, we let operators set them."""

    place_s: float = 60.0
    boot_s: float = 60.0
    stop_s: float = 30.0
    connect_s: float = 10.0
    #: Health probes (VIM status, the endpoint's TCP answer).
    probe_s: float = 5.0


class Actuator:
    """Performs endpoint steps against the VIMs, the NAP agents and the PCE."""

    def __init__(
        self,
        vims: dict[str, VimDriver],
        timeouts: dict[str, Timeouts],
        pce: Callable[[], grpc.aio.Channel],
        nap_admin: Callable[[str], grpc.aio.Channel | None],
        image_reference: Callable[[str, str], str],
        calls: VimCalls | None = None,
    ) -> None:
        self.vims, self.timeouts, self.pce, self.nap_admin = vims, timeouts, pce, nap_admin
        self.image_reference = image_reference
        #: Per-VIM pools with per-service slots (issue 14: a hung service cannot starve another).
        self.calls = calls or VimCalls()
        self.vim_latency = vim_call_histogram()

    def _vim(self, rec: EndpointRecord) -> VimDriver:
        vim = self.vims.get(rec.spec.vim)
        if vim is None:
            raise StepFailed(model_pb2.FAILURE_CATEGORY_CONFIGURATION, f"VIM {rec.spec.vim!r} is not configured")
        return vim

    def _timeouts(self, rec: EndpointRecord) -> Timeouts:
        return self.timeouts.get(rec.spec.vim, Timeouts())

    async def _call(
        self,
        rec: EndpointRecord,
        seconds: float,
        what: str,
        fn: Callable[..., T],
        *args: object,
        probe: bool = False,
    ) -> T:
        """A blocking VIM call on the VIM's own pool within the endpoint's media service slots (vim_calls)."""
        try:
            with self.vim_latency.labels(what, rec.spec.vim).time():
                return await self.calls.run(rec.spec.vim, rec.media_service, seconds, fn, *args, probe=probe)
        except CallTimedOut as exc:
            raise StepFailed(model_pb2.FAILURE_CATEGORY_TIMEOUT, f"{what}: {exc}") from exc
        except VimError as exc:
            raise StepFailed(_VIM_FAILURE[exc.kind], f"{what}: {exc}") from exc

    # --- VIM steps -------------------------------------------------------------------------------------------------

    async def place(self, rec: EndpointRecord) -> str:
        """Create the instance (adopting one that already carries this endpoint's label); returns its id."""
        vim = self._vim(rec)
        try:
            image = self.image_reference(rec.spec.image, rec.spec.vim)
        except LookupError as exc:
            raise StepFailed(model_pb2.FAILURE_CATEGORY_PLACEMENT, str(exc)) from exc
        env = dict(rec.spec.environment)
        env.setdefault("FLAME_ENDPOINT", rec.id)
        env.setdefault("FLAME_FQDN", rec.spec.fqdn)
        spec = InstanceSpec(
            endpoint_id=rec.id,
            media_service=rec.media_service,
            image=image,
            port=rec.spec.port,
            cpus=rec.spec.cpus or 0.5,
            memory_mb=rec.spec.memory_mb or 256,
            environment=env,
            site=rec.spec.site,
        )
        inst = await self._call(rec, self._timeouts(rec).place_s, "placing", vim.create, spec)
        assert hasattr(inst, "instance_id")
        return str(inst.instance_id)

    async def boot(self, rec: EndpointRecord) -> str:
        """Start the instance; returns the address it serves on once it answers."""
        inst = await self._call(rec, self._timeouts(rec).boot_s, "booting", self._vim(rec).start, rec.instance_id)
        address = str(getattr(inst, "address", ""))
        if not address:
            raise StepFailed(model_pb2.FAILURE_CATEGORY_BOOT, "the VIM reported no address for the running instance")
        return address

    async def stop(self, rec: EndpointRecord) -> None:
        """Stop the instance (keeps it placed)."""
        await self._call(rec, self._timeouts(rec).stop_s, "stopping", self._vim(rec).stop, rec.instance_id)

    async def remove(self, rec: EndpointRecord) -> None:
        """Delete the instance (no error when it is gone)."""
        if rec.instance_id:
            await self._call(rec, self._timeouts(rec).stop_s, "removing", self._vim(rec).delete, rec.instance_id)

    async def answers(self, rec: EndpointRecord) -> bool:
        """Does the endpoint itself accept TCP connections (on the VIM's probe pool)?"""
        try:
            return bool(
                await self._call(rec, self._timeouts(rec).probe_s, "probe", tcp_answers, rec.address, probe=True)
            )
        except StepFailed:
            return False

    async def running(self, rec: EndpointRecord) -> tuple[bool, str]:
        """Is the instance still running? (health check of booted/connected endpoints); (ok, detail)."""
        inst = await self._call(
            rec, self._timeouts(rec).probe_s, "status", self._vim(rec).get, rec.instance_id, probe=True
        )
        if inst is None:
            return False, GONE
        status = getattr(inst, "status", None)
        return status is InstanceStatus.RUNNING, str(getattr(inst, "detail", "") or status)

    # --- registration ----------------------------------------------------------------------------------------------

    async def connect(self, rec: EndpointRecord, owner: str) -> bool:
        """Register the endpoint's FQDN for its NAP and wait until the PCE routes it; True when via the NAP agent."""
        seconds = self._timeouts(rec).connect_s
        nap = self.nap_admin(rec.spec.nap_id)
        try:
            if nap is not None:
                await nap_pb2_grpc.NapAgentServiceStub(nap).RegisterLocalService(
                    nap_pb2.RegisterLocalServiceRequest(
                        request_id=uuid.uuid4().hex, fqdn=rec.spec.fqdn, endpoint=rec.address
                    ),
                    timeout=seconds,
                )
                await self._await_registered(rec, seconds)
                ok, detail = await self.nap_check(rec)
                if ok is False:
                    raise StepFailed(model_pb2.FAILURE_CATEGORY_CONNECTIVITY, f"registered, but {detail}")
                return True
            await pce_pb2_grpc.PceServiceStub(self.pce()).RegisterFqdn(
                pce_pb2.RegisterFqdnRequest(
                    request_id=uuid.uuid4().hex,
                    fqdn=rec.spec.fqdn,
                    nap_id=rec.spec.nap_id,
                    owner=owner,
                    endpoint_id=rec.id,
                ),
                timeout=seconds,
            )
            return False
        except grpc.aio.AioRpcError as err:
            raise StepFailed(
                model_pb2.FAILURE_CATEGORY_CONNECTIVITY,
                f"registering {rec.spec.fqdn}: {err.code().name} {err.details()}",
            ) from err

    async def registered(self, rec: EndpointRecord) -> bool:
        """Does the PCE list the endpoint's FQDN for its NAP (routable)?"""
        try:
            regs = await pce_pb2_grpc.PceServiceStub(self.pce()).ListRegistrations(
                pce_pb2.ListRegistrationsRequest(fqdn=rec.spec.fqdn, nap_id=rec.spec.nap_id),
                timeout=self._timeouts(rec).connect_s,
            )
        except grpc.aio.AioRpcError as err:
            raise StepFailed(model_pb2.FAILURE_CATEGORY_CONTROL_PLANE, f"PCE: {err.code().name}") from err
        return bool(regs.registrations)

    async def nap_check(self, rec: EndpointRecord) -> tuple[bool | None, str]:
        """Through the endpoint's NAP agent: does it map the FQDN to the endpoint's address, and does a request to the
        FQDN through that NAP answer? (True, detail) / (False, what is wrong) / (None, why it cannot be told: no NAP
        agent known). StepFailed when the NAP agent does not answer (unknown, not false)."""
        nap = self.nap_admin(rec.spec.nap_id)
        if nap is None:
            return None, f"no NAP agent known for {rec.spec.nap_id}"
        seconds = self._timeouts(rec).probe_s
        stub = nap_pb2_grpc.NapAgentServiceStub(nap)
        try:
            mappings = await stub.ListMappings(nap_pb2.ListMappingsRequest(), timeout=seconds)
            status = await stub.GetStatus(nap_pb2.GetStatusRequest(), timeout=seconds)
        except grpc.aio.AioRpcError as err:
            raise StepFailed(
                model_pb2.FAILURE_CATEGORY_CONTROL_PLANE, f"NAP agent {rec.spec.nap_id}: {err.code().name}"
            ) from err
        fqdn = rec.spec.fqdn.lower().rstrip(".")
        if not any(
            ls.fqdn.lower().rstrip(".") == fqdn and ls.endpoint == rec.address for ls in mappings.local_services
        ):
            return False, f"NAP {rec.spec.nap_id} does not map {rec.spec.fqdn} to {rec.address}"
        if not status.http_listen:
            return None, f"NAP {rec.spec.nap_id} reports no HTTP listener"
        return await self._call(
            rec, seconds, "NAP probe", http_probe, status.http_listen, rec.spec.fqdn, seconds, probe=True
        )

    async def _await_registered(self, rec: EndpointRecord, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if await self.registered(rec):
                return
            if time.monotonic() > deadline:
                raise StepFailed(
                    model_pb2.FAILURE_CATEGORY_TIMEOUT,
                    f"NAP {rec.spec.nap_id} took the registration of {rec.spec.fqdn} but the PCE does not list it",
                )
            await asyncio.sleep(0.05)

    async def disconnect(self, rec: EndpointRecord) -> None:
        """Withdraw the FQDN registration (the way it was made), then check the PCE no longer lists it (issue 14).
        A NAP agent that answers NOT_FOUND (it restarted and forgot the service) or does not answer is not taken as
        success: the registration is then withdrawn at the PCE directly."""
        seconds = self._timeouts(rec).connect_s
        try:
            nap = self.nap_admin(rec.spec.nap_id) if rec.via_nap else None
            if nap is not None:
                try:
                    await nap_pb2_grpc.NapAgentServiceStub(nap).UnregisterLocalService(
                        nap_pb2.UnregisterLocalServiceRequest(request_id=uuid.uuid4().hex, fqdn=rec.spec.fqdn),
                        timeout=seconds,
                    )
                except grpc.aio.AioRpcError as err:
                    if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                        raise
            if nap is None or await self.registered(rec):
                try:
                    await pce_pb2_grpc.PceServiceStub(self.pce()).UnregisterFqdn(
                        pce_pb2.UnregisterFqdnRequest(
                            request_id=uuid.uuid4().hex, fqdn=rec.spec.fqdn, nap_id=rec.spec.nap_id
                        ),
                        timeout=seconds,
                    )
                except grpc.aio.AioRpcError as err:
                    if err.code() is not grpc.StatusCode.NOT_FOUND:
                        raise
        except grpc.aio.AioRpcError as err:
            raise StepFailed(
                model_pb2.FAILURE_CATEGORY_CONNECTIVITY,
                f"unregistering {rec.spec.fqdn}: {err.code().name} {err.details()}",
            ) from err
        if await self.registered(rec):
            raise StepFailed(
                model_pb2.FAILURE_CATEGORY_CONNECTIVITY,
                f"the PCE still lists {rec.spec.fqdn} at {rec.spec.nap_id} after unregistering",
            )
