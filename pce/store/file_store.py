"""The embedded, crash-safe local store of the PCE's durable state (issue 13, SFR-20): one SQLite database file.

Why SQLite and not a hand-written log (docs/decisions.md, "PCE durable state"): every ``apply`` is one SQLite
transaction in WAL mode with ``synchronous=FULL``: the WAL frames carry checksums, the commit is fsynced before
``apply`` returns, and a torn tail (power loss, kill -9 mid-write) is discarded on the next open. That is the append log
with checksums the issue asks for, kept by a library every Python has (``sqlite3`` is in the standard library), with
checkpointing (compaction) and torn-write handling already proven. One process at a time: the store takes an exclusive
``flock`` on ``<path>.lock`` so a second PCE on the same directory fails fast instead of interleaving writes.

Watches are in-process (the embedded store has a single writer: this process); changes since open are kept in a
bounded history, so a watcher may start from any revision it has seen since then (older: :class:`Compacted`).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from pce.store.base import Change

HISTORY = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, mod_revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
"""


class Compacted(Exception):
    """A watch asked for changes older than the store still has (start again from ``read_all``)."""


class StoreLocked(RuntimeError):
    """Another process holds the store."""


class FileStore:
    """:class:`pce.store.base.StateStore` on one SQLite file; thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path | str, history: int = HISTORY) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.path.with_name(self.path.name + ".lock"), "a+b")  # noqa: SIM115 (held open)
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.close()
            raise StoreLocked(f"{self.path} is in use by another process") from exc
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._mutex = threading.RLock()
        self._history: deque[Change] = deque(maxlen=history)
        self._watchers: list[tuple[str, Callable[[list[Change]], None]]] = []
        self.revision = self._read_revision()
        #: The oldest revision a watch can start from (changes after it are in the history).
        self._history_floor = self.revision
        _fsync_dir(self.path.parent)  # the database (and WAL) file names themselves are durable

    def _read_revision(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name='revision'").fetchone()
        return int(row[0])

    # -- StateStore -----------------------------------------------------------------------------------------------
    def read_all(self, prefix: str = "") -> tuple[dict[str, bytes], int]:
        """Every key under ``prefix`` and the revision of the read."""
        with self._mutex:
            rows = self._db.execute(
                "SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key", (prefix, _prefix_end(prefix))
            ).fetchall()
            return {k: bytes(v) for k, v in rows}, self.revision

    def apply(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> int:
        """One durable transaction (fsynced before returning); returns the new revision."""
        dels = [k for k in deletes if k not in puts]
        with self._mutex:
            revision = self.revision + 1
            try:
                self._db.execute("BEGIN IMMEDIATE")
                gone = []
                for key in dels:
                    if self._db.execute("DELETE FROM kv WHERE key=?", (key,)).rowcount:
                        gone.append(key)
                self._db.executemany(
                    "INSERT INTO kv (key, value, mod_revision) VALUES (?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value, mod_revision=excluded.mod_revision",
                    [(k, bytes(v), revision) for k, v in puts.items()],
                )
                self._db.execute("UPDATE meta SET value=? WHERE name='revision'", (revision,))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self.revision = revision
            changes = [Change(k, None, revision) for k in gone]
            changes += [Change(k, bytes(v), revision) for k, v in puts.items()]
            evicting = len(self._history) + len(changes) > (self._history.maxlen or 0)
            self._history.extend(changes)
            if evicting:
                # changes after the oldest retained revision are all still here
                self._history_floor = self._history[0].revision
            watchers = list(self._watchers)
        for prefix, callback in watchers:
            mine = [c for c in changes if c.key.startswith(prefix)]
            if mine:
                callback(mine)
        return revision

    def watch(self, prefix: str, from_revision: int, callback: Callable[[list[Change]], None]) -> Callable[[], None]:
        """Call ``callback`` (in the writer's thread) with changes under ``prefix`` after ``from_revision``."""
        with self._mutex:
            if from_revision < self._history_floor:
                raise Compacted(f"revision {from_revision} is older than the store's history ({self._history_floor})")
            backlog = [c for c in self._history if c.revision > from_revision and c.key.startswith(prefix)]
            entry = (prefix, callback)
            self._watchers.append(entry)
        if backlog:
            callback(backlog)

        def cancel() -> None:
            with self._mutex:
                if entry in self._watchers:
                    self._watchers.remove(entry)

        return cancel

    def close(self) -> None:
        """Checkpoint the WAL into the database file, close it and release the lock."""
        with self._mutex:
            if self._lock_file.closed:
                return
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
                self._lock_file.close()


def _prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix`` (for a range scan)."""
    return prefix + "\U0010ffff" if prefix else "\U0010ffff"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
