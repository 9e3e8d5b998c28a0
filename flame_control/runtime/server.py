"""The one server bootstrap: every FLAME service is served by :class:`ServiceHost` on its own port, with gRPC health
and server reflection always on, TLS/mTLS and bearer-token roles from config, the runtime interceptor, Prometheus
metrics, and graceful shutdown: health NOT_SERVING first while every call is still answered for ``shutdown_drain_s``
(probes and load balancers see it), then in-flight calls get ``shutdown_grace_s`` to finish."""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flame_control.runtime import auth
from flame_control.runtime.config import FlameConfig
from flame_control.runtime.health import HealthReporter, ReasonedHealth
from flame_control.runtime.idempotency import IdempotencyCache
from flame_control.runtime.interceptor import RuntimeInterceptor
from flame_control.runtime.metrics import ProcessMetrics
from flame_control.runtime.registry import DEFAULT_METRICS_PORTS, SERVICE_MODULES
from flame_control.runtime.service import ServiceContext, ServiceSpec
from flame_control.runtime.startup import StartupError, check_port_free, os_error_line

log = logging.getLogger("flame.runtime")

#: Client retry policy (retry on UNAVAILABLE only) applied to channels between components.
_RETRY_SERVICE_CONFIG = (
    '{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s",'
    ' "maxBackoff": "2s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}'
)


