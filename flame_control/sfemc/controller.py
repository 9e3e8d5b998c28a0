"""The SFEMC's endpoint controller (SFEMC-4, SFEMC-5): desired state vs actual state, reconciled one step at a time.

Kubernetes-controller style: a loop wakes on every change (ApplyEndpoints, a KPI event, an override, a finished
step) and at least every second; each endpoint whose state differs from its desired state gets its next step (see
``states.next_step``) as a task of its own, at most ``max_parallel`` at once. A failed step moves the endpoint to
FAILED (with the failure category in its config event) and requeues it with exponential backoff and jitter; the next
attempt resumes from the last stable state. Booted and connected endpoints are health-checked; a crashed instance
is unregistered first (never left routable) and booted again.

Every transition is persisted, streamed to watchers and sent to the CLMC as a config event (CLMC-4); the CLMC derives
``endpoint_config`` (``<state>_sum``, ``<state>_mst``, ``current_state``) from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flame_control.api.flame.clmc.v1 import model_pb2
from flame_control.api.flame.common.v1 import common_pb2
from flame_control.api.flame.sfemc.v1 import sfemc_pb2
from flame_control.clmc_events import ConfigEventPublisher, config_event
from flame_control.sfemc import states
from flame_control.sfemc.actuator import GONE, Actuator, StepFailed
from flame_control.sfemc.endpoints import EndpointRecord, EndpointTable

log = logging.getLogger("flame.sfemc.controller")

UNPLACED = common_pb2.ENDPOINT_STATE_UNPLACED
FAILED = common_pb2.ENDPOINT_STATE_FAILED
BOOTED = common_pb2.ENDPOINT_STATE_BOOTED
CONNECTED = common_pb2.ENDPOINT_STATE_CONNECTED
PLACED = common_pb2.ENDPOINT_STATE_PLACED
TRUE = common_pb2.CONDITION_STATUS_TRUE
FALSE = common_pb2.CONDITION_STATUS_FALSE
UNKNOWN = common_pb2.CONDITION_STATUS_UNKNOWN


def state_name(state: int) -> str:
    """Lower-case FLAME state name ("connected")."""
    return str(common_pb2.EndpointState.Name(state)).removeprefix("ENDPOINT_STATE_").lower()  # type: ignore[arg-type]


@dataclass
class _Retry:
    attempts: int = 0
    not_before: float = 0.0


@dataclass
class Controller:
    """Drives every endpoint of the table towards the state ``desired(record)`` names."""

    table: EndpointTable
    actuator: Actuator
    events: ConfigEventPublisher
    #: Desired state of an endpoint (policies, overrides, initial state, removal).
    desired: Callable[[EndpointRecord], int]
    #: Who registers an endpoint's FQDN at the PCE: the owner of the name's zone (a delegate registers on its behalf).
    owner_of: Callable[[EndpointRecord], str]
    #: Endpoint steps in flight at once, all media services together.
    max_parallel: int = 64
    #: Endpoint steps in flight at once for one media service (a service whose steps hang keeps only these).
    max_parallel_per_service: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    health_interval_s: float = 2.0
    wall: Callable[[], float] = time.time
    mono: Callable[[], float] = time.monotonic
    watchers: list[asyncio.Queue[sfemc_pb2.WatchEndpointsResponse]] = field(default_factory=list)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _inflight: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _retry: dict[str, _Retry] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    #: Health probes in flight (one per endpoint at most); they run beside the loop, never inside it.
    _probing: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _last_health: float = 0.0
    #: Endpoints removed from the table (their last message for watchers has been sent).
    removed: int = 0
    #: Called with each endpoint dropped from the table (the SFEMC releases FQDN claims nobody uses any more).
    on_drop: Callable[[EndpointRecord], None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def adopt(self) -> None:
        """After a (re)start: take over instances the VIMs hold for our endpoints (an id lost in a crash between
        create and save) and delete labelled instances of endpoints we no longer know (no orphans, no duplicates)."""
        for name, vim in self.actuator.vims.items():
            try:
                instances = await asyncio.to_thread(vim.list)
            except Exception as exc:
                log.warning("cannot list instances of VIM %s: %s", name, exc)
                continue
            for inst in instances:
                rec = self.table.endpoints.get(inst.endpoint_id)
                if rec is not None and rec.spec.vim == name and rec.instance_id in ("", inst.instance_id):
                    if not rec.instance_id:
                        log.info("adopting instance %s of %s", inst.instance_id, rec.id)
                        rec.instance_id = inst.instance_id
                    continue
                log.info("removing orphan instance %s (%s) on %s", inst.instance_id, inst.endpoint_id, name)
                try:
                    await asyncio.to_thread(vim.delete, inst.instance_id)
                except Exception as exc:
                    log.warning("cannot remove orphan %s: %s", inst.instance_id, exc)
        self.table.save()

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._inflight.values(), *self._probing.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._inflight.clear()
        self._probing.clear()

    def wake(self) -> None:
        self._wake.set()

    def busy(self, endpoint_id: str) -> bool:
        return endpoint_id in self._inflight

    # --- views -----------------------------------------------------------------------------------------------------

    def view(self, rec: EndpointRecord) -> sfemc_pb2.Endpoint:
        """The endpoint as the API shows it."""
        spec = rec.spec
        e = sfemc_pb2.Endpoint(
            id=rec.id,
            media_service=rec.media_service,
            node_name=spec.node_name,
            fqdn=spec.fqdn,
            site=spec.site,
            nap_id=spec.nap_id,
            image=spec.image,
            state=rec.state,  # type: ignore[arg-type]
            desired_state=self.desired(rec),  # type: ignore[arg-type]
            overridden=bool(rec.override),
            address=rec.address,
            instance_id=rec.instance_id,
            last_error=rec.last_error,
            verified=rec.check.status == TRUE,
        )
        e.state_since.FromNanoseconds(int(rec.state_since * 1e9))
        cond = e.conditions.add(
            type="Verified",
            status=rec.check.status,
            reason=rec.check.reason,
            message=rec.check.message,
        )
        if rec.check.since:
            cond.last_transition_time.FromNanoseconds(int(rec.check.since * 1e9))
        now = self.wall()
        for name, secs in rec.durations.items():
            e.state_durations[name].FromNanoseconds(int(secs * 1e9))
        current = state_name(rec.state)
        e.state_durations[current].FromNanoseconds(
            int((rec.durations.get(current, 0.0) + max(0.0, now - rec.state_since)) * 1e9)
        )
        return e

    # --- transitions -----------------------------------------------------------------------------------------------

    def _tags(self, rec: EndpointRecord) -> dict[str, str]:
        return {
            "flame_sfc": rec.media_service,
            "flame_sf": rec.spec.node_name,
            "flame_sfe": rec.id,
            "flame_location": rec.spec.site,
            "flame_server": rec.spec.nap_id,
            "fqdn": rec.spec.fqdn,
        }

    def transition(
        self, rec: EndpointRecord, to_state: int, message: str = "", failure: int = 0, verified_by: str = ""
    ) -> None:
        """Record a state change: durations, persistence, watchers, CLMC config event. The new state counts as
        verified only when ``verified_by`` names what verified it (a step that just reached it)."""
        now = self.wall()
        before = rec.state
        if before == to_state and not message:
            return
        name = state_name(before)
        rec.durations[name] = rec.durations.get(name, 0.0) + max(0.0, now - rec.state_since)
        rec.state, rec.state_since = to_state, now
        rec.check.status, rec.check.since = UNKNOWN, now
        rec.check.reason, rec.check.message = "Changed", "state changed; not checked since"
        if to_state == UNPLACED or verified_by:
            rec.check.status, rec.check.reason, rec.check.message = TRUE, "StepSucceeded", verified_by
        if to_state != FAILED:
            rec.last_error = "" if not failure else rec.last_error
        loc = rec.spec.location
        self.events.publish(
            config_event(
                "sfemc",
                "endpoint",
                self._tags(rec),
                from_state=before,
                to_state=to_state,
                failure=failure,
                message=message,
                location=(loc.latitude, loc.longitude, loc.name) if rec.spec.HasField("location") else None,
                at_ns=int(now * 1e9),
            )
        )
        log.info(
            "endpoint %s: %s -> %s",
            rec.id,
            state_name(before),
            state_name(to_state),
            extra={"fields": {"endpoint": rec.id, "message": message}} if message else None,
        )
        self.table.save()
        self.notify(rec, before)

    def verify(self, rec: EndpointRecord, status: int, reason: str, message: str = "") -> None:
        """Record the result of a check of the endpoint's state; watchers hear of every change of its status."""
        c = rec.check
        if (c.status, c.reason, c.message) == (status, reason, message):
            return
        changed = c.status != status
        c.status, c.reason, c.message = status, reason, message
        if changed:
            c.since = self.wall()
            self.notify(rec, rec.state)

    def notify(self, rec: EndpointRecord, previous: int, removed: bool = False) -> None:
        """Send the endpoint's current view to every watcher."""
        msg = sfemc_pb2.WatchEndpointsResponse(
            endpoint=self.view(rec),
            previous_state=previous,  # type: ignore[arg-type]
            removed=removed,
        )
        for q in list(self.watchers):
            q.put_nowait(msg)

    # --- the loop --------------------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            self._wake.clear()
            try:
                self.reconcile_once()
                if self.mono() - self._last_health >= self.health_interval_s:
                    self._last_health = self.mono()
                    self._start_probes()
            except Exception:
                log.exception("reconcile pass failed")

    def reconcile_once(self) -> None:
        """Start the next step of every endpoint that needs one (and is not busy or backing off)."""
        now = self.mono()
        per_service: dict[str, int] = {}
        for rec in self.table.endpoints.values():
            if rec.id in self._inflight:
                per_service[rec.media_service] = per_service.get(rec.media_service, 0) + 1
        for rec in list(self.table.endpoints.values()):
            if rec.id in self._inflight or len(self._inflight) >= self.max_parallel:
                continue
            if per_service.get(rec.media_service, 0) >= self.max_parallel_per_service:
                continue
            retry = self._retry.get(rec.id)
            if retry is not None and now < retry.not_before:
                continue
            desired = self.desired(rec)
            if rec.removing and rec.state == UNPLACED:
                self._drop(rec)
                continue
            if rec.next_spec is not None and rec.state == UNPLACED:
                rec.spec, rec.next_spec, rec.instance_id, rec.address = rec.next_spec, None, "", ""
                self.table.save()
                desired = self.desired(rec)
            step = states.next_step(
                states.EndpointState(rec.state),
                states.EndpointState(desired),
                resume_from=states.EndpointState(rec.resume_from),
            )
            if step is None:
                if rec.state == FAILED:
                    self.transition(rec, rec.resume_from, "recovered")
                continue
            self._inflight[rec.id] = asyncio.get_running_loop().create_task(self._run(rec, step))
            per_service[rec.media_service] = per_service.get(rec.media_service, 0) + 1

    def _drop(self, rec: EndpointRecord) -> None:
        del self.table.endpoints[rec.id]
        self._retry.pop(rec.id, None)
        self.table.save()
        self.removed += 1
        self.notify(rec, rec.state, removed=True)
        if self.on_drop is not None:
            self.on_drop(rec)
        log.info("endpoint %s removed", rec.id)

    async def _run(self, rec: EndpointRecord, step: states.Step) -> None:
        try:
            self.transition(rec, int(step.transient))
            try:
                await self._perform(rec, step.action)
            except StepFailed as exc:
                rec.last_error = f"{step.action.name.lower()}: {exc}"
                rec.resume_from = int(step.source)
                self.transition(rec, FAILED, rec.last_error, exc.failure)
                self._backoff(rec.id)
                return
            if step.action is states.Action.REMOVE:
                rec.instance_id, rec.address = "", ""
            rec.resume_from = int(step.target)
            self._retry.pop(rec.id, None)
            self.transition(rec, int(step.target), verified_by=step.action.name.lower())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not wedge the endpoint: report it and back off
            log.exception("step %s of %s crashed", step.action.name, rec.id)
            rec.last_error = f"internal error: {exc}"
            rec.resume_from = int(step.source)
            self.transition(rec, FAILED, rec.last_error)
            self._backoff(rec.id)
        finally:
            self._inflight.pop(rec.id, None)
            self.wake()

    def _backoff(self, endpoint_id: str) -> None:
        r = self._retry.setdefault(endpoint_id, _Retry())
        r.attempts += 1
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (r.attempts - 1))
        r.not_before = self.mono() + delay * random.uniform(0.8, 1.2)

    async def _perform(self, rec: EndpointRecord, action: states.Action) -> None:
        a = self.actuator
        if action is states.Action.PLACE:
            rec.instance_id = await a.place(rec)
        elif action is states.Action.BOOT:
            rec.address = await a.boot(rec)
        elif action is states.Action.CONNECT:
            rec.via_nap = await a.connect(rec, self.owner_of(rec))
        elif action is states.Action.DISCONNECT:
            await a.disconnect(rec)
        elif action is states.Action.STOP:
            await a.stop(rec)
            rec.address = ""
        elif action is states.Action.REMOVE:
            await a.remove(rec)

    def _start_probes(self) -> None:
        """One health probe task per booted/connected endpoint not probed already (never awaited by the loop)."""
        loop = asyncio.get_running_loop()
        for rec in list(self.table.endpoints.values()):
            if rec.state not in (PLACED, BOOTED, CONNECTED) or rec.id in self._inflight or not rec.instance_id:
                continue
            if rec.id in self._probing:
                continue
            task = loop.create_task(self._probe(rec))
            self._probing[rec.id] = task
            task.add_done_callback(functools.partial(self._probe_done, rec.id))

    def _probe_done(self, endpoint_id: str, _task: asyncio.Task[None]) -> None:
        self._probing.pop(endpoint_id, None)

    def _unchanged(self, rec: EndpointRecord, state: int) -> bool:
        """After an await: is the endpoint still the one probed (in the table, same state, no step started)?"""
        return self.table.endpoints.get(rec.id) is rec and rec.state == state and rec.id not in self._inflight

    async def _probe(self, rec: EndpointRecord) -> None:
        """Verify a placed/booted/connected endpoint's state (issue 14); act on what is proven wrong, mark as unknown
        what cannot be told. Connected = the VIM runs it, the PCE lists its registration, its NAP maps it and a probe
        through that NAP to the FQDN answers (without a known NAP agent: the endpoint itself answers)."""
        state = rec.state
        try:
            await self._probe_checks(rec, state)
        except asyncio.CancelledError:
            raise
        except StepFailed as exc:
            if self._unchanged(rec, state):
                self.verify(rec, UNKNOWN, "CheckFailed", str(exc))
        except Exception:
            log.exception("health probe of %s crashed", rec.id)

    async def _probe_checks(self, rec: EndpointRecord, state: int) -> None:
        try:
            ok, detail = await self.actuator.running(rec)
        except StepFailed as exc:
            # The VIM cannot tell (daemon or API down): ask the endpoint itself. An endpoint that still answers
            # keeps serving (unverified); one that does not is no longer shown as running.
            if state == PLACED or await self.actuator.answers(rec):
                log.warning("VIM of %s unreachable: %s", rec.id, exc)
                if self._unchanged(rec, state):
                    self.verify(rec, UNKNOWN, "VimUnreachable", str(exc))
                return
            ok, detail = False, f"VIM unreachable ({exc}) and the endpoint does not answer"
        if not self._unchanged(rec, state):
            return
        if state == PLACED:
            if detail == GONE:
                self._fail(rec, common_pb2.ENDPOINT_STATE_UNPLACED, "instance missing at the VIM", 0)
            else:
                self.verify(rec, TRUE, "InstanceExists", detail)
            return
        if not ok:
            if rec.state == CONNECTED:
                try:
                    await self.actuator.disconnect(rec)
                except StepFailed as exc:
                    log.warning("could not withdraw %s after its instance died: %s", rec.id, exc)
                if not self._unchanged(rec, state):
                    return
            rec.address = ""
            self._fail(rec, PLACED, f"instance stopped running: {detail}", model_pb2.FAILURE_CATEGORY_BOOT)
            return
        if state == BOOTED:
            answered = await self.actuator.answers(rec)
            if self._unchanged(rec, state):
                self.verify(rec, TRUE if answered else UNKNOWN, "Answers" if answered else "NotAnswering", rec.address)
            return
        # Connected: registration at the PCE, then the NAP's mapping and a request through it.
        if not await self.actuator.registered(rec):
            if self._unchanged(rec, state):
                # The PCE lost it (restarted, or the NAP went away): connect again.
                self._fail(rec, BOOTED, "registration lost at the PCE", model_pb2.FAILURE_CATEGORY_CONNECTIVITY)
            return
        verdict, why = await self.actuator.nap_check(rec) if rec.via_nap else (None, "registered at the PCE")
        if not self._unchanged(rec, state):
            return
        if verdict is False:
            # The NAP forgot it (agent restarted) or does not reach it: register again, within a health interval.
            self._fail(rec, BOOTED, why, model_pb2.FAILURE_CATEGORY_CONNECTIVITY)
        elif verdict is True:
            self.verify(rec, TRUE, "ServedThroughNap", why)
        elif await self.actuator.answers(rec):
            self.verify(rec, TRUE, "RegisteredAndAnswers", why)
        else:
            self.verify(rec, UNKNOWN, "NotAnswering", f"{why}; the endpoint does not answer at {rec.address}")

    def _fail(self, rec: EndpointRecord, resume_from: int, error: str, failure: int) -> None:
        """A check proved the endpoint is not in its state: FAILED, to resume from ``resume_from``."""
        rec.last_error = error
        rec.resume_from = resume_from
        self.transition(rec, FAILED, error, failure)
        if failure == model_pb2.FAILURE_CATEGORY_BOOT:
            self._backoff(rec.id)
        self.wake()
