"""A real Prometheus server (Debian package ``prometheus``) on loopback for metrics tests: scrapes the given
``/metrics`` targets every second, TSDB in the test's temp dir, stopped by PID with the process group.

Tests ask its HTTP API (``/api/v1/query``, ``/api/v1/targets``) what it scraped, as an operator's Grafana would.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.support.procs import Proc, ProcessGroup, free_port


@dataclass
class Prometheus:
    """A running Prometheus and its API."""

    port: int
    proc: Proc

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.loads(resp.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant vector of ``expr``: a list of {"metric": labels, "value": [t, "v"]}."""
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll ``expr`` until it returns at least one series (or fail naming the targets' scrape state)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        targets = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in self.api("targets")["activeTargets"]]
        raise AssertionError(f"no series for {expr!r} after {timeout}s; targets: {targets}")


def start_prometheus(group: ProcessGroup, jobs: Mapping[str, list[str]]) -> Prometheus:
    """Start Prometheus scraping ``jobs`` (job name -> ["127.0.0.1:PORT", ...]) every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (apt-get install -y --no-install-recommends prometheus)")
    work = group.workdir / "prometheus"
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": t}]} for job, t in jobs.items()],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    prom = Prometheus(port, None)  # type: ignore[arg-type]

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    prom.proc = group.start(
        "prometheus",
        [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        ready=ready,
        timeout=60,
    )
    return prom
