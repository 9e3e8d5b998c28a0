"""What ``flame demo`` shows while it runs: a live terminal view when stdout is a TTY (phases with their progress,
endpoint states, requests/s and latency per NAP from the players' own measurements, the CLMC dashboard URL), plain
timestamped log lines otherwise (CI, pipes). Also the dashboard screenshot the docs use."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from flame_control.demo import scenario as sc
from flame_control.demo.report import summary_table

#: Requests/s and latency are averaged over this many seconds.
WINDOW_S = 3.0


@dataclass
class LiveState:
    """A snapshot of the run for the view."""

    elapsed: float
    phases: Sequence[sc.Phase]
    endpoints: dict[str, str]
    samples: Sequence[sc.Sample]
    dashboard_url: str
    fabric: str
    services: Sequence[str]


class View(Protocol):
    def phase(self, p: sc.Phase) -> None: ...
    def event(self, text: str) -> None: ...
    def tick(self, live: LiveState) -> None: ...
    def finish(self, summary: dict[str, Any]) -> None: ...


def per_nap(samples: Sequence[sc.Sample], now: float) -> dict[str, dict[str, Any]]:
    """Requests/s, mean latency (ms), errors and serving endpoints per NAP over the last WINDOW_S seconds."""
    recent: list[sc.Sample] = []
    for s in reversed(samples):
        if s.t < now - WINDOW_S:
            break
        recent.append(s)
    out: dict[str, dict[str, Any]] = {}
    for nap in sorted({s.nap for s in recent}):
        mine = [s for s in recent if s.nap == nap]
        ok = [s for s in mine if s.ok and s.kind == "segment"]
        lat = [s.latency_ms for s in ok if not math.isnan(s.latency_ms)]
        served = Counter(s.endpoint for s in ok)
        out[nap] = {
            "rps": len(mine) / WINDOW_S,
            "latency_ms": sum(lat) / len(lat) if lat else None,
            "errors": sum(1 for s in mine if not s.ok),
            "served_by": dict(served.most_common(3)),
        }
    return out


class PlainView:
    """Timestamped lines (no cursor movement); a traffic line every few seconds."""

    def __init__(self, out: TextIO = sys.stdout, every_s: float = 5.0) -> None:
        self.out = out
        self.every_s = every_s
        self._last_traffic = -math.inf
        self._elapsed = 0.0

    def _line(self, text: str) -> None:
        print(f"[{self._elapsed:6.1f}s] {text}", file=self.out, flush=True)

    def phase(self, p: sc.Phase) -> None:
        if p.ended_s is None:
            self._line(f"phase {p.name}: {p.title}")
        else:
            result = "ok" if p.ok else "FAILED"
            self._line(f"phase {p.name} {result} in {p.duration_s or 0:.1f} s {('- ' + p.detail) if p.detail else ''}")

    def event(self, text: str) -> None:
        self._line(text)

    def tick(self, live: LiveState) -> None:
        self._elapsed = live.elapsed
        if live.elapsed - self._last_traffic < self.every_s or not live.samples:
            return
        self._last_traffic = live.elapsed
        parts = []
        for nap, row in per_nap(live.samples, live.elapsed).items():
            lat = "-" if row["latency_ms"] is None else f"{row['latency_ms']:.1f} ms"
            top = next(iter(row["served_by"]), "-")
            parts.append(f"{nap} {row['rps']:.1f} req/s {lat} ({top})")
        if parts:
            self._line("traffic: " + " | ".join(parts))

    def finish(self, summary: dict[str, Any]) -> None:
        print(summary_table(summary), file=self.out, flush=True)


class TtyView:
    """Redraws one screen twice a second; events scroll in its last lines."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.events: list[str] = []
        self._elapsed = 0.0
        self._live: LiveState | None = None

    def phase(self, p: sc.Phase) -> None:
        if self._live is not None:
            self._draw(self._live)

    def event(self, text: str) -> None:
        self.events.append(f"{self._elapsed:6.1f}s  {text.splitlines()[0] if text else ''}")
        self.events = self.events[-8:]

    def tick(self, live: LiveState) -> None:
        self._elapsed = live.elapsed
        self._live = live
        self._draw(live)

    def _draw(self, live: LiveState) -> None:
        width = shutil.get_terminal_size((100, 40)).columns
        bold, dim, green, red, yellow, reset = "\x1b[1m", "\x1b[2m", "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[0m"
        lines = [
            f"{bold}flame demo{reset}  {live.fabric} fabric, Figure 25 topology, {len(live.services)} media services"
            f"   {live.elapsed:5.1f} s",
            f"CLMC dashboard: {live.dashboard_url or '(starting)'}",
            "",
            f"{bold}Phases{reset}",
        ]
        for p in live.phases:
            if p.started_s is None:
                mark, took = f"{dim}  ·{reset}", ""
            elif p.ended_s is None:
                mark, took = f"{yellow}  ▶{reset}", f"{live.elapsed - p.started_s:5.1f} s"
            else:
                mark = f"{green}  ✓{reset}" if p.ok else f"{red}  ✗{reset}"
                took = f"{p.duration_s or 0:5.1f} s"
            lines.append(f"{mark} {p.name:<10} {took:>8}  {dim}{(p.detail or p.title)[: width - 28]}{reset}")
        lines += ["", f"{bold}Endpoints of {sc.MAIN}{reset}"]
        for node in ("origin", "edge_a", "edge_b"):
            state = live.endpoints.get(f"{sc.MAIN}/{node}", "-")
            colour = green if state == "connected" else yellow if state in ("placed", "booted") else ""
            lines.append(f"  {node:<8} {colour}{state}{reset}")
        others = Counter(v for k, v in live.endpoints.items() if not k.startswith(f"{sc.MAIN}/"))
        if others:
            lines.append(f"  other services: {', '.join(f'{n} {s}' for s, n in sorted(others.items()))}")
        lines += ["", f"{bold}Traffic per NAP{reset} (last {WINDOW_S:.0f} s, from the players)"]
        lines.append(f"  {'NAP':<12} {'req/s':>6} {'latency':>9} {'errors':>6}  served by")
        for nap, row in per_nap(live.samples, live.elapsed).items():
            lat = "-" if row["latency_ms"] is None else f"{row['latency_ms']:.1f} ms"
            served = ", ".join(f"{ep} {n}" for ep, n in row["served_by"].items())
            lines.append(f"  {nap:<12} {row['rps']:>6.1f} {lat:>9} {row['errors']:>6}  {served[: width - 40]}")
        total = len(live.samples)
        bad = sum(1 for s in live.samples if not s.ok)
        lines += ["", f"requests {total}, failed {bad}", "", f"{bold}Events{reset}", *self.events]
        self.out.write("\x1b[H\x1b[J" + "\n".join(line[: width + 20] for line in lines) + "\n")
        self.out.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        print("", file=self.out)
        print(summary_table(summary), file=self.out, flush=True)


def make_view(out: TextIO = sys.stdout) -> View:
    """The live view on a TTY, plain lines otherwise."""
    return TtyView(out) if out.isatty() else PlainView(out)


def screenshot(url: str, target: Path, workdir: Path, wait_ms: int = 4000) -> str:
    """A PNG of ``url`` taken with headless Chromium (1280x900); returns what happened."""
    binary = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if binary is None:
        return "screenshot skipped: chromium not installed"
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
        f"--user-data-dir={profile}", f"--virtual-time-budget={wait_ms}", "--window-size=1280,900",
        f"--screenshot={target.resolve()}", url,
    ]  # fmt: skip
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        return f"screenshot failed: {exc}"
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        code = -1
    finally:
        # Chromium's helper processes share its session: end them all, by the leader's process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    if code != 0 or not target.exists():
        return f"screenshot failed (chromium exit {code})"
    return f"dashboard screenshot written to {target}"
