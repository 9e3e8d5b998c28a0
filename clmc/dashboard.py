"""Built-in web dashboard (CLMC-17): a stdlib HTTP server on 127.0.0.1 serving one self-contained page (inline JS and
SVG, no CDN) that polls ``/api/snapshot`` for KPIs and their alerts, recent KPI events, endpoint states and NAP
traffic per location. It shows the analyst viewpoint (no personal data) and binds to loopback only; put it behind
the operator's reverse proxy with authentication to expose it."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from clmc.ingest import CONFIG_EVENT_MEASUREMENT
from clmc.kpi_engine import KpiEngine
from clmc.storage.base import AggKind, AggQuery, MetricStore, Selection
from flame_control.api.flame.clmc.v1 import kpi_pb2

log = logging.getLogger("flame.clmc.dashboard")
S = 1_000_000_000
PAGE = (Path(__file__).parent / "dashboard.html").read_bytes()


def _num(v: float) -> float | None:
    return None if math.isnan(v) or math.isinf(v) else v


def snapshot(
    store: MetricStore, engine: KpiEngine, now_ns: int, span_s: int = 300, window_s: int = 10
) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data."""
    start = (now_ns - span_s * S) // (window_s * S) * (window_s * S)
    traffic: dict[str, list[list[float]]] = {}
    latency: dict[str, float | None] = {}
    for field, kind, target in (("requests", AggKind.SUM, "traffic"), ("latency_ms", AggKind.MEAN, "latency")):
        q = AggQuery("nap_http", field, kind, start, now_ns + 1, window_s * S, ("flame_location",))
        for s in store.aggregate(q):
            loc = dict(s.group)["flame_location"] or "(none)"
            if target == "traffic":
                traffic[loc] = [[(w.start_ns - start) / S, w.value] for w in s.windows]
            else:
                latency[loc] = _num(s.windows[-1].value) if s.windows else None
    endpoints: dict[str, tuple[int, str]] = {}
    sel = Selection(CONFIG_EVENT_MEASUREMENT, {"subject_kind": frozenset({"endpoint"})}, now_ns - 86400 * S, now_ns + 1)
    events, _ = store.query(sel, (), 10_000)
    for p in events:
        sfe, state = p.tags.get("flame_sfe"), p.tags.get("to_state")
        if sfe and state:
            endpoints[sfe] = max(
                endpoints.get(sfe, (0, "")), (p.time_ns, state.removeprefix("ENDPOINT_STATE_").lower())
            )
    configs, _ = store.query(
        Selection("endpoint_config", {}, now_ns - 86400 * S, now_ns + 1), ["current_state"], 10_000
    )
    for p in configs:
        sfe, current = p.tags.get("flame_sfe"), p.fields.get("current_state")
        if sfe and isinstance(current, str):
            endpoints[sfe] = max(endpoints.get(sfe, (0, "")), (p.time_ns, current))
    kpis = []
    for key, spec in sorted(engine.specs.items()):
        alerts = engine.state.alerts(key)
        firing = [{"group": dict(g), "value": _num(st.value)} for g, st in sorted(alerts.items()) if st.firing]
        kpis.append({"media_service": spec.media_service, "name": spec.name, "kind": spec.kind, "firing": firing})
    recent = engine.state.events_after(0)[-20:]
    return {
        "now": now_ns / S,
        "window_s": window_s,
        "span_s": span_s,
        "kpis": kpis,
        "events": [
            {
                "sequence": e.sequence,
                "kpi": f"{e.media_service}/{e.kpi}",
                "state": "firing" if e.state == kpi_pb2.KPI_STATE_FIRING else "cleared",
                "group": dict(e.group),
                "message": e.message,
                "time": e.time.ToNanoseconds() / S,
            }
            for e in reversed(recent)
        ],
        "endpoints": [{"endpoint": k, "state": v[1], "since": v[0] / S} for k, v in sorted(endpoints.items())],
        "traffic": traffic,
        "latency_ms": latency,
    }


class Dashboard:
    """The dashboard's HTTP server (a daemon thread)."""

    def __init__(self, store: MetricStore, engine: KpiEngine, clock_ns: Callable[[], int], port: int) -> None:
        dashboard = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", PAGE)
                elif self.path == "/api/snapshot":
                    try:
                        body = json.dumps(snapshot(dashboard.store, dashboard.engine, dashboard.clock_ns())).encode()
                    except Exception:
                        log.exception("dashboard snapshot failed")
                        self._send(503, "application/json", b'{"error": "storage unavailable"}')
                        return
                    self._send(200, "application/json", body)
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Security-Policy", "default-src 'self' 'unsafe-inline'")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("dashboard: " + format, *args)

        self.store, self.engine, self.clock_ns = store, engine, clock_ns
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="clmc-dashboard", daemon=True)

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()
        log.info("CLMC dashboard on http://127.0.0.1:%d/", self.port)

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
