"""Where the demo's data plane runs: the emulated fabric (embedded default, no root) or Open vSwitch bridges in network
namespaces (:mod:`flame_control.demo.ovs`). A backend says how the PCE programs the fabric, how each NAP agent attaches
to it, and in which namespace users and the multicast origin sit."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from flame_control.demo.procs import ProcessGroup, free_port


class Backend(Protocol):
    """What the runner needs from a fabric."""

    kind: str
    #: True when link latencies of the catalogue are real on this fabric.
    link_latency: bool

    def prepare(self, group: ProcessGroup, workdir: Path) -> None:
        """Create the fabric (before any NAP agent or the PCE starts)."""

    def pce_settings(self) -> dict[str, Any]:
        """``services.pce`` of the control plane."""

    def nap_settings(self, nap_id: str) -> dict[str, Any]:
        """Fabric part of ``services.nap`` of one NAP agent."""

    def netns_of(self, nap_id: str) -> str:
        """Namespace of a NAP's user-facing side ("" = the demo's own)."""

    def argv_in(self, nap_id: str, argv: list[str]) -> list[str]:
        """``argv`` run beside ``nap_id``'s users (inside its namespace, if any)."""

    def control_plane_started(self) -> None:
        """Called once the PCE listens (OVS: point the bridges at its OpenFlow port)."""

    def describe(self) -> dict[str, Any]:
        """What the fabric is made of (for the summary)."""

    def close(self) -> None:
        """Remove everything :meth:`prepare` made."""


class EmulatedBackend:
    """The PCE's emulated switches (frames between NAPs over UDP on loopback), with the catalogue's link latencies."""

    kind = "emulated"

    def __init__(self, link_latency: bool = True) -> None:
        self.link_latency = link_latency
        self.port = free_port()

    def prepare(self, group: ProcessGroup, workdir: Path) -> None:
        return None

    def pce_settings(self) -> dict[str, Any]:
        return {"fabric": "emulated", "emulated_port": self.port, "emulated_link_latency": self.link_latency}

    def nap_settings(self, nap_id: str) -> dict[str, Any]:
        return {"transport": "emulated", "fabric": f"127.0.0.1:{self.port}"}

    def netns_of(self, nap_id: str) -> str:
        return ""

    def argv_in(self, nap_id: str, argv: list[str]) -> list[str]:
        return argv

    def control_plane_started(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"udp_port": self.port, "link_latency": self.link_latency}

    def close(self) -> None:
        return None
