"""Runs ``flame demo``: the scenario's phases against the platform (:mod:`.platform`: NAP agents and the control plane
as child processes) over gRPC, simulated players through the NAPs (:mod:`.clients`), and a cleanup that leaves nothing
running (by PID), also on Ctrl-C, SIGTERM or the crash of one component (a watchdog cancels the scenario when a child
exits that nobody stopped). Phases and what they record are in :mod:`.scenario`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from flame_control.api.flame.clmc.v1 import clmc_pb2, kpi_pb2
from flame_control.api.flame.common.v1 import common_pb2
from flame_control.api.flame.orchestrator.v1 import orchestrator_pb2 as O
from flame_control.api.flame.sfemc.v1 import sfemc_pb2
from flame_control.demo import multicast
from flame_control.demo import scenario as sc
from flame_control.demo.clients import Player, fetch_once
from flame_control.demo.docker import DemoVim
from flame_control.demo.fabrics import Backend
from flame_control.demo.platform import Platform
from flame_control.demo.procs import StartError, kill_pid, last_line, pid_alive
from flame_control.demo.view import LiveState, View
from flame_control.vim.media_server import DEFAULT_SEGMENT_SIZE, expected_segment

CONFIG_EVENT = "config_event"  # clmc.ingest.CONFIG_EVENT_MEASUREMENT


class DemoFailure(Exception):
    """A phase did not reach its goal in time."""


def state_name(state: int) -> str:
    """``connected`` for ENDPOINT_STATE_CONNECTED."""
    return common_pb2.EndpointState.Name(state).removeprefix("ENDPOINT_STATE_").lower()  # type: ignore[arg-type]


@dataclass
class Options:
    """``flame demo`` flags."""

    fabric: str = "emulated"
    services: int = 5
    quick: bool = False
    duration: float | None = None
    follow: bool = False
    state_dir: Path | None = None
    kill_nap: str = ""
    kill_at: float = 10.0
    link_latency: bool = True
    screenshot: Path | None = None
    #: Where the endpoints run (``--vim``; None: the process VIM).
    vim: DemoVim | None = None


class Demo:
    """One run of the scenario."""

    def __init__(self, opts: Options, backend: Backend, view: View) -> None:
        self.opts, self.backend, self.view = opts, backend, view
        self.timing = sc.timing(opts.quick, opts.duration)
        self.services = sc.service_names(max(1, opts.services))
        self._tmp = None if opts.state_dir else tempfile.mkdtemp(prefix="flame-demo-")
        self.state = Path(opts.state_dir or self._tmp or ".").resolve()
        self.state.mkdir(parents=True, exist_ok=True)
        self.platform = Platform(backend, self.state, opts.vim)
        self.group = self.platform.group
        self.epoch = time.monotonic()
        self.wall0 = time.time()
        self.facts = sc.Facts(
            backend.kind, self.services, self.timing, sc.new_phases(), link_latency=backend.link_latency
        )
        self.facts.state_dir = str(self.state)
        self.phases = {p.name: p for p in self.facts.phases}
        self.players: list[Player] = []
        self.endpoints: dict[str, sfemc_pb2.Endpoint] = {}
        self.seen_states: dict[str, list[str]] = {}
        self.vim_pids: dict[int, str] = {}
        self.crash: list[dict[str, Any]] = []
        self.following = False
        self._kpi_call: Any = None
        self._surge_players: list[Player] = []
        self._kpi_new = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- time -----------------------------------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.epoch

    def from_wall(self, wall: float) -> float:
        return wall - self.wall0

    # -- entry ----------------------------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        """Run the scenario, always clean up, return the summary."""
        loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._interrupt)
        try:
            await self._scenario()
        except asyncio.CancelledError:
            if self.crash:
                self.facts.crashed = self.crash
                self.facts.error = "a component crashed: " + ", ".join(c["name"] for c in self.crash)
            elif not self.following:
                self.facts.interrupted = True
                self.facts.error = "interrupted"
        except (DemoFailure, StartError) as exc:
            self.facts.error = str(exc)
        except Exception as exc:  # a bug or an unexpected failure: still clean up and report it
            self.facts.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, lambda: None)  # cleanup is not interruptible
            for p in self.facts.phases:
                if p.started_s is not None and p.ended_s is None:
                    p.ended_s, p.ok = self.now(), False
                    p.detail = p.detail or (self.facts.error.splitlines()[0] if self.facts.error else "")
            if not self.facts.final_states:  # a failed run still reports the states the endpoints went through
                with contextlib.suppress(Exception):
                    self._record_final_states()
            await self._teardown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        summary = sc.build_summary(self.facts)
        self.view.finish(summary)
        return summary

    def _interrupt(self) -> None:
        self.view.event("stopping (signal received): cleaning up")
        if self._main is not None:
            self._main.cancel()

    @contextlib.asynccontextmanager
    async def phase(self, name: str) -> AsyncIterator[sc.Phase]:
        p = self.phases[name]
        p.started_s = self.now()
        self.view.phase(p)
        try:
            yield p
        except BaseException as exc:
            p.ok = False
            if isinstance(exc, DemoFailure | StartError):
                p.detail = str(exc).partition("\n")[0]  # a StartError's first line: the component's last error line
            raise
        else:
            p.ok = True
        finally:
            p.ended_s = self.now()
            self.view.phase(p)

    async def wait(self, what: str, predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise DemoFailure(f"timed out after {timeout:.0f} s waiting for {what}")
            await asyncio.sleep(interval)

    # -- scenario -------------------------------------------------------------------------------------------------
    async def _scenario(self) -> None:
        async with self.phase("start") as p:
            await asyncio.to_thread(self.platform.start)
            self._tasks.append(asyncio.create_task(self._watchdog()))
            self._tasks.append(asyncio.create_task(self._poll_endpoints()))
            self._tasks.append(asyncio.create_task(self._refresh_view()))
            self._subscribe_kpis()
            await self.wait("the catalogue applied (3 sites)", self.platform.catalogue_applied, 60, 0.2)
            if self.backend.kind != "emulated":
                await self.wait("all switches connected to the PCE", self.platform.switches_connected, 60, 0.2)
            p.detail = f"{len(self.platform.naps)} NAP agents, control plane, {self.backend.kind} fabric"
        self.facts.dashboard_url = f"http://127.0.0.1:{self.platform.dashboard_port}/"
        self.view.event(f"CLMC dashboard: {self.facts.dashboard_url}")
        async with self.phase("deploy") as p:
            await self._deploy()
            prov = [v["first_served_s"] - v["submitted_s"] for v in self.facts.provisioning.values()]
            p.detail = f"{len(self.services)} services running and served in {max(prov):.1f} s (slowest)"
        self.facts.marks["traffic_start"] = self.now()
        if self.opts.kill_nap:
            self._tasks.append(asyncio.create_task(self._kill_later(self.opts.kill_nap, self.opts.kill_at)))
        async with self.phase("baseline") as p:
            self._start_steady_players()
            await asyncio.sleep(self.timing.baseline_s)
            p.detail = f"{len(self.players)} players; served by {sc.shares(self._main_edge_samples()) or '-'}"
        async with self.phase("surge") as p:
            await self._surge(p)
        async with self.phase("calm") as p:
            await self._calm(p)
        self._record_final_states()
        await self._stop_players()
        async with self.phase("multicast") as p:
            await self._multicast(p)
        if self.opts.follow:
            self.following = True
            self.view.event("--follow: players keep running; Ctrl-C to stop")
            self._start_steady_players()
            await asyncio.Event().wait()

    def _main_edge_samples(self) -> list[sc.Sample]:
        return [s for s in self.facts.samples if s.service == sc.MAIN and s.nap == sc.SURGE_NAP]

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.3)
            crashed = self.group.crashed()
            if crashed:
                self.crash = [
                    {"name": p.name, "pid": p.pid, "code": p.popen.returncode, "last_line": last_line(p.tail())}
                    for p in crashed
                ]
                for p in crashed:
                    p.expected_exit = True
                    self.view.event(p.exit_report(f"(pid {p.pid}) exited with {p.popen.returncode}"))
                if self._main is not None:
                    self._main.cancel()
                return

    # -- observation ----------------------------------------------------------------------------------------------
    async def _poll_endpoints(self) -> None:
        vim_root = self.state / "control-plane" / "state" / "sfemc" / "process-vim"
        while True:
            try:
                resp = await asyncio.to_thread(
                    self.platform.stubs.sfemc.ListEndpoints, sfemc_pb2.ListEndpointsRequest(), timeout=3
                )
            except grpc.RpcError:
                await asyncio.sleep(0.5)
                continue
            for ep in resp.endpoints:
                name = state_name(ep.state)
                seen = self.seen_states.setdefault(ep.id, [])
                if not seen or seen[-1] != name:
                    seen.append(name)
                    if ep.media_service == sc.MAIN:
                        self.view.event(f"endpoint {ep.id}: {name}")
                self.endpoints[ep.id] = ep
            for run in vim_root.glob("*/run.json") if vim_root.exists() else ():
                with contextlib.suppress(OSError, ValueError, KeyError):
                    pid = int(json.loads(run.read_text())["pid"])
                    if pid not in self.vim_pids:
                        self.vim_pids[pid] = run.parent.name
            await asyncio.sleep(0.2)

    def _endpoint_state(self, ep: str) -> str:
        e = self.endpoints.get(ep)
        return state_name(e.state) if e is not None else ""

    def _subscribe_kpis(self) -> None:
        loop = asyncio.get_running_loop()
        call = self.platform.stubs.clmc.SubscribeKpiEvents(clmc_pb2.SubscribeKpiEventsRequest())
        self._kpi_call = call

        def consume() -> None:
            with contextlib.suppress(grpc.RpcError):
                for msg in call:
                    ev = msg.event
                    record = {
                        "t": round(self.from_wall(ev.time.ToNanoseconds() / 1e9), 3),
                        "service": ev.media_service,
                        "kpi": ev.kpi,
                        "state": kpi_pb2.KpiState.Name(ev.state).removeprefix("KPI_STATE_").lower(),
                        "value": None if ev.value != ev.value else round(ev.value, 3),
                    }
                    loop.call_soon_threadsafe(self._on_kpi, record)

        threading.Thread(target=consume, name="kpi-events", daemon=True).start()

    def _on_kpi(self, record: dict[str, Any]) -> None:
        self.facts.kpi_events.append(record)
        self.view.event(f"KPI {record['service']}/{record['kpi']} {record['state']} (value {record['value']})")
        self._kpi_new.set()

    def _kpi(self, state: str) -> dict[str, Any] | None:
        return next((e for e in self.facts.kpi_events if e["service"] == sc.MAIN and e["state"] == state), None)

    async def _refresh_view(self) -> None:
        while True:
            self.view.tick(self._live())
            await asyncio.sleep(0.5)

    def _live(self) -> LiveState:
        return LiveState(
            elapsed=self.now(),
            phases=self.facts.phases,
            endpoints={k: state_name(v.state) for k, v in self.endpoints.items()},
            samples=self.facts.samples,
            dashboard_url=self.facts.dashboard_url,
            fabric=self.backend.kind,
            services=self.services,
        )

    # -- deploy ---------------------------------------------------------------------------------------------------
    async def _deploy(self) -> None:
        base = sc.packaged("vod.yaml")
        t = self.timing
        for svc in self.services:
            probe = round(t.probe_rate * t.kpi_window_s) if svc == sc.MAIN else 0
            text = sc.demo_template(base, svc, t.kpi_window_s, t.cooldown_s, probe)
            text = self.platform.vim.template(text)
            self.facts.provisioning[svc] = {"submitted_s": round(self.now(), 3)}
            req = O.DeployMediaServiceRequest(request_id=uuid.uuid4().hex, template=text)
            await asyncio.to_thread(self.platform.stubs.orchestrator.DeployMediaService, req, timeout=30)
        self.view.event(f"deployed {', '.join(self.services)}; waiting for RUNNING")

        async def one(svc: str) -> None:
            prov = self.facts.provisioning[svc]
            await self.wait(f"{svc} RUNNING", lambda: self._running(svc), 90, 0.2)
            prov["running_s"] = round(self.now(), 3)
            for nap in sc.ACCESS_NAPS:
                await self._probe(svc, nap, prov, nap == sc.SURGE_NAP)

        await asyncio.gather(*(one(svc) for svc in self.services))
        await self._probe_multicast()

    def _running(self, svc: str) -> bool:
        try:
            ms = self.platform.stubs.orchestrator.GetMediaService(O.GetMediaServiceRequest(name=svc), timeout=3).service
        except grpc.RpcError:
            return False
        return bool(ms.status == O.SERVICE_STATUS_RUNNING)

    async def _probe(self, svc: str, nap: str, prov: dict[str, float], first: bool) -> None:
        """GET through ``nap`` until a byte-exact 200 (routes reach the client NAP right after registration)."""
        att = self.platform.attachment(nap)
        assert att is not None, nap
        asset = sc.asset_of(svc)
        deadline = time.monotonic() + 30
        last = ""
        while time.monotonic() < deadline:
            path, expected = f"/vod/{asset}/seg0.ts", expected_segment(asset, 0)
            ok, info, _ = await fetch_once(att, sc.fqdn_of(svc), path, expected, "probe")
            if ok:
                if first:
                    prov["first_served_s"] = round(self.now(), 3)
                    self.view.event(f"{svc}: first request through {nap} served by {info}")
                return
            last = info
            await asyncio.sleep(0.1)
        raise DemoFailure(f"{svc} not served through {nap} within 30 s (last: {last})")

    async def _probe_multicast(self) -> None:
        expected = expected_segment("live", 0)
        for nap in [n for n in multicast.CLIENT_NAPS if self.platform.alive(n)]:
            att = self.platform.attachment(nap)
            assert att is not None
            deadline = time.monotonic() + 30
            while not (await fetch_once(att, sc.MULTICAST_FQDN, "/vod/live/seg0.ts", expected, "probe"))[0]:
                if time.monotonic() > deadline:
                    raise DemoFailure(f"{sc.MULTICAST_FQDN} not served through {nap} within 30 s")
                await asyncio.sleep(0.1)

    # -- players --------------------------------------------------------------------------------------------------
    def _sink(self, sample: sc.Sample) -> None:
        self.facts.samples.append(sample)

    def _player(
        self, name: str, svc: str, nap: str, rate: float, size: int = DEFAULT_SEGMENT_SIZE, kind: str = "segment"
    ) -> Player:
        att, sink = self.platform.attachment, self._sink
        p = Player(name, svc, sc.fqdn_of(svc), sc.asset_of(svc), nap, att, rate, sink, self.epoch, size=size, kind=kind)
        self.players.append(p)
        p.start()
        return p

    def _start_steady_players(self) -> None:
        rate = self.timing.steady_rate
        for svc in self.services:
            naps = sc.ACCESS_NAPS if svc == sc.MAIN else sc.ACCESS_NAPS[:2]
            for nap in naps:
                if self.platform.alive(nap):
                    self._player(f"{svc}@{nap}", svc, nap, rate)
        if self.platform.alive(sc.SURGE_NAP) and self.timing.probe_rate > 0:
            # F3.2: small requests at a fixed low rate through every phase (their own service-latency figure)
            self._player(f"probe@{sc.SURGE_NAP}", sc.MAIN, sc.SURGE_NAP, self.timing.probe_rate, sc.PROBE_SIZE, "probe")

    async def _stop_players(self, players: list[Player] | None = None) -> None:
        chosen = list(self.players) if players is None else players
        await asyncio.gather(*(p.stop() for p in chosen))
        self._record_player_outcomes(chosen)
        self.players = [p for p in self.players if p not in chosen]

    def _record_player_outcomes(self, players: list[Player]) -> None:
        for kill in self.facts.killed:
            mine = [p for p in players if p.home == kill["nap"]]
            kill["players"] = kill.get("players", 0) + len(mine)
            kill["players_recovered"] = kill.get("players_recovered", 0) + sum(
                1 for p in mine if p.failed_over_to and p.ok_after_failover > 0
            )
            kill["errors"] = kill.get("errors", 0) + sum(p.errors for p in mine)
            targets = sorted({p.failed_over_to for p in mine if p.failed_over_to})
            if targets:
                kill["failed_over_to"] = ", ".join(targets)

    async def _kill_later(self, nap_id: str, at: float) -> None:
        await asyncio.sleep(max(0.0, self.facts.marks["traffic_start"] + at - self.now()))
        nap = self.platform.naps.get(nap_id)
        if nap is None:
            self.view.event(f"--kill-nap {nap_id}: no such NAP")
            return
        pid = nap.proc.pid
        await asyncio.to_thread(self.group.kill, nap.proc)
        self.facts.killed.append({"nap": nap_id, "pid": pid, "at_s": round(self.now(), 3)})
        self.view.event(f"killed NAP agent {nap_id} (pid {pid}, SIGKILL)")

    # -- surge and calm -------------------------------------------------------------------------------------------
    async def _surge(self, p: sc.Phase) -> None:
        t, m = self.timing, self.facts.marks
        edge = f"{sc.MAIN}/{sc.EDGE_NODE}"
        m["surge_start"] = self.now()
        surge = [
            self._player(f"surge{i}@{sc.SURGE_NAP}", sc.MAIN, sc.SURGE_NAP, t.surge_rate)
            for i in range(t.surge_players)
        ]
        self._surge_players = surge
        self.view.event(f"surge: {len(surge)} more viewers at {sc.SURGE_NAP} ({t.surge_rate:g} segments/s each)")
        await self.wait("KPI edge_a_demand to fire", lambda: self._kpi("firing") is not None, t.detect_timeout_s)
        fired = self._kpi("firing")
        assert fired is not None
        m["kpi_fired"] = fired["t"]
        await self.wait(f"{edge} connected", lambda: self._endpoint_state(edge) == "connected", t.connect_timeout_s)
        ep = self.endpoints[edge]
        m["edge_connected"] = self.from_wall(ep.state_since.ToNanoseconds() / 1e9)

        def edge_served() -> bool:
            return any(s.ok and s.endpoint == edge for s in self._main_edge_samples())

        await self.wait(f"a response from {edge} at {sc.SURGE_NAP}", edge_served, t.connect_timeout_s)
        first = next(s for s in self._main_edge_samples() if s.ok and s.endpoint == edge)
        m["edge_first_served"] = first.t + first.latency_ms / 1000
        self.view.event(f"traffic at {sc.SURGE_NAP} now served by {edge}")
        await self._screenshot_later()
        await asyncio.sleep(t.surge_hold_s)
        p.detail = (
            f"KPI fired {m['kpi_fired'] - m['surge_start']:.1f} s after the surge; edge_a connected "
            f"{m['edge_connected'] - m['kpi_fired']:.1f} s and first served "
            f"{m['edge_first_served'] - m['kpi_fired']:.1f} s after the breach"
        )

    async def _calm(self, p: sc.Phase) -> None:
        t, m = self.timing, self.facts.marks
        edge, origin = f"{sc.MAIN}/{sc.EDGE_NODE}", f"{sc.MAIN}/{sc.ORIGIN_NODE}"
        m["calm_start"] = self.now()
        await self._stop_players(self._surge_players)
        self.view.event(f"calm: surge viewers left {sc.SURGE_NAP}")
        await self.wait("KPI edge_a_demand to clear", lambda: self._kpi("cleared") is not None, t.clear_timeout_s)
        cleared = self._kpi("cleared")
        assert cleared is not None
        m["kpi_cleared"] = cleared["t"]
        await self.wait(f"{edge} back to placed", lambda: self._endpoint_state(edge) == "placed", t.connect_timeout_s)
        m["edge_placed"] = self.from_wall(self.endpoints[edge].state_since.ToNanoseconds() / 1e9)

        def origin_again() -> bool:
            return any(s.ok and s.endpoint == origin and s.t >= m["edge_placed"] for s in self._main_edge_samples())

        await self.wait(f"traffic at {sc.SURGE_NAP} back on {origin}", origin_again, t.connect_timeout_s)
        await asyncio.sleep(t.calm_hold_s)
        m["calm_end"] = self.now()
        p.detail = (
            f"KPI cleared {m['kpi_cleared'] - m['calm_start']:.1f} s after demand fell; edge_a placed "
            f"{m['edge_placed'] - m['kpi_cleared']:.1f} s later"
        )

    def _record_final_states(self) -> None:
        """Final states, and every state each endpoint went through in order, from the CLMC's config events (CLMC-4:
        every transition is one), completed by what the poller saw."""
        self.facts.final_states = {k: state_name(v.state) for k, v in self.endpoints.items()}
        for ep in self.facts.final_states:
            reached: list[str] = []
            with contextlib.suppress(grpc.RpcError):
                q = clmc_pb2.QueryRequest(measurement=CONFIG_EVENT, tags={"flame_sfe": ep})
                points = sorted(
                    self.platform.stubs.clmc.Query(q, timeout=5).points, key=lambda pt: pt.time.ToNanoseconds()
                )
                for point in points:
                    name = point.tags.get("to_state", "").removeprefix("ENDPOINT_STATE_").lower()
                    if name and (not reached or reached[-1] != name):
                        reached.append(name)
            for name in self.seen_states.get(ep, []):
                if name not in reached:
                    reached.append(name)
            self.facts.states_reached[ep] = reached

    # -- multicast (F3.5) -----------------------------------------------------------------------------------------
    async def _multicast(self, p: sc.Phase) -> None:
        t = self.timing
        mc = self.facts.multicast = await multicast.measure(self.platform, t.multicast_clients, t.multicast_size)
        if mc["failed"]:
            raise DemoFailure(f"{mc['failed']} multicast fetches failed: {mc['failures']}")
        gain = mc["clients"] * mc["bytes_one"] / mc["bytes_n"] if mc["bytes_n"] else 0.0
        p.detail = (
            f"{mc['clients']} viewers of one {mc['size'] >> 10} KiB segment: {mc['bytes_n']} bytes from "
            f"{mc['server_nap']} vs {mc['bytes_one']} for one viewer ({gain:.1f}x gain)"
        )

    # -- screenshot (docs) ----------------------------------------------------------------------------------------
    async def _screenshot_later(self) -> None:
        if self.opts.screenshot is None:
            return
        from flame_control.demo.view import screenshot

        async def shoot() -> None:
            await asyncio.sleep(max(1.0, self.timing.surge_hold_s - 3))
            assert self.opts.screenshot is not None
            msg = await asyncio.to_thread(screenshot, self.facts.dashboard_url, self.opts.screenshot, self.state)
            self.view.event(msg)

        self._tasks.append(asyncio.create_task(shoot()))

    # -- teardown -------------------------------------------------------------------------------------------------
    async def _teardown(self) -> None:
        async with self.phase("teardown") as p:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stop_players(), 20)
            for task in self._tasks:
                task.cancel()
            if self._kpi_call is not None:
                self._kpi_call.cancel()
            deleted = await asyncio.to_thread(self.platform.delete_services)
            self.platform.stubs.close()
            # NAP agents first (their PCE sessions and CLMC streams would hold up the control plane's graceful stop).
            others = [pr for pr in self.group.procs if pr is not self.platform.control]
            await asyncio.to_thread(self.group.stop_many, others)
            await asyncio.to_thread(self.group.stop_all)
            strays = [pid for pid in self.vim_pids if pid_alive(pid)]
            for pid in strays:
                await asyncio.to_thread(kill_pid, pid)
            self.facts.fabric_info = self.backend.describe()
            await asyncio.to_thread(self.backend.close)
            await asyncio.to_thread(self.platform.vim.close)
            self.facts.started = [{"name": pr.name, "pid": pr.pid} for pr in self.group.procs] + [
                {"name": f"endpoint {iid} (process VIM)", "pid": pid} for pid, iid in self.vim_pids.items()
            ]
            left = self.group.left_running() + [
                {"name": f"endpoint {iid}", "pid": pid} for pid, iid in self.vim_pids.items() if pid_alive(pid)
            ]
            left += self.platform.vim.left_running()
            self.facts.left_running = left
            p.detail = f"{deleted}; {len(self.facts.started)} processes stopped" + (
                f"; {len(strays)} endpoint processes killed by pid (fallback)" if strays else ""
            )
            if left:
                raise DemoFailure(f"left running: {left}")


async def run_demo(opts: Options, backend: Backend, view: View) -> dict[str, Any]:
    """Run the scenario once; the summary."""
    demo = Demo(opts, backend, view)
    summary = await demo.run()
    summary["vim"] = demo.platform.vim.describe()
    if demo._tmp is not None and summary["ok"]:
        import shutil

        shutil.rmtree(demo._tmp, ignore_errors=True)
        summary["state_dir_removed"] = True
    return summary
