"""The etcd backend of the PCE state store against a real 3-member etcd cluster (issue 13, SFR-20).

Atomic apply (one Txn, revisions = etcd revisions), watches that deliver a Txn's changes together and in order,
fencing of a deposed leader's writes, and faults: one member killed, the etcd leader killed, every member restarted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pce.store.base import Change
from pce.store.etcd_store import EtcdStore, NotLeader
from tests.support.etcd import EtcdCluster, start_etcd_cluster
from tests.support.procs import ProcessGroup, wait_for

pytestmark = pytest.mark.etcd


@pytest.fixture
def cluster(procs: ProcessGroup, tmp_path: Path) -> Iterator[EtcdCluster]:
    c = start_etcd_cluster(procs, tmp_path)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def store(cluster: EtcdCluster) -> Iterator[EtcdStore]:
    s = EtcdStore(cluster.endpoints, root="/test/pce/")
    try:
        yield s
    finally:
        s.close()


class Recorder:
    """Collects watch batches (called on the store's thread)."""

    def __init__(self) -> None:
        self.batches: list[list[Change]] = []
        self.lock = threading.Lock()

    def __call__(self, changes: list[Change]) -> None:
        with self.lock:
            self.batches.append(changes)

    def state(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        with self.lock:
            for batch in self.batches:
                for c in batch:
                    if c.value is None:
                        out.pop(c.key, None)
                    else:
                        out[c.key] = c.value
        return out


def test_sfr20_etcd_apply_is_one_txn_with_etcd_revisions_and_watch_sees_it_whole(store: EtcdStore) -> None:
    data, rev0 = store.read_all()
    assert data == {}
    seen = Recorder()
    cancel = store.watch("topology/", rev0, seen)
    rev1 = store.apply({"topology/nodes/a": b"A", "topology/nodes/b": b"B", "other/x": b"X"})
    assert rev1 == rev0 + 1  # one Txn = one etcd revision
    rev2 = store.apply({"topology/nodes/c": b"C"}, deletes=["topology/nodes/a"])
    assert rev2 == rev1 + 1
    data, rev = store.read_all("topology/")
    assert data == {"topology/nodes/b": b"B", "topology/nodes/c": b"C"} and rev == rev2
    wait_for(lambda: len(seen.batches) >= 2, 10, what="two watch batches")
    cancel()
    first, second = seen.batches
    assert {c.key for c in first} == {"topology/nodes/a", "topology/nodes/b"} and {c.revision for c in first} == {rev1}
    assert sorted((c.key, c.value) for c in second) == [("topology/nodes/a", None), ("topology/nodes/c", b"C")]
    assert seen.state() == data


def test_sfr20_etcd_watch_from_an_old_revision_replays_what_followed(store: EtcdStore) -> None:
    _, rev0 = store.read_all()
    store.apply({"k/1": b"1"})
    store.apply({"k/2": b"2"})
    seen = Recorder()
    cancel = store.watch("k/", rev0, seen)
    wait_for(lambda: seen.state() == {"k/1": b"1", "k/2": b"2"}, 10, what="replayed changes")
    cancel()


def test_sfr20_etcd_fenced_apply_fails_once_the_campaign_key_is_gone(store: EtcdStore) -> None:
    rev = store.apply({"election/me": b"replica-a"})
    store.fence = (store.root + "election/me", rev)
    store.apply({"state/x": b"1"})
    store.fence = None
    store.apply({}, deletes=["election/me"])
    store.fence = (store.root + "election/me", rev)
    with pytest.raises(NotLeader):
        store.apply({"state/x": b"2"})
    store.fence = None
    assert store.read_all("state/")[0] == {"state/x": b"1"}  # nothing of the fenced Txn applied


def _writes_continue(store: EtcdStore, seen: Recorder, tag: str, n: int = 5) -> None:
    for i in range(n):
        store.apply({f"w/{tag}/{i}": tag.encode()})
    expected = {f"w/{tag}/{i}" for i in range(n)}
    wait_for(lambda: expected <= set(seen.state()), 15, what=f"watch saw the writes after {tag}")


def test_sfr20_etcd_store_survives_a_killed_member_and_a_killed_leader(cluster: EtcdCluster, store: EtcdStore) -> None:
    _, rev0 = store.read_all()
    seen = Recorder()
    cancel = store.watch("w/", rev0, seen)
    _writes_continue(store, seen, "before")
    follower = next(m for m in cluster.members if m is not cluster.leader())
    cluster.kill(follower)
    _writes_continue(store, seen, "member-killed")
    cluster.start_member(follower)
    leader = cluster.leader()
    t0 = time.monotonic()
    cluster.kill(leader)
    _writes_continue(store, seen, "leader-killed")
    took = time.monotonic() - t0
    assert took < 15, f"writes resumed {took:.1f}s after the etcd leader was killed"
    assert cluster.leader() is not leader
    cancel()
    revisions = [c.revision for batch in seen.batches for c in batch]
    assert revisions == sorted(revisions), "watch delivered changes out of order"
    assert len(seen.state()) == 15


def test_sfr20_etcd_store_resumes_after_every_member_restarts(cluster: EtcdCluster, store: EtcdStore) -> None:
    _, rev0 = store.read_all()
    seen = Recorder()
    cancel = store.watch("w/", rev0, seen)
    _writes_continue(store, seen, "before")
    for m in cluster.members:
        cluster.kill(m)
    for m in cluster.members:
        cluster.start_member(m, wait=False)
    for m in cluster.members:
        cluster.wait_healthy(m)
    assert store.read_all("w/")[0] == {f"w/before/{i}": b"before" for i in range(5)}  # durable across the restart
    _writes_continue(store, seen, "after")
    cancel()
    assert len(seen.state()) == 10
