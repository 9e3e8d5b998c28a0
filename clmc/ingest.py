"""Ingest validation and conversion (CLMC-3, CLMC-4, CLMC-5, CLMC-7, CLMC-8, CLMC-9): protobuf batches -> SeriesData.

A batch is all-or-nothing: every violation in it is collected (paths like ``points[3].tags.flame_locaton``) and the
whole batch is rejected with one INVALID_ARGUMENT; nothing of a rejected batch is stored. Rules:

- measurement, tag and field names are identifiers (letters, digits, ``_``; measurements may also contain ``.``);
- tags starting with ``flame_`` must be FLAME tags of the information model (catches typos); other tags are free;
  ``time`` is reserved (no backend can store it as a tag or field name);
- tag values are non-empty and at most 256 characters; string field values at most 64 KiB; at least one field per
  point;
- for measurements of the information model, field names must be known and values take the model's type (numbers
  for integer fields must be integral and are stored as integers, for double fields they are stored as doubles;
  a bool is never a number);
- one type per field and measurement (clmc.schema): within the batch and with what is stored (the first write of
  a field outside the model decides its type);
- every point has a time, after 2000-01-01 and at most ``max_future`` ahead of the CLMC's clock;
- numeric values are finite (NaN and infinities cannot be stored by every backend);
- at most ``max_points`` points per batch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from clmc.model import COMMON_TAGS, MEASUREMENTS, SUBJECT_TAG
from clmc.schema import FLOAT, INTEGER, MAX_STRING_BYTES, RESERVED_NAMES, FieldTypes, type_of
from clmc.storage.base import FieldVal, SeriesData, StoredPoint, canonical_tags
from flame_control.api.flame.clmc.v1 import clmc_pb2, model_pb2
from flame_control.api.flame.common.v1 import common_pb2
from flame_control.runtime.errors import Violations

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MEASUREMENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")
KNOWN_FLAME_TAGS = frozenset({name for name, _ in COMMON_TAGS} | {SUBJECT_TAG})
MIN_TIME_NS = 946_684_800 * 1_000_000_000  # 2000-01-01
MAX_VIOLATIONS = 100
#: Measurement that stores configuration events (CLMC-4); its tags below are reserved.
CONFIG_EVENT_MEASUREMENT = "config_event"
EVENT_TAGS = ("source", "subject_kind", "event", "failure", "from_state", "to_state")


@dataclass(frozen=True)
class Limits:
    """Ingest limits (from Settings)."""

    max_points: int = 200_000
    max_future_ns: int = 3600 * 1_000_000_000


class _Collector(Violations):
    def add(self, field_path: str, description: str) -> None:
        if len(self.items) < MAX_VIOLATIONS:
            super().add(field_path, description)
        elif len(self.items) == MAX_VIOLATIONS:
            super().add("batch", f"more than {MAX_VIOLATIONS} violations; the rest are not listed")


def _check_tags(v: Violations, path: str, tags: Mapping[str, str], reserved: Sequence[str] = ()) -> None:
    for key, value in tags.items():
        if not NAME_RE.match(key):
            v.add(f"{path}.tags", f"tag name {key!r} must be letters, digits and '_'")
        elif key.startswith("flame_") and key not in KNOWN_FLAME_TAGS:
            v.add(f"{path}.tags.{key}", f"unknown FLAME tag (known: {', '.join(sorted(KNOWN_FLAME_TAGS))})")
        elif key in reserved or key in RESERVED_NAMES:
            v.add(f"{path}.tags.{key}", "reserved tag name")
        if not value or len(value) > 256:
            v.add(f"{path}.tags.{key}", "tag values must be 1..256 characters")


def _check_time(v: Violations, path: str, t: int, now_ns: int, limits: Limits) -> None:
    if t < MIN_TIME_NS:
        v.add(path, "time missing or before 2000-01-01")
    elif t > now_ns + limits.max_future_ns:
        v.add(path, f"time is more than {limits.max_future_ns / 1e9:.0f} s in the future")


def _schema_types(measurement: str) -> dict[str, int] | None:
    entry = MEASUREMENTS.get(measurement)
    return None if entry is None else {name: ftype for name, ftype, _, _ in entry[1]}


class _BatchTypes:
    """The field types one batch uses: they must agree within the batch and with the schema (clmc.schema)."""

    def __init__(self, types: FieldTypes) -> None:
        self.types = types
        self.used: dict[tuple[str, str], str] = {}
        self.first: dict[tuple[str, str], str] = {}

    def check(self, v: Violations, path: str, measurement: str, fname: str, typ: str) -> bool:
        key = (measurement, fname)
        known = self.types.expected(measurement, fname)
        if known is not None and known != typ:
            v.add(path, f"{typ} value for the {known} field {fname!r} of {measurement} (one type per field)")
            return False
        first = self.used.setdefault(key, typ)
        if first != typ:
            v.add(path, f"{typ} value, but {self.first[key]} in this batch is {first} (one type per field)")
            return False
        self.first.setdefault(key, path)
        return True

    def claim(self, v: Violations) -> None:
        """Record the batch's types (a concurrent batch may have decided a field meanwhile: then refused)."""
        for key, known in self.types.claim(self.used).items():
            v.add(self.first[key], f"{self.used[key]} value for the {known} field {key[1]!r} of {key[0]}")


