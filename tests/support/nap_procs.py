"""NAP agents as their own `flame-nap` processes (as on real edge nodes), for benchmarks and failure tests: one config
file each, a status file the agent refreshes every 0.5 s, stopped by PID with the rest of the process group."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from nap_agent.agent import Settings
from tests.support.procs import Proc, ProcessGroup, free_port

ROOT = Path(__file__).resolve().parents[2]


class NapProcess:
    """A started NAP agent process."""

    def __init__(self, group: ProcessGroup, settings: Settings) -> None:
        work = group.workdir / settings.nap_id
        work.mkdir(parents=True, exist_ok=True)
        self.status_path = work / "status.json"
        settings = settings.model_copy(update={"status_file": str(self.status_path)})
        #: Port of the agent's admin gRPC service (NapAgentService).
        self.admin_port = free_port()
        #: Port of the agent's Prometheus /metrics endpoint.
        self.metrics_port = free_port()
        config = {
            "listen": {"ports": {"nap": self.admin_port}},
            "metrics": {"port": self.metrics_port},
            "services": {"nap": settings.model_dump(mode="json")},
        }
        path = work / "config.json"
        path.write_text(json.dumps(config))
        self.settings = settings
        self.proc: Proc = group.start(
            f"nap-{settings.nap_id}",
            [sys.executable, "-m", "nap_agent.cli", "--config", str(path), "--state-dir", str(work / "state")],
            cwd=ROOT,
            ready=lambda: self.status_path.exists(),
            timeout=30,
        )

    def status(self) -> dict[str, Any]:
        """The agent's latest status (nap_agent.agent.NapAgent.status)."""
        return json.loads(self.status_path.read_text())  # type: ignore[no-any-return]

    @property
    def http_port(self) -> int:
        return int(self.status()["http_port"])
