"""The orchestrator's gRPC adapter (ORCH-1..9): templates in, media services out. The work is in ``lifecycle.py``;
this module validates requests, maps problems to INVALID_ARGUMENT field violations (the template path is the
field), applies infrastructure catalogues to the PCE, and exports descriptors."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from pydantic import BaseModel, ConfigDict

from flame_control.api.flame.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from flame_control.api.flame.pce.v1 import pce_pb2, pce_pb2_grpc
from flame_control.clmc_events import ConfigEventPublisher, config_event
from flame_control.orchestrator import metrics
from flame_control.orchestrator.catalogue import catalogue_to_topology, parse_catalogue
from flame_control.orchestrator.export import export_descriptor
from flame_control.orchestrator.lifecycle import Lifecycle, errors_of
from flame_control.orchestrator.model import Catalogue, Problem, Severity, TemplateInvalid
from flame_control.orchestrator.store import OrchestratorStore, sha256
from flame_control.orchestrator.template import parse_template
from flame_control.runtime.auth import principal_from_context
from flame_control.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    ResourceExhausted,
    Unavailable,
)
from flame_control.runtime.service import ALL_ROLES, OPERATORS, AccessRules, Role, ServiceContext, ServiceSpec

S = orchestrator_pb2
#: A minimal valid template parsed once at start.
WARMUP_TEMPLATE = """tosca_definitions_version: tosca_simple_yaml_1_3
imports: [flame_profile.yaml]
metadata: {service_name: warmup}
topology_template:
  node_templates:
    web:
      type: flame.nodes.ServiceFunctionEndpoint
      properties: {fqdn: warmup.flame.example, image: vod-media-server}
