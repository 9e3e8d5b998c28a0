"""Durable CLMC state (SQLite file in the service's state dir): KPI definitions, alert state per group, the retained
KPI event log with its sequence numbers, and erased data subjects. Survives restarts, so alerts are neither lost nor
re-raised, and subscribers resume by sequence number."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from clmc.endpoint_config import EndpointTrack
from clmc.kpi import GroupState, KpiSpec
from clmc.kpi_rules import spec_from_proto, spec_to_proto
from clmc.storage.base import TagTuple
from flame_control.api.flame.clmc.v1 import kpi_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kpis (media_service TEXT, name TEXT, definition BLOB, PRIMARY KEY (media_service, name));
CREATE TABLE IF NOT EXISTS alerts (
  media_service TEXT, name TEXT, grp TEXT, firing INTEGER, pending_since INTEGER, last_seen INTEGER, value REAL,
  PRIMARY KEY (media_service, name, grp));
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, media_service TEXT, event BLOB);
CREATE TABLE IF NOT EXISTS erased_subjects (subject TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS endpoint_tracks (endpoint TEXT PRIMARY KEY, track TEXT);
CREATE TABLE IF NOT EXISTS fqdn_services (fqdn TEXT PRIMARY KEY, media_service TEXT);
"""


#: Makes the events for the groups still firing when a KPI is re-defined differently or deleted (CLEARED events).
Retire = Callable[[dict[TagTuple, GroupState]], list[kpi_pb2.KpiEvent]]


def _definition_bytes(spec: KpiSpec) -> bytes:
    return spec_to_proto(spec).SerializeToString(deterministic=True)


def _same_definition(stored: bytes, definition: bytes) -> bool:
    """True when a stored definition is the same KPI (compared as specs: the stored bytes may predate deterministic
    serialization, map order aside)."""
    return stored == definition or _stored_spec(stored) == _stored_spec(definition)


def _stored_spec(definition: bytes) -> KpiSpec:
    """A stored definition as a spec (its scope is complete as stored: nothing is added)."""
    return spec_from_proto(kpi_pb2.KpiDefinition.FromString(definition), service_scope=False)


def subject_digest(subject: str) -> str:
    """SHA-256 hex digest of a data subject id."""
    return hashlib.sha256(subject.encode()).hexdigest()


