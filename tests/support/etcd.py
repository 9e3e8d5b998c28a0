"""A private etcd cluster for tests (issue 13): N members of Debian's etcd-server 3.4 on 127.0.0.1 with fresh ports
and data dirs under the test's temp dir, started and stopped by PID (``ProcessGroup``).

The members run with a 50 ms heartbeat and a 500 ms election timeout (the tuning docs/pce.md recommends for PCE
replicas): etcd raises a lease TTL below 1.5 election timeouts to that minimum, so only with an election timeout of at
most ~600 ms is the PCE's 1 s leader lease honoured; etcd itself then elects a new leader in ~0.5-1 s.
"""

from __future__ import annotations

import json
import shutil
import signal
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.procs import Proc, ProcessGroup, free_port

HEARTBEAT_MS = 50
ELECTION_MS = 500


@dataclass
class Member:
    """One etcd member: its name, ports and data dir."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    proc: Proc | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


@dataclass
class EtcdCluster:
    """A running (or stopped) cluster; ``endpoints`` are the members' client addresses."""

    procs: ProcessGroup
    members: list[Member] = field(default_factory=list)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def _argv(self, m: Member, state: str) -> list[str]:
        binary = shutil.which("etcd")
        assert binary is not None
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        client = f"http://{m.endpoint}"
        return [
            binary,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial,
            "--initial-cluster-state", state,
            "--initial-cluster-token", f"flame-test-{self.members[0].client_port}",
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_MS),
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip

    def start_member(self, m: Member, wait: bool = True) -> None:
        """Start (or restart, on its existing data dir) one member; ``wait`` = until the cluster is healthy on it."""
        state = "existing" if (m.data_dir / "member").exists() else "new"
        m.data_dir.mkdir(parents=True, exist_ok=True)
        m.proc = self.procs.start(
            f"etcd-{m.name}", self._argv(m, state), ready=(lambda: self.healthy(m)) if wait else None, timeout=30
        )

    def start(self) -> None:
        """Start every member, then wait until each reports a healthy cluster."""
        for m in self.members:
            self.start_member(m, wait=False)
        for m in self.members:
            self.wait_healthy(m)

    def wait_healthy(self, m: Member, timeout: float = 30.0) -> None:
        from tests.support.procs import wait_for

        wait_for(lambda: self.healthy(m), timeout, what=f"etcd member {m.name} healthy")

    def kill(self, m: Member, sig: int = signal.SIGKILL) -> None:
        """Stop one member by PID (SIGKILL by default: a crash)."""
        if m.proc is not None:
            self.procs.stop(m.proc, sig=sig)
            m.proc = None

    def stop(self) -> None:
        """Stop every member by PID and remove their data dirs."""
        for m in self.members:
            self.kill(m, signal.SIGTERM)
        for m in self.members:
            shutil.rmtree(m.data_dir, ignore_errors=True)

    def healthy(self, m: Member) -> bool:
        """The member answers /health with a leader known."""
        try:
            with urllib.request.urlopen(f"http://{m.endpoint}/health", timeout=0.5) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def status(self, m: Member) -> dict[str, object]:
        """The member's maintenance status (v3 JSON gateway): its id and the leader's."""
        req = urllib.request.Request(f"http://{m.endpoint}/v3/maintenance/status", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=1.0) as resp:
            return dict(json.loads(resp.read()))

    def leader(self) -> Member:
        """The member that is the raft leader now (asked of a running member)."""
        for m in self.members:
            if m.proc is None:
                continue
            try:
                st = self.status(m)
            except OSError:
                continue
            header = st.get("header")
            if isinstance(header, dict) and st.get("leader") == header.get("member_id"):
                return m
        raise RuntimeError("no etcd leader found")


def start_etcd_cluster(procs: ProcessGroup, workdir: Path, size: int = 3) -> EtcdCluster:
    """Start a private ``size``-member etcd cluster (skips the test when etcd is not installed)."""
    if shutil.which("etcd") is None:
        pytest.skip("etcd not found (apt-get install etcd-server)")
    root = workdir / "etcd"
    cluster = EtcdCluster(procs)
    for i in range(size):
        cluster.members.append(Member(f"e{i + 1}", free_port(), free_port(), root / f"e{i + 1}"))
    cluster.start()
    return cluster
