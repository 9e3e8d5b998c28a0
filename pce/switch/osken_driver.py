"""The `osken` switch driver: OpenFlow 1.3 into real switches (Open vSwitch, PICA8) through os-ken, Ryu's maintained
fork, running with native threads inside the PCE process (one controller per process: os-ken keeps global state).

Rules carry content-derived cookies (pce/switch/pipeline.py), so the driver diffs by cookie: on every change it
deletes the rules no longer wanted (by cookie), then adds the missing ones, then sends a barrier and waits for it.
When a switch (re)connects it first reads the rules the switch already holds (flow stats) and only fixes the
difference, so established forwarding is never wiped and re-added. Port-status messages are reported to the PCE
(link failure, SFR-13).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flame_control.icn import fid as fidlib
from pce.switch.pipeline import ETH_TYPE_ICN, FlowRule

log = logging.getLogger("flame.pce.osken")

PortHandler = Callable[[int, int, bool], None]
#: (dpid, SwitchError) on every OpenFlow error a switch reports.
ErrorHandler = Callable[[int, "SwitchError"], None]
_ALL_COOKIES = 0xFFFF_FFFF_FFFF_FFFF
#: OpenFlow 1.3 error (type, code) pairs that may clear by themselves (a full table after deletes, a busy switch):
#: retried with backoff. Every other error is permanent until the desired rules change.
TRANSIENT = {(5, 1)}  # OFPET_FLOW_MOD_FAILED / OFPFMFC_TABLE_FULL
RETRY_START_S = 0.5
RETRY_MAX_S = 30.0

# The driver instance the os-ken app reports to (os-ken instantiates apps itself; one controller per process).
_DRIVER: OskenDriver | None = None


@dataclass(frozen=True)
class SwitchError:
    """An OpenFlow error correlated with the request (by xid) that caused it."""

    xid: int
    type: int
    code: int
    #: What the request was ("add cookie 0x..", "delete cookie 0x..", "barrier", or "unknown request").
    request: str
    at: float
    transient: bool


@dataclass
class _Switch:
    datapath: Any
    installed: set[int] = field(default_factory=set)
    synced: threading.Event = field(default_factory=threading.Event)
    stats: set[int] = field(default_factory=set)
    #: xid -> what was sent (flow-mods and barriers), to correlate errors; bounded.
    sent: dict[int, str] = field(default_factory=dict)
    errors: deque[SwitchError] = field(default_factory=lambda: deque(maxlen=20))
    degraded: str = ""
    #: Monotonic time of the last audit that read the switch's flows, and when the next retry is due (0 = none).
    last_audit: float = 0.0
    last_audit_wall: float = 0.0
    retry_at: float = 0.0
    retry_delay: float = RETRY_START_S
    #: Rules the switch held at the last flow-stats read (None before the first).
    held: int | None = None
    auditing: bool = False
    ports: dict[int, bool] = field(default_factory=dict)
    n_tables: int = 0
    #: One diff at a time per switch (apply and audit repairs run in different threads).
    sync_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Bumped by every diff; a flow-stats read that overlapped one is stale and discarded.
    generation: int = 0
    audit_generation: int = 0


class OskenDriver:
    """Programs connected switches to the desired rule sets, audits them, and reports their errors and ports."""

    kind = "osken"

    def __init__(
        self,
        listen_host: str = "127.0.0.1",
        listen_port: int = 6653,
        barrier_timeout_s: float = 10.0,
        audit_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.barrier_timeout_s = barrier_timeout_s
        #: Every this many seconds each switch's flows are read (flow stats) and drift repaired (0 = never).
        self.audit_interval_s = audit_interval_s
        self.clock = clock
        self.lock = threading.RLock()
        self.desired: dict[int, dict[int, FlowRule]] = {}
        self.switches: dict[int, _Switch] = {}
        self.port_handler: PortHandler | None = None
        self.error_handler: ErrorHandler | None = None
        self._barriers: dict[tuple[int, int], threading.Event] = {}
        self.flow_mods_sent = 0
        self.repairs = 0
        self._stop = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the os-ken OpenFlow listener in this process (native threads) and the audit thread."""
        global _DRIVER
        if _DRIVER is not None:
            raise RuntimeError("one os-ken controller per process")
        _DRIVER = self
        from os_ken import cfg
        from os_ken.base.app_manager import AppManager

        with contextlib.suppress(Exception):  # already parsed by an earlier start in this process
            cfg.CONF(args=[], project="os_ken")
        cfg.CONF.set_override("ofp_tcp_listen_port", self.listen_port)
        cfg.CONF.set_override("ofp_listen_host", self.listen_host)
        manager = AppManager.get_instance()
        manager.load_apps(["pce.switch.osken_app"])
        manager.instantiate_apps(**manager.create_contexts())
        threading.Thread(target=self._audit_loop, name="flame-openflow-audit", daemon=True).start()
        log.info(
            "openflow controller listening", extra={"fields": {"address": f"{self.listen_host}:{self.listen_port}"}}
        )

    def set_port_status_handler(self, handler: PortHandler) -> None:
        """Called (from an os-ken thread) with (dpid, port_no, up) on every port status change and port-desc read."""
        self.port_handler = handler

    def set_error_handler(self, handler: ErrorHandler) -> None:
        """Called (from an os-ken thread) with (dpid, SwitchError) on every OpenFlow error."""
        self.error_handler = handler

    # -- desired state --------------------------------------------------------------------------------------------
    def apply(self, desired: Mapping[int, Sequence[FlowRule]]) -> dict[int, int]:
        """Make every connected switch hold exactly ``desired[dpid]``; blocks until barriers return.

        Returns flow-mods sent per dpid. Switches not connected yet are programmed when they connect. A switch that
        does not confirm (barrier timeout) is marked degraded and left to the audit: the call does not fail, since
        the PCE's state already changed (issue 13); :meth:`unconfirmed` names such switches."""
        with self.lock:
            self.desired = {dpid: {r.cookie: r for r in rules} for dpid, rules in desired.items()}
            targets = [(dpid, sw) for dpid, sw in self.switches.items() if sw.synced.is_set()]
        out = {}
        for dpid, sw in targets:
            try:
                out[dpid] = self._sync(dpid, sw)
            except TimeoutError as exc:
                self._degrade(sw, str(exc))
                out[dpid] = -1
        return out

    def _sync(self, dpid: int, sw: _Switch) -> int:
        with sw.sync_lock:
            return self._sync_locked(dpid, sw)

    def _sync_locked(self, dpid: int, sw: _Switch) -> int:
        with self.lock:
            sw.generation += 1
            if dpid not in self.desired:
                return 0  # nothing proven unwanted: a switch the topology does not know is left alone
            want = self.desired[dpid]
            deletes = sorted(sw.installed - set(want))
            adds = [
                want[c] for c in sorted(set(want) - sw.installed, key=lambda c: (want[c].table_id, -want[c].priority))
            ]
            unfit = [r for r in adds if sw.n_tables and r.table_id >= sw.n_tables]
            if unfit:  # the switch said (features reply) it has fewer tables than the pipeline needs
                adds = [r for r in adds if r not in unfit]
                sw.degraded = (
                    f"the pipeline needs table {max(r.table_id for r in unfit)} but the switch has {sw.n_tables} "
                    f"tables: {len(unfit)} rules not installed"
                )
            before = len(sw.errors)
        dp = sw.datapath
        for cookie in deletes:
            self._send(sw, _delete_by_cookie(dp, cookie), f"delete cookie {cookie:#x}")
        for rule in adds:
            self._send(sw, _flow_mod(dp, rule), f"add cookie {rule.cookie:#x} table {rule.table_id}")
        self._barrier(dpid, sw)
        with self.lock:
            failed = {int(e.request.split()[2], 16) for e in list(sw.errors)[before:] if e.request.startswith("add")}
            sw.installed = (sw.installed - set(deletes)) | ({r.cookie for r in adds} - failed)
            sw.generation += 1
            self.flow_mods_sent += len(deletes) + len(adds)
        return len(deletes) + len(adds)

    def _send(self, sw: _Switch, msg: Any, what: str) -> None:
        sw.datapath.set_xid(msg)
        with self.lock:
            sw.sent[msg.xid] = what
            if len(sw.sent) > 10_000:
                for xid in list(sw.sent)[:5_000]:
                    del sw.sent[xid]
        sw.datapath.send_msg(msg)

    def _barrier(self, dpid: int, sw: _Switch) -> None:
        dp = sw.datapath
        msg = dp.ofproto_parser.OFPBarrierRequest(dp)
        done = threading.Event()
        dp.set_xid(msg)
        self._barriers[(dpid, msg.xid)] = done
        with self.lock:
            sw.sent[msg.xid] = "barrier"
        dp.send_msg(msg)
        if not done.wait(self.barrier_timeout_s):
            raise TimeoutError(f"switch {dpid:#x} did not answer a barrier within {self.barrier_timeout_s}s")

    def _degrade(self, sw: _Switch, reason: str) -> None:
        with self.lock:
            sw.degraded = reason
            sw.retry_at = self.clock() + sw.retry_delay
            sw.retry_delay = min(sw.retry_delay * 2, RETRY_MAX_S)
        log.warning("switch degraded", extra={"fields": {"dpid": hex(sw.datapath.id), "reason": reason}})

    # -- views ----------------------------------------------------------------------------------------------------
    def connected(self) -> dict[int, int]:
        """dpid -> rules installed, for connected and synced switches."""
        with self.lock:
            return {dpid: len(sw.installed) for dpid, sw in self.switches.items() if sw.synced.is_set()}

    def status(self) -> dict[int, dict[str, Any]]:
        """dpid -> what ListSwitches shows: rules held (confirmed), degraded reason, recent errors, last audit."""
        with self.lock:
            return {
                dpid: {
                    "held": len(sw.installed),
                    "degraded": sw.degraded,
                    "errors": list(sw.errors),
                    "last_audit_wall": sw.last_audit_wall,
                    "synced": sw.synced.is_set(),
                }
                for dpid, sw in self.switches.items()
            }

    def unconfirmed(self) -> list[int]:
        """Connected switches whose last programming was not confirmed (degraded)."""
        with self.lock:
            return sorted(dpid for dpid, sw in self.switches.items() if sw.degraded)

    def wait_connected(self, dpids: Sequence[int], timeout: float) -> bool:
        """Block until every dpid is connected and synced."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(d in self.connected() for d in dpids):
                return True
            time.sleep(0.05)
        return False

    # -- audit ----------------------------------------------------------------------------------------------------
    def _audit_loop(self) -> None:
        while not self._stop.wait(0.25):
            now = self.clock()
            with self.lock:
                due = [
                    sw
                    for sw in self.switches.values()
                    if sw.synced.is_set()
                    and not sw.auditing
                    and (
                        (sw.retry_at and now >= sw.retry_at)
                        or (self.audit_interval_s and now - sw.last_audit >= self.audit_interval_s)
                    )
                ]
                for sw in due:
                    sw.auditing = True
                    sw.stats = set()
            for sw in due:
                self._request_flows(sw)

    def audit_now(self, dpid: int) -> None:
        """Read the switch's flows now and repair any drift (tests, operators)."""
        with self.lock:
            sw = self.switches.get(dpid)
            if sw is None:
                return
            sw.auditing, sw.stats = True, set()
        self._request_flows(sw)

    def _request_flows(self, sw: _Switch) -> None:
        with self.lock:
            sw.audit_generation = sw.generation
        dp = sw.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(
            parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch())
        )

    # -- events from the os-ken app (os-ken threads) --------------------------------------------------------------
    def on_connect(self, dp: Any, n_tables: int = 0) -> None:
        """A switch connected: read its ports and flows, then fix only the difference."""
        sw = _Switch(dp, n_tables=n_tables)
        with self.lock:
            self.switches[dp.id] = sw
        parser = dp.ofproto_parser
        dp.send_msg(parser.OFPPortDescStatsRequest(dp, 0))
        self._request_flows(sw)
        log.info("switch connected", extra={"fields": {"dpid": hex(dp.id), "tables": n_tables}})

    def on_port_desc(self, dpid: int, ports: Mapping[int, bool]) -> None:
        """The switch's port descriptions (after a connect): every port's state goes to the PCE."""
        with self.lock:
            sw = self.switches.get(dpid)
            if sw is not None:
                sw.ports.update(ports)
        down = sorted(p for p, u in ports.items() if not u)
        log.info("port descriptions", extra={"fields": {"dpid": hex(dpid), "down": down}})
        if self.port_handler is not None:
            for port, up in sorted(ports.items()):
                self.port_handler(dpid, port, up)

    def on_flow_stats(self, dp: Any, cookies: Sequence[int], more: bool) -> None:
        """Flow stats (possibly in parts): after a connect, and on every audit."""
        with self.lock:
            sw = self.switches.get(dp.id)
            if sw is None:
                return
            sw.stats.update(c for c in cookies if c)
            if more:
                return
            held = set(sw.stats)
            first = not sw.synced.is_set()
            if not first and sw.audit_generation != sw.generation:
                sw.auditing = False  # a diff ran while the switch was read: the read is stale, the next audit counts
                return
            sw.held, sw.last_audit, sw.last_audit_wall, sw.installed = len(held), self.clock(), time.time(), held
            want = self.desired.get(dp.id)
            need = first or (want is not None and held != set(want))
            if not need:  # the switch holds exactly what is desired (or nothing is desired of it)
                sw.auditing, sw.retry_at, sw.degraded, sw.retry_delay = False, 0.0, "", RETRY_START_S
        if need:
            threading.Thread(
                target=self._initial_sync if first else self._repair, args=(dp.id, sw), daemon=True
            ).start()

    def _initial_sync(self, dpid: int, sw: _Switch) -> None:
        try:
            sent = self._sync(dpid, sw)
            sw.synced.set()
            with self.lock:
                sw.auditing = False
            log.info("switch synced", extra={"fields": {"dpid": hex(dpid), "flow_mods": sent}})
        except Exception as exc:
            sw.synced.set()  # connected; the audit retries
            with self.lock:
                sw.auditing = False
            self._degrade(sw, f"initial sync failed: {exc}")

    def _repair(self, dpid: int, sw: _Switch) -> None:
        """An audit (or a retry) found the switch's flows differ from the desired ones: fix the difference."""
        try:
            before = len(sw.errors)
            sent = self._sync(dpid, sw)
            with self.lock:
                if len(sw.errors) == before and "tables" not in sw.degraded:  # confirmed, no error: healthy again
                    sw.retry_at, sw.degraded, sw.retry_delay = 0.0, "", RETRY_START_S
            if sent:
                self.repairs += 1
                log.warning("switch drift repaired", extra={"fields": {"dpid": hex(dpid), "flow_mods": sent}})
        except Exception as exc:
            self._degrade(sw, f"repair failed: {exc}")
        finally:
            with self.lock:
                sw.auditing = False

    def on_disconnect(self, dpid: int) -> None:
        """A switch went away (it keeps its flows: fail_mode=secure)."""
        with self.lock:
            self.switches.pop(dpid, None)
        log.warning("switch disconnected", extra={"fields": {"dpid": hex(dpid)}})

    def on_barrier(self, dpid: int, xid: int) -> None:
        """A barrier reply arrived."""
        event = self._barriers.pop((dpid, xid), None)
        if event is not None:
            event.set()

    def on_error(self, dpid: int, xid: int, err_type: int, code: int) -> None:
        """An OpenFlow error: correlate it with its request, mark the switch degraded, log and report it."""
        with self.lock:
            sw = self.switches.get(dpid)
            request = sw.sent.get(xid, "unknown request") if sw is not None else "unknown request"
            error = SwitchError(xid, err_type, code, request, time.time(), (err_type, code) in TRANSIENT)
            if sw is not None:
                sw.errors.append(error)
                sw.degraded = f"OpenFlow error type {err_type} code {code} on {request}"
                sw.retry_at = self.clock() + sw.retry_delay
                sw.retry_delay = min(sw.retry_delay * 2, RETRY_MAX_S)
        log.warning(
            "openflow error",
            extra={"fields": {"dpid": hex(dpid), "xid": xid, "type": err_type, "code": code, "request": request}},
        )
        if self.error_handler is not None:
            self.error_handler(dpid, error)

    def on_port_status(self, dpid: int, port_no: int, up: bool) -> None:
        """A port changed state."""
        log.info("port status", extra={"fields": {"dpid": hex(dpid), "port": port_no, "up": up}})
        with self.lock:
            sw = self.switches.get(dpid)
            if sw is not None:
                sw.ports[port_no] = up
        if self.port_handler is not None:
            self.port_handler(dpid, port_no, up)


