"""Media-service lifecycle (ORCH-2..9): validate, place, hand endpoints and policies to the SFEMC, define KPIs at
the CLMC, follow endpoint states, and reconcile desired against actual until they agree.

Desired state is the store (template, generation, placement); actual state is what the SFEMC reports on its
WatchEndpoints stream. A reconcile loop (rate limited, exponential backoff with jitter per service) re-applies any
service whose generation the SFEMC has not taken yet, so a crashed orchestrator resumes where it was: applying the
same endpoint set again is a no-op at the SFEMC, and VIM instances are adopted by label, never duplicated.

Status is honest: RUNNING only when every endpoint is in the state its controller is driving it to, DEGRADED when
any endpoint failed, DEPLOYING in between. Every status change is streamed to WatchMediaService subscribers and sent
to the CLMC as a config event (CLMC-4).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import grpc

from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, model_pb2
from flame_control.api.flame.common.v1 import common_pb2
from flame_control.api.flame.orchestrator.v1 import orchestrator_pb2
from flame_control.api.flame.sfemc.v1 import sfemc_pb2, sfemc_pb2_grpc
from flame_control.clmc_events import ConfigEventPublisher, config_event
from flame_control.orchestrator import convert, status
from flame_control.orchestrator.catalogue import parse_catalogue
from flame_control.orchestrator.model import Catalogue, Problem, ServiceTemplate, Severity, TemplateInvalid
from flame_control.orchestrator.placement import place, usage_of
from flame_control.orchestrator.store import OrchestratorStore, ServiceRecord, sha256
from flame_control.orchestrator.template import NODES, parse_template
from flame_control.orchestrator.validation import validate

log = logging.getLogger("flame.orchestrator")

S = orchestrator_pb2


#: Template parsing and validation (CPU-bound) run here, off the event loop; two at once at most.
_VALIDATION_POOL = concurrent.futures.ThreadPoolExecutor(2, "orchestrator-validate")


def image_problems(tpl: ServiceTemplate, images: set[tuple[str, str]] | None, default_vim: str) -> list[Problem]:
    """Endpoints whose image is not registered at the SFEMC for their VIM (issue 14: refused at validation instead of
    PENDING forever); nothing when the SFEMC could not be asked."""
    if images is None:
        return []
    out = []
    for ep in tpl.endpoints:
        vim = ep.vim or default_vim
        if ep.image and (ep.image, vim) not in images:
            known = ", ".join(sorted(n for n, v in images if v == vim)) or "none"
            out.append(
                Problem(
                    f"{NODES}.{ep.name}.properties.image",
                    f"image {ep.image!r} is not registered for VIM {vim!r}",
                    f"register it (RegisterEndpointImage) or use one of: {known}",
                )
            )
    return out


def errors_of(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity is Severity.ERROR]


@dataclass
class _Backoff:
    attempts: int = 0
    not_before: float = 0.0


@dataclass
class Lifecycle:
    """The orchestrator's core state machine over its store, talking to SFEMC and CLMC through their contracts."""

    store: OrchestratorStore
    sfemc: Callable[[], grpc.aio.Channel]
    clmc: Callable[[], grpc.aio.Channel]
    events: ConfigEventPublisher
    default_vim: str = "process"
    wall: Callable[[], float] = time.time
    mono: Callable[[], float] = time.monotonic
    #: Endpoints as the SFEMC last reported them, by media service then endpoint id.
    endpoints: dict[str, dict[str, sfemc_pb2.Endpoint]] = field(default_factory=dict)
    sfemc_watch_connected: bool = False
    #: Seconds without any message (heartbeats included) after which the SFEMC watch counts as lost.
    watch_silence_s: float = 6.0
    #: Event revisions, history and WatchMediaService subscribers.
    log: status.EventLog = field(default_factory=lambda: status.EventLog(time.time_ns))
    conditions: status.Conditions = field(default_factory=lambda: status.Conditions(time.time))
    _parsed: dict[str, tuple[str, ServiceTemplate]] = field(default_factory=dict)
    _catalogue: tuple[str, Catalogue | None] = ("", None)
    _backoff: dict[str, _Backoff] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # --- parsed views of the store ---------------------------------------------------------------------------------

    def catalogue(self) -> Catalogue | None:
        text = self.store.catalogue
        if self._catalogue[0] != text:
            cat, _ = parse_catalogue(text) if text else (None, [])
            self._catalogue = (text, cat)
        return self._catalogue[1]

    def template_of(self, rec: ServiceRecord) -> ServiceTemplate:
        cached = self._parsed.get(rec.name)
        if cached is None or cached[0] != rec.template_sha256:
            tpl, problems = parse_template(rec.template)
            if tpl is None:
                raise TemplateInvalid(problems)
            cached = (rec.template_sha256, tpl)
            self._parsed[rec.name] = cached
        return cached[1]

    def deployed(self, exclude: str = "") -> dict[str, ServiceTemplate]:
        return {n: self.template_of(r) for n, r in self.store.services.items() if n != exclude and not r.deleting}

    def placements(self, exclude: str = "") -> dict[str, dict[str, str]]:
        """Where deployed services' endpoints are (capacity checks count them)."""
        return {n: r.placement for n, r in self.store.services.items() if n != exclude and not r.deleting}

    async def known_metrics(self) -> dict[str, set[str]] | None:
        """Measurements and fields of the CLMC's information model (None when the CLMC cannot be asked)."""
        try:
            resp = await clmc_pb2_grpc.ClmcServiceStub(self.clmc()).GetInformationModel(
                clmc_pb2.GetInformationModelRequest(), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None
        return {m.name: {f.name for f in m.fields} for m in resp.model.measurements}

    async def known_images(self) -> set[tuple[str, str]] | None:
        """(image name, VIM) pairs the SFEMC has registered (None when the SFEMC cannot be asked)."""
        try:
            resp = await sfemc_pb2_grpc.SfemcServiceStub(self.sfemc()).ListEndpointImages(
                sfemc_pb2.ListEndpointImagesRequest(), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None
        return {(i.name, i.vim) for i in resp.images}

    # --- validation and placement ----------------------------------------------------------------------------------

    async def check(self, text: str, *, updating: str = "") -> tuple[ServiceTemplate | None, list[Problem]]:
        """Parse + validate against the catalogue and the deployed state (ORCH-2, ORCH-7); nothing changes.

        The work runs on the validation pool, never on the event loop (issue 14: a 2,000-endpoint template used to
        stall every other RPC of the process); the inputs are taken on the loop first."""
        known = await self.known_metrics()
        images = await self.known_images()
        catalogue, deployed, placements = self.catalogue(), self.deployed(), self.placements()
        loop = asyncio.get_running_loop()

        def work() -> tuple[ServiceTemplate | None, list[Problem]]:
            tpl, problems = parse_template(text)
            if tpl is None:
                return None, problems
            return tpl, problems + image_problems(tpl, images, self.default_vim) + validate(
                tpl,
                catalogue,
                deployed,
                updating=bool(updating),
                known_metrics=known,
                placements=placements,
                default_vim=self.default_vim,
            )

        return await loop.run_in_executor(_VALIDATION_POOL, work)

    def _place(self, tpl: ServiceTemplate, exclude: str = "", keep: dict[str, str] | None = None) -> dict[str, str]:
        cat = self.catalogue()
        if cat is None:
            raise TemplateInvalid(
                [Problem("", "no infrastructure catalogue is applied", "apply one with ApplyInfrastructureCatalogue")]
            )
        deployed = self.deployed(exclude=exclude)
        placements = self.placements(exclude=exclude)
        usage = usage_of(((deployed[n], placements[n]) for n in deployed), cat)
        result = place(tpl, cat, usage, default_vim=self.default_vim)
        if isinstance(result, list):
            raise TemplateInvalid(result)
        return result

    # --- mutations -------------------------------------------------------------------------------------------------

    async def deploy(self, text: str, owner: str) -> ServiceRecord:
        async with self._lock:
            same = [r for r in self.store.services.values() if r.template_sha256 == sha256(text) and not r.deleting]
            if same:
                return same[0]  # the same deploy again: idempotent by content
            tpl, problems = await self.check(text)
            if tpl is None or errors_of(problems):
                raise TemplateInvalid(problems)
            placement = self._place(tpl)
            now = self.wall()
            rec = ServiceRecord(
                tpl.name, owner, text, sha256(text), created_at=now, updated_at=now, placement=placement
            )
            self.store.services[tpl.name] = rec
            self.store.save()
        self._service_event(rec, "deploy_requested")
        self._broadcast(rec.name, S.WatchMediaServiceResponse(status=rec.status, message="created"))  # type: ignore[arg-type]
        self.wake()
        return rec

    async def update(self, name: str, text: str) -> ServiceRecord:
        async with self._lock:
            rec = self.store.services[name]
            tpl, problems = await self.check(text, updating=name)
            if tpl is None or errors_of(problems):
                raise TemplateInvalid(problems)
            if tpl.name != name:
                raise TemplateInvalid(
                    [Problem("metadata.service_name", f"names {tpl.name!r}, not {name!r}", "keep the service name")]
                )
            if rec.template_sha256 == sha256(text):
                return rec
            rec.placement = self._place(tpl, exclude=name)
            rec.template, rec.template_sha256 = text, sha256(text)
            rec.generation += 1
            rec.status, rec.updated_at = S.SERVICE_STATUS_DEPLOYING, self.wall()
            self.store.save()
        self._service_event(rec, "update_requested")
        self.wake()
        return rec

    async def delete(self, name: str) -> ServiceRecord:
        async with self._lock:
            rec = self.store.services[name]
            if not rec.deleting:
                rec.deleting = True
                rec.generation += 1
                rec.status, rec.updated_at = S.SERVICE_STATUS_DELETING, self.wall()
                self.store.save()
        self._service_event(rec, "delete_requested")
        self.wake()
        return rec

    # --- background loops ------------------------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._reconcile_loop()), loop.create_task(self._watch_loop())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def wake(self) -> None:
        self._wake.set()

    async def _reconcile_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            self._wake.clear()
            for name in sorted(self.store.services):
                rec = self.store.services.get(name)
                if rec is None:
                    continue
                b = self._backoff.get(name)
                if b is not None and self.mono() < b.not_before:
                    continue
                try:
                    await self.reconcile(rec)
                    self._backoff.pop(name, None)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    b = self._backoff.setdefault(name, _Backoff())
                    b.attempts += 1
                    delay = min(30.0, 0.25 * 2 ** (b.attempts - 1)) * random.uniform(0.8, 1.2)
                    b.not_before = self.mono() + delay
                    msg = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                    log.warning("reconcile of %s failed (retry in %.1f s): %s", name, delay, msg)
                    self._set_status(rec, rec.status, f"reconcile failed, retrying: {msg}")

    async def reconcile(self, rec: ServiceRecord) -> None:
        """One pass for one service: push desired state where the SFEMC lags, then derive the status."""
        if rec.observed_generation < rec.generation:
            if rec.deleting:
                await self._apply(rec, [], [])
            else:
                tpl = self.template_of(rec)
                cat = self.catalogue()
                if cat is None:
                    raise RuntimeError("no infrastructure catalogue is applied")
                await self._define_kpis(rec, tpl)
                specs = convert.endpoint_specs(tpl, rec.placement, cat, self.default_vim)
                await self._apply(rec, specs, [convert.surrogate_policy(p) for p in tpl.policies])
            rec.observed_generation = rec.generation
            self.store.save()
        if rec.deleting and not self.endpoints.get(rec.name) and self.sfemc_watch_connected:
            await self._delete_kpis(rec, keep=set())
            del self.store.services[rec.name]
            self._parsed.pop(rec.name, None)
            self.store.save()
            self._service_event(rec, "deleted")
            self.conditions.forget(rec.name)
            self._broadcast(rec.name, S.WatchMediaServiceResponse(status=S.SERVICE_STATUS_DELETING, message="deleted"))
            return
        self._refresh_status(rec)

    async def _apply(
        self, rec: ServiceRecord, specs: list[sfemc_pb2.EndpointSpec], policies: list[sfemc_pb2.SurrogatePolicy]
    ) -> None:
        resp = await sfemc_pb2_grpc.SfemcServiceStub(self.sfemc()).ApplyEndpoints(
            sfemc_pb2.ApplyEndpointsRequest(
                request_id=uuid.uuid4().hex,
                media_service=rec.name,
                owner=rec.owner,
                endpoints=specs,
                policies=policies,
            ),
            timeout=10,
        )
        # The answer carries the new desired states: take them now, so the status never reads RUNNING from the
        # previous generation's view while the watch catches up.
        by_id = self.endpoints.setdefault(rec.name, {})
        for e in resp.endpoints:
            by_id[e.id] = e

    async def _define_kpis(self, rec: ServiceRecord, tpl: ServiceTemplate) -> None:
        stub = clmc_pb2_grpc.ClmcServiceStub(self.clmc())
        for k in tpl.kpis:
            await stub.DefineKpi(
                clmc_pb2.DefineKpiRequest(request_id=uuid.uuid4().hex, kpi=convert.kpi_definition(rec.name, k)),
                timeout=5,
            )
        await self._delete_kpis(rec, keep={k.name for k in tpl.kpis})
        rec.kpis = sorted(k.name for k in tpl.kpis)

    async def _delete_kpis(self, rec: ServiceRecord, keep: set[str]) -> None:
        stub = clmc_pb2_grpc.ClmcServiceStub(self.clmc())
        for name in [n for n in rec.kpis if n not in keep]:
            try:
                await stub.DeleteKpi(
                    clmc_pb2.DeleteKpiRequest(request_id=uuid.uuid4().hex, media_service=rec.name, name=name),
                    timeout=5,
                )
            except grpc.aio.AioRpcError as err:
                if err.code() is not grpc.StatusCode.NOT_FOUND:
                    raise
        rec.kpis = [n for n in rec.kpis if n in keep]

    async def _watch_loop(self) -> None:
        backoff = 0.1
        while True:
            stream = None
            try:
                stream = sfemc_pb2_grpc.SfemcServiceStub(self.sfemc()).WatchEndpoints(
                    sfemc_pb2.WatchEndpointsRequest(include_current=True)
                )
                fresh: dict[str, dict[str, sfemc_pb2.Endpoint]] = {}
                first = True
                while True:
                    # A live watch sends something (a change or a heartbeat) every few seconds: silence is a loss.
                    raw = await asyncio.wait_for(stream.read(), self.watch_silence_s)
                    if raw is grpc.aio.EOF:  # type: ignore[attr-defined]
                        break
                    msg = cast(sfemc_pb2.WatchEndpointsResponse, raw)
                    if first:
                        # The SFEMC sends current endpoints first; replace our view with its truth.
                        self.endpoints, first = fresh, False
                        self.sfemc_watch_connected = True
                        backoff = 0.1
                        self._refresh_all()
                    if not msg.heartbeat:
                        self._on_endpoint(msg)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                log.warning("endpoint watch silent for %.0f s; reconnecting", self.watch_silence_s)
            except grpc.aio.AioRpcError as err:
                if self.sfemc_watch_connected:
                    log.warning("endpoint watch lost; reconnecting", extra={"fields": {"error": err.code().name}})
            finally:
                if stream is not None:
                    stream.cancel()
            if self.sfemc_watch_connected:
                self.sfemc_watch_connected = False
                self._refresh_all()
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, 5.0)

    def _refresh_all(self) -> None:
        for rec in list(self.store.services.values()):
            self._refresh_status(rec)

    def _on_endpoint(self, msg: sfemc_pb2.WatchEndpointsResponse) -> None:
        e = msg.endpoint
        if not e.id:
            return  # the SFEMC's "current state sent" marker
        by_id = self.endpoints.setdefault(e.media_service, {})
        if msg.removed:
            by_id.pop(e.id, None)
        else:
            by_id[e.id] = e
        rec = self.store.services.get(e.media_service)
        if rec is None:
            return
        if msg.previous_state != e.state or msg.removed:
            self._broadcast(
                rec.name,
                S.WatchMediaServiceResponse(
                    status=rec.status,  # type: ignore[arg-type]
                    endpoint_id=e.id,
                    from_state=msg.previous_state,
                    to_state=common_pb2.ENDPOINT_STATE_UNPLACED if msg.removed else e.state,
                    message="removed" if msg.removed else e.last_error,
                ),
            )
        self._refresh_status(rec)
        self.wake()

    # --- status ----------------------------------------------------------------------------------------------------

    def derived_status(self, rec: ServiceRecord) -> tuple[int, str]:
        return status.derive(
            status.Inputs(
                deleting=rec.deleting,
                generation=rec.generation,
                observed_generation=rec.observed_generation,
                wanted={n.name for n in self.template_of(rec).endpoints} if not rec.deleting else set(),
                endpoints=self.endpoints.get(rec.name, {}).values(),
                watch_live=self.sfemc_watch_connected,
            )
        )

    def _refresh_status(self, rec: ServiceRecord) -> None:
        st, message = self.derived_status(rec)
        unverified = sum(not e.verified for e in self.endpoints.get(rec.name, {}).values())
        self.conditions.update(rec.name, st, message, self.sfemc_watch_connected, unverified)
        self._set_status(rec, st, message)

    def _set_status(self, rec: ServiceRecord, st: int, message: str) -> None:
        if (st, message) == (rec.status, rec.message):
            return
        changed = st != rec.status
        rec.status, rec.message, rec.updated_at = st, message, self.wall()
        if rec.name in self.store.services:
            self.store.save()
        if changed:
            self._service_event(rec, S.ServiceStatus.Name(st).removeprefix("SERVICE_STATUS_").lower())  # type: ignore[arg-type]
            self._broadcast(rec.name, S.WatchMediaServiceResponse(status=st, message=message))  # type: ignore[arg-type]

    def _service_event(self, rec: ServiceRecord, event: str) -> None:
        failure = model_pb2.FAILURE_CATEGORY_UNSPECIFIED
        if rec.status == S.SERVICE_STATUS_DEGRADED:
            failure = model_pb2.FAILURE_CATEGORY_CONTROL_PLANE
        self.events.publish(
            config_event(
                "orchestrator",
                "media_service",
                {"flame_sfc": rec.name},
                event=event,
                failure=failure,
                message=rec.message,
            )
        )

    def _broadcast(self, name: str, msg: S.WatchMediaServiceResponse) -> None:
        self.log.record(name, msg)

    # --- API views -------------------------------------------------------------------------------------------------

    def view(self, rec: ServiceRecord) -> S.MediaService:
        ms = S.MediaService(
            name=rec.name,
            owner=rec.owner,
            status=rec.status,  # type: ignore[arg-type]
            generation=rec.generation,
            observed_generation=rec.observed_generation,
            template_sha256=rec.template_sha256,
            message=rec.message,
            endpoints=[e for _, e in sorted(self.endpoints.get(rec.name, {}).items())],
            conditions=self.conditions.of(rec.name),
        )
        ms.created_at.FromNanoseconds(int(rec.created_at * 1e9))
        ms.updated_at.FromNanoseconds(int(rec.updated_at * 1e9))
        return ms
