"""PCE replicas as separate processes (`flame up --services pce`) on a real 3-member etcd (issue 13, SFR-20): the
leader is killed with SIGKILL while NAP sessions (the NAP agent's own PceLink, endpoints [leader, follower]) are on
it; the follower is elected and every session is re-established on it. The same scenario is the benchmark
`failover_ms` (tests/bench/pce_failover.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.bench.pce_failover import one_failover
from tests.support.etcd import start_etcd_cluster
from tests.support.procs import ProcessGroup

pytestmark = pytest.mark.etcd


def test_sfr20_killed_pce_leader_replaced_and_nap_sessions_fail_over(procs: ProcessGroup, tmp_path: Path) -> None:
    cluster = start_etcd_cluster(procs, tmp_path)
    try:
        result = asyncio.run(one_failover(procs, cluster))
    finally:
        cluster.stop()
    # Generous bounds for a loaded 2-core machine; the benchmark reports the figure (goal < 1000 ms).
    assert result.elected_ms < 5000, result
    assert result.sessions_ms < 5000, result
