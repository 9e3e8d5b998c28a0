"""A private InfluxDB 1.x for tests: `influxd run -config FILE` on 127.0.0.1 free ports, temp dirs, reporting off;
optionally serving https with a given certificate and key."""

from __future__ import annotations

import shutil
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.procs import Proc, ProcessGroup, free_port

_CONFIG = """reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
{https}
[continuous_queries]
  enabled = false
"""


@dataclass
class Influxd:
    """A running influxd; ``url`` is its HTTP API."""

    procs: ProcessGroup
    config: Path
    http_port: int
    proc: Proc | None = None
    https: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.http_port}"

    def ping(self) -> bool:
        # Readiness only: the tests themselves check the certificate through the store under test.
        context = ssl._create_unverified_context() if self.https else None
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=0.5, context=context) as resp:
                return bool(resp.status == 204)
        except OSError:
            return False

    def start(self) -> None:
        binary = shutil.which("influxd")
        assert binary is not None
        self.proc = self.procs.start(
            "influxd", [binary, "run", "-config", str(self.config)], ready=self.ping, timeout=30
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc)
            self.proc = None


def start_influxd(procs: ProcessGroup, workdir: Path, tls: tuple[Path, Path] | None = None) -> Influxd:
    """Start a private influxd (skips the test when the binary is missing); ``tls`` = (certificate, key) serves
    https only."""
    if shutil.which("influxd") is None:
        pytest.skip("influxd not found (apt-get install influxdb)")
    root = workdir / "influxd"
    root.mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    config = root / "influxdb.conf"
    https = f'  https-enabled = true\n  https-certificate = "{tls[0]}"\n  https-private-key = "{tls[1]}"' if tls else ""
    config.write_text(_CONFIG.format(root=root, rpc_port=free_port(), http_port=http_port, https=https))
    server = Influxd(procs, config, http_port, https=tls is not None)
    server.start()
    return server
