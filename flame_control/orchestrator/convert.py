"""From the parsed template model to the contracts the orchestrator sends: endpoint specs and surrogate policies
for the SFEMC (ORCH-8, ORCH-9) and KPI definitions for the CLMC (CLMC-19). Pure."""

from __future__ import annotations

from google.protobuf import duration_pb2

from flame_control.api.flame.clmc.v1 import kpi_pb2
from flame_control.api.flame.common.v1 import common_pb2
from flame_control.api.flame.sfemc.v1 import sfemc_pb2
from flame_control.orchestrator.model import Catalogue, KpiSpec, ServiceTemplate, StateChangePolicy

_KPI_KIND = {
    "threshold": kpi_pb2.KPI_KIND_THRESHOLD,
    "relative": kpi_pb2.KPI_KIND_RELATIVE,
    "deadman": kpi_pb2.KPI_KIND_DEADMAN,
}
_AGG = {
    "": kpi_pb2.AGGREGATION_UNSPECIFIED,
    "mean": kpi_pb2.AGGREGATION_MEAN,
    "min": kpi_pb2.AGGREGATION_MIN,
    "max": kpi_pb2.AGGREGATION_MAX,
    "sum": kpi_pb2.AGGREGATION_SUM,
    "count": kpi_pb2.AGGREGATION_COUNT,
}
_CMP = {"gt": kpi_pb2.COMPARISON_GREATER, "lt": kpi_pb2.COMPARISON_LESS}


def endpoint_state(name: str) -> int:
    """flame.common.v1.EndpointState of a lower-case FLAME state name ("connected")."""
    return int(common_pb2.EndpointState.Value("ENDPOINT_STATE_" + name.upper()))


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def endpoint_specs(
    template: ServiceTemplate, placement: dict[str, str], catalogue: Catalogue, default_vim: str
) -> list[sfemc_pb2.EndpointSpec]:
    """One EndpointSpec per endpoint node, on the site placement chose."""
    sites = {s.name: s for s in catalogue.sites}
    out = []
    for node in template.endpoints:
        site = sites[placement[node.name]]
        spec = sfemc_pb2.EndpointSpec(
            node_name=node.name,
            fqdn=node.fqdn,
            site=site.name,
            nap_id=site.nap_id,
            image=node.image,
            vim=node.vim or default_vim,
            cpus=node.cpus,
            memory_mb=node.memory_mb,
            port=node.port,
            initial_state=endpoint_state(node.initial_state),  # type: ignore[arg-type]
            environment=node.environment,
        )
        spec.location.latitude, spec.location.longitude = site.location.latitude, site.location.longitude
        spec.location.name = site.name
        out.append(spec)
    return out


def surrogate_policy(p: StateChangePolicy) -> sfemc_pb2.SurrogatePolicy:
    t = p.trigger
    trigger = sfemc_pb2.Trigger(
        kpi=t.kpi,
        measurement=t.measurement,
        field=t.field,
        aggregation=t.aggregation,
        kind=t.kind,
        comparison=t.comparison,
        threshold=t.threshold,
        clear_threshold=t.threshold if t.clear_threshold is None else t.clear_threshold,
        scope=t.scope,
    )
    trigger.window.CopyFrom(duration(t.window_s))
    policy = sfemc_pb2.SurrogatePolicy(
        name=p.name,
        targets=list(p.targets),
        trigger=trigger,
        to_state=endpoint_state(p.to_state),  # type: ignore[arg-type]
        from_state=endpoint_state(p.from_state),  # type: ignore[arg-type]
    )
    policy.cooldown.CopyFrom(duration(p.cooldown_s))
    return policy


def kpi_definition(media_service: str, k: KpiSpec) -> kpi_pb2.KpiDefinition:
    agg, pct = (
        (kpi_pb2.AGGREGATION_PERCENTILE, float(k.aggregation[1:]))
        if k.aggregation.startswith("p")
        else (
            _AGG[k.aggregation],
            0.0,
        )
    )
    d = kpi_pb2.KpiDefinition(
        name=k.name,
        media_service=media_service,
        kind=_KPI_KIND[k.kind],
        measurement=k.measurement,
        field=k.field,
        aggregation=agg,
        percentile=pct,
        group_by=list(k.group_by),
        scope=k.scope,
        comparison=_CMP.get(k.comparison, kpi_pb2.COMPARISON_UNSPECIFIED),
        threshold=k.threshold,
        clear_threshold=k.threshold if k.clear_threshold is None else k.clear_threshold,
    )
    if k.window_s:
        d.window.CopyFrom(duration(k.window_s))
    if k.for_s:
        d.for_duration.CopyFrom(duration(k.for_s))
    if k.deadman_s:
        d.deadman_period.CopyFrom(duration(k.deadman_s))
    return d