def _ipv6(value: int) -> str:
    import ipaddress

    return str(ipaddress.IPv6Address(value))


def _flow_mod(dp: Any, rule: FlowRule) -> Any:
    parser, ofp = dp.ofproto_parser, dp.ofproto
    fields: dict[str, Any] = {}
    if rule.lid is not None:
        lo, hi = fidlib.split(rule.lid)
        fields = {"eth_type": ETH_TYPE_ICN, "ipv6_src": (_ipv6(lo), _ipv6(lo)), "ipv6_dst": (_ipv6(hi), _ipv6(hi))}
        if rule.flow_label is not None:
            fields["ipv6_flabel"] = rule.flow_label
    instructions = []
    if rule.outputs:
        actions = [parser.OFPActionOutput(p) for p in rule.outputs]
        instructions.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
    if rule.goto_table is not None:
        instructions.append(parser.OFPInstructionGotoTable(rule.goto_table))
    return parser.OFPFlowMod(
        datapath=dp,
        cookie=rule.cookie,
        table_id=rule.table_id,
        priority=rule.priority,
        match=parser.OFPMatch(**fields),
        instructions=instructions,
    )


def _delete_by_cookie(dp: Any, cookie: int) -> Any:
    parser, ofp = dp.ofproto_parser, dp.ofproto
    return parser.OFPFlowMod(
        datapath=dp,
        cookie=cookie,
        cookie_mask=_ALL_COOKIES,
        table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(),
    )


def current() -> OskenDriver | None:
    """The driver the os-ken app reports to."""
    return _DRIVER
