"""PCE replicas on etcd (issue 13, SFR-20): the leader programs switches and accepts writes; followers keep a watched
copy of the state, serve reads and NAP sessions, and answer writes with FAILED_PRECONDITION naming the leader.

A ``Replica`` joins three things: the etcd store (``pce/store/etcd_store.py``), the election (``pce/election.py``) and
the servicer (``pce/service.py``). Everything arrives on the store's thread and is handed to the PCE's event loop:

- **state changes** (a watch on the whole store from the revision last read): a follower reloads the core from the
  store (``persist.load``) and adopts it: NAP sessions on this replica get a new version only if their view changed,
  and an emulated fabric hosted by this replica follows. ``sessions/<nap>`` records (version and digest pushed to each
  NAP, written by whichever replica serves the NAP) are taken over by every replica, so a NAP that fails over resumes
  its version with no re-push when nothing changed.
- **leader changes**: the new leader fences its store writes with its campaign key, reloads everything the previous
  leader committed, applies configuration, and (re)programs the switches; the generation (the campaign key's create
  revision) is what OpenFlow role requests carry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pce import persist
from pce.election import Election, Leader
from pce.store.base import Change
from pce.store.etcd_store import EtcdStore, NotLeader

log = logging.getLogger("flame.pce.replica")


class Replica:
    """This process's part in a group of PCE replicas sharing one etcd."""

    def __init__(
        self,
        servicer: Any,
        store: EtcdStore,
        replica_id: str,
        address: str,
        lease_ttl_s: int = 1,
        on_leader: Callable[[int, persist.Restored], Awaitable[None]] | None = None,
    ) -> None:
        self.servicer = servicer
        self.store = store
        self.replica_id = replica_id
        self.election = Election(store, replica_id, address, self._leader_from_thread, ttl_s=lease_ttl_s)
        #: Awaited after this replica became leader and adopted the latest state (its generation, that state).
        self.on_leader = on_leader
        self.is_leader = False
        self.leader: Leader | None = None
        self.generation = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._cancel_watch: Callable[[], None] | None = None
        self._reload: asyncio.Task[None] | None = None
        self._reload_again = False
        self._transitions: asyncio.Queue[tuple[Leader | None, bool]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------------
    async def start(self, revision: int) -> None:
        """Follow the store from ``revision`` (what the servicer's core was loaded at) and campaign."""
        self.loop = asyncio.get_running_loop()
        self._worker = asyncio.create_task(self._transition_worker())
        self._cancel_watch = self.store.watch("", revision, self._changes_from_thread)
        await asyncio.to_thread(self.election.start)

    async def stop(self) -> None:
        """Resign (the next replica leads at once) and stop following."""
        if self._cancel_watch is not None:
            self._cancel_watch()
        await asyncio.to_thread(self.election.stop)
        for task in (self._worker, self._reload):
            if task is not None:
                task.cancel()

    def require_leader(self) -> None:
        """Raise ``NotLeader`` (FAILED_PRECONDITION naming the leader's address) unless this replica leads."""
        if not self.is_leader:
            raise NotLeader(self.leader.address if self.leader is not None else "")

    # -- state changes --------------------------------------------------------------------------------------------
    def _changes_from_thread(self, changes: list[Change]) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._changes, changes)

    def _changes(self, changes: list[Change]) -> None:
        sessions = self.servicer.sessions
        for c in changes:
            if c.key.startswith("sessions/") and c.value is not None:
                nap = c.key.removeprefix("sessions/")
                rec = sessions.records.get(nap)
                if rec is None or not rec.connected:  # a NAP served elsewhere: remember what it was given
                    doc = persist.decode_session(c.key, c.value)
                    sessions.restore(nap, *doc)
        if not self.is_leader and any(not c.key.startswith("sessions/") for c in changes):
            self.schedule_reload()

    def schedule_reload(self) -> None:
        """Reload the core from the store soon (coalescing bursts of changes into one reload)."""
        if self._reload is not None and not self._reload.done():
            self._reload_again = True
            return
        self._reload = asyncio.create_task(self._reload_loop())

    async def _reload_loop(self) -> None:
        while True:
            self._reload_again = False
            await self.reload()
            if not self._reload_again:
                return

    async def reload(self) -> persist.Restored | None:
        """Read the whole state and adopt it."""
        try:
            restored = await asyncio.to_thread(persist.load, self.store)
        except Exception:
            log.exception("reload from the store failed")
            return None
        await adopt(self.servicer, restored)
        return restored

    # -- leader changes -------------------------------------------------------------------------------------------
    def _leader_from_thread(self, leader: Leader | None, mine: bool) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._transitions.put_nowait, (leader, mine))

    async def _transition_worker(self) -> None:
        while True:
            leader, mine = await self._transitions.get()
            try:
                await self._transition(leader, mine)
            except Exception:
                log.exception("leader transition failed")

    async def _transition(self, leader: Leader | None, mine: bool) -> None:
        self.leader = leader
        if mine and leader is not None and not self.is_leader:
            self.store.fence = (leader.key, leader.generation)
            restored = await self.reload()  # everything the previous leader committed
            while restored is None:  # etcd unreachable right now: no leading on a stale copy
                await asyncio.sleep(0.2)
                restored = await self.reload()
            self.generation = leader.generation
            self.is_leader = True
            fields = {"replica": self.replica_id, "generation": self.generation}
            log.info("this replica leads", extra={"fields": fields})
            if self.on_leader is not None:
                await self.on_leader(self.generation, restored)
        elif not mine and self.is_leader:
            self.is_leader = False
            log.warning("this replica no longer leads", extra={"fields": {"replica": self.replica_id}})
            self.schedule_reload()  # drop whatever was changed in memory but not committed


async def adopt(servicer: Any, restored: persist.Restored) -> None:
    """Make ``servicer`` serve ``restored`` (a follower's reload): keep NAP interests, push changed views only."""
    async with servicer.lock:
        core = restored.core
        for nap, wanted in servicer.core.interest.items():
            core.subscribe(nap, wanted)
        servicer.core = core
        if servicer.persister is not None:
            servicer.persister.written = dict(restored.raw)
        for nap, (version, digest) in restored.sessions.items():
            rec = servicer.sessions.records.get(nap)
            if rec is None or not rec.connected:
                servicer.sessions.restore(nap, version, digest)
        servicer.push(set(servicer.queues))
    await servicer.program()
