"""KpiDefinition (protobuf) <-> KpiSpec, with validation listing every violation (CLMC-19, CLMC-20, CLMC-21)."""

from __future__ import annotations

from collections.abc import Mapping

from clmc.analytics import AGG_KINDS
from clmc.ingest import MEASUREMENT_RE, NAME_RE
from clmc.kpi import DEADMAN, EITHER, GREATER, LESS, RELATIVE, THRESHOLD, KpiSpec
from clmc.model import SUBJECT_TAG
from clmc.schema import FLOAT, INTEGER
from flame_control.api.flame.clmc.v1 import kpi_pb2
from flame_control.runtime.errors import Violations

NUMERIC_TYPES = (FLOAT, INTEGER)
_KINDS = {kpi_pb2.KPI_KIND_THRESHOLD: THRESHOLD, kpi_pb2.KPI_KIND_RELATIVE: RELATIVE, kpi_pb2.KPI_KIND_DEADMAN: DEADMAN}
_KIND_ENUM = {v: k for k, v in _KINDS.items()}
_CMP = {kpi_pb2.COMPARISON_GREATER: GREATER, kpi_pb2.COMPARISON_LESS: LESS, kpi_pb2.COMPARISON_UNSPECIFIED: EITHER}
_CMP_ENUM = {v: k for k, v in _CMP.items()}
_AGG_ENUM = {v: k for k, v in AGG_KINDS.items()}
#: Window used for raw (non-aggregated) threshold KPIs when none is given: the newest point of the last minute.
DEFAULT_RAW_WINDOW_NS = 60 * 1_000_000_000
MIN_WINDOW_NS = 1_000_000_000


def spec_from_proto(d: kpi_pb2.KpiDefinition, service_scope: bool = True) -> KpiSpec:
    """A validated KpiSpec; raises InvalidArgument listing every problem (paths under ``kpi.``). A media-service KPI
    watches only points of its media service (scope ``flame_sfc`` added), whatever its measurement; an
    infrastructure KPI (``d.infrastructure``, CLMC-28) and a stored definition (``service_scope`` False: its scope is
    already complete) keep the scope exactly as given, any tags (NAP, switch, host, link)."""
    v = Violations()
    v.check(bool(NAME_RE.match(d.name)), "kpi.name", "required identifier")
    v.check(0 < len(d.media_service) <= 256, "kpi.media_service", "required (the flame_sfc it belongs to)")
    v.check(d.kind in _KINDS, "kpi.kind", "required: threshold, relative or deadman")
    v.check(bool(MEASUREMENT_RE.match(d.measurement)), "kpi.measurement", "required measurement name")
    kind = _KINDS.get(d.kind, THRESHOLD)
    window = d.window.ToNanoseconds() if d.HasField("window") else 0
    if kind != DEADMAN:
        v.check(bool(NAME_RE.match(d.field)), "kpi.field", "required numeric field")
    elif d.field:
        v.check(bool(NAME_RE.match(d.field)), "kpi.field", "must be a field name")
    aggregation = AGG_KINDS.get(d.aggregation)
    if kind == RELATIVE:
        v.check(aggregation is not None, "kpi.aggregation", "relative KPIs compare aggregated windows")
    if aggregation is not None or kind == RELATIVE:
        v.check(window >= MIN_WINDOW_NS, "kpi.window", "required, at least 1 s, for aggregated KPIs")
    elif window == 0:
        window = DEFAULT_RAW_WINDOW_NS
    v.check(window % 1_000_000 == 0, "kpi.window", "whole milliseconds")
    if d.aggregation == kpi_pb2.AGGREGATION_PERCENTILE:
        v.check(0 < d.percentile <= 100, "kpi.percentile", "must be in (0, 100]")
    for i, g in enumerate(d.group_by):
        v.check(bool(NAME_RE.match(g)) and g != SUBJECT_TAG, f"kpi.group_by[{i}]", "tag name (not personal data)")
    for key, value in d.scope.items():
        v.check(bool(NAME_RE.match(key)) and bool(value) and key != SUBJECT_TAG, f"kpi.scope.{key}", "tag = value")
    comparison = _CMP.get(d.comparison, GREATER)
    if kind == THRESHOLD:
        v.check(d.comparison != kpi_pb2.COMPARISON_UNSPECIFIED, "kpi.comparison", "required: greater or less")
    clear = d.clear_threshold if d.clear_threshold != 0 else d.threshold  # 0 = same as threshold
    if kind != DEADMAN:
        if comparison == LESS:
            v.check(clear >= d.threshold, "kpi.clear_threshold", "must be >= threshold for 'less' (hysteresis)")
        else:
            v.check(clear <= d.threshold, "kpi.clear_threshold", "must be <= threshold (hysteresis)")
    if kind == RELATIVE:
        v.check(d.threshold > 0, "kpi.threshold", "percent change, > 0")
    for_ns = d.for_duration.ToNanoseconds() if d.HasField("for_duration") else 0
    v.check(for_ns >= 0, "kpi.for_duration", "must not be negative")
    deadman = d.deadman_period.ToNanoseconds() if d.HasField("deadman_period") else 0
    if kind == DEADMAN:
        v.check(deadman >= MIN_WINDOW_NS, "kpi.deadman_period", "required, at least 1 s")
    v.raise_if_any()
    scope = dict(d.scope)
    if service_scope and not d.infrastructure:
        scope["flame_sfc"] = scope.get("flame_sfc", d.media_service)
    v.check(scope.get("flame_sfc", d.media_service) == d.media_service, "kpi.scope.flame_sfc", "must be the KPI's")
    v.raise_if_any()
    return KpiSpec(
        media_service=d.media_service,
        name=d.name,
        kind=kind,
        measurement=d.measurement,
        field=d.field,
        aggregation=aggregation,
        window_ns=window,
        group_by=tuple(d.group_by),
        scope=scope,
        comparison=comparison,
        threshold=d.threshold,
        clear_threshold=clear,
        percentile=d.percentile or 50.0,
        for_ns=for_ns,
        deadman_ns=deadman,
        infrastructure=d.infrastructure,
    )