def _check_field_name(v: Violations, path: str, fname: str) -> bool:
    if not NAME_RE.match(fname):
        v.add(path, f"field name {fname!r} must be letters, digits and '_'")
        return False
    if fname in RESERVED_NAMES:
        v.add(f"{path}.{fname}", "reserved field name")
        return False
    return True


def _field_value(v: Violations, path: str, fv: model_pb2.FieldValue, expected: int | None) -> FieldVal | None:
    kind = fv.WhichOneof("value")
    if kind is None:
        v.add(path, "field value not set")
        return None
    value: FieldVal = getattr(fv, kind)
    if isinstance(value, str) and (len(value) > MAX_STRING_BYTES or len(value.encode()) > MAX_STRING_BYTES):
        v.add(path, f"string value of {len(value.encode())} bytes; at most {MAX_STRING_BYTES}")
        return None
    if expected is None:
        pass
    elif (expected == model_pb2.FIELD_TYPE_STRING) != isinstance(value, str) or isinstance(value, bool):
        v.add(path, "type does not match the information model")
        return None
    if isinstance(value, float) and not math.isfinite(value):
        v.add(path, "NaN and infinities cannot be stored")
        return None
    if expected == model_pb2.FIELD_TYPE_INT and isinstance(value, float):
        if value != int(value):
            v.add(path, "integer field given a fractional number")
            return None
        value = int(value)
    elif expected == model_pb2.FIELD_TYPE_DOUBLE and isinstance(value, int):
        value = float(value)
    return value


def _convert_point(
    v: Violations, path: str, m: model_pb2.Measurement, now_ns: int, limits: Limits, types: _BatchTypes
) -> SeriesData | None:
    before = len(v.items)
    if not MEASUREMENT_RE.match(m.name):
        v.add(f"{path}.name", "measurement name must be letters, digits, '_' and '.'")
    _check_tags(v, path, m.tags)
    if not m.fields:
        v.add(f"{path}.fields", "at least one field")
    if not m.HasField("time"):
        v.add(f"{path}.time", "required")
    else:
        _check_time(v, f"{path}.time", m.time.ToNanoseconds(), now_ns, limits)
    schema = _schema_types(m.name)
    fields: dict[str, list[FieldVal | None]] = {}
    for fname, fv in m.fields.items():
        if not _check_field_name(v, f"{path}.fields", fname):
            continue
        if schema is not None and fname not in schema:
            v.add(f"{path}.fields.{fname}", f"not a field of {m.name} in the information model")
            continue
        value = _field_value(v, f"{path}.fields.{fname}", fv, None if schema is None else schema[fname])
        if value is not None and types.check(v, f"{path}.fields.{fname}", m.name, fname, type_of(value)):
            fields[fname] = [value]
    if len(v.items) != before:
        return None
    return SeriesData(m.name, canonical_tags(m.tags), [m.time.ToNanoseconds()], fields)


