"""What the SFEMC does to move an endpoint one step (the adapter under the controller): VIM calls for placing,
booting, stopping and removing instances, and FQDN registration for connecting (SFEMC-5).

Connected means routable: the FQDN is registered for the endpoint's NAP at the PCE. When the SFEMC knows the admin
address of that NAP agent (``nap_admin``), it registers through the agent (``RegisterLocalService``: the agent maps
the FQDN to the endpoint's address and announces it to the PCE, SFR-11) and waits until the PCE lists it; otherwise
it registers at the PCE directly (``RegisterFqdn``). Every step has a timeout; a VIM call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from flame_control.api.flame.clmc.v1 import model_pb2
from flame_control.api.flame.nap.v1 import nap_pb2, nap_pb2_grpc
from flame_control.api.flame.pce.v1 import pce_pb2, pce_pb2_grpc
from flame_control.sfemc.endpoints import EndpointRecord
from flame_control.sfemc.metrics import vim_call_histogram
from flame_control.vim.base import InstanceSpec, InstanceStatus, VimDriver, VimError, VimErrorKind

_VIM_FAILURE = {
    VimErrorKind.PLACEMENT: model_pb2.FAILURE_CATEGORY_PLACEMENT,
    VimErrorKind.BOOT: model_pb2.FAILURE_CATEGORY_BOOT,
    VimErrorKind.CONTROL_PLANE: model_pb2.FAILURE_CATEGORY_CONTROL_PLANE,
    VimErrorKind.NOT_FOUND: model_pb2.FAILURE_CATEGORY_PLACEMENT,
}


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


class Actuator:
    """Performs endpoint steps against the VIMs, the NAP agents and the PCE."""

    def __init__(
        self,
        vims: dict[str, VimDriver],
        timeouts: dict[str, Timeouts],
        pce: Callable[[], grpc.aio.Channel],
        nap_admin: Callable[[str], grpc.aio.Channel | None],
        image_reference: Callable[[str, str], str],
    ) -> None:
        self.vims, self.timeouts, self.pce, self.nap_admin = vims, timeouts, pce, nap_admin
        self.image_reference = image_reference
        self.vim_latency = vim_call_histogram()

    def _vim(self, rec: EndpointRecord) -> VimDriver:
        vim = self.vims.get(rec.spec.vim)
        if vim is None:
            raise StepFailed(model_pb2.FAILURE_CATEGORY_CONFIGURATION, f"VIM {rec.spec.vim!r} is not configured")
        return vim

    def _timeouts(self, rec: EndpointRecord) -> Timeouts:
        return self.timeouts.get(rec.spec.vim, Timeouts())

    async def _call(self, seconds: float, what: str, fn: Callable[..., object], *args: object) -> object:
        try:
            vim = str(getattr(getattr(fn, "__self__", None), "name", "unknown"))
            with self.vim_latency.labels(what, vim).time():
                return await asyncio.wait_for(asyncio.to_thread(fn, *args), seconds)
        except TimeoutError as exc:
            raise StepFailed(model_pb2.FAILURE_CATEGORY_TIMEOUT, f"{what} did not finish within {seconds:g} s") from exc
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
        inst = await self._call(self._timeouts(rec).place_s, "placing", vim.create, spec)
        assert hasattr(inst, "instance_id")
        return str(inst.instance_id)

    async def boot(self, rec: EndpointRecord) -> str:
        """Start the instance; returns the address it serves on once it answers."""
        inst = await self._call(self._timeouts(rec).boot_s, "booting", self._vim(rec).start, rec.instance_id)
        address = str(getattr(inst, "address", ""))
        if not address:
            raise StepFailed(model_pb2.FAILURE_CATEGORY_BOOT, "the VIM reported no address for the running instance")
        return address

    async def stop(self, rec: EndpointRecord) -> None:
        """Stop the instance (keeps it placed)."""
        await self._call(self._timeouts(rec).stop_s, "stopping", self._vim(rec).stop, rec.instance_id)

    async def remove(self, rec: EndpointRecord) -> None:
        """Delete the instance (no error when it is gone)."""
        if rec.instance_id:
            await self._call(self._timeouts(rec).stop_s, "removing", self._vim(rec).delete, rec.instance_id)

    async def running(self, rec: EndpointRecord) -> tuple[bool, str]:
        """Is the instance still running? (health check of booted/connected endpoints); (ok, detail)."""
        inst = await self._call(self._timeouts(rec).stop_s, "status", self._vim(rec).get, rec.instance_id)
        if inst is None:
            return False, "the instance disappeared from the VIM"
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
        """Withdraw the FQDN registration (the way it was made)."""
        seconds = self._timeouts(rec).connect_s
        try:
            nap = self.nap_admin(rec.spec.nap_id) if rec.via_nap else None
            if nap is not None:
                await nap_pb2_grpc.NapAgentServiceStub(nap).UnregisterLocalService(
                    nap_pb2.UnregisterLocalServiceRequest(request_id=uuid.uuid4().hex, fqdn=rec.spec.fqdn),
                    timeout=seconds,
                )
            else:
                await pce_pb2_grpc.PceServiceStub(self.pce()).UnregisterFqdn(
                    pce_pb2.UnregisterFqdnRequest(
                        request_id=uuid.uuid4().hex, fqdn=rec.spec.fqdn, nap_id=rec.spec.nap_id
                    ),
                    timeout=seconds,
                )
        except grpc.aio.AioRpcError as err:
            if err.code() is not grpc.StatusCode.NOT_FOUND:
                raise StepFailed(
                    model_pb2.FAILURE_CATEGORY_CONNECTIVITY,
                    f"unregistering {rec.spec.fqdn}: {err.code().name} {err.details()}",
                ) from err
