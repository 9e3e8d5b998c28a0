"""The storage contract every CLMC backend implements (CLMC-10), and the plain data it speaks.

Point identity is (measurement, tags, time): writing the same identity again overwrites the fields instead of adding
a point, which is what makes at-least-once ingest (Kafka redelivery, client retries) free of duplicates.
Backends are blocking; the servicer calls them from worker threads.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Protocol

#: A field value as stored: float, int, str or bool.
FieldVal = float | int | str | bool
#: Tags in canonical form: sorted (key, value) pairs.
TagTuple = tuple[tuple[str, str], ...]
#: Tag filter: each key must take one of the given values.
TagFilter = Mapping[str, frozenset[str]]


def canonical_tags(tags: Mapping[str, str]) -> TagTuple:
    """Tags as a sorted tuple (the series identity)."""
    return tuple(sorted(tags.items()))


def matches(tags: Mapping[str, str], tag_filter: TagFilter) -> bool:
    """True when ``tags`` satisfy every key of ``tag_filter``."""
    return all(tags.get(key) in values for key, values in tag_filter.items())


@dataclass
class SeriesData:
    """Points of one series: aligned columns. A ``None`` in a field column means the point lacks that field."""

    measurement: str
    tags: TagTuple
    times_ns: Sequence[int]
    fields: Mapping[str, Sequence[FieldVal | None]]

    def __len__(self) -> int:
        return len(self.times_ns)


@dataclass(frozen=True)
class StoredPoint:
    """One point read back."""

    measurement: str
    tags: dict[str, str]
    time_ns: int
    fields: dict[str, FieldVal]


class AggKind(enum.Enum):
    """Aggregations a backend computes (CLMC-11)."""

    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    COUNT = "count"
    PERCENTILE = "percentile"


@dataclass(frozen=True)
class AggQuery:
    """An aggregation of one numeric field over windows, grouped by tags."""

    measurement: str
    field: str
    kind: AggKind
    start_ns: int
    end_ns: int
    window_ns: int  # 0 = one window over [start, end)
    group_by: tuple[str, ...] = ()
    tags: TagFilter = dc_field(default_factory=dict)
    percentile: float = 50.0


@dataclass(frozen=True)
class AggWindow:
    """One aggregated window."""

    start_ns: int
    value: float
    count: int


@dataclass(frozen=True)
class AggSeries:
    """One group's windows (group = the group_by tags' values; missing tags are "")."""

    group: tuple[tuple[str, str], ...]
    windows: list[AggWindow]


@dataclass(frozen=True)
class Selection:
    """Which points: measurement (None = every measurement), tags and [start, end) in ns (None = unbounded)."""

    measurement: str | None
    tags: TagFilter = dc_field(default_factory=dict)
    start_ns: int | None = None
    end_ns: int | None = None


class StorageError(Exception):
    """A backend could not do what was asked (after its retries); never swallowed."""


class StorageRejected(StorageError):
    """The backend refused the request itself (e.g. InfluxDB HTTP 4xx): retrying the same request cannot help, so
    callers answer INVALID_ARGUMENT, never UNAVAILABLE."""


class MetricStore(Protocol):
    """What the CLMC needs from a time-series backend."""

    name: str

    def write(self, batch: Sequence[SeriesData]) -> int:
        """Store every point (overwriting same identities); returns points written. Raises StorageError."""
        ...

    def query(self, sel: Selection, fields: Sequence[str], limit: int) -> tuple[list[StoredPoint], bool]:
        """Points in time order, at most ``limit``; the flag says more matched."""
        ...

    def aggregate(self, q: AggQuery) -> list[AggSeries]:
        """Aggregated windows per group (windows without points omitted)."""
        ...

    def latest(
        self, sel: Selection, field_name: str | None, group_by: Sequence[str]
    ) -> dict[TagTuple, tuple[int, float]]:
        """Per group: (time, value) of the newest point (value NaN when ``field_name`` is None or not numeric)."""
        ...

    def point_times(self, sel: Selection) -> dict[TagTuple, list[int]]:
        """Per series (full tags): sorted point times."""
        ...

    def delete(self, sel: Selection) -> int:
        """Delete the selected points (and series left empty); returns how many points were deleted."""
        ...

    def count(self, sel: Selection) -> int:
        """How many points are selected."""
        ...

    def measurements(self) -> list[str]:
        """Measurement names holding data."""
        ...

    def field_types(self) -> dict[str, dict[str, str]]:
        """Per measurement: field -> stored type (float, integer, string, boolean), the schema's memory."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


def group_key(tags: Mapping[str, str], group_by: Sequence[str]) -> TagTuple:
    """The group a series belongs to."""
    return tuple((g, tags.get(g, "")) for g in group_by)


def percentile_of(values: list[float], q: float) -> float:
    """Percentile (0 < q <= 100) by nearest rank, exactly as InfluxQL's ``percentile()`` picks it."""
    values.sort()
    i = math.floor(len(values) * q / 100.0 + 0.5) - 1
    return values[max(0, min(i, len(values) - 1))]
