"""Delivery reports on the KPI-event producer (CLMC-22, issue 15): with a real tansu broker an event is reported
delivered; with the broker gone it is re-sent a bounded number of times and then counted and logged as lost, never
dropped without notice (before: no delivery callback at all)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from clmc.kafka_bus import KafkaEventSink, Topics, ensure_topics
from flame_control.api.flame.clmc.v1 import kpi_pb2
from tests.support.kafka import start_tansu
from tests.support.procs import ProcessGroup

pytestmark = pytest.mark.kafka


def wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_clmc22_kpi_event_sink_reports_delivery_and_bounded_resends_then_counts_the_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    group = ProcessGroup(tmp_path)
    try:
        broker = start_tansu(group)
        topics = Topics(*(f"{name}-{uuid.uuid4().hex[:6]}" for name in ("m", "s", "k")))
        ensure_topics(broker.bootstrap, topics)
        sink = KafkaEventSink(broker.bootstrap, topics, max_attempts=2, message_timeout_ms=1500)
        event = kpi_pb2.KpiEvent(kpi="lat", media_service="svc", state=kpi_pb2.KPI_STATE_FIRING, sequence=1)
        sink(event)
        assert wait_for(lambda: sink.delivered == 1, 15)
        broker.stop()
        sink(event)
        assert wait_for(lambda: sink.failed == 1, 30)  # 2 attempts of 1.5 s each, then reported lost
        assert sink.resent == 1 and sink.delivered == 1
        assert "lost after 2 attempts" in caplog.text
        assert sink.close(timeout=2) == 0
    finally:
        group.stop_all()
