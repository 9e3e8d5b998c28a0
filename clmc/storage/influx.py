"""InfluxDB backend over the v1 HTTP API (CLMC-10): line protocol with explicit nanosecond timestamps for writes,
InfluxQL for reads and deletes. Served by InfluxDB 1.x and by the 1.x compatibility endpoints of 2.x/3.x.

An ``https`` URL is verified against the system CAs, or against ``ca_file`` (a private CA); ``verify_tls=False``
turns verification off (encrypted but unauthenticated: for a lab only, logged as a warning).

Failed writes are retried with exponential backoff for ``retry_for_s`` and then raised as StorageError: a write is
never dropped silently. Deletes are verified by counting afterwards (a delete that left points raises).
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import re
import ssl
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
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
    StorageRejected,
    StoredPoint,
    TagTuple,
    group_key,
)

log = logging.getLogger("flame.clmc.influx")

_AGG_FUNCS = {
    AggKind.MEAN: "mean",
    AggKind.MIN: "min",
    AggKind.MAX: "max",
    AggKind.SUM: "sum",
    AggKind.COUNT: "count",
    AggKind.PERCENTILE: "percentile",
}


def _esc_key(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _esc_meas(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def _field(v: FieldVal) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return repr(v)
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ident(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(value: str) -> str:
    """An InfluxQL single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def line_protocol(batch: Sequence[SeriesData]) -> list[str]:
    """Line-protocol lines of a batch (one per point; points without fields are skipped)."""
    lines: list[str] = []
    for s in batch:
        head = _esc_meas(s.measurement) + "".join(f",{_esc_key(k)}={_esc_key(v)}" for k, v in s.tags if v != "")
        names = [(_esc_key(f), col) for f, col in s.fields.items()]
        for i, t in enumerate(s.times_ns):
            body = ",".join(f"{n}={_field(v)}" for n, col in names if (v := col[i]) is not None)
            if body:
                lines.append(f"{head} {body} {t}")
    return lines