"""
log = logging.getLogger("flame.orchestrator")
#: Largest template or catalogue accepted (bytes).
MAX_DOCUMENT = 1 << 20


class Settings(BaseModel):
    """`services.orchestrator` config section."""

    model_config = ConfigDict(extra="forbid")

    #: VIM for endpoints whose template names none: "process" (embedded default), "docker" or "openstack".
    vim: str = "process"
    #: Infrastructure catalogue (TOSCA) applied at start when none is in force yet.
    catalogue_file: Path | None = None
    #: Seconds between two checks that the PCE still holds the catalogue's topology.
    topology_check_s: float = 2.0


def _violations(problems: list[Problem], field_prefix: str) -> InvalidArgument:
    errors = errors_of(problems)
    return InvalidArgument(
        [
            FieldViolation(f"{field_prefix}:{p.path}" if p.path else field_prefix, f"{p.message} (hint: {p.hint})")
            for p in errors
        ],
        message=f"invalid {field_prefix}: {len(errors)} problem(s); first: {errors[0].path}: {errors[0].message}",
    )


def _problem_pb(p: Problem) -> S.TemplateProblem:
    sev = S.SEVERITY_ERROR if p.severity is Severity.ERROR else S.SEVERITY_WARNING
    return S.TemplateProblem(path=p.path, message=p.message, hint=p.hint, severity=sev)


def _document(text: str, name: str) -> str:
    if not text.strip():
        raise InvalidArgument([FieldViolation(name, "required: the TOSCA YAML text")])
    if len(text.encode()) > MAX_DOCUMENT:
        raise ResourceExhausted(f"{name} is larger than {MAX_DOCUMENT} bytes")
    return text


def host_events(before: Catalogue | None, after: Catalogue) -> list[Any]:
    """CLMC-5 lifecycle events for compute hosts (catalogue sites) that a new catalogue adds, changes or removes, with
    their geolocation; an unchanged site reports nothing."""
    old = {s.name: s for s in before.sites} if before else {}
    new = {s.name: s for s in after.sites}
    out = []
    for name in sorted(old.keys() | new.keys()):
        site = new.get(name) or old[name]
        event = "added" if name not in old else "removed" if name not in new else "updated"
        if event == "updated" and old[name] == new[name]:
            continue
        out.append(
            config_event(
                "orchestrator",
                "host",
                {"flame_location": site.name, "flame_server": site.nap_id},
                event=event,
                message=f"{site.tier} site, {site.cpus:g} cpus, {site.memory_mb} MiB, VIMs {', '.join(site.vims)}",
                location=(site.location.latitude, site.location.longitude, site.name),
            )
        )
    return out


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """OrchestratorService."""

    def __init__(self, ctx: ServiceContext, settings: Settings) -> None:
        self.ctx, self.settings = ctx, settings
        self.store = OrchestratorStore.load(ctx.state_dir / "orchestrator.json")
        self.events = ConfigEventPublisher(lambda: ctx.channel_to("clmc"), outbox=ctx.state_dir / "clmc-outbox.sqlite")
        self._topology_task: asyncio.Task[None] | None = None
        #: `catalogue_file` to apply at start (when no catalogue is in force yet).
        self._initial_catalogue = ""
        self.life = Lifecycle(
            self.store, lambda: ctx.channel_to("sfemc"), lambda: ctx.channel_to("clmc"), self.events, settings.vim
        )

    async def start(self) -> None:
        self.events.start()
        self.life.start()
        if self.settings.catalogue_file is not None and not self.store.catalogue:
            self._initial_catalogue = self.settings.catalogue_file.read_text()
        self._topology_task = asyncio.get_running_loop().create_task(self._keep_topology())
        # The first parse pays for tosca-parser's imports and the profile (~0.5 s): pay it at start, not on a deploy.
        self._warmup = asyncio.get_running_loop().run_in_executor(None, parse_template, WARMUP_TEMPLATE)

    async def _keep_topology(self) -> None:
        """Crash-only: the PCE keeps its topology in memory, so whenever it has none (it started after us, or
        restarted) while a catalogue is in force, apply the catalogue again (ORCH-4)."""
        stub = pce_pb2_grpc.PceServiceStub(self.ctx.channel_to("pce"))
        while True:
            text = self.store.catalogue or self._initial_catalogue
            if text:
                try:
                    topo = await stub.GetTopology(pce_pb2.GetTopologyRequest(), timeout=5)
                    if topo.version == 0 or not self.store.catalogue:
                        await self._apply_catalogue(text)
                        self._initial_catalogue = ""
                except (grpc.aio.AioRpcError, Unavailable):
                    await asyncio.sleep(0.2)
                    continue
                except InvalidArgument as exc:
                    log.error("the catalogue in force was refused: %s", exc)
            await asyncio.sleep(self.settings.topology_check_s)

    async def stop(self) -> None:
        if self._topology_task is not None:
            self._topology_task.cancel()
            await asyncio.gather(self._topology_task, return_exceptions=True)
        await self.life.stop()
        await self.events.stop()

    def _visible(self, context: Any, owner: str) -> bool:
        p = principal_from_context(context)
        return p.role is not Role.MEDIA_SERVICE_PROVIDER or p.subject == owner

    def _get(self, context: Any, name: str) -> Any:
        if not name:
            raise InvalidArgument([FieldViolation("name", "required")])
        rec = self.store.services.get(name)
        if rec is None or not self._visible(context, rec.owner):
            raise NotFound("media service", name)
        return rec

    # --- templates -------------------------------------------------------------------------------------------------

    async def ValidateTemplate(self, request: S.ValidateTemplateRequest, context: Any) -> S.ValidateTemplateResponse:
        text = _document(request.template, "template")
        tpl, problems = await self.life.check(text)
        if tpl is not None and not errors_of(problems) and tpl.name in self.store.services:
            problems.append(
                Problem(
                    "metadata.service_name",
                    f"media service {tpl.name!r} is deployed; deploying this template would be refused",
                    "use UpdateMediaService to change it, or choose another name",
                    Severity.WARNING,
                )
            )
        return S.ValidateTemplateResponse(valid=not errors_of(problems), problems=[_problem_pb(p) for p in problems])

    async def DeployMediaService(
        self, request: S.DeployMediaServiceRequest, context: Any
    ) -> S.DeployMediaServiceResponse:
        text = _document(request.template, "template")
        owner = principal_from_context(context).subject
        try:
            rec = await self.life.deploy(text, owner)
        except TemplateInvalid as exc:
            raise _violations(exc.problems, "template") from exc
        return S.DeployMediaServiceResponse(service=self.life.view(rec))

    async def UpdateMediaService(
        self, request: S.UpdateMediaServiceRequest, context: Any
    ) -> S.UpdateMediaServiceResponse:
        text = _document(request.template, "template")
        self._get(context, request.name)
        try:
            rec = await self.life.update(request.name, text)
        except TemplateInvalid as exc:
            raise _violations(exc.problems, "template") from exc
        return S.UpdateMediaServiceResponse(service=self.life.view(rec))

    async def DeleteMediaService(
        self, request: S.DeleteMediaServiceRequest, context: Any
    ) -> S.DeleteMediaServiceResponse:
        self._get(context, request.name)
        await self.life.delete(request.name)
        return S.DeleteMediaServiceResponse()

    async def GetMediaService(self, request: S.GetMediaServiceRequest, context: Any) -> S.GetMediaServiceResponse:
        return S.GetMediaServiceResponse(service=self.life.view(self._get(context, request.name)))

    async def ListMediaServices(self, request: S.ListMediaServicesRequest, context: Any) -> S.ListMediaServicesResponse:
        return S.ListMediaServicesResponse(
            services=[
                self.life.view(r) for _, r in sorted(self.store.services.items()) if self._visible(context, r.owner)
            ]
        )

    async def WatchMediaService(
        self, request: S.WatchMediaServiceRequest, context: Any
    ) -> AsyncIterator[S.WatchMediaServiceResponse]:
        """The current status (or the held events after ``resume_after_revision``), then every event; with
        ``wait_for_creation`` the stream may start before the service exists (issue 14)."""
        name = request.name
        if not name:
            raise InvalidArgument([FieldViolation("name", "required")])
        if not request.wait_for_creation or name in self.store.services:
            self._get(context, name)
        queue = self.life.log.subscribe(name)
        try:
            backlog = (
                self.life.log.since(name, request.resume_after_revision) if request.resume_after_revision else None
            )
            if backlog is not None:
                for i, msg in enumerate(backlog):
                    self._check_visible(context, name)
                    out = S.WatchMediaServiceResponse()
                    out.CopyFrom(msg)
                    out.resumed = i == 0
                    yield out
                seen = backlog[-1].revision if backlog else request.resume_after_revision
            else:
                rec = self.store.services.get(name)
                if rec is not None:
                    self._check_visible(context, name)
                first = S.WatchMediaServiceResponse(
                    status=rec.status if rec is not None else S.SERVICE_STATUS_UNSPECIFIED,  # type: ignore[arg-type]
                    message="current status" if rec is not None else "waiting for creation",
                    revision=self.life.log.revision,
                )
                first.time.FromNanoseconds(int(self.life.wall() * 1e9))
                yield first
                seen = first.revision
            while True:
                msg = await queue.get()
                if msg.revision <= seen:
                    continue  # already sent from the backlog
                self._check_visible(context, name)
                yield msg
                if msg.message == "deleted" and name not in self.store.services and not request.wait_for_creation:
                    return
        finally:
            self.life.log.unsubscribe(name, queue)

    def _check_visible(self, context: Any, name: str) -> None:
        """A watcher that may not see the service (another provider's) gets NOT_FOUND, as for a Get."""
        rec = self.store.services.get(name)
        if rec is not None and not self._visible(context, rec.owner):
            raise NotFound("media service", name)

    async def ExportServiceDescriptor(
        self, request: S.ExportServiceDescriptorRequest, context: Any
    ) -> S.ExportServiceDescriptorResponse:
        rec = self._get(context, request.name)
        filename, data = export_descriptor(self.life.template_of(rec), rec.placement, self.life.catalogue())
        return S.ExportServiceDescriptorResponse(filename=filename, package=data)

    # --- infrastructure --------------------------------------------------------------------------------------------

    async def ApplyInfrastructureCatalogue(
        self, request: S.ApplyInfrastructureCatalogueRequest, context: Any
    ) -> S.ApplyInfrastructureCatalogueResponse:
        text = _document(request.catalogue, "catalogue")
        sites, version = await self._apply_catalogue(text, request.request_id)
        return S.ApplyInfrastructureCatalogueResponse(sites=sites, topology_version=version)

    async def _apply_catalogue(self, text: str, request_id: str = "") -> tuple[int, int]:
        cat, problems = parse_catalogue(text)
        if cat is None or errors_of(problems):
            raise _violations(problems, "catalogue")
        site_names = {s.name for s in cat.sites}
        lost = [
            PreconditionViolation(
                "PLACEMENT", f"{rec.name}/{node}", f"is placed on site {site!r}, absent from the catalogue"
            )
            for rec in self.store.services.values()
            for node, site in rec.placement.items()
            if site not in site_names and not rec.deleting
        ]
        if lost:
            raise FailedPrecondition(
                lost, "the catalogue drops sites deployed endpoints use; move or delete them first"
            )
        try:
            resp = await pce_pb2_grpc.PceServiceStub(self.ctx.channel_to("pce")).ApplyTopology(
                pce_pb2.ApplyTopologyRequest(
                    request_id=request_id or uuid.uuid4().hex, topology=catalogue_to_topology(cat)
                ),
                timeout=10,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() is grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(
                    [FieldViolation("catalogue", f"the PCE refused its topology: {err.details()}")]
                ) from err
            raise Unavailable(f"PCE: {err.code().name} {err.details()}") from err
        before = self.life.catalogue()
        self.store.catalogue = text
        self.store.save()
        self.events.publish(
            config_event("orchestrator", "infrastructure", {}, event="catalogue_applied", message=sha256(text)[:12])
        )
        for event in host_events(before, cat):
            self.events.publish(event)
        return len(cat.sites), int(resp.version)

    async def GetInfrastructure(self, request: S.GetInfrastructureRequest, context: Any) -> S.GetInfrastructureResponse:
        cat = self.life.catalogue()
        resp = S.GetInfrastructureResponse(
            catalogue_sha256=sha256(self.store.catalogue) if self.store.catalogue else ""
        )
        for s in cat.sites if cat else ():
            site = resp.sites.add(
                name=s.name,
                region=s.region,
                nap_id=s.nap_id,
                tier=s.tier,
                cpus=s.cpus,
                memory_mb=s.memory_mb,
                max_endpoints=s.max_endpoints,
            )
            site.location.latitude, site.location.longitude, site.location.name = (
                s.location.latitude,
                s.location.longitude,
                s.name,
            )
        return resp


def build(ctx: ServiceContext) -> ServiceSpec:
    """The orchestrator service for the runtime."""
    settings: Settings = ctx.settings if isinstance(ctx.settings, Settings) else Settings()
    servicer = OrchestratorServicer(ctx, settings)
    msp = OPERATORS | {Role.MEDIA_SERVICE_PROVIDER}
    return ServiceSpec(
        "flame.orchestrator.v1.OrchestratorService",
        servicer,
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server,
        AccessRules(
            default=ALL_ROLES,
            methods={
                "DeployMediaService": msp,
                "UpdateMediaService": msp,
                "DeleteMediaService": msp,
                "ApplyInfrastructureCatalogue": OPERATORS | {Role.INFRASTRUCTURE_PROVIDER},
            },
        ),
        on_start=servicer.start,
        on_stop=servicer.stop,
        metrics=lambda: metrics.collect(servicer),
    )