def _convert_series(
    v: Violations, path: str, s: model_pb2.SeriesBatch, now_ns: int, limits: Limits, types: _BatchTypes
) -> SeriesData | None:
    before = len(v.items)
    if not MEASUREMENT_RE.match(s.name):
        v.add(f"{path}.name", "measurement name must be letters, digits, '_' and '.'")
    _check_tags(v, path, s.tags)
    times = list(s.times_unix_nano)
    if not times:
        v.add(f"{path}.times_unix_nano", "at least one time")
    else:
        lo, hi = min(times), max(times)
        _check_time(v, f"{path}.times_unix_nano", lo, now_ns, limits)
        if lo != hi:
            _check_time(v, f"{path}.times_unix_nano", hi, now_ns, limits)
    if not s.columns:
        v.add(f"{path}.columns", "at least one column")
    schema = _schema_types(s.name)
    fields: dict[str, list[FieldVal | None]] = {}
    for j, col in enumerate(s.columns):
        cpath = f"{path}.columns[{j}]"
        values: list[FieldVal | None] = list(col.values)
        if not NAME_RE.match(col.field) or col.field in fields or col.field in RESERVED_NAMES:
            v.add(f"{cpath}.field", "field names must be unique identifiers (not 'time')")
            continue
        if len(values) != len(times):
            v.add(f"{cpath}.values", f"{len(values)} values for {len(times)} times")
            continue
        expected = None if schema is None else schema.get(col.field, -1)
        if expected == -1:
            v.add(f"{cpath}.field", f"not a field of {s.name} in the information model")
            continue
        if expected == model_pb2.FIELD_TYPE_STRING:
            v.add(f"{cpath}.field", "string field cannot be sent as a numeric column")
            continue
        if not math.isfinite(sum(col.values)):
            bad = next((i for i, x in enumerate(col.values) if not math.isfinite(x)), None)
            if bad is not None:
                v.add(f"{cpath}.values[{bad}]", "NaN and infinities cannot be stored")
                continue
        if expected == model_pb2.FIELD_TYPE_INT:
            ints = [int(x) for x in col.values]
            if any(i != x for i, x in zip(ints, col.values, strict=True)):
                v.add(f"{cpath}.values", "integer field given fractional numbers")
                continue
            values = list(ints)
        typ = INTEGER if expected == model_pb2.FIELD_TYPE_INT else FLOAT
        if types.check(v, f"{cpath}.field", s.name, col.field, typ):
            fields[col.field] = values
    if len(v.items) != before:
        return None
    return SeriesData(s.name, canonical_tags(s.tags), times, fields)


def convert_batch(
    req: clmc_pb2.PublishMeasurementsRequest, now_ns: int, limits: Limits, types: FieldTypes | None = None
) -> list[SeriesData]:
    """Validate a whole batch and convert it; raises InvalidArgument listing every violation. ``types`` is the
    CLMC's schema (the batch's field types are recorded in it when the batch is accepted); without it only the
    information model and the batch itself decide."""
    v = _Collector()
    batch_types = _BatchTypes(types if types is not None else FieldTypes())
    total = len(req.points) + sum(len(s.times_unix_nano) for s in req.series)
    if total == 0:
        v.add("points", "empty batch")
    if total > limits.max_points:
        v.add("points", f"batch has {total} points; at most {limits.max_points} per batch (split it)")
        v.raise_if_any()
    out: list[SeriesData] = []
    for i, m in enumerate(req.points):
        converted = _convert_point(v, f"points[{i}]", m, now_ns, limits, batch_types)
        if converted is not None:
            out.append(converted)
    for i, s in enumerate(req.series):
        converted = _convert_series(v, f"series[{i}]", s, now_ns, limits, batch_types)
        if converted is not None:
            out.append(converted)
    v.raise_if_any()
    batch_types.claim(v)
    v.raise_if_any()
    return out


