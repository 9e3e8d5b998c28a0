"""Serve ServiceSpecs with the full runtime for tests and benchmarks (real gRPC on 127.0.0.1, free ports)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from flame_control.runtime.config import AuthConfig, FlameConfig, TlsConfig
from flame_control.runtime.server import ServiceHost, open_channel
from flame_control.runtime.service import ServiceSpec


@asynccontextmanager
async def running_server(
    specs: ServiceSpec | Sequence[ServiceSpec],
    tls: TlsConfig | None = None,
    auth: AuthConfig | None = None,
) -> AsyncIterator[str]:
    """Serve ``specs`` (each on its own free port) and yield the first one's target ``"127.0.0.1:PORT"``;
    use :func:`running_servers` for every target."""
    async with running_servers(specs, tls=tls, auth=auth) as targets:
        yield targets[0]


@asynccontextmanager
async def running_servers(
    specs: ServiceSpec | Sequence[ServiceSpec],
    tls: TlsConfig | None = None,
    auth: AuthConfig | None = None,
) -> AsyncIterator[list[str]]:
    """Serve each spec on its own free port with the full runtime; yields their targets in order."""
    spec_list = [specs] if isinstance(specs, ServiceSpec) else list(specs)
    # No drain period: nothing balances load onto these servers (tests of the drain set it themselves).
    config = FlameConfig(tls=tls or TlsConfig(), auth=auth or AuthConfig(), shutdown_grace_s=1.0, shutdown_drain_s=0)
    host = ServiceHost(config, settings={})
    targets = []
    try:
        for i, spec in enumerate(spec_list):
            port = await host.start_spec(f"test{i}", spec, 0)
            targets.append(f"127.0.0.1:{port}")
        yield targets
    finally:
        await host.stop()


def channel(target: str, token: str | None = None, tls: TlsConfig | None = None) -> Any:
    """A client channel to a test server (plaintext unless ``tls`` is given)."""
    return open_channel(FlameConfig(tls=tls or TlsConfig()), target, token)
