"""KPI engine adapter (CLMC-19..22): runs the pure evaluator against storage, persists alert state, numbers and
publishes KPI events to gRPC subscribers and optional sinks (the Kafka topic).

Evaluation runs every ``interval`` and also right after points of a watched measurement are stored, so threshold
events follow the data within milliseconds rather than a polling period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Sequence

from clmc.kpi import DEADMAN, RELATIVE, GroupState, KpiSpec, Observations, Transition, evaluate
from clmc.kpi_state import ClmcState
from clmc.storage.base import AggQuery, FieldVal, MetricStore, Selection, SeriesData, TagTuple, canonical_tags
from flame_control.api.flame.clmc.v1 import kpi_pb2

log = logging.getLogger("flame.clmc.kpi")

#: Receives every numbered KPI event (e.g. the Kafka producer); must not block.
EventSink = Callable[[kpi_pb2.KpiEvent], None]


def observe(store: MetricStore, spec: KpiSpec, now_ns: int) -> Observations:
    """What the evaluator needs for ``spec`` at ``now`` (blocking storage reads)."""
    tags = {k: frozenset({v}) for k, v in spec.scope.items()}
    if spec.kind == DEADMAN:
        lookback = max(spec.deadman_ns * 10, 3600 * 10**9)
        sel = Selection(spec.measurement, tags, now_ns - lookback, now_ns + 1)
        return {g: t for g, (t, _) in store.latest(sel, spec.field or None, spec.group_by).items()}
    if spec.aggregation is None:
        sel = Selection(spec.measurement, tags, now_ns - spec.window_ns, now_ns + 1)
        return {g: v for g, (_, v) in store.latest(sel, spec.field, spec.group_by).items() if not math.isnan(v)}

    def window(end: int) -> dict[TagTuple, float]:
        assert spec.aggregation is not None
        q = AggQuery(
            spec.measurement,
            spec.field,
            spec.aggregation,
            end - spec.window_ns,
            end,
            0,
            spec.group_by,
            tags,
            spec.percentile,
        )
        return {s.group: s.windows[0].value for s in store.aggregate(q) if s.windows}

    current = window(now_ns + 1)
    if spec.kind != RELATIVE:
        return current
    previous = window(now_ns + 1 - spec.window_ns)
    return {g: (v, previous[g]) for g, v in current.items() if g in previous}


def to_event(spec: KpiSpec, t: Transition, now_ns: int) -> kpi_pb2.KpiEvent:
    """The protobuf event of a transition (sequence assigned when stored)."""
    e = kpi_pb2.KpiEvent(
        kpi=spec.name,
        media_service=spec.media_service,
        state=kpi_pb2.KPI_STATE_FIRING if t.firing else kpi_pb2.KPI_STATE_CLEARED,
        value=t.value,
        group=dict(t.group),
        message=t.message,
    )
    e.time.FromNanoseconds(now_ns)
    return e


#: Measurement KPI events are also written to, so dashboards (Grafana) can plot them next to the data.
KPI_EVENT_MEASUREMENT = "kpi_event"


def event_point(event: kpi_pb2.KpiEvent) -> SeriesData:
    """A KPI event as a ``kpi_event`` point (tags: media service, KPI, state and the group's tags)."""
    tags = {**dict(event.group), "flame_sfc": event.media_service, "kpi": event.kpi}
    tags["kpi_state"] = "firing" if event.state == kpi_pb2.KPI_STATE_FIRING else "cleared"
    fields: dict[str, list[FieldVal | None]] = {"message": [event.message], "sequence": [int(event.sequence)]}
    if math.isfinite(event.value):
        fields["value"] = [event.value]
    return SeriesData(KPI_EVENT_MEASUREMENT, canonical_tags(tags), [event.time.ToNanoseconds()], fields)


class KpiEngine:
    """Evaluates every KPI periodically and on new data; fans events out."""

    def __init__(
        self,
        store: MetricStore,
        state: ClmcState,
        clock_ns: Callable[[], int],
        interval_s: float = 1.0,
        sinks: Sequence[EventSink] = (),
    ) -> None:
        self.store = store
        self.state = state
        self.clock_ns = clock_ns
        self.interval_s = interval_s
        self.sinks = list(sinks)
        self.started_ns = clock_ns()
        self.specs: dict[tuple[str, str], KpiSpec] = {s.key: s for s in state.kpis()}
        self.subscribers: set[asyncio.Queue[kpi_pb2.KpiEvent]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._eval_lock = asyncio.Lock()
        #: Evaluations of one KPI so far (metrics).
        self.evaluations = 0

    def define(self, spec: KpiSpec) -> list[kpi_pb2.KpiEvent]:
        """Store a KPI (blocking) and evaluate soon. Re-defining it unchanged keeps its alert state; a changed
        definition returns the numbered CLEARED events of the groups that were firing (hand them to ``announce``)."""
        events = self.state.put_kpi(spec, lambda firing: self._retired(spec, firing, "KPI redefined"))
        self.specs[spec.key] = spec
        self._wake.set()
        return events

    def delete(self, key: tuple[str, str]) -> tuple[bool, list[kpi_pb2.KpiEvent]]:
        """Delete a KPI and its alert state (blocking); returns whether it existed and the numbered CLEARED events
        of the groups that were firing (hand them to ``announce``)."""
        spec = self.specs.pop(key, None)
        if spec is None:
            return self.state.delete_kpi(key, lambda firing: [])
        return self.state.delete_kpi(key, lambda firing: self._retired(spec, firing, "KPI deleted"))

    def _retired(self, spec: KpiSpec, firing: dict[TagTuple, GroupState], reason: str) -> list[kpi_pb2.KpiEvent]:
        now = self.clock_ns()
        return [to_event(spec, Transition(g, False, s.value, reason), now) for g, s in sorted(firing.items())]

    async def announce(self, events: list[kpi_pb2.KpiEvent]) -> None:
        """Publish numbered events to subscribers and sinks, and store them as ``kpi_event`` points."""
        if not events:
            return
        for e in events:
            self.publish(e)
        try:
            await asyncio.to_thread(self.store.write, [event_point(e) for e in events])
        except Exception:
            log.exception("could not store %d KPI events (they were published)", len(events))

    def on_stored(self, batch: list[SeriesData]) -> None:
        """Stored hook: wake the evaluator when a watched measurement got points."""
        watched = {s.measurement for s in self.specs.values()}
        if any(s.measurement in watched for s in batch):
            self._wake.set()

    def evaluate_kpi(self, spec: KpiSpec, now_ns: int) -> list[kpi_pb2.KpiEvent]:
        """One evaluation of one KPI (blocking: storage and state); returns the numbered events."""
        self.evaluations += 1
        states: dict[TagTuple, GroupState] = self.state.alerts(spec.key)
        observations = observe(self.store, spec, now_ns)
        new_states, transitions = evaluate(spec, states, observations, now_ns, self.started_ns)
        if new_states == states and not transitions:
            return []
        return self.state.save(spec, new_states, [to_event(spec, t, now_ns) for t in transitions])

    async def evaluate_all(self) -> None:
        """Evaluate every KPI once and publish the events."""
        async with self._eval_lock:
            now = self.clock_ns()
            for spec in list(self.specs.values()):
                try:
                    events = await asyncio.to_thread(self.evaluate_kpi, spec, now)
                except Exception:
                    log.exception("evaluating KPI %s/%s failed; will retry", *spec.key)
                    continue
                await self.announce(events)

    def publish(self, event: kpi_pb2.KpiEvent) -> None:
        """Hand an event to every subscriber and sink."""
        for q in list(self.subscribers):
            q.put_nowait(event)
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:
                log.exception("KPI event sink failed")

    async def run(self) -> None:
        """The evaluation loop (until cancelled)."""
        while True:
            await self.evaluate_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()

    async def start(self) -> None:
        """Start the loop in the background."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Stop the loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
