"""Which server exchanges a server NAP keeps, starts and evicts (issue 12 item 5: forged and abusive frames cost
little). Pure bookkeeping over session ids, sources and an injected clock; the data plane (nap_agent/dataplane.py)
acts on the decisions.

A *source* is the reply path a request came with (the path back to its client NAP). An exchange is *verified* once the
client NAP echoed the random nonce of our answer in its ACK: only a NAP that really receives on that path can, so a
verified source is *trusted* for a while. Rules:

- per-source quota (``max_exchanges_per_source``) and a global one (``max_server_exchanges``); making room evicts, in
  this order, exchanges that never started (oldest first), then started unverified ones (oldest first): from the
  newcomer's own source when that source is full, from everyone when the table is full. Verified exchanges and those of
  trusted sources are never evicted; with nothing to evict the newcomer is refused;
- exchanges of untrusted sources start (reach the origin) at most ``max_unverified_active`` at a time; the others wait
  (and are the first to be evicted). So a flood of forged first frames costs the origin a bounded number of fetches,
  and real client NAPs, trusted after their first answered exchange, are not queued behind it.

Known limit: during a flood a client NAP that never had an answered exchange with this NAP (first contact) competes
with the forged first frames for the unverified slots and is mostly evicted; a stateless return-routability
challenge (a SYN-cookie-like nonce before any state) would remove that and is not built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: (FID, LID table) of a reply path.
Path = tuple[int, int]


@dataclass
class Limits:
    """Bounds of the server half (configurable in the NAP agent's settings)."""

    #: Server exchanges in flight at once.
    max_server_exchanges: int = 4096
    #: ... per source (the client NAP a request answers to).
    max_exchanges_per_source: int = 1024
    #: Exchanges of not (yet) trusted sources that may be started (talk to the origin) at once.
    max_unverified_active: int = 64
    #: How long a source stays trusted after its last verified exchange, and how many are remembered.
    trust_s: float = 300.0
    max_trusted: int = 4096


@dataclass
class Admission:
    """The server exchanges of one NAP, by source and by state."""

    limits: Limits = field(default_factory=Limits)
    by_source: dict[Path, dict[int, None]] = field(default_factory=dict)
    source_of: dict[int, Path] = field(default_factory=dict)
    #: Started, untrusted, unverified (oldest first).
    unverified: dict[int, None] = field(default_factory=dict)
    #: Not started yet (oldest first).
    waiting: dict[int, None] = field(default_factory=dict)
    #: Source -> trusted until (monotonic seconds), least recently verified first.
    trusted: dict[Path, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.source_of)

    def is_trusted(self, source: Path, now: float) -> bool:
        until = self.trusted.get(source)
        return until is not None and until > now

    def _evictable(self, among: dict[int, None] | None = None) -> int | None:
        for pool in (self.waiting, self.unverified):
            for session in pool:
                if among is None or session in among:
                    return session
        return None

    def make_room(self, source: Path) -> list[int] | None:
        """Sessions to evict so one more exchange from ``source`` fits; None: refuse it."""
        victims: list[int] = []
        mine = self.by_source.get(source, {})
        if len(mine) >= self.limits.max_exchanges_per_source:
            victim = self._evictable(mine)
            if victim is None:
                return None
            victims.append(victim)
        if len(self) - len(victims) >= self.limits.max_server_exchanges:
            victim = next((s for s in (*self.waiting, *self.unverified) if s not in victims), None)
            if victim is None:
                return None
            victims.append(victim)
        return victims

    def add(self, session: int, source: Path, now: float) -> bool:
        """Account a new exchange; True when it may start now."""
        self.by_source.setdefault(source, {})[session] = None
        self.source_of[session] = source
        if self.is_trusted(source, now):
            return True
        if len(self.unverified) < self.limits.max_unverified_active:
            self.unverified[session] = None
            return True
        self.waiting[session] = None
        return False

    def verify(self, session: int, now: float) -> list[int]:
        """The client NAP echoed our nonce: trust its source; returns waiting sessions that may start now."""
        source = self.source_of.get(session)
        if source is not None:
            self.trusted.pop(source, None)
            self.trusted[source] = now + self.limits.trust_s
            while len(self.trusted) > self.limits.max_trusted:
                del self.trusted[next(iter(self.trusted))]
        self.unverified.pop(session, None)
        return self._promote(now)

    def remove(self, session: int, now: float) -> list[int]:
        """An exchange ended (or was evicted); returns waiting sessions that may start now."""
        source = self.source_of.pop(session, None)
        if source is not None:
            mine = self.by_source.get(source)
            if mine is not None:
                mine.pop(session, None)
                if not mine:
                    del self.by_source[source]
        self.unverified.pop(session, None)
        self.waiting.pop(session, None)
        return self._promote(now)

    def _promote(self, now: float) -> list[int]:
        started = []
        while self.waiting and len(self.unverified) < self.limits.max_unverified_active:
            session = next(iter(self.waiting))
            del self.waiting[session]
            if not self.is_trusted(self.source_of[session], now):
                self.unverified[session] = None
            started.append(session)
        return started
