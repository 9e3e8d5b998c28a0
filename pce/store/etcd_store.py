"""The etcd backend of the PCE state store (issue 13, SFR-20): ``StateStore`` against a real etcd v3 cluster.

Client: ``etcd3aio`` (grpc.aio, one channel over every member with gRPC's round-robin balancer, retries on
UNAVAILABLE, watches that resume from the next revision after a member dies; docs/decisions.md says why). The client
runs on an event loop of its own in a daemon thread, so the store's synchronous interface can be called from any
thread, and the lease keepalives of leader election (pce/election.py) are never delayed by a busy PCE event loop.

- ``apply`` is one etcd ``Txn``; its revision is the etcd revision. When a ``fence`` is set (the leader's campaign
  key and its create revision), the Txn only commits while that key still exists with that revision: a deposed leader
  cannot write (``NotLeader``).
- ``watch`` is one Watch stream from ``from_revision + 1``; the events of one revision (one Txn) reach the callback
  together (one call per revision, in order), on the store's thread. If etcd compacted past the watch's position,
  the watcher reads the prefix anew and delivers every key as a put and every vanished key as a delete, so the
  consumer converges all the same.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from etcd3aio import Etcd3Client
from etcd3aio.errors import EtcdConnectionError, EtcdTransientError
from etcd3aio.kv import KVService, prefix_range_end

from flame_control.runtime.errors import FailedPrecondition, PreconditionViolation, Unavailable
from pce.store.base import Change

log = logging.getLogger("flame.pce.etcd")

T = TypeVar("T")

#: mvccpb.Event.EventType
_DELETE = 1


class NotLeader(FailedPrecondition):
    """A write reached a replica that does not lead (or was fenced off: its campaign key is gone).

    FAILED_PRECONDITION with a ``LEADER`` violation naming the leader's address when known, so a client can retry
    there."""

    def __init__(self, leader: str = "") -> None:
        self.leader = leader
        where = f"the leader is at {leader}" if leader else "no leader is known right now; retry shortly"
        super().__init__([PreconditionViolation("LEADER", "pce", f"this PCE replica does not lead: {where}")])


class EtcdStore:
    """``StateStore`` on etcd: keys live under ``root`` (default ``/flame/pce/``), relative names in the interface."""

    def __init__(
        self, endpoints: Sequence[str], root: str = "/flame/pce/", attempt_timeout_s: float = 2.0, attempts: int = 6
    ) -> None:
        if not endpoints:
            raise ValueError("the etcd store needs at least one endpoint")
        self.endpoints = [e.removeprefix("http://") for e in endpoints]
        self.root = root
        #: Deadline of one attempt: a write sent to a follower whose etcd leader just died is lost inside etcd (it
        #: would time out after ~6 s server-side); a short attempt is retried, through a member that has a leader.
        self.timeout_s = attempt_timeout_s
        #: Every call gives up after this long (all attempts with their backoff).
        self.call_timeout_s = attempt_timeout_s * attempts + 2.0
        #: (key, create revision) the Txn of every apply is conditioned on, or None (no fencing).
        self.fence: tuple[str, int] | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="etcd-store", daemon=True)
        self._thread.start()
        self.client = Etcd3Client(self.endpoints, rpc_max_attempts=1, watch_reconnect_backoff_seconds=0.05)
        self.run(self.client.connect())
        self._watches: set[concurrent.futures.Future[None]] = set()

    # -- running coroutines on the store's loop -------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the store's loop and wait for its result (from any thread but the store's own)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout if timeout is not None else self.call_timeout_s)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise Unavailable(f"etcd ({', '.join(self.endpoints)}) did not answer in time") from exc

    def spawn(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        """Start ``coro`` on the store's loop and return at once."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @property
    def kv(self) -> KVService:
        assert self.client.kv is not None
        return self.client.kv

    def key(self, name: str) -> bytes:
        """The etcd key of a relative name."""
        return (self.root + name).encode()

    def name(self, key: bytes) -> str:
        """The relative name of an etcd key."""
        return key.decode().removeprefix(self.root)

    # -- StateStore ------------------------------------------------------------------------------------------------
    def read_all(self, prefix: str = "") -> tuple[dict[str, bytes], int]:
        return self.run(self._read(prefix, 0))

    async def retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """Await ``call()`` (one attempt: ``timeout_s``), again after UNAVAILABLE or a timeout, with backoff, for up to
        ``call_timeout_s`` in all (the library's own retry loop shares one deadline with the attempt)."""
        deadline = self.loop.time() + self.call_timeout_s - 1.0
        delay = 0.05
        while True:
            try:
                return await call()
            except (EtcdConnectionError, EtcdTransientError, TimeoutError) as exc:
                if self.loop.time() + delay >= deadline:
                    raise Unavailable(f"etcd ({', '.join(self.endpoints)}): {what} failed: {exc}") from exc
                log.debug("etcd call retried", extra={"fields": {"call": what, "error": str(exc)}})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _read(self, prefix: str, revision: int) -> tuple[dict[str, bytes], int]:
        start = self.key(prefix)
        resp = await self.retrying(
            lambda: self.kv.get(start, prefix_range_end(start), revision=revision, timeout=self.timeout_s),
            "read",
        )
        return {self.name(kv.key): bytes(kv.value) for kv in resp.kvs}, int(resp.header.revision)

    def apply(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> int:
        return self.run(self._apply(dict(puts), list(deletes)))

    async def _apply(self, puts: dict[str, bytes], deletes: list[str]) -> int:
        ops = [KVService.txn_op_put(self.key(k), v) for k, v in puts.items()]
        ops += [KVService.txn_op_delete(self.key(k)) for k in deletes if k not in puts]
        compare = []
        if self.fence is not None:
            key, create_revision = self.fence
            compare.append(KVService.txn_compare_create_revision(key.encode(), create_revision))
        resp = await self.retrying(lambda: self.kv.txn(compare, ops, timeout=self.timeout_s), "txn")
        if not resp.succeeded:
            raise NotLeader()
        return int(resp.header.revision)

    def watch(self, prefix: str, from_revision: int, callback: Callable[[list[Change]], None]) -> Callable[[], None]:
        future = self.spawn(self._watch(prefix, from_revision, callback))
        self._watches.add(future)

        def cancel() -> None:
            self._watches.discard(future)
            future.cancel()

        return cancel

    async def _watch(self, prefix: str, from_revision: int, callback: Callable[[list[Change]], None]) -> None:
        assert self.client.watch is not None
        start = self.key(prefix)
        try:
            known = set((await self._read(prefix, from_revision))[0]) if from_revision > 0 else set()
        except Exception:  # compacted already: the first response says so and we resync there
            known = set()
        async for resp in self.client.watch.watch(start, prefix_range_end(start), start_revision=from_revision + 1):
            if resp.compact_revision > 0:
                current, revision = await self._read(prefix, 0)
                changes = [Change(k, v, revision) for k, v in sorted(current.items())]
                changes += [Change(k, None, revision) for k in sorted(known - set(current))]
                log.warning(
                    "etcd compacted past the watch: resynced",
                    extra={"fields": {"prefix": prefix, "compact_revision": resp.compact_revision}},
                )
                known = set(current)
                await _deliver(callback, changes)
                continue
            if not resp.events:
                continue
            batch: list[Change] = []
            for ev in resp.events:  # one response may carry several revisions (a replay): one callback per revision
                name = self.name(ev.kv.key)
                deleted = ev.type == _DELETE
                change = Change(name, None if deleted else bytes(ev.kv.value), int(ev.kv.mod_revision))
                if batch and batch[-1].revision != change.revision:
                    await _deliver(callback, batch)
                    batch = []
                batch.append(change)
                (known.discard if deleted else known.add)(name)
            await _deliver(callback, batch)

    def close(self) -> None:
        for future in list(self._watches):
            future.cancel()
        self._watches.clear()
        if self.loop.is_closed():
            return
        try:
            self.run(self.client.close(), timeout=2.0)
        except Exception:  # closing a channel whose members are all gone
            log.debug("etcd client close failed", exc_info=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self.loop.close()


async def _deliver(callback: Callable[[list[Change]], None], changes: list[Change]) -> None:
    """Call the watcher's callback; a failing callback is logged, never ends the watch."""
    try:
        callback(changes)
    except Exception:
        log.exception("store watch callback failed")
