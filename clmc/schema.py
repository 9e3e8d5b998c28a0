"""One schema for both backends (CLMC-7, CLMC-10): the type of every field per measurement, known before anything is
written, so a batch either fits it whole or is refused whole with INVALID_ARGUMENT.

Types are InfluxDB's four (float, integer, string, boolean). A field's type comes from the information model for the
model's measurements, else from the first write that used it (learned again from storage at start). InfluxDB refuses
a point whose field type differs from the stored one *after* storing the rest of the write ("partial write"), and the
embedded store would keep both: checking here keeps both backends all-or-nothing and answering the same.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from clmc.model import MEASUREMENTS
from clmc.storage.base import FieldVal
from flame_control.api.flame.clmc.v1 import model_pb2

FLOAT, INTEGER, STRING, BOOLEAN = "float", "integer", "string", "boolean"
FIELD_TYPES = (FLOAT, INTEGER, STRING, BOOLEAN)
#: Tag and field names no backend can store (InfluxDB: ``time`` is the timestamp column).
RESERVED_NAMES = frozenset({"time"})
#: Largest string field value (InfluxDB 1.x's own limit is 64 KiB); larger ones are refused, never truncated.
MAX_STRING_BYTES = 64 * 1024

_MODEL_TYPES: dict[int, str] = {
    model_pb2.FIELD_TYPE_DOUBLE: FLOAT,
    model_pb2.FIELD_TYPE_INT: INTEGER,
    model_pb2.FIELD_TYPE_STRING: STRING,
}
#: Field types of the information model's measurements, and of the two the CLMC writes itself (``config_event``,
#: ``kpi_event``): fixed, whatever is published.
MODEL_FIELD_TYPES: dict[str, dict[str, str]] = {
    name: {fname: _MODEL_TYPES[ftype] for fname, ftype, _, _ in fields} for name, (_, fields) in MEASUREMENTS.items()
} | {
    "config_event": {"message": STRING, "latitude": FLOAT, "longitude": FLOAT},
    "kpi_event": {"message": STRING, "sequence": INTEGER, "value": FLOAT},
}


def type_of(value: FieldVal) -> str:
    """The schema type of a stored value."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return FLOAT
    return STRING


class FieldTypes:
    """Field type per (measurement, field): the information model's, else the first claimed. Thread-safe (gRPC
    ingest and the Kafka consumer thread claim concurrently)."""

    def __init__(self, stored: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._lock = threading.Lock()
        self._types: dict[tuple[str, str], str] = {}
        for measurement, fields in (stored or {}).items():
            for name, typ in fields.items():
                if typ in FIELD_TYPES:
                    self._types.setdefault((measurement, name), typ)
        for measurement, fields in MODEL_FIELD_TYPES.items():
            for name, typ in fields.items():
                self._types[(measurement, name)] = typ

    def expected(self, measurement: str, field_name: str) -> str | None:
        """The field's type, or None when nothing decided it yet."""
        return self._types.get((measurement, field_name))

    def fields_of(self, measurement: str) -> dict[str, str]:
        """Every field with a decided type of a measurement (empty: the measurement is unknown)."""
        with self._lock:
            return {f: t for (m, f), t in self._types.items() if m == measurement}

    def claim(self, wanted: Mapping[tuple[str, str], str]) -> dict[tuple[str, str], str]:
        """Record the types of a batch about to be written, all or none; returns the conflicts (key -> the type
        already decided), empty when claimed."""
        with self._lock:
            conflicts = {
                k: known for k, t in wanted.items() if (known := self._types.get(k)) is not None and known != t
            }
            if not conflicts:
                self._types.update(wanted)
            return conflicts
