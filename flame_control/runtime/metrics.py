"""Prometheus metrics of one process (``prometheus-client``): one registry, one ``/metrics`` HTTP port.

- RPCs by service, method and status code with latency histograms come from the runtime interceptor
  (:meth:`ProcessMetrics.observe_rpc`, called once per call next to the access log), for every service alike.
- Component metrics (PCE sessions, NAP bytes, CLMC points, endpoints by state...) are read from the state each
  component already keeps, through a collect callback on ``ServiceSpec.metrics`` that returns metric families; the
  callback runs on the service's event loop (the scrape thread asks the loop), so it never races the state it reads.

Helpers :func:`gauge` and :func:`counter` build the families so a service's callback stays a few lines.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("flame.runtime")

#: A service's metric callback: returns the families to expose at scrape time.
CollectFn = Callable[[], Iterable[Metric]]
#: Latency buckets (seconds) for RPCs: sub-millisecond reads up to multi-second deployments.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

LabelledValues = float | int | Mapping[tuple[str, ...], float | int]


def _family(cls: Any, name: str, doc: str, values: LabelledValues, labels: Sequence[str]) -> Metric:
    family = cls(name, doc, labels=list(labels))
    if isinstance(values, Mapping):
        for key, value in values.items():
            family.add_metric(list(key), float(value))
    else:
        family.add_metric([], float(values))
    return family  # type: ignore[no-any-return]


def gauge(name: str, doc: str, values: LabelledValues, labels: Sequence[str] = ()) -> Metric:
    """A gauge family: one value, or one value per label tuple."""
    return _family(GaugeMetricFamily, name, doc, values, labels)


def counter(name: str, doc: str, values: LabelledValues, labels: Sequence[str] = ()) -> Metric:
    """A counter family (``name`` without ``_total``; the client appends it)."""
    return _family(CounterMetricFamily, name, doc, values, labels)


class _OnLoop(Collector):
    """Runs a service's collect callback on its event loop at scrape time."""

    def __init__(self, fn: CollectFn, loop: asyncio.AbstractEventLoop) -> None:
        self.fn, self.loop = fn, loop

    def collect(self) -> Iterable[Metric]:
        if self.loop.is_closed():
            return []

        async def run() -> list[Metric]:
            return list(self.fn())

        try:
            return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=5)
        except Exception:  # a scrape must not fail because one component could not answer
            log.exception("metrics collection failed")
            return []


class ProcessMetrics:
    """The metrics registry of one process and its ``/metrics`` endpoint."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpcs = Counter(
            "flame_rpc_requests",
            "RPCs handled, by service, method and final status code",
            ["service", "method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flame_rpc_duration_seconds",
            "RPC handling time (streams: until the stream ended), by service and method",
            ["service", "method"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self.port = 0
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def observe_rpc(self, service: str, method: str, code: str, seconds: float) -> None:
        """Count one finished RPC and its duration."""
        self.rpcs.labels(service, method, code).inc()
        self.latency.labels(service, method).observe(seconds)

    def add(self, fn: CollectFn, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Expose a service's metric callback (run on ``loop``, default: the running loop)."""
        self.registry.register(_OnLoop(fn, loop or asyncio.get_running_loop()))

    def serve(self, host: str, port: int) -> int:
        """Start the ``/metrics`` HTTP endpoint on ``host:port`` (0 = any free port); returns the bound port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server, self._thread = server, thread
        self.port = int(server.server_address[1])
        return self.port

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