class _TokenClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds the bearer token on plaintext channels (gRPC refuses call credentials without TLS)."""

    def __init__(self, token: str) -> None:
        self._md = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        md = [*(details.metadata or []), self._md]
        return details._replace(metadata=md)

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)

    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


_CALL_KINDS: tuple[type, ...] = (
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
)


def _token_interceptor(kind: type, token: str) -> Any:
    """A token interceptor registered for exactly one call kind."""
    cls = type(f"_Token{kind.__name__}", (kind,), dict(_TokenClientInterceptor.__dict__))
    return cls(token)


def open_channel(config: FlameConfig, target: str, token: str | None = None) -> grpc.aio.Channel:
    """A channel to a FLAME service with the configured TLS, token and retry policy."""
    options = [("grpc.service_config", _RETRY_SERVICE_CONFIG), ("grpc.enable_retries", 1)]
    creds = auth.channel_credentials(config.tls, token)
    if creds is not None:
        return grpc.aio.secure_channel(target, creds, options=options)
    # grpc.aio files an interceptor under the first call kind it implements only, so one instance per kind.
    interceptors: Any = [_token_interceptor(kind, token) for kind in _CALL_KINDS] if token else None
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)


@dataclass
class _Running:
    spec: ServiceSpec
    server: grpc.aio.Server
    health: ReasonedHealth
    port: int
    interceptor: RuntimeInterceptor
    reporter: HealthReporter | None = None


@dataclass
class ServiceHost:
    """Builds and runs a set of services in one process, each on its own port."""

    config: FlameConfig
    settings: dict[str, Any]
    clock: Any = time.monotonic
    running: dict[str, _Running] = field(default_factory=dict)
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.authenticator = auth.Authenticator(self.config.auth)
        auth.install(self.authenticator)
        self.idempotency = IdempotencyCache(self.clock)
        self._token = auth.client_token(self.config.auth)
        self.metrics = ProcessMetrics()

    def channel_to(self, key: str) -> grpc.aio.Channel:
        """A shared channel to a peer service (lazily opened)."""
        if key not in self._channels:
            self._channels[key] = open_channel(self.config, self.config.peer_target(key), self._token)
        return self._channels[key]

    def channel_for(self, target: str) -> grpc.aio.Channel:
        """A shared channel to an explicit ``host:port`` (lazily opened)."""
        key = "target:" + target
        if key not in self._channels:
            self._channels[key] = open_channel(self.config, target, self._token)
        return self._channels[key]

    def build(self, key: str) -> ServiceSpec:
        """Import a service module and build its spec."""
        module = importlib.import_module(SERVICE_MODULES[key])
        state_dir = Path(self.config.state_dir) / key
        state_dir.mkdir(parents=True, exist_ok=True)
        ctx = ServiceContext(
            key=key,
            settings=self.settings[key],
            state_dir=state_dir,
            channel_to=self.channel_to,
            channel_for=self.channel_for,
        )
        spec: ServiceSpec = module.build(ctx)
        return spec

    async def start_spec(self, key: str, spec: ServiceSpec, port: int) -> int:
        """Serve one spec on ``listen.host:port``; returns the bound port."""
        interceptor = RuntimeInterceptor(spec.name, spec.access, self.authenticator, self.idempotency, self.metrics)
        server = grpc.aio.server(
            interceptors=[interceptor],
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.so_reuseport", 0)],
        )
        spec.register(spec.servicer, server)
        health_servicer = ReasonedHealth()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection((spec.name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        address = f"{self.config.listen.host}:{port}"
        creds = auth.server_credentials(self.config.tls)
        # Checked again right before binding: gRPC's own bind failure is a bare RuntimeError plus a C-core log line.
        check_port_free(self.config.listen.host, port, f"{key}: gRPC port (listen.ports.{key})")
        try:
            bound = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if bound == 0:
            await server.stop(None)
            raise StartupError(f"{key}: cannot listen on {address}")
        await server.start()
        if spec.on_start is not None:
            try:
                await spec.on_start()
            except BaseException:
                await server.stop(None)  # not yet in self.running, so stop() would not reach it
                raise
        running = _Running(spec, server, health_servicer, bound, interceptor)
        await health_servicer.report(("", spec.name), None)
        if spec.health is not None:
            running.reporter = HealthReporter(health_servicer, ("", spec.name), spec.health)
            await running.reporter.update()
            running.reporter.start()
        if spec.metrics is not None:
            self.metrics.add(spec.metrics)
        self.running[key] = running
        log.info("serving", extra={"fields": {"service": spec.name, "address": f"{self.config.listen.host}:{bound}"}})
        return int(bound)

    async def start(self, keys: Iterable[str]) -> dict[str, int]:
        """Build and start the services named by ``keys``; returns key -> port. Every gRPC port is checked before
        any service is built; a port in use or another bind failure is a StartupError naming the service."""
        keys = list(keys)
        for key in keys:
            check_port_free(
                self.config.listen.host, self.config.listen.port(key), f"{key}: gRPC port (listen.ports.{key})"
            )
        metrics = self.config.metrics
        if keys and metrics.enabled and metrics.port:  # an explicit /metrics port is checked before anything starts
            check_port_free(metrics.host, metrics.port, "metrics endpoint (metrics.port)")
        ports = {}
        for key in keys:
            try:
                ports[key] = await self.start_spec(key, self.build(key), self.config.listen.port(key))
            except OSError as exc:
                raise StartupError(f"{key}: {os_error_line(exc)}") from exc
        self.serve_metrics(list(keys))
        return ports

    def serve_metrics(self, keys: Sequence[str]) -> int | None:
        """Start the process's ``/metrics`` endpoint as configured; returns its port (None when off)."""
        cfg = self.config.metrics
        if not cfg.enabled or not keys:
            return None
        explicit = cfg.port is not None
        port = cfg.port if cfg.port is not None else DEFAULT_METRICS_PORTS.get(keys[0], 0)
        try:
            bound = self.metrics.serve(cfg.host, port)
        except OSError as exc:
            if explicit:
                raise OSError(f"metrics: cannot listen on {cfg.host}:{port} ({exc.strerror or exc})") from exc
            log.warning(
                "metrics off: default port taken (set metrics.port)",
                extra={"fields": {"address": f"{cfg.host}:{port}", "error": exc.strerror or str(exc)}},
            )
            return None
        log.info("metrics", extra={"fields": {"address": f"http://{cfg.host}:{bound}/metrics"}})
        return bound

    async def stop(self, drain: bool = True) -> None:
        """Graceful shutdown: NOT_SERVING everywhere while still answering for ``shutdown_drain_s``; then no new
        calls, open response streams end with UNAVAILABLE (clients reconnect elsewhere) and in-flight unary calls get
        ``shutdown_grace_s``; then on_stop hooks run and peer channels close. ``drain=False`` skips the drain (a
        start that failed was never announced ready)."""
        for r in self.running.values():
            if r.reporter is not None:
                await r.reporter.stop()
            await r.health.enter_graceful_shutdown()
        if drain and self.running and self.config.shutdown_drain_s > 0:
            log.info("draining", extra={"fields": {"seconds": self.config.shutdown_drain_s}})
            await asyncio.sleep(self.config.shutdown_drain_s)
        stopping = [asyncio.ensure_future(r.server.stop(self.config.shutdown_grace_s)) for r in self.running.values()]
        await asyncio.sleep(0)  # every server refuses new calls before the open streams end (no reconnect lands)
        for r in self.running.values():
            r.interceptor.closing.set()
        await asyncio.gather(*stopping)
        for r in self.running.values():
            if r.spec.on_stop is not None:
                try:
                    await r.spec.on_stop()
                except Exception:
                    log.exception("on_stop of %s failed", r.spec.name)
        for channel in self._channels.values():
            await channel.close(None)
        self.metrics.close()
        self.running.clear()
        self._channels.clear()


async def serve_forever(host: ServiceHost, keys: Sequence[str], stop: asyncio.Event) -> None:
    """Start ``keys``, wait for ``stop``, then shut down gracefully."""
    try:
        await host.start(keys)
        await stop.wait()
    finally:
        await host.stop()
