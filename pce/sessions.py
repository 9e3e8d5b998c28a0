"""Per-NAP snapshot versions and ACK/NACK bookkeeping (the state half of the NAP session; transport is in service.py).

Like go-control-plane's snapshot cache: a NAP gets a new version only when its view changed; each version is
immutable. A NACKed version is never re-pushed as is; repeated NACKs hold further pushes back with exponential backoff
(0.1 s doubling to 30 s) so a NAP that rejects everything cannot drive a push loop. Pure: the clock is injected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")

BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 30.0


@dataclass
class SessionRecord(Generic[V]):
    """What the PCE knows about one NAP's session."""

    nap_id: str
    connected: bool = False
    pushed_version: int = 0
    acked_version: int = 0
    nack_count: int = 0
    consecutive_nacks: int = 0
    last_nack_code: int = 0
    last_nack_message: str = ""
    last_seen: float = 0.0
    hold_until: float = 0.0
    last_view: V | None = None
    pending: bool = False
    #: Digest of the content of ``pushed_version`` (kept across PCE restarts by the durable store, issue 13).
    digest: str = ""
    #: The NAP said Hello with ``pushed_version``: a view whose digest matches needs no re-push.
    resumable: bool = False


class SessionTable(Generic[V]):
    """Session records of every NAP that ever connected."""

    def __init__(self, clock: Callable[[], float], backoff_start_s: float = BACKOFF_START_S) -> None:
        self.clock = clock
        self.backoff_start_s = backoff_start_s
        self.records: dict[str, SessionRecord[V]] = {}

    def open(self, nap_id: str, last_applied_version: int) -> SessionRecord[V]:
        """A NAP said Hello; versions continue above what it last applied (so a restarted PCE never goes back)."""
        rec = self.records.setdefault(nap_id, SessionRecord(nap_id))
        rec.connected = True
        rec.last_seen = self.clock()
        rec.resumable = bool(rec.digest) and last_applied_version == rec.pushed_version
        rec.pushed_version = max(rec.pushed_version, last_applied_version)
        rec.acked_version = max(rec.acked_version, last_applied_version)
        rec.last_view = None  # the first view of a session is sent unless the NAP already has it (resumable)
        return rec

    def restore(self, nap_id: str, pushed_version: int, digest: str) -> None:
        """What a previous PCE process pushed to ``nap_id`` (from the durable store)."""
        rec = self.records.setdefault(nap_id, SessionRecord(nap_id))
        rec.pushed_version = max(rec.pushed_version, pushed_version)
        rec.digest = digest

    def close(self, nap_id: str) -> None:
        """The NAP's stream ended."""
        rec = self.records.get(nap_id)
        if rec is not None:
            rec.connected = False

    def offer(self, nap_id: str, view: V, digest: str = "") -> int | None:
        """The version to push for ``view``, or None (unchanged, not connected, or held back after NACKs).

        ``digest``: of ``view``'s content; a NAP that resumed with the version whose digest matches gets nothing."""
        rec = self.records.get(nap_id)
        if rec is None or not rec.connected or view == rec.last_view:
            return None
        if rec.resumable:
            rec.resumable = False
            if digest and digest == rec.digest:
                rec.last_view = view
                return None
        if self.clock() < rec.hold_until:
            rec.pending = True
            return None
        rec.pushed_version += 1
        rec.last_view = view
        rec.digest = digest
        rec.pending = False
        return rec.pushed_version

    def ack(self, nap_id: str, version: int) -> None:
        """The NAP applied ``version``."""
        rec = self.records[nap_id]
        rec.last_seen = self.clock()
        if version <= rec.pushed_version:
            rec.acked_version = max(rec.acked_version, version)
            rec.consecutive_nacks = 0
            rec.hold_until = 0.0

    def nack(self, nap_id: str, version: int, code: int, message: str) -> float:
        """The NAP rejected ``version``; returns how long pushes to it are held back."""
        rec = self.records[nap_id]
        rec.last_seen = self.clock()
        rec.nack_count += 1
        rec.consecutive_nacks += 1
        rec.last_nack_code, rec.last_nack_message = code, message
        hold = float(min(BACKOFF_MAX_S, self.backoff_start_s * 2.0 ** (rec.consecutive_nacks - 1)))
        rec.hold_until = self.clock() + hold
        return hold

    def due(self) -> list[str]:
        """NAPs whose held-back push may go out now."""
        now = self.clock()
        return [r.nap_id for r in self.records.values() if r.pending and r.connected and now >= r.hold_until]
