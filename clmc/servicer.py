"""ClmcService over gRPC: a thin adapter. Validation lives in clmc.ingest / clmc.analytics, viewpoints in
clmc.viewpoint, storage behind clmc.storage; blocking storage calls run in worker threads."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from clmc import analytics
from clmc.attribution import FqdnAttribution
from clmc.dimensions import DimensionMap
from clmc.endpoint_config import endpoint_config_point, endpoint_tags, transition
from clmc.ingest import CONFIG_EVENT_MEASUREMENT, Limits, convert_batch, convert_events, to_config_event, to_measurement
from clmc.kpi_engine import KpiEngine
from clmc.kpi_rules import check_against_schema, spec_from_proto, spec_to_proto
from clmc.kpi_state import ClmcState, subject_digest
from clmc.model import SUBJECT_TAG, information_model
from clmc.schema import FieldTypes
from clmc.storage.base import MetricStore, Selection, SeriesData, StorageError, StorageRejected
from clmc.viewpoint import Viewpoint, viewpoint_of, with_time
from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc, kpi_pb2
from flame_control.runtime.auth import principal_from_context
from flame_control.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
    Unavailable,
    Violations,
)
from flame_control.runtime.service import Role

log = logging.getLogger("flame.clmc")

#: Called after points were stored (KPI evaluation hooks, dashboards); must not block.
StoredHook = Callable[[list[SeriesData]], None]
#: Erases a data subject outside the metric store (Kafka tombstones); returns tombstones written.
SubjectEraser = Callable[[str, list[Any]], int]


def kpi_gap(first: int, last: int) -> clmc_pb2.KpiEventGap:
    """The gap marker of events a resumed subscription missed."""
    return clmc_pb2.KpiEventGap(first_sequence=first, last_sequence=last)


def wall_clock_ns() -> int:
    """The real clock (injected so tests can replace it)."""
    return time.time_ns()


class ClmcServicer(clmc_pb2_grpc.ClmcServiceServicer):
    """ClmcService: ingest, query, analytics, data subjects (KPI RPCs are added by clmc.kpi_servicer)."""

    def __init__(
        self,
        store: MetricStore,
        limits: Limits | None = None,
        clock_ns: Callable[[], int] = wall_clock_ns,
        subject_eraser: SubjectEraser | None = None,
        engine: KpiEngine | None = None,
        state: ClmcState | None = None,
        dimensions: DimensionMap | None = None,
    ) -> None:
        self.store = store
        #: Dimensions derived at ingest (CLMC-6).
        self.dimensions = dimensions or DimensionMap({})
        self.limits = limits or Limits()
        self.clock_ns = clock_ns
        self.subject_eraser = subject_eraser
        self.stored_hooks: list[StoredHook] = []
        #: One schema for every backend: field types per measurement (model, then stored, then first write).
        self.field_types = FieldTypes(store.field_types())
        self.engine = engine
        self.state = state
        self.erased_subjects: set[str] = state.erased_subjects() if state else set()
        #: FQDN -> media service of points that name only an FQDN (CLMC-12).
        self.attribution = FqdnAttribution(state.fqdn_services() if state else {})
        if engine is not None:
            self.stored_hooks.append(engine.on_stored)

    def view(self, context: Any) -> Viewpoint:
        """The caller's viewpoint."""
        return viewpoint_of(principal_from_context(context))

    async def _storage(self, fn: Callable[..., Any], *args: Any, subject: str = "request") -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except StorageRejected as exc:  # retrying cannot help: never UNAVAILABLE (publishers retry that)
            log.warning("storage refused: %s", exc)
            raise InvalidArgument([FieldViolation(subject, f"{self.store.name} backend refused it: {exc}")]) from exc
        except StorageError as exc:
            log.warning("storage error: %s", exc)
            raise Unavailable(f"{self.store.name} backend: {exc}") from exc

    async def store_batch(self, batch: list[SeriesData]) -> int:
        """Write converted points (dropping points of erased subjects) and run the stored hooks."""
        if self.erased_subjects:
            batch = [s for s in batch if not self.is_erased(dict(s.tags).get(SUBJECT_TAG))]
        batch = self.dimensions.apply(self.attribution.apply(batch))
        n: int = await self._storage(self.store.write, batch, subject="points")
        for hook in self.stored_hooks:
            hook(batch)
        return n

    def is_erased(self, subject: str | None) -> bool:
        """True for a data subject erased before (its late copies are dropped)."""
        return subject is not None and subject_digest(subject) in self.erased_subjects

    # --- ingest (CLMC-3, 4, 5, 8, 9) ---------------------------------------------------------------------------
    async def PublishMeasurements(
        self, request_iterator: AsyncIterator[clmc_pb2.PublishMeasurementsRequest], context: Any
    ) -> clmc_pb2.PublishMeasurementsResponse:
        accepted = batches = 0
        async for req in request_iterator:
            batch = self.convert(req)
            accepted += await self.store_batch(batch)
            batches += 1
        return clmc_pb2.PublishMeasurementsResponse(accepted_points=accepted, batches=batches)

    def convert(self, req: clmc_pb2.PublishMeasurementsRequest) -> list[SeriesData]:
        """Validate and convert a batch against the schema (gRPC and Kafka ingest); raises InvalidArgument."""
        return convert_batch(req, self.clock_ns(), self.limits, self.field_types)

    async def PublishConfigEvents(
        self, request_iterator: AsyncIterator[clmc_pb2.PublishConfigEventsRequest], context: Any
    ) -> clmc_pb2.PublishConfigEventsResponse:
        accepted = 0
        async for req in request_iterator:
            events = convert_events(req, self.clock_ns(), self.limits)
            learned = self.attribution.learn(events)
            if learned and self.state is not None:
                await asyncio.to_thread(self.state.put_fqdn_services, learned)
            derived = await asyncio.to_thread(self._endpoint_configs, events) if self.state is not None else []
            accepted += await self.store_batch(events)
            if derived:
                await self.store_batch(derived)
        return clmc_pb2.PublishConfigEventsResponse(accepted_events=accepted)

    def _endpoint_configs(self, events: list[SeriesData]) -> list[SeriesData]:
        """endpoint_config points for endpoint transitions (blocking: reads and writes the tracks)."""
        assert self.state is not None
        out = []
        for e in sorted(events, key=lambda s: s.times_ns[0]):
            tags = dict(e.tags)
            endpoint = endpoint_tags(tags)
            to_state = tags.get("to_state", "")
            if tags.get("subject_kind") != "endpoint" or endpoint is None or not to_state:
                continue
            state = to_state.removeprefix("ENDPOINT_STATE_").lower()
            track = transition(self.state.endpoint_track(endpoint), state, e.times_ns[0])
            self.state.put_endpoint_track(endpoint, track)
            out.append(endpoint_config_point(endpoint, track, e.times_ns[0]))
        return out

    # --- query and analytics (CLMC-11, 12, 13, 16, 18) ---------------------------------------------------------
    async def Query(self, request: clmc_pb2.QueryRequest, context: Any) -> clmc_pb2.QueryResponse:
        view = self.view(context)
        sel, fields, limit = analytics.query_selection(request, view, self.clock_ns())
        points, truncated = await self._storage(self.store.query, sel, fields, limit)
        return clmc_pb2.QueryResponse(points=[to_measurement(p) for p in view.redact(points)], truncated=truncated)

    async def Aggregate(self, request: clmc_pb2.AggregateRequest, context: Any) -> clmc_pb2.AggregateResponse:
        q = analytics.aggregate_query(request, self.view(context))
        result = await self._storage(self.store.aggregate, q)
        resp = clmc_pb2.AggregateResponse()
        for s in result:
            out = resp.series.add(group={k: v for k, v in s.group})
            for w in s.windows:
                p = out.points.add(value=w.value, count=w.count)
                p.window_start.FromNanoseconds(w.start_ns)
        return resp

    async def GetDataQuality(
        self, request: clmc_pb2.GetDataQualityRequest, context: Any
    ) -> clmc_pb2.GetDataQualityResponse:
        view = self.view(context)
        sel, interval = analytics.quality_request(request, view)
        times = await self._storage(self.store.point_times, sel)
        assert sel.start_ns is not None and sel.end_ns is not None
        resp = clmc_pb2.GetDataQualityResponse()
        for tags, completeness, gap, staleness in analytics.data_quality(times, sel.start_ns, sel.end_ns, interval):
            visible = {k: v for k, v in tags if view.personal_data or k != SUBJECT_TAG}
            s = resp.series.add(tags=visible, completeness=completeness)
            s.max_gap.FromNanoseconds(gap)
            s.staleness.FromNanoseconds(staleness)
        return resp

    async def DeleteMeasurements(
        self, request: clmc_pb2.DeleteMeasurementsRequest, context: Any
    ) -> clmc_pb2.DeleteMeasurementsResponse:
        view = self.view(context)
        if view.role is not Role.PLATFORM_OPERATOR:
            raise PermissionDenied("only the platform operator deletes measurements")
        v = Violations()
        analytics._check_names(v, request.measurement, request.tags)
        start = analytics.time_bound(v, request, "start")
        end = analytics.time_bound(v, request, "end")
        v.check(start is None or end is None or end > start, "end", "must be after start")
        v.raise_if_any()
        sel = with_time(view.narrow(request.measurement, request.tags), start, end)
        deleted = await self._storage(self.store.delete, sel)
        return clmc_pb2.DeleteMeasurementsResponse(points_deleted=deleted)

    # --- data subjects (CLMC-25, 26) ---------------------------------------------------------------------------
    @staticmethod
    def _subject(subject_id: str) -> Selection:
        v = Violations()
        v.check(0 < len(subject_id) <= 256, "subject_id", "required, 1..256 characters")
        v.raise_if_any()
        return Selection(None, {SUBJECT_TAG: frozenset({subject_id})})

    def _require_subject_access(self, context: Any) -> None:
        if not self.view(context).personal_data:
            raise PermissionDenied("only the platform operator may read or erase personal data")

    async def QueryDataSubject(
        self, request: clmc_pb2.QueryDataSubjectRequest, context: Any
    ) -> clmc_pb2.QueryDataSubjectResponse:
        self._require_subject_access(context)
        points, _ = await self._storage(self.store.query, self._subject(request.subject_id), (), 10_000_000)
        resp = clmc_pb2.QueryDataSubjectResponse()
        for p in points:
            if p.measurement == CONFIG_EVENT_MEASUREMENT:
                resp.events.append(to_config_event(p))
            else:
                resp.points.append(to_measurement(p))
        return resp

    async def DeleteDataSubject(
        self, request: clmc_pb2.DeleteDataSubjectRequest, context: Any
    ) -> clmc_pb2.DeleteDataSubjectResponse:
        self._require_subject_access(context)
        sel = self._subject(request.subject_id)
        # Late arrivals (e.g. Kafka redelivery) are dropped from now on; remembered by digest across restarts.
        self.erased_subjects.add(subject_digest(request.subject_id))
        if self.state is not None:
            await asyncio.to_thread(self.state.add_erased_subject, request.subject_id)
        points, _ = await self._storage(self.store.query, sel, (), 10_000_000)
        tombstones = 0
        if self.subject_eraser is not None:
            try:
                tombstones = await asyncio.to_thread(self.subject_eraser, request.subject_id, points)
            except Exception as exc:  # the Kafka side could not be erased now; the caller retries (idempotent)
                log.warning("kafka erasure of a subject failed: %s", exc)
                raise Unavailable(f"kafka erasure failed, retry: {exc}") from exc
        await self._storage(self.store.delete, sel)
        left = await self._storage(self.store.count, sel)
        if left:
            raise Unavailable(f"{left} points of the subject are still stored after the delete; retry")
        events = sum(1 for p in points if p.measurement == CONFIG_EVENT_MEASUREMENT)
        return clmc_pb2.DeleteDataSubjectResponse(
            points_deleted=len(points) - events,
            events_deleted=events,
            kafka_tombstones=tombstones,
            verified_backends=[self.store.name],
        )

    # --- KPIs (CLMC-19..22) -------------------------------------------------------------------------------------
    def _engine(self) -> KpiEngine:
        if self.engine is None:
            raise FailedPrecondition([PreconditionViolation("STATE", "kpi", "KPI engine not configured")])
        return self.engine

    async def DefineKpi(self, request: clmc_pb2.DefineKpiRequest, context: Any) -> clmc_pb2.DefineKpiResponse:
        view = self.view(context)
        kpi = request.kpi
        if view.infrastructure_only and not kpi.infrastructure:
            kpi = kpi_pb2.KpiDefinition()
            kpi.CopyFrom(request.kpi)
            kpi.infrastructure = True  # the infrastructure provider defines infrastructure KPIs only
        if kpi.infrastructure and not view.may_define_infrastructure_kpi(kpi.measurement):
            raise PermissionDenied(
                f"role {view.role.value} may not define an infrastructure KPI on {kpi.measurement!r} (infrastructure"
                " KPIs: platform operator or infrastructure provider, on nap_*, pce_*, switch_*, host_* measurements)"
            )
        spec = spec_from_proto(kpi)
        check_against_schema(spec, self.field_types.fields_of(spec.measurement))
        view.check_service(spec.media_service)
        if not view.may_read_measurement(spec.measurement):
            raise PermissionDenied(f"role {view.role.value} may define KPIs on infrastructure measurements only")
        engine = self._engine()
        await engine.announce(await asyncio.to_thread(engine.define, spec))
        return clmc_pb2.DefineKpiResponse(kpi=spec_to_proto(spec))

    async def ListKpis(self, request: clmc_pb2.ListKpisRequest, context: Any) -> clmc_pb2.ListKpisResponse:
        view, engine = self.view(context), self._engine()
        if request.media_service:
            view.check_service(request.media_service)
        resp = clmc_pb2.ListKpisResponse()
        for key, spec in sorted(engine.specs.items()):
            if not view.may_see_kpi(spec.media_service, spec.measurement) or request.media_service not in (
                "",
                spec.media_service,
            ):
                continue
            status = resp.kpis.add(kpi=spec_to_proto(spec))
            alerts = await asyncio.to_thread(engine.state.alerts, key)
            for group, st in sorted(alerts.items()):
                if st.firing:
                    status.firing.add(
                        kpi=spec.name,
                        media_service=spec.media_service,
                        state=kpi_pb2.KPI_STATE_FIRING,
                        value=st.value,
                        group=dict(group),
                    )
        return resp

    async def DeleteKpi(self, request: clmc_pb2.DeleteKpiRequest, context: Any) -> clmc_pb2.DeleteKpiResponse:
        v = Violations()
        v.check(bool(request.media_service), "media_service", "required")
        v.check(bool(request.name), "name", "required")
        v.raise_if_any()
        view, engine = self.view(context), self._engine()
        view.check_service(request.media_service)
        existing = engine.specs.get((request.media_service, request.name))
        if existing is not None and not view.may_read_measurement(existing.measurement):
            raise PermissionDenied(f"role {view.role.value} may delete KPIs on infrastructure measurements only")
        existed, events = await asyncio.to_thread(engine.delete, (request.media_service, request.name))
        if not existed:
            raise NotFound("kpi", f"{request.media_service}/{request.name}")
        await engine.announce(events)
        return clmc_pb2.DeleteKpiResponse()

    async def SubscribeKpiEvents(
        self, request: clmc_pb2.SubscribeKpiEventsRequest, context: Any
    ) -> AsyncIterator[clmc_pb2.SubscribeKpiEventsResponse]:
        view, engine = self.view(context), self._engine()
        if request.media_service:
            view.check_service(request.media_service)

        def wanted(e: kpi_pb2.KpiEvent) -> bool:
            spec = engine.specs.get((e.media_service, e.kpi))
            measurement = spec.measurement if spec is not None else ""
            visible = (
                view.may_see_kpi(e.media_service, measurement)
                if spec is not None
                else view.may_see_service(e.media_service) and not view.infrastructure_only
            )
            return visible and request.media_service in ("", e.media_service)

        queue: asyncio.Queue[kpi_pb2.KpiEvent] = asyncio.Queue()
        engine.subscribers.add(queue)  # subscribe before replaying, then skip what the replay already sent
        try:
            last = request.after_sequence
            if request.after_sequence:
                oldest = await asyncio.to_thread(engine.state.oldest_sequence)
                if oldest > request.after_sequence + 1:  # resumed past retention: say so, never skip silently
                    gap = kpi_gap(request.after_sequence + 1, oldest - 1)
                    yield clmc_pb2.SubscribeKpiEventsResponse(gap=gap)
                for e in await asyncio.to_thread(engine.state.events_after, request.after_sequence):
                    last = e.sequence
                    if wanted(e):
                        yield clmc_pb2.SubscribeKpiEventsResponse(event=e)
            while True:
                e = await queue.get()
                if e.sequence > last and wanted(e):
                    yield clmc_pb2.SubscribeKpiEventsResponse(event=e)
        finally:
            engine.subscribers.discard(queue)

    async def GetInformationModel(
        self, request: clmc_pb2.GetInformationModelRequest, context: Any
    ) -> clmc_pb2.GetInformationModelResponse:
        reply = clmc_pb2.GetInformationModelResponse(model=information_model())
        for name, dim in sorted(self.dimensions.dimensions.items()):
            reply.dimensions.add(name=name, source_tag=dim.source_tag, mapping=dim.mapping, default_value=dim.default)
        return reply