_STATE_NAMES = {value: name for name, value in common_pb2.EndpointState.items()}


def convert_events(req: clmc_pb2.PublishConfigEventsRequest, now_ns: int, limits: Limits) -> list[SeriesData]:
    """Validate configuration events and convert each to a ``config_event`` point (same all-or-nothing rule)."""
    v = _Collector()
    if not req.events:
        v.add("events", "empty batch")
    out: list[SeriesData] = []
    for i, e in enumerate(req.events):
        path = f"events[{i}]"
        before = len(v.items)
        _check_tags(v, path, e.tags, reserved=EVENT_TAGS)
        if not e.HasField("time"):
            v.add(f"{path}.time", "required")
        else:
            _check_time(v, f"{path}.time", e.time.ToNanoseconds(), now_ns, limits)
        v.check(bool(NAME_RE.match(e.source)), f"{path}.source", "required identifier (e.g. orchestrator)")
        v.check(bool(NAME_RE.match(e.subject_kind)), f"{path}.subject_kind", "required identifier (e.g. endpoint)")
        is_transition = e.to_state != common_pb2.ENDPOINT_STATE_UNSPECIFIED
        v.check(is_transition or bool(e.event), f"{path}", "either to_state or event must be set")
        v.check(e.to_state in _STATE_NAMES and e.from_state in _STATE_NAMES, f"{path}.to_state", "unknown state")
        v.check(e.failure in model_pb2.FailureCategory.values(), f"{path}.failure", "unknown failure category")
        v.check(len(e.message.encode()) <= MAX_STRING_BYTES, f"{path}.message", f"at most {MAX_STRING_BYTES} bytes")
        if len(v.items) != before:
            continue
        tags = dict(e.tags)
        tags.update(source=e.source, subject_kind=e.subject_kind)
        extra = {
            "event": e.event,
            "failure": model_pb2.FailureCategory.Name(e.failure) if e.failure else "",
            "from_state": _STATE_NAMES[e.from_state] if e.from_state else "",
            "to_state": _STATE_NAMES[e.to_state] if e.to_state else "",
        }
        tags.update({k: val for k, val in extra.items() if val})
        fields: dict[str, list[FieldVal | None]] = {"message": [e.message]}
        if e.HasField("location"):
            fields["latitude"] = [e.location.latitude]
            fields["longitude"] = [e.location.longitude]
        out.append(SeriesData(CONFIG_EVENT_MEASUREMENT, canonical_tags(tags), [e.time.ToNanoseconds()], fields))
    v.raise_if_any()
    return out


def to_measurement(p: StoredPoint) -> model_pb2.Measurement:
    """A stored point as a protobuf Measurement."""
    m = model_pb2.Measurement(name=p.measurement, tags=p.tags)
    m.time.FromNanoseconds(p.time_ns)
    for name, value in p.fields.items():
        fv = m.fields[name]
        if isinstance(value, bool):
            fv.bool_value = value
        elif isinstance(value, int):
            fv.int_value = value
        elif isinstance(value, float):
            fv.double_value = value
        else:
            fv.string_value = value
    return m


def to_config_event(p: StoredPoint) -> model_pb2.ConfigEvent:
    """A stored ``config_event`` point back as a ConfigEvent."""
    tags = dict(p.tags)
    e = model_pb2.ConfigEvent(
        source=tags.pop("source", ""),
        subject_kind=tags.pop("subject_kind", ""),
        event=tags.pop("event", ""),
        message=str(p.fields.get("message", "")),
    )
    failure = tags.pop("failure", "")
    if failure:
        e.failure = model_pb2.FailureCategory.Value(failure)
    for key in ("from_state", "to_state"):
        state = tags.pop(key, "")
        if state:
            setattr(e, key, common_pb2.EndpointState.Value(state))
    e.tags.update(tags)
    e.time.FromNanoseconds(p.time_ns)
    if "latitude" in p.fields:
        e.location.latitude = float(p.fields["latitude"])
        e.location.longitude = float(p.fields.get("longitude", 0.0))
    return e
