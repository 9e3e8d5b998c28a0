"""The embedded backend (the default for `flame up`): one SQLite file (stdlib), no server to run (CLMC-10).

Layout: ``series`` (id, measurement, canonical tags as JSON) and ``samples`` (series, field, time, value, type) with
primary key (series, field, time) in a WITHOUT ROWID table, so a point identity is stored once (rewrites overwrite)
and range scans per series are index scans. ``secure_delete`` is on, so deleted personal data is overwritten in the
file, not just unlinked; series rows left without samples are deleted too (their tags may identify a subject).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from clmc.storage.base import (
    AggKind,
    AggQuery,
    AggSeries,
    AggWindow,
    FieldVal,
    Selection,
    SeriesData,
    StorageError,
    StoredPoint,
    TagTuple,
    group_key,
    matches,
    percentile_of,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
  id INTEGER PRIMARY KEY, measurement TEXT NOT NULL, tags TEXT NOT NULL, UNIQUE (measurement, tags));
CREATE TABLE IF NOT EXISTS samples (
  series_id INTEGER NOT NULL, field TEXT NOT NULL, time_ns INTEGER NOT NULL, val, typ INTEGER NOT NULL,
  PRIMARY KEY (series_id, field, time_ns)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS text_fields (field TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS field_types (
  measurement TEXT NOT NULL, field TEXT NOT NULL, typ INTEGER NOT NULL, PRIMARY KEY (measurement, field, typ));
"""
# typ: 0 float, 1 int, 2 str, 3 bool
_FLOAT, _INT, _STR, _BOOL = 0, 1, 2, 3
_NUMERIC = (_FLOAT, _INT)
_TYPE_NAMES = {_FLOAT: "float", _INT: "integer", _STR: "string", _BOOL: "boolean"}


def _typ(v: FieldVal) -> int:
    if isinstance(v, bool):
        return _BOOL
    if isinstance(v, int):
        return _INT
    if isinstance(v, float):
        return _FLOAT
    return _STR


def _decode(val: Any, typ: int) -> FieldVal:
    if typ == _BOOL:
        return bool(val)
    if typ == _INT:
        return int(val)
    if typ == _FLOAT:
        return float(val)
    return str(val)


