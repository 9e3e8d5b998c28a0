"""The process's /metrics endpoint (issue 11 item 6): loopback by default, explicit port taken = a clear error,
default port taken = metrics off with a warning (several processes on one host), off when disabled; component
callbacks run on the service's event loop and a failing one does not break the scrape."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import urllib.request

import pytest

from flame_control.runtime.config import FlameConfig, MetricsConfig
from flame_control.runtime.metrics import counter, gauge
from flame_control.runtime.registry import DEFAULT_METRICS_PORTS
from flame_control.runtime.server import ServiceHost


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_metrics_serve_on_loopback_with_component_callbacks_run_on_the_loop() -> None:
    async def scenario() -> None:
        host = ServiceHost(FlameConfig(metrics=MetricsConfig(port=0), shutdown_drain_s=0), settings={})
        loop_thread: list[bool] = []

        def collect() -> list[object]:
            loop_thread.append(asyncio.get_running_loop() is not None)
            return [counter("flame_test_things", "things", {("a",): 2}, ["kind"]), gauge("flame_test_level", "l", 7)]

        def broken() -> list[object]:
            raise RuntimeError("component could not answer")

        host.metrics.add(collect)
        host.metrics.add(broken)
        port = host.serve_metrics(["pce"])
        assert port
        text = await asyncio.to_thread(scrape, port)
        assert 'flame_test_things_total{kind="a"} 2.0' in text and "flame_test_level 7.0" in text
        assert loop_thread == [True]
        await host.stop()

    asyncio.run(scenario())


def test_explicit_metrics_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        host = ServiceHost(FlameConfig(metrics=MetricsConfig(port=port)), settings={})
        with pytest.raises(OSError, match=f"metrics: cannot listen on 127.0.0.1:{port}"):
            host.serve_metrics(["pce"])


def test_default_metrics_port_in_use_turns_metrics_off_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # someone else holds it already: the same situation
            taken.bind(("127.0.0.1", DEFAULT_METRICS_PORTS["clmc"]))
        taken.listen()
        host = ServiceHost(FlameConfig(), settings={})
        with caplog.at_level(logging.WARNING, logger="flame.runtime"):
            assert host.serve_metrics(["clmc"]) is None
        assert "metrics off" in caplog.text


def test_metrics_disabled_serves_nothing() -> None:
    host = ServiceHost(FlameConfig(metrics=MetricsConfig(enabled=False)), settings={})
    assert host.serve_metrics(["pce"]) is None
