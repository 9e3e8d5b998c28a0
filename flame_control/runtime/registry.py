"""Where each service's ``build`` and ``Settings`` live, by short key. The runtime imports them lazily."""

from __future__ import annotations

#: service key -> module exposing ``Settings`` and ``build(ctx) -> ServiceSpec``.
SERVICE_MODULES: dict[str, str] = {
    "orchestrator": "flame_control.orchestrator.service",
    "sfemc": "flame_control.sfemc.service",
    "pce": "pce.service",
    "clmc": "clmc.service",
    "nap": "nap_agent.service",
}

#: Documented default ports on 127.0.0.1 (docs/operator-guide.md).
DEFAULT_PORTS: dict[str, int] = {
    "orchestrator": 50051,
    "sfemc": 50052,
    "pce": 50053,
    "clmc": 50054,
    "nap": 50060,
}

#: Services `flame up` starts (the NAP agent runs on each edge node through `flame-nap`).
CONTROL_PLANE: tuple[str, ...] = ("orchestrator", "sfemc", "pce", "clmc")

#: Default Prometheus ``/metrics`` port of a process, by the first service it runs (docs/operator-guide.md).
DEFAULT_METRICS_PORTS: dict[str, int] = {
    "orchestrator": 9451,
    "sfemc": 9452,
    "pce": 9453,
    "clmc": 9454,
    "nap": 9460,
}