class EmbeddedStore:
    """SQLite-backed MetricStore. Thread-safe (one connection behind a lock)."""

    name = "embedded"

    def __init__(self, path: Path | str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA cache_size=-65536")
        self._db.executescript(_SCHEMA)
        self._ids: dict[tuple[str, TagTuple], int] = {}
        self._by_measurement: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
        for sid, meas, tags in self._db.execute("SELECT id, measurement, tags FROM series"):
            self._remember(sid, meas, tuple((k, v) for k, v in json.loads(tags)))
        # Fields that ever held strings or booleans: only their aggregations need a type filter (30 % faster).
        self._text_fields = {r[0] for r in self._db.execute("SELECT field FROM text_fields")}
        known_types = "SELECT measurement, field, typ FROM field_types"
        self._types: set[tuple[str, str, int]] = set(self._db.execute(known_types))
        if not self._types and self._db.execute("SELECT 1 FROM samples LIMIT 1").fetchone():  # a file from before
            self._db.execute(
                "INSERT INTO field_types SELECT DISTINCT s.measurement, x.field, x.typ "
                "FROM samples x JOIN series s ON s.id = x.series_id"
            )
            self._types = set(self._db.execute(known_types))

    def _remember(self, sid: int, measurement: str, tags: TagTuple) -> None:
        self._ids[(measurement, tags)] = sid
        self._by_measurement[measurement].append((sid, dict(tags)))

    def _series_id(self, measurement: str, tags: TagTuple) -> int:
        sid = self._ids.get((measurement, tags))
        if sid is None:
            cur = self._db.execute(
                "INSERT INTO series (measurement, tags) VALUES (?, ?)", (measurement, json.dumps(tags))
            )
            sid = int(cur.lastrowid or 0)
            self._remember(sid, measurement, tags)
        return sid

    def write(self, batch: Sequence[SeriesData]) -> int:
        written = 0
        new_types: list[tuple[str, str, int]] = []
        with self._lock:
            try:
                self._db.execute("BEGIN")
                for s in batch:
                    sid = self._series_id(s.measurement, s.tags)
                    for fname, column in s.fields.items():
                        rows = _rows(sid, fname, s.times_ns, column)
                        typs = {_FLOAT} if not isinstance(rows, list) else {r[4] for r in rows}
                        for typ in typs:
                            if (s.measurement, fname, typ) not in self._types:
                                self._db.execute(
                                    "INSERT OR IGNORE INTO field_types VALUES (?, ?, ?)", (s.measurement, fname, typ)
                                )
                                new_types.append((s.measurement, fname, typ))
                        if (
                            isinstance(rows, list)
                            and fname not in self._text_fields
                            and any(r[4] >= _STR for r in rows)
                        ):
                            self._db.execute("INSERT OR IGNORE INTO text_fields VALUES (?)", (fname,))
                            self._text_fields.add(fname)
                        self._db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?)", rows)
                    written += len(s.times_ns)
                self._db.execute("COMMIT")
                self._types.update(new_types)
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                self._forget_uncommitted()
                raise StorageError(f"embedded write failed: {exc}") from exc
        return written

    def _forget_uncommitted(self) -> None:
        known = {row[0] for row in self._db.execute("SELECT id FROM series")}
        self._ids = {k: v for k, v in self._ids.items() if v in known}
        for meas, entries in self._by_measurement.items():
            self._by_measurement[meas] = [e for e in entries if e[0] in known]

    def _select_series(self, sel: Selection) -> list[tuple[int, str, dict[str, str]]]:
        names = [sel.measurement] if sel.measurement is not None else list(self._by_measurement)
        return [
            (sid, meas, tags)
            for meas in names
            for sid, tags in self._by_measurement.get(meas, [])
            if matches(tags, sel.tags)
        ]

    @staticmethod
    def _time_clause(sel: Selection) -> tuple[str, list[Any]]:
        clause: str = ""
        args: list[Any] = []
        if sel.start_ns is not None:
            clause += " AND time_ns >= ?"
            args.append(sel.start_ns)
        if sel.end_ns is not None:
            clause += " AND time_ns < ?"
            args.append(sel.end_ns)
        return clause, args

    def _rows_for(
        self, ids: Sequence[int], extra: str, args: Sequence[object], columns: str, tail: str = ""
    ) -> Iterator[tuple[Any, ...]]:
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {columns} FROM samples WHERE series_id IN ({marks}){extra} {tail}"
            yield from self._db.execute(sql, [*chunk, *args])

    def query(self, sel: Selection, fields: Sequence[str], limit: int) -> tuple[list[StoredPoint], bool]:
        with self._lock:
            series = {sid: (meas, tags) for sid, meas, tags in self._select_series(sel)}
            clause, args = self._time_clause(sel)
            if fields:
                clause += f" AND field IN ({','.join('?' * len(fields))})"
                args = [*args, *fields]
            points: dict[tuple[int, int], dict[str, FieldVal]] = {}
            for sid, fname, t, val, typ in self._rows_for(
                list(series), clause, args, "series_id, field, time_ns, val, typ"
            ):
                points.setdefault((int(t), int(sid)), {})[str(fname)] = _decode(val, int(typ))
        ordered = sorted(points)
        out = [StoredPoint(series[sid][0], dict(series[sid][1]), t, points[(t, sid)]) for t, sid in ordered[:limit]]
        return out, len(ordered) > limit

    def aggregate(self, q: AggQuery) -> list[AggSeries]:
        window = q.window_ns or max(1, q.end_ns - q.start_ns)
        with self._lock:
            series = self._select_series(Selection(q.measurement, q.tags, q.start_ns, q.end_ns))
            group_of = {sid: group_key(tags, q.group_by) for sid, _, tags in series}
            where = " AND field = ? AND time_ns >= ? AND time_ns < ?"
            if q.field in self._text_fields:
                where += " AND typ IN (0, 1)"
            args: list[object] = [q.field, q.start_ns, q.end_ns]
            if q.kind is AggKind.PERCENTILE:
                values: dict[tuple[TagTuple, int], list[float]] = defaultdict(list)
                cols = f"series_id, (time_ns - {int(q.start_ns)}) / {int(window)}, val"
                for sid, bucket, val in self._rows_for(list(group_of), where, args, cols):
                    values[(group_of[int(sid)], int(bucket))].append(float(val))
                cells = {k: (percentile_of(v, q.percentile), len(v)) for k, v in values.items()}
            else:
                bucket = f"(time_ns - {int(q.start_ns)}) / {int(window)}"
                cols = f"series_id, {bucket} AS b, SUM(val), COUNT(val), MIN(val), MAX(val)"
                acc: dict[tuple[TagTuple, int], list[float]] = {}
                for sid, b, total, n, lo, hi in self._rows_for(
                    list(group_of), where, args, cols, "GROUP BY series_id, b"
                ):
                    key = (group_of[int(sid)], int(b))
                    cur = acc.get(key)
                    if cur is None:
                        acc[key] = [float(total), float(n), float(lo), float(hi)]
                    else:
                        cur[0] += float(total)
                        cur[1] += float(n)
                        cur[2] = min(cur[2], float(lo))
                        cur[3] = max(cur[3], float(hi))
                cells = {k: (_finish(q.kind, v), int(v[1])) for k, v in acc.items()}
        by_group: dict[TagTuple, list[AggWindow]] = defaultdict(list)
        for (group, bucket), (value, n) in sorted(cells.items()):
            by_group[group].append(AggWindow(q.start_ns + bucket * window, value, n))
        return [AggSeries(g, w) for g, w in sorted(by_group.items())]

    def latest(
        self, sel: Selection, field_name: str | None, group_by: Sequence[str]
    ) -> dict[TagTuple, tuple[int, float]]:
        out: dict[TagTuple, tuple[int, float]] = {}
        with self._lock:
            series = self._select_series(sel)
            clause, args = self._time_clause(sel)
            if field_name:
                clause += " AND field = ?"
                args = [*args, field_name]
            for sid, _, tags in series:
                row = self._db.execute(
                    f"SELECT time_ns, val, typ FROM samples WHERE series_id = ?{clause} ORDER BY time_ns DESC LIMIT 1",
                    [sid, *args],
                ).fetchone()
                if row is None:
                    continue
                value = float(row[1]) if field_name and row[2] in _NUMERIC else math.nan
                key = group_key(tags, group_by)
                if key not in out or out[key][0] < row[0]:
                    out[key] = (int(row[0]), value)
        return out

    def point_times(self, sel: Selection) -> dict[TagTuple, list[int]]:
        out: dict[TagTuple, list[int]] = {}
        with self._lock:
            clause, args = self._time_clause(sel)
            for sid, _, tags in self._select_series(sel):
                rows = self._db.execute(
                    f"SELECT DISTINCT time_ns FROM samples WHERE series_id = ?{clause} ORDER BY time_ns", [sid, *args]
                )
                times = [int(r[0]) for r in rows]
                if times:
                    out[tuple(sorted(tags.items()))] = times
        return out

    def count(self, sel: Selection) -> int:
        with self._lock:
            return self._count(sel)

    def _count(self, sel: Selection) -> int:
        clause, args = self._time_clause(sel)
        ids = [sid for sid, _, _ in self._select_series(sel)]
        total = 0
        for (n,) in self._rows_for(ids, clause, args, "COUNT(DISTINCT series_id || ':' || time_ns)", ""):
            total += int(n)
        return total

    def delete(self, sel: Selection) -> int:
        with self._lock:
            n = self._count(sel)
            clause, args = self._time_clause(sel)
            ids = [sid for sid, _, _ in self._select_series(sel)]
            try:
                self._db.execute("BEGIN")
                for chunk in _chunks(ids, 500):
                    marks = ",".join("?" * len(chunk))
                    self._db.execute(f"DELETE FROM samples WHERE series_id IN ({marks}){clause}", [*chunk, *args])
                    self._db.execute(
                        f"DELETE FROM series WHERE id IN ({marks}) AND NOT EXISTS "
                        "(SELECT 1 FROM samples WHERE series_id = series.id)",
                        chunk,
                    )
                self._db.execute("COMMIT")
                # Deleted data must leave the WAL too before the delete returns (data-subject erasure, CLMC-26):
                # secure_delete zeroes it in the new page images; the checkpoint moves them into the database file
                # and TRUNCATE empties the WAL, which still held the old images.
                busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                if busy:
                    raise StorageError("embedded delete: WAL checkpoint blocked by a reader; retry")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StorageError(f"embedded delete failed: {exc}") from exc
            self._ids.clear()
            self._by_measurement.clear()
            for sid, meas, tags in self._db.execute("SELECT id, measurement, tags FROM series"):
                self._remember(sid, meas, tuple((k, v) for k, v in json.loads(tags)))
        return n

    def measurements(self) -> list[str]:
        with self._lock:
            return sorted(m for m, entries in self._by_measurement.items() if entries)

    def field_types(self) -> dict[str, dict[str, str]]:
        with self._lock:
            known = sorted(self._types)
        out: dict[str, dict[str, str]] = defaultdict(dict)
        for measurement, fname, typ in known:
            out[measurement].setdefault(fname, _TYPE_NAMES[typ])
        return dict(out)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _rows(
    sid: int, fname: str, times: Sequence[int], column: Sequence[FieldVal | None]
) -> Iterable[tuple[int, str, int, FieldVal, int]]:
    if all(type(v) is float for v in column):
        return zip([sid] * len(times), [fname] * len(times), times, column, [_FLOAT] * len(times), strict=True)  # type: ignore[arg-type]
    return [(sid, fname, t, v, _typ(v)) for t, v in zip(times, column, strict=True) if v is not None]


def _finish(kind: AggKind, acc: list[float]) -> float:
    total, n, lo, hi = acc
    if kind is AggKind.MEAN:
        return total / n
    if kind is AggKind.SUM:
        return total
    if kind is AggKind.COUNT:
        return n
    if kind is AggKind.MIN:
        return lo
    return hi


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