def check_against_schema(spec: KpiSpec, fields: Mapping[str, str]) -> None:
    """A KPI must watch a measurement and numeric field the CLMC knows (the information model, or written before):
    a KPI on a typo would never fire. ``fields`` = field -> type of ``spec.measurement``; raises InvalidArgument."""
    v = Violations()
    if not fields:
        v.add(
            "kpi.measurement", f"unknown measurement {spec.measurement!r}: not in the information model, never written"
        )
    elif spec.field and spec.field not in fields:
        v.add("kpi.field", f"unknown field of {spec.measurement} (known: {', '.join(sorted(fields))})")
    elif spec.field and fields[spec.field] not in NUMERIC_TYPES:
        v.add("kpi.field", f"{spec.field} is a {fields[spec.field]} field; KPIs need a numeric field")
    v.raise_if_any()


def spec_to_proto(s: KpiSpec) -> kpi_pb2.KpiDefinition:
    """The KpiDefinition as stored (defaults filled in)."""
    d = kpi_pb2.KpiDefinition(
        name=s.name,
        media_service=s.media_service,
        kind=_KIND_ENUM[s.kind],
        measurement=s.measurement,
        field=s.field,
        aggregation=_AGG_ENUM[s.aggregation] if s.aggregation is not None else 0,  # type: ignore[arg-type]
        percentile=s.percentile if s.aggregation is not None else 0.0,
        group_by=list(s.group_by),
        scope=dict(s.scope),
        comparison=_CMP_ENUM[s.comparison],
        threshold=s.threshold,
        clear_threshold=s.clear_threshold,
        infrastructure=s.infrastructure,
    )
    d.window.FromNanoseconds(s.window_ns)
    if s.for_ns:
        d.for_duration.FromNanoseconds(s.for_ns)
    if s.deadman_ns:
        d.deadman_period.FromNanoseconds(s.deadman_ns)
    return d
