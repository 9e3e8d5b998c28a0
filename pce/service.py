"""The PCE's gRPC adapter: PceService over the pure core (pce/core.py), the NAP session transport, and settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import grpc
from google.rpc import status_pb2
from pydantic import BaseModel, ConfigDict, model_validator

from flame_control.api.flame.pce.v1 import nap_session_pb2, pce_pb2, pce_pb2_grpc
from flame_control.clmc_events import ConfigEventPublisher
from flame_control.runtime.auth import principal_from_context
from flame_control.runtime.errors import DomainError, FieldViolation, InvalidArgument, Violations
from flame_control.runtime.service import ALL_ROLES, AccessRules, Role, ServiceContext, ServiceSpec
from pce import convert, metrics, persist, session_input
from pce import topology as topolib
from pce.core import PceCore
from pce.identity import certificate_names, check_nap_session, check_registration, registers_on_behalf
from pce.persist import SECTIONS, Persister, body_digest
from pce.registry import Registration, check_fqdn
from pce.replica import Replica
from pce.sessions import SessionTable
from pce.store.base import StateStore
from pce.store.etcd_store import EtcdStore
from pce.store.file_store import FileStore
from pce.switch_control import PORT_UP_HOLD_S, SwitchControl

log = logging.getLogger("flame.pce")

NETWORK_ADMINS = frozenset({Role.INFRASTRUCTURE_PROVIDER, Role.COMPONENT})
REGISTRANTS = frozenset({Role.MEDIA_SERVICE_PROVIDER, Role.COMPONENT})
ACCESS = AccessRules(
    default=ALL_ROLES,
    methods={
        "ApplyTopology": NETWORK_ADMINS,
        "UpdateLinkState": NETWORK_ADMINS,
        "RegisterFqdn": REGISTRANTS,
        "UnregisterFqdn": REGISTRANTS | {Role.PLATFORM_OPERATOR},
        "NapSession": frozenset({Role.COMPONENT}),
    },
)


class Settings(BaseModel):
    """`services.pce` config section."""

    model_config = ConfigDict(extra="forbid")

    #: YAML topology applied at start (SFR-7); empty = wait for ApplyTopology.
    topology_file: Path | None = None
    #: FQDN registrations from configuration (SFR-10): list of {fqdn, nap_id, owner}.
    registrations: list[dict[str, str]] = []
    #: Switch driver: "emulated" (tables executed in-process, frames between NAPs over UDP on loopback: the embedded
    #: default), "osken" (OpenFlow 1.3 into real switches through os-ken) or "none" (compute only).
    fabric: Literal["emulated", "osken", "none"] = "emulated"
    #: UDP port NAP agents attach to on the emulated fabric (0 = any free port).
    emulated_port: int = 50070
    #: Emulated fabric: delay every frame by the sum of the configured latencies of the links on its path (so routes
    #: through the core are slower than local ones, as on a real network); off = loopback speed.
    emulated_link_latency: bool = False
    #: Durable state (issue 13, SFR-20): "file" (the embedded default: a crash-safe SQLite file in the state
    #: directory, so a restarted PCE resumes with the same topology, LIDs, registrations, link states and versions)
    #: or "none" (state in memory only).
    store: Literal["file", "none", "etcd"] = "file"
    #: File of the "file" store (default: ``<state dir>/pce-state.db``).
    store_path: Path | None = None
    #: "etcd" store: the members' client addresses (host:port). With etcd, PCE replicas elect a leader (pce/replica.py):
    #: the leader programs switches and accepts writes, followers serve reads and NAP sessions. The form
    #: ``store: {kind: etcd, endpoints: [...], path: ...}`` is accepted too.
    etcd_endpoints: list[str] = []
    #: Key prefix of this PCE group's state in etcd.
    etcd_root: str = "/flame/pce/"
    #: Name of this replica (default: its advertise address).
    replica_id: str = ""
    #: host:port where other replicas and clients reach this replica's gRPC server (required with etcd).
    advertise_address: str = ""
    #: Leader lease TTL (s); etcd raises it to 1.5 of its election timeout if lower (docs/pce.md).
    leader_lease_ttl_s: int = 1

    @model_validator(mode="before")
    @classmethod
    def _store_section(cls, data: Any) -> Any:
        """Accept ``store: {kind, endpoints, path, root}`` as well as the flat fields."""
        if isinstance(data, dict) and isinstance(data.get("store"), dict):
            section = dict(data["store"])
            data = {k: v for k, v in data.items() if k != "store"}
            data["store"] = section.pop("kind", "file")
            for key, field in (("endpoints", "etcd_endpoints"), ("path", "store_path"), ("root", "etcd_root")):
                if key in section:
                    data[field] = section.pop(key)
            if section:
                raise ValueError(f"store: unknown keys {sorted(section)}")
        return data

    @model_validator(mode="after")
    def _etcd_needs(self) -> Settings:
        if self.store == "etcd" and not (self.etcd_endpoints and self.advertise_address):
            raise ValueError("store etcd needs etcd_endpoints (store.endpoints) and advertise_address")
        return self

    #: Seconds between audits of each switch's flows (flow stats; drift such as a hand-deleted flow is repaired
    #: within one period; fabric "osken"; 0 = no periodic audit).
    audit_interval_s: float = 10.0
    #: A switch port must stay up this long before its link carries routes again (hold-down against flapping).
    port_up_hold_s: float = PORT_UP_HOLD_S
    #: Send switch errors to the CLMC as config events.
    report_to_clmc: bool = True
    #: Where the os-ken OpenFlow controller listens (fabric "osken").
    openflow_host: str = "127.0.0.1"
    openflow_port: int = 6653


class PceServicer(SwitchControl, pce_pb2_grpc.PceServiceServicer):
    """PceService: validates requests, calls the core, pushes changed views to NAP sessions."""

    def __init__(
        self,
        core: PceCore,
        clock: Any = time.monotonic,
        wall: Any = time.time,
        driver: Any = None,
        persister: Persister | None = None,
    ) -> None:
        self.core = core
        #: Writes every accepted change to the durable store before the RPC answers (None: memory only).
        self.persister = persister
        #: Sections a failed store write left behind (written with the next successful one).
        self.unpersisted: set[str] = set()
        self.wall = wall
        #: Switch driver (OskenDriver) or None when the PCE only computes.
        self.driver = driver
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sessions: SessionTable[Any] = SessionTable(clock)
        self.queues: dict[str, asyncio.Queue[nap_session_pb2.NapSessionResponse | None]] = {}
        self.lock = asyncio.Lock()
        self.stats = metrics.PceStats()
        #: The durable store behind ``persister`` (closed on stop).
        self.store: StateStore | None = None
        #: This process's part in a group of replicas (store "etcd"), or None: a single PCE that always leads.
        self.replica: Any = None
        #: Store revision the core was loaded at (replicas follow the store from there).
        self.store_revision = 0

    def leads(self) -> bool:
        """True when this PCE may change state and program switches (a single PCE, or the replicas' leader)."""
        return self.replica is None or bool(self.replica.is_leader)

    def writable(self) -> None:
        """Raise FAILED_PRECONDITION naming the leader unless this PCE leads (issue 13)."""
        if self.replica is not None:
            self.replica.require_leader()

    # -- pushes ---------------------------------------------------------------------------------------------------
    def push(self, naps: set[str]) -> None:
        """Queue a new snapshot for every NAP whose view changed (and that may receive one now)."""
        pushed: dict[str, tuple[int, str]] = {}
        for nap in sorted(naps):
            view = self.core.views.get(nap)
            queue = self.queues.get(nap)
            if view is None or queue is None:
                continue
            body = convert.snapshot_body(view)
            digest = body_digest(body)
            version = self.sessions.offer(nap, view, digest)
            if version is not None:
                queue.put_nowait(convert.snapshot(version, view, body))
                pushed[nap] = (version, digest)
                self.stats.snapshots_pushed += 1
                log.info("snapshot pushed", extra={"fields": {"nap": nap, "version": version}})
        if pushed and self.persister is not None:
            self.persister.sessions(pushed)

    def persist(self, *sections: str) -> None:
        """Write the core's state of ``sections`` to the durable store (called under the lock, after the change).

        A store that fails does not turn an applied change into an error answer: the failure is logged and the
        sections are written with the next change that succeeds (``unpersisted`` until then)."""
        if self.persister is None or not self.leads():
            return
        wanted = set(sections or SECTIONS) | self.unpersisted
        try:
            self.persister.sync(self.core, sorted(wanted))
            self.unpersisted = set()
        except Exception as exc:  # sqlite3 / OS errors, an etcd outage: the change stands in memory
            self.unpersisted = wanted
            log.error(
                "change applied but not persisted", extra={"fields": {"sections": sorted(wanted), "error": str(exc)}}
            )

    async def lead(self, generation: int, configure: Callable[[PceCore], set[str]]) -> None:
        """This replica was elected (store etcd, pce/replica.py): apply configuration, persist, take the switches."""
        async with self.lock:
            self.push(configure(self.core))
            self.persist()
        if self.driver is not None and hasattr(self.driver, "take_role"):
            await asyncio.to_thread(self.driver.take_role, generation)
        await self.program()

    # -- topology -------------------------------------------------------------------------------------------------
    async def ApplyTopology(self, request: pce_pb2.ApplyTopologyRequest, context: Any) -> pce_pb2.ApplyTopologyResponse:
        self.writable()
        topo = topolib.from_proto(request.topology)
        async with self.lock:
            affected = self.core.apply_topology(topo)
            version = self.core.version
            self.persist()
            self.push(affected)
        unconfirmed = await self.program()
        return pce_pb2.ApplyTopologyResponse(
            version=version, affected_naps=len(affected), unconfirmed_switch_ids=unconfirmed
        )

    async def UpdateLinkState(
        self, request: pce_pb2.UpdateLinkStateRequest, context: Any
    ) -> pce_pb2.UpdateLinkStateResponse:
        if request.link_id not in self.core.topology.links:
            raise InvalidArgument([FieldViolation("link_id", f"unknown link {request.link_id!r}")])
        self.writable()
        with self.stats.reconvergence.time():
            async with self.lock:
                affected = self.core.set_link_state(request.link_id, request.up)
                if request.up:
                    self.core.admin_down.discard(request.link_id)
                else:
                    self.core.admin_down.add(request.link_id)
                version = self.core.version
                self.persist("links")
                self.push(affected)
            unconfirmed = await self.program()
        return pce_pb2.UpdateLinkStateResponse(
            version=version, affected_nap_ids=sorted(affected), unconfirmed_switch_ids=unconfirmed
        )

    async def stop_driver(self) -> None:
        """on_stop hook: stop the switch side, then close the durable store."""
        await self.stop_switches()
        if self.replica is not None:
            await self.replica.stop()
        if self.store is not None:
            self.store.close()

    async def GetTopology(self, request: pce_pb2.GetTopologyRequest, context: Any) -> pce_pb2.GetTopologyResponse:
        reply = pce_pb2.GetTopologyResponse(topology=topolib.to_proto(self.core.topology), version=self.core.version)
        table = self.core.plan.tables[0]
        for (a, b), lid in sorted(table.lids.items()):
            link = next(link for link in self.core.topology.links.values() if {link.a[0], link.b[0]} == {a, b})
            reply.lids.add(link_id=link.id, from_node_id=a, to_node_id=b, lid=lid.to_bytes(32, "big"))
        for nap, ilid in sorted(table.ilids.items()):
            reply.lids.add(link_id=f"ilid:{nap}", to_node_id=nap, lid=ilid.to_bytes(32, "big"))
        return reply

    # -- registrations --------------------------------------------------------------------------------------------
    async def RegisterFqdn(self, request: pce_pb2.RegisterFqdnRequest, context: Any) -> pce_pb2.RegisterFqdnResponse:
        v = Violations()
        try:
            fqdn = check_fqdn(request.fqdn)
        except InvalidArgument as err:
            v.extend(err.violations)
            fqdn = ""
        v.check(bool(request.nap_id), "nap_id", "must name the NAP in front of the endpoint")
        v.raise_if_any()
        principal = principal_from_context(context)
        check_registration(principal, certificate_names(context), request.nap_id)
        owner = request.owner if request.owner and registers_on_behalf(principal) else principal.subject
        reg = Registration(fqdn, request.nap_id, owner, request.endpoint_id, "rpc", self.wall())
        self.writable()
        async with self.lock:
            affected = self.core.register(reg)
            self.persist("registrations", "authority")
            self.push(affected)
        return pce_pb2.RegisterFqdnResponse(registration=convert.registration(reg))

    async def UnregisterFqdn(
        self, request: pce_pb2.UnregisterFqdnRequest, context: Any
    ) -> pce_pb2.UnregisterFqdnResponse:
        fqdn = check_fqdn(request.fqdn)
        check_registration(principal_from_context(context), certificate_names(context), request.nap_id)
        principal = principal_from_context(context)
        operator = principal.role in (Role.PLATFORM_OPERATOR, Role.COMPONENT)
        self.writable()
        async with self.lock:
            affected = self.core.unregister(fqdn, request.nap_id, None if operator else principal.subject)
            self.persist("registrations", "authority")
            self.push(affected)
        return pce_pb2.UnregisterFqdnResponse()

    async def ListRegistrations(
        self, request: pce_pb2.ListRegistrationsRequest, context: Any
    ) -> pce_pb2.ListRegistrationsResponse:
        fqdn = check_fqdn(request.fqdn) if request.fqdn else ""
        regs = self.core.registry.matching(fqdn, request.nap_id)
        return pce_pb2.ListRegistrationsResponse(registrations=[convert.registration(r) for r in regs])

    # -- paths ----------------------------------------------------------------------------------------------------
    async def ResolvePath(self, request: pce_pb2.ResolvePathRequest, context: Any) -> pce_pb2.ResolvePathResponse:
        v = Violations()
        v.check(bool(request.client_nap_id), "client_nap_id", "required")
        fqdn = ""
        try:
            fqdn = check_fqdn(request.fqdn)
        except InvalidArgument as err:
            v.extend(err.violations)
        v.raise_if_any()
        routes = self.core.resolve(request.client_nap_id, fqdn, convert.constraints(request.constraints, self.core))
        paths = [convert.path(request.client_nap_id, r) for r in routes]
        return pce_pb2.ResolvePathResponse(path=paths[0], alternatives=paths[1:])

    async def ComputeMulticastTree(
        self, request: pce_pb2.ComputeMulticastTreeRequest, context: Any
    ) -> pce_pb2.ComputeMulticastTreeResponse:
        c = convert.constraints(request.constraints, self.core)
        links, parts = self.core.multicast_parts(request.source_nap_id, list(request.destination_nap_ids), c)
        reply = pce_pb2.ComputeMulticastTreeResponse()
        reply.tree.source_nap_id = request.source_nap_id
        reply.tree.destination_nap_ids.extend(request.destination_nap_ids)
        reply.tree.link_ids.extend(links)
        for dests, fid, table in parts:
            reply.parts.add(
                source_nap_id=request.source_nap_id,
                destination_nap_ids=list(dests),
                fid=fid.to_bytes(32, "big"),
                false_positive_free=True,
                lid_table=table,
            )
        if len(parts) == 1:
            reply.tree.fid, reply.tree.false_positive_free, reply.tree.lid_table = reply.parts[0].fid, True, parts[0][2]
        return reply

    # -- NAP sessions ---------------------------------------------------------------------------------------------
    async def ListNapSessions(
        self, request: pce_pb2.ListNapSessionsRequest, context: Any
    ) -> pce_pb2.ListNapSessionsResponse:
        reply = pce_pb2.ListNapSessionsResponse()
        for rec in sorted(self.sessions.records.values(), key=lambda r: r.nap_id):
            s = reply.sessions.add(
                nap_id=rec.nap_id,
                connected=rec.connected,
                pushed_version=rec.pushed_version,
                acked_version=rec.acked_version,
                nack_count=rec.nack_count,
            )
            if rec.nack_count:
                s.last_nack.CopyFrom(status_pb2.Status(code=rec.last_nack_code, message=rec.last_nack_message))
            s.last_seen.FromNanoseconds(int((self.wall() - (self.sessions.clock() - rec.last_seen)) * 1e9))
        return reply

    async def NapSession(
        self, request_iterator: AsyncIterator[nap_session_pb2.NapSessionRequest], context: Any
    ) -> AsyncIterator[nap_session_pb2.NapSessionResponse]:
        request_iterator = session_input.decoded(request_iterator)
        try:
            hello = session_input.check_hello(await anext(request_iterator, None), self.core.topology.nodes)
        except DomainError as err:
            log.warning("nap session refused", extra={"fields": {"reason": err.message}})
            raise
        nap = hello.nap_id
        check_nap_session(principal_from_context(context), certificate_names(context), nap)
        queue: asyncio.Queue[nap_session_pb2.NapSessionResponse | None] = asyncio.Queue()
        if self.driver is not None and self.driver.kind == "emulated":
            access = nap_session_pb2.FabricAccess(nap_id=nap, attach_secret=self.driver.secret_for(nap))
            queue.put_nowait(nap_session_pb2.NapSessionResponse(fabric_access=access))
        old = self.queues.get(nap)
        if old is not None:
            old.put_nowait(None)  # a newer session replaces an older one
        self.queues[nap] = queue
        async with self.lock:
            self.sessions.open(nap, hello.last_applied_version)
            self.core.subscribe(nap, hello.interested)
            affected = {nap}
            for fqdn in hello.local_fqdns:
                if not self.leads() and (fqdn, nap) in self.core.registry.registrations:
                    continue  # a NAP failing over to a follower: its names are in the replicated state already
                try:
                    self.writable()
                    owner = principal_from_context(context).subject
                    affected |= self.core.register(Registration(fqdn, nap, owner, "", "nap", self.wall()))
                except DomainError as err:
                    log.warning(
                        "hello registration refused", extra={"fields": {"nap": nap, "fqdn": fqdn, "error": err.message}}
                    )
            self.persist("registrations", "authority")
            self.push(affected)
        log.info("nap session open", extra={"fields": {"nap": nap}})
        reader = asyncio.create_task(self._read(nap, request_iterator, queue, context))
        reason = "server stopped or the call was cancelled"
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                yield item
            if self.queues.get(nap) is not queue:
                reason = "replaced by a newer session of the same NAP"
            else:
                failure = await session_input.outcome(reader)
                if failure is not None:
                    reason = f"bad input: {failure.message}"
                    raise failure
                reason = "the NAP closed its stream"
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            if self.queues.get(nap) is queue:
                del self.queues[nap]
                self.sessions.close(nap)
                self.core.unsubscribe(nap)
            log.info("nap session closed", extra={"fields": {"nap": nap, "reason": reason}})

    async def _read(
        self, nap: str, requests: AsyncIterator[nap_session_pb2.NapSessionRequest], queue: Any, context: Any
    ) -> None:
        try:
            async for i, msg in session_input.numbered(requests):
                kind = session_input.check_message(msg, i)
                if kind == "ack":
                    self.sessions.ack(nap, msg.ack.version)
                    rec = self.sessions.records[nap]
                    log.info(
                        "snapshot acked",
                        extra={
                            "fields": {
                                "nap": nap,
                                "version": msg.ack.version,
                                "acked_version": rec.acked_version,
                                "pushed_version": rec.pushed_version,
                            }
                        },
                    )
                elif kind == "nack":
                    hold = self.sessions.nack(nap, msg.nack.version, msg.nack.error.code, msg.nack.error.message)
                    log.warning(
                        "snapshot nacked",
                        extra={
                            "fields": {
                                "nap": nap,
                                "version": msg.nack.version,
                                "error": msg.nack.error.message,
                                "hold_s": hold,
                            }
                        },
                    )
                    asyncio.get_running_loop().call_later(hold, self._retry_held)
                elif kind == "path_request":
                    queue.put_nowait(self._path_reply(nap, msg.path_request))
                elif kind == "registration":
                    queue.put_nowait(await self._registration_reply(nap, msg.registration, context))
        finally:
            queue.put_nowait(None)

    def _retry_held(self) -> None:
        for nap in self.sessions.due():
            rec = self.sessions.records[nap]
            rec.last_view = None  # a held view is offered again after the backoff
            self.push({nap})

    def _path_reply(self, nap: str, req: nap_session_pb2.PathRequest) -> nap_session_pb2.NapSessionResponse:
        reply = nap_session_pb2.PathReply(correlation_id=req.correlation_id)
        try:
            routes = self.core.resolve(
                nap, check_fqdn(req.fqdn, "path_request.fqdn"), convert.constraints(req.constraints, self.core)
            )
            reply.path.CopyFrom(convert.path(nap, routes[0]))
        except DomainError as err:
            reply.error.CopyFrom(err.to_status())
        return nap_session_pb2.NapSessionResponse(path_reply=reply)

    async def _registration_reply(
        self, nap: str, req: nap_session_pb2.LocalRegistration, context: Any
    ) -> nap_session_pb2.NapSessionResponse:
        reply = nap_session_pb2.RegistrationReply(correlation_id=req.correlation_id)
        try:
            fqdn = check_fqdn(req.fqdn, "registration.fqdn")
            self.writable()
            async with self.lock:
                if req.unregister:
                    affected = self.core.unregister(fqdn, nap)
                else:
                    reg = Registration(fqdn, nap, principal_from_context(context).subject, "", "nap", self.wall())
                    affected = self.core.register(reg)
                self.persist("registrations", "authority")
                self.push(affected)
            reply.status.code = grpc.StatusCode.OK.value[0]
        except DomainError as err:
            reply.status.CopyFrom(err.to_status())
        return nap_session_pb2.NapSessionResponse(registration_reply=reply)


def open_store(settings: Settings, state_dir: Path) -> StateStore:
    """The configured durable store: the embedded file, or etcd (shared by replicas)."""
    if settings.store == "etcd":
        return EtcdStore(settings.etcd_endpoints, settings.etcd_root)
    return FileStore(settings.store_path or state_dir / "pce-state.db")


def apply_config(core: PceCore, settings: Settings, file_sha: str, persister: Persister | None) -> set[str]:
    """Apply the configured topology file (when new or edited since ``file_sha``) and registrations to ``core``;
    returns the affected NAPs."""
    affected: set[str] = set()
    if settings.topology_file is not None:
        sha = persist.file_digest(Path(settings.topology_file).read_bytes())
        if sha != file_sha:  # a new or edited file wins over stored state; an unchanged one does not reset it
            affected |= core.apply_topology(topolib.load_file(settings.topology_file))
            if persister is not None:
                persister.topology_file(sha)
    for i, entry in enumerate(settings.registrations):
        fqdn = check_fqdn(entry.get("fqdn", ""), f"services.pce.registrations[{i}].fqdn")
        nap, owner = entry.get("nap_id", ""), entry.get("owner", "config")
        known = core.registry.registrations.get((fqdn, nap))
        if known is None or known.owner != owner:
            affected |= core.register(Registration(fqdn, nap, owner, "", "config", time.time()))
    return affected


def build(ctx: ServiceContext) -> ServiceSpec:
    """The PCE service for the runtime."""
    settings: Settings = ctx.settings
    store: StateStore | None = None
    persister: Persister | None = None
    restored_sessions: dict[str, tuple[int, str]] = {}
    core = PceCore()
    file_sha = ""
    if settings.store != "none":
        store = open_store(settings, ctx.state_dir)
        restored = persist.load(store)
        core, restored_sessions, file_sha = restored.core, restored.sessions, restored.topology_file_sha256
        persister = Persister(store, restored.raw)
        log.info(
            "state restored",
            extra={
                "fields": {
                    "revision": restored.revision,
                    "nodes": len(core.topology.nodes),
                    "down_links": sorted(lk.id for lk in core.topology.links.values() if lk.down),
                    "registrations": len(core.registry.registrations),
                    "version": core.version,
                    "lids_restored": restored.lids_restored,
                }
            },
        )
    if settings.store != "etcd":  # replicas: the leader applies configuration when elected (PceServicer.lead)
        apply_config(core, settings, file_sha, persister)
        if persister is not None:
            persister.sync(core)
    driver: Any = None
    if settings.fabric == "osken":
        from pce.switch.osken_driver import OskenDriver

        driver = OskenDriver(settings.openflow_host, settings.openflow_port, audit_interval_s=settings.audit_interval_s)
    elif settings.fabric == "emulated":
        from pce.switch.emulated import EmulatedDriver

        driver = EmulatedDriver(
            "127.0.0.1",
            settings.emulated_port,
            topology=lambda: servicer.core.topology,
            link_latency=settings.emulated_link_latency,
        )
    servicer = PceServicer(core, driver=driver, persister=persister)
    for nap, (version, digest) in restored_sessions.items():
        servicer.sessions.restore(nap, version, digest)
    servicer.store = store
    servicer.store_revision = restored.revision if store is not None else 0
    if isinstance(store, EtcdStore):
        servicer.replica = Replica(
            servicer,
            store,
            settings.replica_id or settings.advertise_address,
            settings.advertise_address,
            settings.leader_lease_ttl_s,
            on_leader=lambda generation, restored: servicer.lead(
                generation, lambda core: apply_config(core, settings, restored.topology_file_sha256, persister)
            ),
        )
    servicer.port_up_hold_s = settings.port_up_hold_s
    if settings.report_to_clmc:
        servicer.events = ConfigEventPublisher(lambda: ctx.channel_to("clmc"))
    return ServiceSpec(
        "flame.pce.v1.PceService",
        servicer,
        pce_pb2_grpc.add_PceServiceServicer_to_server,
        ACCESS,
        on_start=servicer.start_driver,
        on_stop=servicer.stop_driver,
        metrics=lambda: metrics.collect(servicer),
    )
