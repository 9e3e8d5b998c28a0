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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flame_control.icn import fid as fidlib
from pce.switch.pipeline import ETH_TYPE_ICN, FlowRule

log = logging.getLogger("flame.pce.osken")

PortHandler = Callable[[int, int, bool], None]
_ALL_COOKIES = 0xFFFF_FFFF_FFFF_FFFF

# The driver instance the os-ken app reports to (os-ken instantiates apps itself; one controller per process).
_DRIVER: OskenDriver | None = None


@dataclass
class _Switch:
    datapath: Any
    installed: set[int] = field(default_factory=set)
    synced: threading.Event = field(default_factory=threading.Event)
    stats: set[int] = field(default_factory=set)


class OskenDriver:
    """Programs connected switches to the desired rule sets."""

    kind = "osken"

    def __init__(
        self, listen_host: str = "127.0.0.1", listen_port: int = 6653, barrier_timeout_s: float = 10.0
    ) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.barrier_timeout_s = barrier_timeout_s
        self.lock = threading.RLock()
        self.desired: dict[int, dict[int, FlowRule]] = {}
        self.switches: dict[int, _Switch] = {}
        self.port_handler: PortHandler | None = None
        self._barriers: dict[tuple[int, int], threading.Event] = {}
        self.flow_mods_sent = 0

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the os-ken OpenFlow listener in this process (native threads)."""
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
        log.info(
            "openflow controller listening", extra={"fields": {"address": f"{self.listen_host}:{self.listen_port}"}}
        )

    def set_port_status_handler(self, handler: PortHandler) -> None:
        """Called (from an os-ken thread) with (dpid, port_no, up) on every port status change."""
        self.port_handler = handler

    # -- desired state --------------------------------------------------------------------------------------------
    def apply(self, desired: Mapping[int, Sequence[FlowRule]]) -> dict[int, int]:
        """Make every connected switch hold exactly ``desired[dpid]``; blocks until barriers return.

        Returns flow-mods sent per dpid. Switches not connected yet are programmed when they connect."""
        with self.lock:
            self.desired = {dpid: {r.cookie: r for r in rules} for dpid, rules in desired.items()}
            targets = [(dpid, sw) for dpid, sw in self.switches.items() if sw.synced.is_set()]
        return {dpid: self._sync(dpid, sw) for dpid, sw in targets}

    def _sync(self, dpid: int, sw: _Switch) -> int:
        with self.lock:
            want = self.desired.get(dpid, {})
            deletes = sorted(sw.installed - set(want))
            adds = [
                want[c] for c in sorted(set(want) - sw.installed, key=lambda c: (want[c].table_id, -want[c].priority))
            ]
        dp = sw.datapath
        for cookie in deletes:
            dp.send_msg(_delete_by_cookie(dp, cookie))
        for rule in adds:
            dp.send_msg(_flow_mod(dp, rule))
        self._barrier(dpid, dp)
        with self.lock:
            sw.installed = (sw.installed - set(deletes)) | {r.cookie for r in adds}
            self.flow_mods_sent += len(deletes) + len(adds)
        return len(deletes) + len(adds)

    def _barrier(self, dpid: int, dp: Any) -> None:
        msg = dp.ofproto_parser.OFPBarrierRequest(dp)
        dp.set_xid(msg)
        done = threading.Event()
        self._barriers[(dpid, msg.xid)] = done
        dp.send_msg(msg)
        if not done.wait(self.barrier_timeout_s):
            raise TimeoutError(f"switch {dpid:#x} did not answer a barrier within {self.barrier_timeout_s}s")

    # -- views ----------------------------------------------------------------------------------------------------
    def connected(self) -> dict[int, int]:
        """dpid -> rules installed, for connected and synced switches."""
        with self.lock:
            return {dpid: len(sw.installed) for dpid, sw in self.switches.items() if sw.synced.is_set()}

    def wait_connected(self, dpids: Sequence[int], timeout: float) -> bool:
        """Block until every dpid is connected and synced."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(d in self.connected() for d in dpids):
                return True
            time.sleep(0.05)
        return False

    # -- events from the os-ken app (os-ken threads) --------------------------------------------------------------
    def on_connect(self, dp: Any) -> None:
        """A switch connected: read what it holds, then fix only the difference."""
        sw = _Switch(dp)
        with self.lock:
            self.switches[dp.id] = sw
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(
            parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch())
        )
        log.info("switch connected", extra={"fields": {"dpid": hex(dp.id)}})

    def on_flow_stats(self, dp: Any, cookies: Sequence[int], more: bool) -> None:
        """Flow stats (possibly in parts) after a connect."""
        with self.lock:
            sw = self.switches.get(dp.id)
        if sw is None or sw.synced.is_set():
            return
        sw.stats.update(c for c in cookies if c)
        if more:
            return
        sw.installed = set(sw.stats)
        threading.Thread(target=self._initial_sync, args=(dp.id, sw), daemon=True).start()

    def _initial_sync(self, dpid: int, sw: _Switch) -> None:
        try:
            sent = self._sync(dpid, sw)
            sw.synced.set()
            log.info("switch synced", extra={"fields": {"dpid": hex(dpid), "flow_mods": sent}})
        except Exception:
            log.exception("initial sync of %#x failed", dpid)

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

    def on_port_status(self, dpid: int, port_no: int, up: bool) -> None:
        """A port changed state."""
        log.info("port status", extra={"fields": {"dpid": hex(dpid), "port": port_no, "up": up}})
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
