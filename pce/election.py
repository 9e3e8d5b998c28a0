"""Leader election of PCE replicas on etcd (issue 13, SFR-20), the way etcd's own v3election works.

Each replica grants a lease (TTL ``ttl_s``, 1 s by default), keeps it alive over one LeaseKeepAlive stream every
``ttl_s / 4``, and puts its campaign key ``<root>election/<lease id>`` (value: its replica id and gRPC address) bound to
that lease. The key with the lowest create revision leads; that create revision is the leader's **generation**: it only
grows from one leader to the next, so it doubles as the OpenFlow role-request generation_id and fences the leader's
writes (``EtcdStore.fence``: a Txn commits only while the campaign key still exists with that revision).

A leader that stops keeping its lease alive loses its key when etcd expires the lease (TTL, plus etcd's 0.5 s expiry
scan). That alone would make failover take 1-1.5 s. So followers also watch the leader's process: each holds a TCP
connection to the leader's gRPC port; when it breaks and a new connection is refused (the process is gone: kill -9,
crash, OOM), the follower revokes the dead leader's lease at once and the next replica leads within milliseconds. A
leader that is alive but unreachable is never revoked this way (a refused connection is required): it loses
leadership only by its lease, and its writes are fenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from etcd3aio.kv import prefix_range_end

from pce.store.etcd_store import EtcdStore

log = logging.getLogger("flame.pce.election")


@dataclass(frozen=True)
class Leader:
    """The replica that leads now."""

    replica_id: str
    #: Its gRPC address (host:port): where followers redirect writes.
    address: str
    #: Its campaign key (absolute etcd key).
    key: str
    #: Create revision of the campaign key: grows with every new leader.
    generation: int
    lease: int


#: Called on the store's thread with (leader or None, True when this replica is the leader).
OnChange = Callable[[Leader | None, bool], None]


class Election:
    """Campaigns for leadership and reports every change of leader."""

    def __init__(
        self,
        store: EtcdStore,
        replica_id: str,
        address: str,
        on_change: OnChange,
        ttl_s: int = 1,
        revoke_dead_leader: bool = True,
    ) -> None:
        self.store, self.replica_id, self.address, self.on_change = store, replica_id, address, on_change
        self.ttl_s = ttl_s
        self.revoke_dead_leader = revoke_dead_leader
        self.prefix = store.root + "election/"
        self.leader: Leader | None = None
        self.lease = 0
        self.key = ""
        #: TTL etcd granted (it raises TTLs below 1.5 election timeouts to that minimum).
        self.granted_ttl_s = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def is_leader(self) -> bool:
        return self.leader is not None and self.leader.key == self.key and bool(self.key)

    def start(self) -> None:
        """Campaign from now on (on the store's loop)."""

        async def begin() -> None:
            self._task = asyncio.create_task(self._run())

        self.store.run(begin())

    def stop(self) -> None:
        """Resign: revoke the lease (the key goes at once, the next replica leads) and stop campaigning."""
        self._stopping = True

        async def end() -> None:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
            await self._revoke(self.lease)

        with contextlib.suppress(Exception):
            self.store.run(end(), timeout=3.0)

    # -- the campaign (store loop) --------------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = 0.05
        while not self._stopping:
            try:
                await self._campaign()
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # etcd unreachable, lease lost: campaign again with a new lease
                log.warning("campaign interrupted", extra={"fields": {"replica": self.replica_id, "error": str(exc)}})
            self._set_leader(None)
            self.key, self.lease = "", 0
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _campaign(self) -> None:
        lease = self.store.client.lease
        assert lease is not None
        grant = await self.store.retrying(lambda: lease.grant(self.ttl_s, timeout=self.store.timeout_s), "lease grant")
        self.lease, self.granted_ttl_s = int(grant.ID), int(grant.TTL)
        self.key = f"{self.prefix}{self.lease:016x}"
        value = json.dumps({"replica_id": self.replica_id, "address": self.address}).encode()
        kv = self.store.kv
        await self.store.retrying(
            lambda: kv.put(self.key.encode(), value, lease=self.lease, timeout=self.store.timeout_s), "campaign put"
        )
        log.info(
            "campaigning",
            extra={"fields": {"replica": self.replica_id, "lease": hex(self.lease), "ttl_s": self.granted_ttl_s}},
        )
        keepalive = asyncio.create_task(self._keepalive())
        observe = asyncio.create_task(self._observe())
        try:
            done, _ = await asyncio.wait({keepalive, observe}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what ended it
            raise RuntimeError("lease lost")
        finally:
            for task in (keepalive, observe):
                task.cancel()
            await asyncio.gather(keepalive, observe, return_exceptions=True)

    async def _keepalive(self) -> None:
        """Refresh the lease every TTL/4 (one short LeaseKeepAlive stream each time, as the library's own helper
        does); returns when etcd says it expired, raises when etcd was away longer than the TTL."""
        lease = self.store.client.lease
        assert lease is not None
        interval = max(0.1, self.granted_ttl_s / 4)
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            await asyncio.sleep(interval)
            call = lease.keep_alive(self.lease)
            try:
                async with asyncio.timeout(interval * 2):
                    async for resp in call:
                        if resp.TTL <= 0:
                            log.warning("lease expired", extra={"fields": {"replica": self.replica_id}})
                            return
                        last_ok = loop.time()
                        break
            except Exception as exc:
                if loop.time() - last_ok > self.granted_ttl_s:
                    raise RuntimeError(f"lease keepalive failed for longer than its TTL: {exc}") from exc
            finally:
                call.cancel()

    async def _observe(self) -> None:
        """Follow the campaign keys: the lowest create revision leads. Raises when our own key vanished."""
        assert self.store.client.watch is not None
        kv = self.store.kv
        start, end = self.prefix.encode(), prefix_range_end(self.prefix.encode())
        prober: asyncio.Task[None] | None = None
        try:
            while True:
                resp = await self.store.retrying(
                    lambda: kv.get(start, end, timeout=self.store.timeout_s), "election read"
                )
                keys = sorted(resp.kvs, key=lambda k: k.create_revision)
                if not any(k.key.decode() == self.key for k in keys):
                    raise RuntimeError("campaign key gone (lease expired or revoked)")
                first = keys[0]
                doc = json.loads(first.value)
                leader = Leader(
                    doc["replica_id"], doc["address"], first.key.decode(), int(first.create_revision), int(first.lease)
                )
                if leader != self.leader:
                    if prober is not None:
                        prober.cancel()
                        prober = None
                    self._set_leader(leader)
                    if self.revoke_dead_leader and leader.key != self.key:
                        prober = asyncio.create_task(self._probe(leader))
                async for w in self.store.client.watch.watch(start, end, start_revision=int(resp.header.revision) + 1):
                    if w.events:
                        break
        finally:
            if prober is not None:
                prober.cancel()

    async def _probe(self, leader: Leader) -> None:
        """Hold a TCP connection to the leader; when it breaks and the next connect is refused, revoke its lease."""
        host, _, port = leader.address.rpartition(":")
        while True:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
            except ConnectionRefusedError:
                log.warning(
                    "leader process gone: revoking its lease",
                    extra={"fields": {"leader": leader.replica_id, "address": leader.address}},
                )
                await self._revoke(leader.lease)
                return
            except OSError:
                await asyncio.sleep(0.2)  # unreachable, not refused: leave it to the lease TTL
                continue
            try:
                await reader.read()  # returns at EOF or raises on reset: the connection broke
            except OSError:
                pass
            finally:
                writer.close()

    async def _revoke(self, lease_id: int) -> None:
        lease = self.store.client.lease
        if lease_id and lease is not None:
            with contextlib.suppress(Exception):
                await lease.revoke(lease_id, timeout=self.store.timeout_s)

    def _set_leader(self, leader: Leader | None) -> None:
        if leader == self.leader:
            return
        self.leader = leader
        mine = self.is_leader
        log.info(
            "leader changed",
            extra={
                "fields": {
                    "replica": self.replica_id,
                    "leader": leader.replica_id if leader else "",
                    "generation": leader.generation if leader else 0,
                    "this_replica_leads": mine,
                }
            },
        )
        try:
            self.on_change(leader, mine)
        except Exception:
            log.exception("leader change callback failed")
