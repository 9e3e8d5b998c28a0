"""The SFEMC's gRPC adapter (SFEMC-1..7): endpoint sets and surrogate policies from the orchestrator, endpoint views
and watches, operator overrides, endpoint images and delegated name registration. The endpoint controller
(``controller.py``) does the work; decisions come from ``decision.py`` fed by ``clmc_link.py``."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flame_control.api.flame.clmc.v1 import kpi_pb2
from flame_control.api.flame.common.v1 import common_pb2
from flame_control.api.flame.sfemc.v1 import sfemc_pb2, sfemc_pb2_grpc
from flame_control.clmc_events import ConfigEventPublisher
from flame_control.naming import NameAuthority, fqdn_problem, normalise_fqdn
from flame_control.runtime.auth import principal_from_context
from flame_control.runtime.errors import FieldViolation, InvalidArgument, NotFound, PermissionDenied, Violations
from flame_control.runtime.service import ALL_ROLES, OPERATORS, AccessRules, Role, ServiceContext, ServiceSpec
from flame_control.sfemc import images as image_registry
from flame_control.sfemc import metrics, states
from flame_control.sfemc.actuator import Actuator, Timeouts
from flame_control.sfemc.clmc_link import ClmcLink, MetricQuery
from flame_control.sfemc.controller import Controller
from flame_control.sfemc.decision import policies_from_proto, policy_problems
from flame_control.sfemc.decisions_host import PolicyHost
from flame_control.sfemc.endpoints import EndpointRecord, EndpointTable, ServiceRecord, endpoint_id, needs_new_instance
from flame_control.sfemc.vim_calls import Bounds, VimCalls
from flame_control.vim.base import VimDriver

log = logging.getLogger("flame.sfemc")
#: Seconds between two heartbeats of an idle WatchEndpoints stream (watchers treat ~3 missed ones as a lost watch).
HEARTBEAT_S = 2.0
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
#: Template node names (TOSCA style allows '_').
_NODE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_HELD = {
    common_pb2.ENDPOINT_STATE_PLACED,
    common_pb2.ENDPOINT_STATE_BOOTED,
    common_pb2.ENDPOINT_STATE_CONNECTED,
}


class VimSettings(BaseModel):
    """One VIM the SFEMC drives (`services.sfemc.vims.<name>`)."""

    model_config = ConfigDict(extra="forbid")

    place_timeout_s: float = Field(default=60.0, gt=0)
    boot_timeout_s: float = Field(default=60.0, gt=0)
    stop_timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    #: Health probes of running endpoints (VIM status, the endpoint's TCP answer).
    probe_timeout_s: float = Field(default=5.0, gt=0)
    #: Threads for this VIM's steps (all media services together; issue 14 isolation).
    step_workers: int = Field(default=16, ge=1)
    #: Step threads one media service may hold on this VIM at once.
    service_slots: int = Field(default=4, ge=1)
    #: Threads for this VIM's health probes (separate from steps, so probes never wait behind slow boots).
    probe_workers: int = Field(default=8, ge=1)
    #: docker: the daemon's URL (e.g. unix:///run/docker.sock).
    docker_url: str = ""
    #: docker: network mode of endpoint containers ("host": reachable by the NAP on this machine).
    network_mode: str = "host"
    #: openstack: cloud name in clouds.yaml.
    openstack_cloud: str = ""
    #: openstack: network endpoints attach to.
    openstack_network: str = ""


class Settings(BaseModel):
    """`services.sfemc` config section."""

    model_config = ConfigDict(extra="forbid")

    #: Minimum seconds between two actions of one surrogate policy (when the policy sets none).
    default_cooldown_s: float = Field(default=30.0, ge=0)
    #: VIMs by name ("process", "docker", "openstack") with their timeouts.
    vims: dict[str, VimSettings] = Field(default_factory=lambda: {"process": VimSettings()})
    #: NAP id -> host:port of its NAP agent's admin service (endpoints are registered through it when known).
    nap_admin: dict[str, str] = Field(default_factory=dict)
    #: Endpoint steps run at once (all media services).
    max_parallel: int = Field(default=64, ge=1)
    #: Endpoint steps run at once for one media service (a service whose boots hang keeps only these busy).
    max_parallel_per_service: int = Field(default=4, ge=1)
    #: Seconds between two polls of metric triggers (SFEMC-3).
    metric_poll_s: float = Field(default=1.0, gt=0)
    #: Seconds between two health checks of running endpoints.
    health_interval_s: float = Field(default=2.0, gt=0)
    #: Garbage collection of endpoint images (SFEMC-6): registered images no endpoint used for this many seconds are
    #: removed (0 = never; the built-in image always stays).
    image_gc_after_s: float = Field(default=0.0, ge=0)


def make_vim(name: str, s: VimSettings, state_dir: Any) -> VimDriver:
    """Build a configured VIM driver."""
    if name == "process":
        from flame_control.vim.process import ProcessVim

        return ProcessVim(state_dir / "process-vim", boot_timeout_s=s.boot_timeout_s)
    if name == "docker":
        from flame_control.vim.docker_vim import DockerVim

        return DockerVim(
            s.docker_url or "unix:///var/run/docker.sock", network_mode=s.network_mode, timeout_s=s.boot_timeout_s
        )
    if name == "openstack":
        import openstack

        from flame_control.vim.openstack_vim import OpenStackVim

        driver: VimDriver = OpenStackVim(
            openstack.connect(cloud=s.openstack_cloud or None), network=s.openstack_network
        )
        return driver
    raise ValueError(f"unknown VIM {name!r}")


def _check_spec(v: Violations, i: int, spec: sfemc_pb2.EndpointSpec, vims: set[str], seen: set[str]) -> None:
    p = f"endpoints[{i}]"
    v.check(bool(_NODE.match(spec.node_name)), f"{p}.node_name", "must be 1-63 lower-case letters, digits, '_' or '-'")
    v.check(spec.node_name not in seen, f"{p}.node_name", f"duplicate node {spec.node_name!r}")
    seen.add(spec.node_name)
    problem = fqdn_problem(spec.fqdn)
    if problem:
        v.add(f"{p}.fqdn", problem)
    v.check(bool(spec.nap_id), f"{p}.nap_id", "required: the NAP in front of the endpoint's site")
    v.check(bool(spec.image), f"{p}.image", "required")
    v.check(spec.vim in vims, f"{p}.vim", f"VIM {spec.vim!r} is not configured here (configured: {sorted(vims)})")
    v.check(spec.initial_state in _HELD, f"{p}.initial_state", "must be PLACED, BOOTED or CONNECTED")
    v.check(spec.cpus >= 0 and spec.memory_mb >= 0, f"{p}.cpus", "resources must not be negative")
    v.check(spec.port < 65536, f"{p}.port", "must be a TCP port")


def _check_policies(v: Violations, policies: Any, nodes: set[str], default_cooldown_s: float) -> None:
    """Policy problems (decision.policy_problems) added to ``v``."""
    try:
        converted = policies_from_proto(policies, default_cooldown_s)
    except InvalidArgument as exc:
        v.extend(exc.violations)
        return
    v.extend(policy_problems(converted, nodes))


class SfemcServicer(sfemc_pb2_grpc.SfemcServiceServicer):
    """SfemcService over the endpoint table and controller."""

    def __init__(self, ctx: ServiceContext, settings: Settings) -> None:
        self.settings = settings
        self.table = EndpointTable.load(ctx.state_dir / "sfemc.json")
        self.names = NameAuthority.from_json(self.table.extras.get("names", {}))
        doc = self.table.extras.get("images")
        self.images = image_registry.from_json(doc) if doc else image_registry.ImageRegistry()
        self.vims = {n: make_vim(n, s, ctx.state_dir) for n, s in settings.vims.items()}
        self.policies = PolicyHost(settings.default_cooldown_s)
        for svc in self.table.services.values():
            self.policies.apply(svc.name, svc.policies, self.table.of_service(svc.name), time.time())
        self.events = ConfigEventPublisher(lambda: ctx.channel_to("clmc"), outbox=ctx.state_dir / "clmc-outbox.sqlite")
        nap_targets = dict(settings.nap_admin)
        channel_for = ctx.channel_for

        def nap_admin(nap_id: str) -> Any:
            target = nap_targets.get(nap_id)
            return channel_for(target) if target and channel_for is not None else None

        self.actuator = Actuator(
            self.vims,
            {
                n: Timeouts(
                    s.place_timeout_s, s.boot_timeout_s, s.stop_timeout_s, s.connect_timeout_s, s.probe_timeout_s
                )
                for n, s in settings.vims.items()
            },
            lambda: ctx.channel_to("pce"),
            nap_admin,
            self._image_reference,
            VimCalls(
                {
                    n: Bounds(s.step_workers, min(s.service_slots, s.step_workers), s.probe_workers)
                    for n, s in settings.vims.items()
                }
            ),
        )
        self.controller = Controller(
            self.table,
            self.actuator,
            self.events,
            desired=self.desired,
            owner_of=self._registrant,
            max_parallel=settings.max_parallel,
            max_parallel_per_service=settings.max_parallel_per_service,
            health_interval_s=settings.health_interval_s,
        )
        self.controller.on_drop = self._release_name
        self.clmc = ClmcLink(
            lambda: ctx.channel_to("clmc"),
            self._on_kpi,
            self._on_metric,
            self._metric_queries,
            lambda: self.table.kpi_sequence,
            poll_s=settings.metric_poll_s,
        )
        self._tick_task: asyncio.Task[None] | None = None

    # --- wiring ----------------------------------------------------------------------------------------------------

    def _release_name(self, dropped: EndpointRecord) -> None:
        """Release the FQDN claim of a dropped endpoint when no endpoint uses the name any more (issue 14)."""
        name = normalise_fqdn(dropped.spec.fqdn)
        if any(normalise_fqdn(r.spec.fqdn) == name for r in self.table.endpoints.values()):
            return
        if self.names.release(name):
            log.info("released the claim on %s", name)
            self._save()

    async def start(self) -> None:
        self.events.start()
        await self.controller.adopt()
        self.controller.start()
        self.clmc.start()
        self._tick_task = asyncio.get_running_loop().create_task(self._tick_loop())

    async def stop(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            await asyncio.gather(self._tick_task, return_exceptions=True)
        await self.clmc.stop()
        await self.controller.stop()
        await self.events.stop()
        self.actuator.calls.close()
        for vim in self.vims.values():
            vim.close()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            now = time.time()
            if self.policies.tick(now):
                self.controller.wake()
                self._notify_all()
            if self.settings.image_gc_after_s:
                gone = self.images.garbage_collect(self._users(), now, self.settings.image_gc_after_s)
                if gone:
                    log.info("garbage-collected unused endpoint images", extra={"fields": {"images": gone}})
                    self._save()

    def _save(self) -> None:
        self.table.extras["names"] = self.names.to_json()
        self.table.extras["images"] = image_registry.to_json(self.images)
        self.table.save()

    def desired(self, rec: EndpointRecord) -> int:
        """Desired state: removal, then a pending new instance, then an operator override, then the policies."""
        if rec.removing or rec.next_spec is not None:
            return common_pb2.ENDPOINT_STATE_UNPLACED
        if rec.override:
            return rec.override
        return self.policies.desired(rec.media_service, rec.spec.node_name, rec.spec.initial_state)

    def _registrant(self, rec: EndpointRecord) -> str:
        """The zone owner of the endpoint's FQDN (SFEMC-7: a delegate's endpoints register on the owner's behalf)."""
        svc = self.table.services.get(rec.media_service)
        return self.names.owner_of(normalise_fqdn(rec.spec.fqdn)) or (svc.owner if svc else "")

    def _image_known(self, name: str, vim: str) -> bool:
        return name in self.images and self.images.get(name).vim == vim

    def _image_reference(self, name: str, vim: str) -> str:
        if not self._image_known(name, vim):
            raise LookupError(f"no image {name!r} registered for VIM {vim!r} (RegisterEndpointImage)")
        return self.images.get(name).reference

    def _on_kpi(self, event: kpi_pb2.KpiEvent) -> None:
        if event.sequence and event.sequence <= self.table.kpi_sequence and event.state != kpi_pb2.KPI_STATE_FIRING:
            return
        if self.policies.on_kpi_event(event, time.time()):
            self.controller.wake()
            self._notify_all()
        if event.sequence > self.table.kpi_sequence:
            self.table.kpi_sequence = event.sequence
            self.table.save()

    def _on_metric(self, key: tuple[str, str], value: float | None) -> None:
        if self.policies.on_metric(key, value, time.time()):
            self.controller.wake()
            self._notify_all()

    def _metric_queries(self) -> list[MetricQuery]:
        return self.policies.metric_queries()

    def _notify_all(self) -> None:
        """Desired states may have changed: tell watchers (the orchestrator derives service status from them)."""
        for rec in self.table.endpoints.values():
            self.controller.notify(rec, rec.state)

    def _visible(self, context: Any, media_service: str) -> bool:
        principal = principal_from_context(context)
        if principal.role is not Role.MEDIA_SERVICE_PROVIDER:
            return True
        svc = self.table.services.get(media_service)
        return svc is not None and svc.owner == principal.subject

    def _record(self, context: Any, eid: str) -> EndpointRecord:
        if not eid:
            raise InvalidArgument([FieldViolation("endpoint_id", "required")])
        rec = self.table.endpoints.get(eid)
        if rec is None or not self._visible(context, rec.media_service):
            raise NotFound("endpoint", eid)
        return rec

    # --- RPCs ------------------------------------------------------------------------------------------------------

    async def ApplyEndpoints(
        self, request: sfemc_pb2.ApplyEndpointsRequest, context: Any
    ) -> sfemc_pb2.ApplyEndpointsResponse:
        v = Violations()
        v.check(
            bool(_NAME.match(request.media_service)), "media_service", "must be 1-63 lower-case letters, digits, '-'"
        )
        seen: set[str] = set()
        for i, spec in enumerate(request.endpoints):
            _check_spec(v, i, spec, set(self.vims), seen)
            if spec.vim in self.vims and spec.image and not self._image_known(spec.image, spec.vim):
                v.add(f"endpoints[{i}].image", f"no image {spec.image!r} registered for VIM {spec.vim!r}")
        _check_policies(v, request.policies, seen, self.settings.default_cooldown_s)
        v.raise_if_any()
        owner = request.owner or principal_from_context(context).subject
        existing = self.table.services.get(request.media_service)
        if existing is not None and existing.owner != owner and request.endpoints:
            raise PermissionDenied(f"media service {request.media_service!r} belongs to another owner")
        for i, spec in enumerate(request.endpoints):
            fqdn = normalise_fqdn(spec.fqdn)
            if not self.names.may_register(fqdn, owner):
                raise PermissionDenied(
                    f"endpoints[{i}].fqdn: {fqdn!r} is governed by a zone {owner!r} does not own; "
                    "its owner must delegate it (DelegateName)"
                )
        now = time.time()
        wanted = {s.node_name: s for s in request.endpoints}
        for rec in self.table.of_service(request.media_service):
            new = wanted.pop(rec.spec.node_name) if rec.spec.node_name in wanted else None
            if new is None:
                rec.removing = True
            elif needs_new_instance(rec.spec, new):
                rec.next_spec = new
            else:
                rec.spec, rec.removing = new, False
        for new in wanted.values():
            added = EndpointRecord(request.media_service, new, state_since=now)
            self.table.endpoints[added.id] = added
            self.controller.notify(added, common_pb2.ENDPOINT_STATE_UNSPECIFIED)
        for spec in request.endpoints:
            self.names.claim(normalise_fqdn(spec.fqdn), owner)
        if request.endpoints:
            self.table.services[request.media_service] = ServiceRecord(
                request.media_service, owner, list(request.policies)
            )
        else:
            self.table.services.pop(request.media_service, None)
        self.policies.apply(
            request.media_service, list(request.policies), self.table.of_service(request.media_service), now
        )
        self._save()
        self.controller.wake()
        self._notify_all()
        return sfemc_pb2.ApplyEndpointsResponse(
            endpoints=[self.controller.view(r) for r in self.table.of_service(request.media_service)]
        )

    async def ApplySurrogatePolicies(
        self, request: sfemc_pb2.ApplySurrogatePoliciesRequest, context: Any
    ) -> sfemc_pb2.ApplySurrogatePoliciesResponse:
        svc = self.table.services.get(request.media_service)
        if svc is None or not self._visible(context, request.media_service):
            raise NotFound("media service", request.media_service)
        v = Violations()
        nodes = {r.spec.node_name for r in self.table.of_service(svc.name)}
        _check_policies(v, request.policies, nodes, self.settings.default_cooldown_s)
        v.raise_if_any()
        svc.policies = list(request.policies)
        self.policies.apply(svc.name, svc.policies, self.table.of_service(svc.name), time.time())
        self._save()
        self.controller.wake()
        self._notify_all()
        return sfemc_pb2.ApplySurrogatePoliciesResponse(policies=len(svc.policies))

    async def ListEndpoints(
        self, request: sfemc_pb2.ListEndpointsRequest, context: Any
    ) -> sfemc_pb2.ListEndpointsResponse:
        chosen = [
            self.controller.view(e)
            for _, e in sorted(self.table.endpoints.items())
            if (not request.media_service or e.media_service == request.media_service)
            and self._visible(context, e.media_service)
        ]
        return sfemc_pb2.ListEndpointsResponse(endpoints=chosen)

    async def GetEndpoint(self, request: sfemc_pb2.GetEndpointRequest, context: Any) -> sfemc_pb2.GetEndpointResponse:
        return sfemc_pb2.GetEndpointResponse(endpoint=self.controller.view(self._record(context, request.endpoint_id)))

    async def SetEndpointState(
        self, request: sfemc_pb2.SetEndpointStateRequest, context: Any
    ) -> sfemc_pb2.SetEndpointStateResponse:
        rec = self._record(context, request.endpoint_id)
        allowed = _HELD | {common_pb2.ENDPOINT_STATE_UNPLACED, common_pb2.ENDPOINT_STATE_UNSPECIFIED}
        if request.desired_state not in allowed:
            raise InvalidArgument(
                [FieldViolation("desired_state", "must be UNPLACED, PLACED, BOOTED, CONNECTED or UNSPECIFIED (clear)")]
            )
        rec.override = int(request.desired_state)
        self.table.save()
        self.controller.wake()
        self.controller.notify(rec, rec.state)
        return sfemc_pb2.SetEndpointStateResponse(endpoint=self.controller.view(rec))

    async def WatchEndpoints(
        self, request: sfemc_pb2.WatchEndpointsRequest, context: Any
    ) -> AsyncIterator[sfemc_pb2.WatchEndpointsResponse]:
        queue: asyncio.Queue[sfemc_pb2.WatchEndpointsResponse] = asyncio.Queue(maxsize=0)
        self.controller.watchers.append(queue)
        try:
            if request.include_current:
                for _, rec in sorted(self.table.endpoints.items()):
                    if (not request.media_service or rec.media_service == request.media_service) and self._visible(
                        context, rec.media_service
                    ):
                        yield sfemc_pb2.WatchEndpointsResponse(
                            endpoint=self.controller.view(rec),
                            previous_state=rec.state,  # type: ignore[arg-type]
                        )
                yield sfemc_pb2.WatchEndpointsResponse()
            while True:
                try:
                    msg = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield sfemc_pb2.WatchEndpointsResponse(heartbeat=True)
                    continue
                ms = msg.endpoint.media_service
                if (not request.media_service or ms == request.media_service) and self._visible(context, ms):
                    yield msg
        finally:
            self.controller.watchers.remove(queue)

    async def RegisterEndpointImage(
        self, request: sfemc_pb2.RegisterEndpointImageRequest, context: Any
    ) -> sfemc_pb2.RegisterEndpointImageResponse:
        image, _ = self.images.register(image_registry.image_from_proto(request.image), time.time(), self._users())
        self._save()
        return sfemc_pb2.RegisterEndpointImageResponse(image=self._image_view(image))

    async def ListEndpointImages(
        self, request: sfemc_pb2.ListEndpointImagesRequest, context: Any
    ) -> sfemc_pb2.ListEndpointImagesResponse:
        return sfemc_pb2.ListEndpointImagesResponse(images=[self._image_view(i) for i in self.images.images()])

    async def DeleteEndpointImage(
        self, request: sfemc_pb2.DeleteEndpointImageRequest, context: Any
    ) -> sfemc_pb2.DeleteEndpointImageResponse:
        if not request.name:
            raise InvalidArgument([FieldViolation("name", "required")])
        self.images.delete(request.name, self._users())
        self._save()
        return sfemc_pb2.DeleteEndpointImageResponse()

    async def DelegateName(
        self, request: sfemc_pb2.DelegateNameRequest, context: Any
    ) -> sfemc_pb2.DelegateNameResponse:
        v = Violations()
        problem = fqdn_problem(request.fqdn)
        if problem:
            v.add("fqdn", problem)
        v.check(bool(request.delegate), "delegate", "required: the subject allowed to register names under fqdn")
        v.raise_if_any()
        owner = principal_from_context(context).subject
        members = self.names.delegate(normalise_fqdn(request.fqdn), owner, request.delegate, request.revoke)
        self._save()
        return sfemc_pb2.DelegateNameResponse(delegates=sorted(members))

    def _users(self) -> dict[str, list[str]]:
        return image_registry.users_by_image({r.id: r.spec.image for r in self.table.endpoints.values()})

    def _image_view(self, image: image_registry.EndpointImage) -> sfemc_pb2.EndpointImage:
        return image_registry.image_to_proto(image, self.images.in_use(image.name, self._users()))


def build(ctx: ServiceContext) -> ServiceSpec:
    """The SFEMC service for the runtime."""
    settings: Settings = ctx.settings if isinstance(ctx.settings, Settings) else Settings()
    servicer = SfemcServicer(ctx, settings)
    readers = ALL_ROLES
    return ServiceSpec(
        "flame.sfemc.v1.SfemcService",
        servicer,
        sfemc_pb2_grpc.add_SfemcServiceServicer_to_server,
        AccessRules(
            default=OPERATORS,
            methods={
                "ListEndpoints": readers,
                "GetEndpoint": readers,
                "WatchEndpoints": readers,
                "ListEndpointImages": readers,
                "RegisterEndpointImage": OPERATORS | {Role.MEDIA_SERVICE_PROVIDER},
                "DelegateName": OPERATORS | {Role.MEDIA_SERVICE_PROVIDER},
            },
        ),
        on_start=servicer.start,
        on_stop=servicer.stop,
        metrics=lambda: metrics.collect(servicer),
    )


__all__ = ["Settings", "build", "endpoint_id", "states"]