class ClmcState:
    """Thread-safe access to the state file."""

    def __init__(self, path: Path, retained_events: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA)
        self._retained = retained_events

    def kpis(self) -> list[KpiSpec]:
        """Every stored KPI."""
        with self._lock:
            rows = self._db.execute("SELECT definition FROM kpis ORDER BY media_service, name").fetchall()
        return [_stored_spec(r[0]) for r in rows]

    def put_kpi(self, spec: KpiSpec, retire: Retire) -> list[kpi_pb2.KpiEvent]:
        """Insert or replace a KPI. The same definition again (the orchestrator re-defines every KPI on each service
        update) changes nothing and keeps its alert state; a changed definition starts with fresh alert state and
        the groups firing under the old one get the events ``retire`` makes (CLEARED), numbered and stored in the
        same transaction. Returns those events."""
        definition = _definition_bytes(spec)
        with self._lock:
            self._db.execute("BEGIN")
            row = self._db.execute(
                "SELECT definition FROM kpis WHERE media_service = ? AND name = ?", spec.key
            ).fetchone()
            if row is not None and _same_definition(row[0], definition):
                self._db.execute("ROLLBACK")
                return []
            events = retire(self._firing(spec.key)) if row is not None else []
            self._db.execute("DELETE FROM alerts WHERE media_service = ? AND name = ?", spec.key)
            self._db.execute("INSERT OR REPLACE INTO kpis VALUES (?, ?, ?)", (*spec.key, definition))
            out = self._append(spec.key[0], events)
            self._db.execute("COMMIT")
        return out

    def delete_kpi(self, key: tuple[str, str], retire: Retire) -> tuple[bool, list[kpi_pb2.KpiEvent]]:
        """Delete a KPI and its alert state; the groups that were firing get the events ``retire`` makes (CLEARED),
        numbered and stored atomically with the delete. (False, []) when it did not exist."""
        with self._lock:
            self._db.execute("BEGIN")
            events = retire(self._firing(key))
            n = self._db.execute("DELETE FROM kpis WHERE media_service = ? AND name = ?", key).rowcount
            if n == 0:
                self._db.execute("ROLLBACK")
                return False, []
            self._db.execute("DELETE FROM alerts WHERE media_service = ? AND name = ?", key)
            out = self._append(key[0], events)
            self._db.execute("COMMIT")
        return True, out

    def _firing(self, key: tuple[str, str]) -> dict[TagTuple, GroupState]:
        return {g: s for g, s in self._alerts(key).items() if s.firing}

    def alerts(self, key: tuple[str, str]) -> dict[TagTuple, GroupState]:
        """Alert state of every group of a KPI."""
        with self._lock:
            return self._alerts(key)

    def _alerts(self, key: tuple[str, str]) -> dict[TagTuple, GroupState]:
        rows = self._db.execute(
            "SELECT grp, firing, pending_since, last_seen, value FROM alerts WHERE media_service = ? AND name = ?",
            key,
        ).fetchall()
        return {
            tuple((k, v) for k, v in json.loads(g)): GroupState(bool(f), p, s, float("nan") if val is None else val)
            for g, f, p, s, val in rows
        }

    def save(
        self, spec: KpiSpec, states: dict[TagTuple, GroupState], events: list[kpi_pb2.KpiEvent]
    ) -> list[kpi_pb2.KpiEvent]:
        """Atomically store a KPI's new alert states and append its events; returns events with sequence numbers.
        Does nothing when the KPI was deleted or re-defined differently meanwhile (the evaluation is stale)."""
        key = spec.key
        with self._lock:
            self._db.execute("BEGIN")
            row = self._db.execute("SELECT definition FROM kpis WHERE media_service = ? AND name = ?", key).fetchone()
            if row is None or not _same_definition(row[0], _definition_bytes(spec)):
                self._db.execute("ROLLBACK")
                return []
            self._db.execute("DELETE FROM alerts WHERE media_service = ? AND name = ?", key)
            self._db.executemany(
                "INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (*key, json.dumps(g), int(s.firing), s.pending_since_ns, s.last_seen_ns, s.value)
                    for g, s in states.items()
                ],
            )
            out = self._append(key[0], events)
            self._db.execute("COMMIT")
        return out

    def _append(self, media_service: str, events: list[kpi_pb2.KpiEvent]) -> list[kpi_pb2.KpiEvent]:
        """Number and append events (inside the caller's transaction); trims the log to the retained count."""
        out = []
        for e in events:
            cur = self._db.execute("INSERT INTO events (media_service, event) VALUES (?, ?)", (media_service, b""))
            seq = int(cur.lastrowid or 0)
            numbered = kpi_pb2.KpiEvent()
            numbered.CopyFrom(e)
            numbered.sequence = seq
            self._db.execute("UPDATE events SET event = ? WHERE seq = ?", (numbered.SerializeToString(), seq))
            out.append(numbered)
        if out:
            self._db.execute("DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?", (self._retained,))
        return out

    def oldest_sequence(self) -> int:
        """Sequence number of the oldest retained event (0 when none is retained)."""
        with self._lock:
            row = self._db.execute("SELECT MIN(seq) FROM events").fetchone()
        return int(row[0] or 0)

    def events_after(self, sequence: int) -> list[kpi_pb2.KpiEvent]:
        """Retained events with a larger sequence number, in order."""
        with self._lock:
            rows = self._db.execute("SELECT event FROM events WHERE seq > ? ORDER BY seq", (sequence,)).fetchall()
        return [kpi_pb2.KpiEvent.FromString(r[0]) for r in rows]

    def erased_subjects(self) -> set[str]:
        """SHA-256 digests of the data subjects erased so far (their late-arriving points are dropped); only
        digests are kept, so the suppression list itself holds no subject id."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT subject FROM erased_subjects")}

    def add_erased_subject(self, subject: str) -> None:
        """Remember an erased subject (by digest)."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO erased_subjects VALUES (?)", (subject_digest(subject),))

    def endpoint_track(self, endpoint: TagTuple) -> EndpointTrack | None:
        """The lifecycle track of an endpoint (by its identity tags)."""
        with self._lock:
            row = self._db.execute("SELECT track FROM endpoint_tracks WHERE endpoint = ?", (json.dumps(endpoint),))
            found = row.fetchone()
        return None if found is None else EndpointTrack(**json.loads(found[0]))

    def put_endpoint_track(self, endpoint: TagTuple, track: EndpointTrack) -> None:
        """Store an endpoint's track."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO endpoint_tracks VALUES (?, ?)", (json.dumps(endpoint), json.dumps(vars(track)))
            )

    def fqdn_services(self) -> dict[str, str]:
        """FQDN -> media service learned from endpoint config events (clmc.attribution)."""
        with self._lock:
            return dict(self._db.execute("SELECT fqdn, media_service FROM fqdn_services").fetchall())

    def put_fqdn_services(self, entries: dict[str, str]) -> None:
        """Store learned FQDN -> media service entries."""
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO fqdn_services VALUES (?, ?)", sorted(entries.items()))

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
