"""One decision engine per media service (``decision.PolicyEngine``), fed from proto policies, CLMC KPI events and
polled metric values; the SFEMC servicer asks it for each endpoint's desired state."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flame_control.api.flame.clmc.v1 import kpi_pb2
from flame_control.api.flame.sfemc.v1 import sfemc_pb2
from flame_control.sfemc.clmc_link import MetricQuery
from flame_control.sfemc.decision import Decision, PolicyEngine, policies_from_proto
from flame_control.sfemc.endpoints import EndpointRecord
from flame_control.sfemc.states import EndpointState

log = logging.getLogger("flame.sfemc.decisions")


class PolicyHost:
    """Policy engines by media service."""

    def __init__(self, default_cooldown_s: float) -> None:
        self.default_cooldown_s = default_cooldown_s
        self.engines: dict[str, PolicyEngine] = {}
        #: Every decision taken, newest last (bounded), for status and tests.
        self.decisions: list[tuple[str, Decision]] = []

    def apply(
        self,
        media_service: str,
        policies: Iterable[sfemc_pb2.SurrogatePolicy],
        endpoints: Iterable[EndpointRecord],
        now: float,
    ) -> None:
        """Replace a service's policies (and its endpoints' initial states); no endpoints = drop the engine."""
        initial = {r.spec.node_name: EndpointState(r.spec.initial_state) for r in endpoints if not r.removing}
        if not initial:
            self.engines.pop(media_service, None)
            return
        plist = policies_from_proto(policies, self.default_cooldown_s)
        engine = self.engines.get(media_service)
        if engine is None:
            self.engines[media_service] = PolicyEngine(plist, initial, now)
        else:
            self._record(media_service, engine.apply(plist, initial, now))

    def desired(self, media_service: str, node: str, initial_state: int) -> int:
        engine = self.engines.get(media_service)
        if engine is None or node not in engine.initial:
            return initial_state
        return int(engine.desired(node))

    def on_kpi_event(self, event: kpi_pb2.KpiEvent, now: float) -> bool:
        """Feed one KPI event to its media service's engine; True when a desired state changed."""
        engine = self.engines.get(event.media_service)
        if engine is None:
            return False
        firing = event.state == kpi_pb2.KPI_STATE_FIRING
        return self._record(event.media_service, engine.on_kpi_event(event.kpi, firing, dict(event.group), now))

    def on_metric(self, key: tuple[str, str], value: float | None, now: float) -> bool:
        engine = self.engines.get(key[0])
        if engine is None:
            return False
        return self._record(key[0], engine.on_metric(key[1], value, now))

    def tick(self, now: float) -> bool:
        changed = False
        for name, engine in list(self.engines.items()):
            changed |= self._record(name, engine.tick(now))
        return changed

    def metric_queries(self) -> list[MetricQuery]:
        return [
            MetricQuery(
                (name, p.name),
                p.trigger.measurement,
                p.trigger.field,
                p.trigger.aggregation,
                p.trigger.window_s,
                dict(p.trigger.scope),
            )
            for name, engine in sorted(self.engines.items())
            for p in engine.metric_policies()
        ]

    def _record(self, media_service: str, decisions: list[Decision]) -> bool:
        for d in decisions:
            log.info(
                "%s/%s: desired %s -> %s (%s)",
                media_service,
                d.node,
                d.from_state.label,
                d.to_state.label,
                d.reason,
                extra={"fields": {"policy": d.policy, "media_service": media_service, "node": d.node}},
            )
            self.decisions.append((media_service, d))
        del self.decisions[:-1000]
        return bool(decisions)
