"""The orchestrator's durable state: the infrastructure catalogue in force and every media service's desired state
(template, generation, placement) and last known status. One JSON document replaced atomically; the reconciler
resumes from it after a crash (crash-only: SFEMC and VIM state are re-derived, never trusted from memory).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ServiceRecord:
    """One media service's desired state and status."""

    name: str
    owner: str
    template: str
    template_sha256: str
    generation: int = 1
    observed_generation: int = 0
    #: flame.orchestrator.v1.ServiceStatus value.
    status: int = 1
    message: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    #: Endpoint node name -> site.
    placement: dict[str, str] = field(default_factory=dict)
    #: KPI names defined at the CLMC for this service.
    kpis: list[str] = field(default_factory=list)
    deleting: bool = False


@dataclass
class OrchestratorStore:
    """Catalogue + services, persisted in ``path``."""

    path: Path
    catalogue: str = ""
    services: dict[str, ServiceRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> OrchestratorStore:
        store = cls(path)
        if path.exists():
            doc: dict[str, Any] = json.loads(path.read_text())
            store.catalogue = doc.get("catalogue", "")
            store.services = {s["name"]: ServiceRecord(**s) for s in doc.get("services", [])}
        return store

    def save(self) -> None:
        doc = {"catalogue": self.catalogue, "services": [asdict(s) for _, s in sorted(self.services.items())]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
