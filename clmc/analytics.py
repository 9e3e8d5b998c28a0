"""Query and analytics requests (CLMC-11, CLMC-12, CLMC-13, CLMC-16, CLMC-18): validation into storage queries
narrowed to the caller's viewpoint, and the data-quality report (completeness, gaps, staleness)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from google.protobuf.message import Message

from clmc.ingest import MEASUREMENT_RE, NAME_RE
from clmc.storage.base import AggKind, AggQuery, Selection, TagTuple
from clmc.viewpoint import Viewpoint, with_time
from flame_control.api.flame.clmc.v1 import clmc_pb2, kpi_pb2
from flame_control.runtime.errors import Violations

DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
MAX_WINDOWS = 100_000
#: Times storage can hold: int64 nanoseconds (InfluxDB's own limits), about 1677-09-21 to 2262-04-11. A Timestamp can
#: say year 1 or year 9999; such bounds are refused with a field violation instead of overflowing in a backend.
MIN_TIME_NS = -9_223_372_036_854_775_806
MAX_TIME_NS = 9_223_372_036_854_775_806
AGG_KINDS: dict[int, AggKind] = {
    kpi_pb2.AGGREGATION_MEAN: AggKind.MEAN,
    kpi_pb2.AGGREGATION_MIN: AggKind.MIN,
    kpi_pb2.AGGREGATION_MAX: AggKind.MAX,
    kpi_pb2.AGGREGATION_SUM: AggKind.SUM,
    kpi_pb2.AGGREGATION_COUNT: AggKind.COUNT,
    kpi_pb2.AGGREGATION_PERCENTILE: AggKind.PERCENTILE,
}


def _check_names(v: Violations, measurement: str, tags: Mapping[str, str], group_by: Sequence[str] = ()) -> None:
    v.check(bool(MEASUREMENT_RE.match(measurement)), "measurement", "required; letters, digits, '_' and '.'")
    for key in tags:
        v.check(bool(NAME_RE.match(key)), f"tags.{key}", "tag names are identifiers")
    for i, g in enumerate(group_by):
        v.check(bool(NAME_RE.match(g)), f"group_by[{i}]", "tag names are identifiers")
    v.check(len(set(group_by)) == len(group_by), "group_by", "duplicate tags")


def time_bound(v: Violations, req: Message, name: str) -> int | None:
    """The Timestamp field ``name`` of ``req`` in ns (None when unset), with a violation when storage cannot hold it."""
    if not req.HasField(name):
        return None
    ns: int = getattr(req, name).ToNanoseconds()
    v.check(MIN_TIME_NS <= ns <= MAX_TIME_NS, name, "must be between 1677-09-21 and 2262-04-11 (int64 nanoseconds)")
    return ns


def query_selection(req: clmc_pb2.QueryRequest, view: Viewpoint, now_ns: int) -> tuple[Selection, list[str], int]:
    """Selection, fields and limit of a Query request."""
    v = Violations()
    _check_names(v, req.measurement, req.tags)
    start = time_bound(v, req, "start")
    end = time_bound(v, req, "end")
    if end is None:
        end = now_ns
    v.check(start is None or end > start, "end", "must be after start (an unset end means now)")
    v.check(req.limit <= MAX_LIMIT, "limit", f"at most {MAX_LIMIT}")
    for i, f in enumerate(req.fields):
        v.check(bool(NAME_RE.match(f)), f"fields[{i}]", "field names are identifiers")
    v.raise_if_any()
    sel = with_time(view.narrow(req.measurement, req.tags), start, end)
    return sel, list(req.fields), req.limit or DEFAULT_LIMIT


def aggregate_query(req: clmc_pb2.AggregateRequest, view: Viewpoint) -> AggQuery:
    """A validated AggQuery narrowed to the viewpoint."""
    v = Violations()
    _check_names(v, req.measurement, req.tags, req.group_by)
    v.check(bool(NAME_RE.match(req.field)), "field", "required numeric field name")
    v.check(req.aggregation in AGG_KINDS, "aggregation", "required (mean, min, max, sum, count or percentile)")
    if req.aggregation == kpi_pb2.AGGREGATION_PERCENTILE:
        v.check(0 < req.percentile <= 100, "percentile", "must be in (0, 100]")
    v.check(req.HasField("start"), "start", "required")
    v.check(req.HasField("end"), "end", "required")
    start, end = time_bound(v, req, "start") or 0, time_bound(v, req, "end") or 0
    v.check(end > start, "end", "must be after start")
    window = req.window.ToNanoseconds() if req.HasField("window") else 0
    v.check(window >= 0 and window % 1_000_000 == 0, "window", "must be a positive whole number of milliseconds")
    if window > 0 and end > start:
        v.check((end - start) // window <= MAX_WINDOWS, "window", f"at most {MAX_WINDOWS} windows per query")
    v.raise_if_any()
    sel = view.narrow(req.measurement, req.tags, req.group_by)
    return AggQuery(
        req.measurement,
        req.field,
        AGG_KINDS[req.aggregation],
        start,
        end,
        window,
        tuple(req.group_by),
        sel.tags,
        req.percentile or 50.0,
    )


def quality_request(req: clmc_pb2.GetDataQualityRequest, view: Viewpoint) -> tuple[Selection, int]:
    """Selection and expected interval (ns) of a GetDataQuality request."""
    v = Violations()
    _check_names(v, req.measurement, req.tags)
    v.check(req.HasField("start") and req.HasField("end"), "start", "start and end are required")
    start, end = time_bound(v, req, "start") or 0, time_bound(v, req, "end") or 0
    v.check(end > start, "end", "must be after start")
    interval = req.expected_interval.ToNanoseconds()
    v.check(interval > 0, "expected_interval", "required, > 0")
    v.raise_if_any()
    sel = with_time(view.narrow(req.measurement, req.tags), start, end)
    return sel, interval


def data_quality(
    times_by_series: Mapping[TagTuple, list[int]], start_ns: int, end_ns: int, interval_ns: int
) -> list[tuple[TagTuple, float, int, int]]:
    """Per series: (tags, completeness 0..1, largest gap between consecutive points, staleness at end).

    A series that reported nothing in the range has no row: the caller cannot know it exists (use a deadman KPI).
    """
    expected = max(1, (end_ns - start_ns) // interval_ns)
    out = []
    for tags, times in sorted(times_by_series.items()):
        gaps = [b - a for a, b in itertools.pairwise(times)]
        out.append((tags, min(1.0, len(times) / expected), max(gaps, default=0), end_ns - times[-1]))
    return out
