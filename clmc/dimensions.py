"""Configurable dimensional abstractions (CLMC-6): operators declare dimensions derived from a tag — e.g. ``region``
from ``flame_location`` (NAP or site -> district), or ``tier`` from ``flame_server`` — and every point stored gets the
derived tag. Because the derived value is an ordinary tag, filters, ``Aggregate`` group-by, KPIs, retention and
data-subject deletes work on it unchanged on every backend (embedded and InfluxDB), with no re-aggregation error.

Applied at ingest (gRPC and Kafka alike), so a changed mapping applies to points stored from then on; the mapping in
force is visible in ``GetInformationModel``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clmc.storage.base import SeriesData, canonical_tags

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class DimensionConfig(BaseModel):
    """``services.clmc.dimensions.<name>``: derived tag ``<name>`` = ``mapping[<source_tag> value]`` (else default)."""

    model_config = ConfigDict(extra="forbid")

    #: The tag the dimension is derived from (e.g. flame_location).
    source_tag: str
    #: Source tag value -> dimension value.
    mapping: dict[str, str] = Field(default_factory=dict)
    #: Value for source values not in the mapping; empty = leave such points without the dimension.
    default: str = ""

    @field_validator("mapping")
    @classmethod
    def _values(cls, mapping: dict[str, str]) -> dict[str, str]:
        for key, value in mapping.items():
            if not 0 < len(value) <= 256 or not 0 < len(key) <= 256:
                raise ValueError(f"mapping {key!r} -> {value!r}: values must be 1..256 characters")
        return mapping


def check_dimensions(dimensions: Mapping[str, DimensionConfig]) -> None:
    """Raise ValueError for names that are not identifiers, FLAME tags, or derived from themselves."""
    for name, dim in dimensions.items():
        if not _NAME.match(name) or name.startswith("flame_"):
            raise ValueError(f"dimension {name!r}: names are identifiers and must not start with flame_")
        if dim.source_tag == name or dim.source_tag in dimensions:
            raise ValueError(f"dimension {name!r}: derive from a stored tag, not from a dimension")


@dataclass(frozen=True)
class DimensionMap:
    """The configured dimensions, applied to batches before they are stored."""

    dimensions: Mapping[str, DimensionConfig]

    def apply(self, batch: Sequence[SeriesData]) -> list[SeriesData]:
        if not self.dimensions:
            return list(batch)
        out = []
        for series in batch:
            tags = dict(series.tags)
            added = False
            for name, dim in self.dimensions.items():
                source = tags.get(dim.source_tag)
                if source is None:
                    continue
                value = dim.mapping.get(source, dim.default)
                if value:
                    tags[name] = value
                    added = True
            if added:
                series = SeriesData(series.measurement, canonical_tags(tags), series.times_ns, series.fields)
            out.append(series)
        return out
