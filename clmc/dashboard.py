"""Built-in web dashboard (CLMC-17): a stdlib HTTP server on 127.0.0.1 serving one self-contained page (inline JS and
SVG, no CDN) that polls ``/api/snapshot`` for KPIs and their alerts, recent KPI events, endpoint states and NAP
traffic per location. It binds to loopback only and never shows personal data (no per-subject series).

Viewpoints (CLMC-29): with ``auth.enabled`` the snapshot needs a bearer token (``Authorization: Bearer`` header, or
``?token=`` on the page URL, which the page moves into memory and sends as the header), resolved by the same token
store and roles as every RPC, and the data is narrowed by the caller's viewpoint exactly like ``Query``/``Aggregate``
/``ListKpis``: a media service provider sees only its own services, an infrastructure provider only infrastructure
measurements, a component nothing (403). No token or an unknown one: 401. With auth off (the embedded localhost
default) every caller is the platform operator, as for the RPCs."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from clmc.ingest import CONFIG_EVENT_MEASUREMENT
from clmc.kpi_engine import KpiEngine
from clmc.storage.base import AggKind, AggQuery, MetricStore, StoredPoint
from clmc.viewpoint import Viewpoint, viewpoint_of, with_time
from flame_control.api.flame.clmc.v1 import kpi_pb2
from flame_control.runtime import auth
from flame_control.runtime.errors import PermissionDenied, Unauthenticated
from flame_control.runtime.service import ANONYMOUS_OPERATOR

log = logging.getLogger("flame.clmc.dashboard")
S = 1_000_000_000
PAGE = (Path(__file__).parent / "dashboard.html").read_bytes()
#: The operator's view (auth off).
OPERATOR_VIEW = viewpoint_of(ANONYMOUS_OPERATOR)
TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]*")


def _num(v: float) -> float | None:
    return None if math.isnan(v) or math.isinf(v) else v


def snapshot(
    store: MetricStore,
    engine: KpiEngine,
    now_ns: int,
    span_s: int = 300,
    window_s: int = 10,
    view: Viewpoint = OPERATOR_VIEW,
) -> dict[str, Any]:
    """Everything the page shows within ``view``, as JSON-ready data (PermissionDenied for a view that may not
    query measurements at all)."""
    start = (now_ns - span_s * S) // (window_s * S) * (window_s * S)
    traffic: dict[str, list[list[float]]] = {}
    latency: dict[str, float | None] = {}
    nap = view.narrow("nap_http", {}, ("flame_location",))
    for field, kind, target in (("requests", AggKind.SUM, "traffic"), ("latency_ms", AggKind.MEAN, "latency")):
        q = AggQuery("nap_http", field, kind, start, now_ns + 1, window_s * S, ("flame_location",), nap.tags)
        for s in store.aggregate(q):
            loc = dict(s.group)["flame_location"] or "(none)"
            if target == "traffic":
                traffic[loc] = [[(w.start_ns - start) / S, w.value] for w in s.windows]
            else:
                latency[loc] = _num(s.windows[-1].value) if s.windows else None
    endpoints: dict[str, tuple[int, str]] = {}
    day = (now_ns - 86400 * S, now_ns + 1)
    events: list[StoredPoint] = []
    if view.may_read_measurement(CONFIG_EVENT_MEASUREMENT):
        sel = with_time(view.narrow(CONFIG_EVENT_MEASUREMENT, {"subject_kind": "endpoint"}), *day)
        events, _ = store.query(sel, (), 10_000)
    for p in events:
        sfe, state = p.tags.get("flame_sfe"), p.tags.get("to_state")
        if sfe and state:
            endpoints[sfe] = max(
                endpoints.get(sfe, (0, "")), (p.time_ns, state.removeprefix("ENDPOINT_STATE_").lower())
            )
    configs: list[StoredPoint] = []
    if view.may_read_measurement("endpoint_config"):
        configs, _ = store.query(with_time(view.narrow("endpoint_config", {}), *day), ["current_state"], 10_000)
    for p in configs:
        sfe, current = p.tags.get("flame_sfe"), p.fields.get("current_state")
        if sfe and isinstance(current, str):
            endpoints[sfe] = max(endpoints.get(sfe, (0, "")), (p.time_ns, current))
    kpis = []
    for key, spec in sorted(engine.specs.items()):
        if not view.may_see_service(spec.media_service):
            continue
        alerts = engine.state.alerts(key)
        firing = [{"group": dict(g), "value": _num(st.value)} for g, st in sorted(alerts.items()) if st.firing]
        kpis.append({"media_service": spec.media_service, "name": spec.name, "kind": spec.kind, "firing": firing})
    recent = [e for e in engine.state.events_after(0) if view.may_see_service(e.media_service)][-20:]
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
        "viewer": {"role": view.role.value},
    }


def bearer_token(headers: Any, query: str) -> str | None:
    """The token of a dashboard request: ``Authorization: Bearer`` header first, else ``?token=``."""
    header = headers.get("Authorization")
    if header:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    values = parse_qs(query).get("token")
    return values[0] if values and values[0] else None


class Dashboard:
    """The dashboard's HTTP server (a daemon thread)."""

    def __init__(
        self,
        store: MetricStore,
        engine: KpiEngine,
        clock_ns: Callable[[], int],
        port: int,
        authenticator: Callable[[], auth.Authenticator | None] = auth.current,
    ) -> None:
        dashboard = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", PAGE)  # static: no data without the API
                elif url.path == "/api/snapshot":
                    try:
                        view = dashboard.view(bearer_token(self.headers, url.query))
                        data = snapshot(dashboard.store, dashboard.engine, dashboard.clock_ns(), view=view)
                        body = json.dumps(data).encode()
                    except Unauthenticated as exc:
                        self._send(401, "application/json", json.dumps({"error": str(exc)}).encode(), bearer=True)
                        return
                    except PermissionDenied as exc:
                        self._send(403, "application/json", json.dumps({"error": str(exc)}).encode())
                        return
                    except Exception:
                        log.exception("dashboard snapshot failed")
                        self._send(503, "application/json", b'{"error": "storage unavailable"}')
                        return
                    self._send(200, "application/json", body)
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, code: int, ctype: str, body: bytes, bearer: bool = False) -> None:
                self.send_response(code)
                if bearer:
                    self.send_header("WWW-Authenticate", 'Bearer realm="flame-clmc"')
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Security-Policy", "default-src 'self' 'unsafe-inline'")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                # The request line may carry ?token=: masked before it reaches the log.
                log.debug("dashboard: %s", TOKEN_IN_URL.sub(r"\1***", format % args))

        self.store, self.engine, self.clock_ns = store, engine, clock_ns
        self.authenticator = authenticator
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="clmc-dashboard", daemon=True)

    def view(self, token: str | None) -> Viewpoint:
        """The viewpoint of a dashboard caller (raises Unauthenticated when auth is on and the token is missing/bad)."""
        authenticator = self.authenticator()
        if authenticator is None:
            return OPERATOR_VIEW
        return viewpoint_of(authenticator.principal_for_token(token))

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()
        log.info("CLMC dashboard on http://127.0.0.1:%d/", self.port)

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