class InfluxStore:
    """MetricStore over InfluxDB's v1 HTTP API."""

    name = "influxdb"

    def __init__(
        self,
        url: str,
        database: str,
        retention: str = "",
        retry_for_s: float = 10.0,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        ca_file: str | Path | None = None,
        verify_tls: bool = True,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"influx url must look like http://host:port, got {url!r}")
        self._https = parsed.scheme == "https"
        if not self._https and (ca_file is not None or not verify_tls):
            raise ValueError("influx ca_file / verify_tls apply to https:// URLs only")
        self.tls_context = tls_context(ca_file, verify_tls) if self._https else None
        self._host = parsed.hostname
        self._port = parsed.port or (443 if self._https else 8086)
        self._db = database
        self._retry_for_s = retry_for_s
        self._timeout = timeout_s
        self._sleep = sleep
        self._local = threading.local()
        self._types: dict[str, dict[str, str]] = {}
        duration = f" WITH DURATION {retention}" if retention else ""
        self._call("POST", "/query", {"q": f"CREATE DATABASE {ident(database)}{duration}"}, retry=True)
        if retention:
            self._apply_retention(retention)

    def _apply_retention(self, retention: str) -> None:
        """Make the database's default retention policy keep ``retention``: CREATE DATABASE ... WITH DURATION is a
        no-op on an existing database, so a changed setting would otherwise be ignored silently."""
        for series in self.influxql("SHOW RETENTION POLICIES"):
            cols = series["columns"]
            for row in series.get("values", []):
                policy = dict(zip(cols, row, strict=True))
                if not policy.get("default"):
                    continue
                if _duration_ns(str(policy["duration"])) != _duration_ns(retention):
                    self.influxql(
                        f"ALTER RETENTION POLICY {ident(policy['name'])} ON {ident(self._db)} DURATION {retention}",
                        write=True,
                    )
                    log.info("influxdb %s: retention %s -> %s", self._db, policy["duration"], retention)

    # --- HTTP -------------------------------------------------------------------------------------------------
    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self.tls_context is not None:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self.tls_context
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._local.conn = conn
        return conn

    def _once(self, method: str, path: str, params: dict[str, str], body: bytes | None) -> tuple[int, bytes]:
        conn = self._conn()
        try:
            conn.request(method, f"{path}?{urllib.parse.urlencode(params)}", body=body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise

    def _call(
        self, method: str, path: str, params: dict[str, str], body: bytes | None = None, retry: bool = True
    ) -> bytes:
        deadline = time.monotonic() + (self._retry_for_s if retry else 0.0)
        delay = 0.05
        last = ""
        while True:
            try:
                status, data = self._once(method, path, params, body)
                if status < 300:
                    return data
                last = f"HTTP {status}: {data[:300].decode(errors='replace')}"
                if status < 500:  # the request itself is wrong: retrying cannot help
                    raise StorageRejected(f"influxdb rejected {path}: {last}")
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + delay > deadline:
                raise StorageError(f"influxdb {path} failed after retries: {last}")
            self._sleep(delay)
            delay = min(delay * 2, 1.0)

    def influxql(self, q: str, write: bool = False) -> list[dict[str, Any]]:
        """Run InfluxQL; returns the statement's series (raises StorageError on an error result)."""
        data = self._call("POST" if write else "GET", "/query", {"db": self._db, "q": q, "epoch": "ns"})
        result = json.loads(data)["results"][0]
        if "error" in result:
            raise StorageError(f"influxql error: {result['error']} (query: {q[:200]})")
        return list(result.get("series", []))

    # --- helpers ----------------------------------------------------------------------------------------------
    @staticmethod
    def _where(sel: Selection) -> str:
        parts = []
        for key, values in sorted(sel.tags.items()):
            parts.append("(" + " OR ".join(f"{ident(key)} = {literal(v)}" for v in sorted(values)) + ")")
        if sel.start_ns is not None:
            parts.append(f"time >= {int(sel.start_ns)}")
        if sel.end_ns is not None:
            parts.append(f"time < {int(sel.end_ns)}")
        return (" WHERE " + " AND ".join(parts)) if parts else ""

    @staticmethod
    def _from(measurement: str | None) -> str:
        return ident(measurement) if measurement is not None else "/.*/"

    def _field_types(self, measurement: str) -> dict[str, str]:
        types = {}
        for s in self.influxql(f"SHOW FIELD KEYS FROM {ident(measurement)}"):
            for name, typ in s.get("values", []):
                types[name] = typ
        self._types[measurement] = types
        return types

    # --- MetricStore ------------------------------------------------------------------------------------------
    def write(self, batch: Sequence[SeriesData]) -> int:
        for body in _bodies(line_protocol(batch)):
            self._call("POST", "/write", {"db": self._db, "precision": "ns"}, body)
        return sum(len(s) for s in batch)

    def field_types(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for s in self.influxql("SHOW FIELD KEYS"):
            out[s["name"]] = {name: typ for name, typ in s.get("values", [])}
        return out

    def query(self, sel: Selection, fields: Sequence[str], limit: int) -> tuple[list[StoredPoint], bool]:
        cols = ", ".join(ident(f) for f in fields) if fields else "*"
        q = f"SELECT {cols} FROM {self._from(sel.measurement)}{self._where(sel)} GROUP BY * LIMIT {limit + 1}"
        points: list[StoredPoint] = []
        for s in self.influxql(q):
            types = self._types.get(s["name"]) or self._field_types(s["name"])
            names = s["columns"][1:]
            for row in s["values"]:
                values = {
                    n: _typed(v, types.get(n, "float")) for n, v in zip(names, row[1:], strict=True) if v is not None
                }
                if values:
                    points.append(StoredPoint(s["name"], dict(s.get("tags") or {}), int(row[0]), values))
        points = [
            StoredPoint(p.measurement, {k: v for k, v in p.tags.items() if v}, p.time_ns, p.fields) for p in points
        ]
        points.sort(key=lambda p: (p.time_ns, p.measurement, sorted(p.tags.items())))
        return points[:limit], len(points) > limit

    def aggregate(self, q: AggQuery) -> list[AggSeries]:
        func = _AGG_FUNCS[q.kind]
        arg = f"{ident(q.field)}, {q.percentile!r}" if q.kind is AggKind.PERCENTILE else ident(q.field)
        sel = Selection(q.measurement, q.tags, q.start_ns, q.end_ns)
        group = [ident(g) for g in q.group_by]
        if q.window_ns:
            if q.window_ns % 1000:
                raise StorageError("influxdb windows must be whole microseconds")
            offset = (q.start_ns % q.window_ns) // 1000
            group.insert(0, f"time({q.window_ns // 1000}u, {offset}u)")
        group_clause = (" GROUP BY " + ", ".join(group)) if group else ""
        source = f"{ident(q.measurement)}{self._where(sel)}{group_clause}"
        stmt = f"SELECT {func}({arg}), count({ident(q.field)}) FROM {source} fill(none)"
        out = []
        for s in self.influxql(stmt):
            tags = s.get("tags") or {}
            windows = [
                AggWindow(int(row[0]) if q.window_ns else q.start_ns, float(row[1]), int(row[2]))
                for row in s["values"]
                if row[1] is not None and row[2]
            ]
            if windows:
                out.append(AggSeries(group_key(tags, q.group_by), windows))
        return sorted(out, key=lambda a: a.group)

    def _any_field(self, measurement: str | None) -> str | None:
        if measurement is None:
            return None
        types = self._field_types(measurement)
        return sorted(types)[0] if types else None

    def latest(
        self, sel: Selection, field_name: str | None, group_by: Sequence[str]
    ) -> dict[TagTuple, tuple[int, float]]:
        fname = field_name or self._any_field(sel.measurement)
        if fname is None:
            return {}
        group = (" GROUP BY " + ", ".join(ident(g) for g in group_by)) if group_by else ""
        stmt = f"SELECT last({ident(fname)}) FROM {self._from(sel.measurement)}{self._where(sel)}{group}"
        out: dict[TagTuple, tuple[int, float]] = {}
        for s in self.influxql(stmt):
            row = s["values"][0]
            value = (
                float(row[1])
                if field_name and isinstance(row[1], int | float) and not isinstance(row[1], bool)
                else math.nan
            )
            out[group_key(s.get("tags") or {}, group_by)] = (int(row[0]), value)
        return out

    def point_times(self, sel: Selection) -> dict[TagTuple, list[int]]:
        times: dict[TagTuple, set[int]] = defaultdict(set)
        for p in self.query(sel, (), 10_000_000)[0]:
            times[tuple(sorted(p.tags.items()))].add(p.time_ns)
        return {k: sorted(v) for k, v in times.items()}

    def count(self, sel: Selection) -> int:
        total = 0
        for s in self.influxql(f"SELECT count(*) FROM {self._from(sel.measurement)}{self._where(sel)} GROUP BY *"):
            row = s["values"][0]
            total += max((int(v) for v in row[1:] if v is not None), default=0)
        return total

    def delete(self, sel: Selection) -> int:
        where = self._where(sel)
        if not where and sel.measurement is None:
            raise StorageError("refusing to delete everything: give a measurement, tags or a time range")
        n = self.count(sel)
        if sel.measurement is None and sel.start_ns is None and sel.end_ns is None:
            self.influxql(f"DROP SERIES{where}", write=True)
        else:
            src = f" FROM {ident(sel.measurement)}" if sel.measurement is not None else ""
            self.influxql(f"DELETE{src}{where}", write=True)
        left = self.count(sel)
        if left:
            raise StorageError(f"influxdb delete left {left} of {n} points")
        return n

    def measurements(self) -> list[str]:
        return sorted(row[0] for s in self.influxql("SHOW MEASUREMENTS") for row in s.get("values", []))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


#: Most lines and bytes per /write request (influxd refuses bodies over its max-body-size, 25 MB by default).
MAX_WRITE_LINES = 50_000
MAX_WRITE_BYTES = 8 * 1024 * 1024


def _bodies(lines: list[str]) -> Iterator[bytes]:
    """Line protocol split into request bodies of at most MAX_WRITE_LINES lines and about MAX_WRITE_BYTES."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        data = line.encode()
        if chunk and (len(chunk) >= MAX_WRITE_LINES or size + len(data) > MAX_WRITE_BYTES):
            yield b"\n".join(chunk)
            chunk, size = [], 0
        chunk.append(data)
        size += len(data) + 1
    if chunk:
        yield b"\n".join(chunk)


_INFLUX_UNITS = {"ns": 1, "u": 1_000, "µ": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_INFLUX_UNITS |= {"d": 86400 * 10**9, "w": 7 * 86400 * 10**9}


def _duration_ns(text: str) -> int:
    """An InfluxDB duration ("2h0m0s", "30d", "0s" = infinite) in ns."""
    return sum(int(n) * _INFLUX_UNITS[u] for n, u in re.findall(r"(\d+)(ns|ms|u|µ|s|m|h|d|w)", text))


def tls_context(ca_file: str | Path | None, verify: bool) -> ssl.SSLContext:
    """TLS client context for InfluxDB: verified against ``ca_file`` (or the system CAs), or not verified at all."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    if not verify:
        log.warning("InfluxDB TLS certificate verification is off (verify_tls: false): the link is not authenticated")
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _typed(v: Any, typ: str) -> FieldVal:
    if typ == "integer":
        return int(v)
    if typ == "float":
        return float(v)
    if typ == "boolean":
        return bool(v)
    return str(v)
