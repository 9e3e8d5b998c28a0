"""The os-ken application: translates OpenFlow events into calls on the process's OskenDriver."""

from __future__ import annotations

from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    HANDSHAKE_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.ofproto import ofproto_v1_3

from pce.switch.osken_driver import current


class FlameSwitchApp(app_manager.OSKenApp):  # type: ignore[misc]
    """OpenFlow 1.3 only."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)  # type: ignore[untyped-decorator]
    def switch_features(self, ev: Any) -> None:
        driver = current()
        if driver is not None:
            driver.on_connect(ev.msg.datapath, ev.msg.n_tables)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def flow_stats(self, ev: Any) -> None:
        driver = current()
        if driver is not None:
            more = bool(ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE)
            driver.on_flow_stats(ev.msg.datapath, [s.cookie for s in ev.msg.body], more)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def barrier(self, ev: Any) -> None:
        driver = current()
        if driver is not None:
            driver.on_barrier(ev.msg.datapath.id, ev.msg.xid)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def port_status(self, ev: Any) -> None:
        driver = current()
        if driver is None:
            return
        msg = ev.msg
        ofp = msg.datapath.ofproto
        desc = msg.desc
        up = (
            msg.reason != ofp.OFPPR_DELETE
            and not (desc.state & ofp.OFPPS_LINK_DOWN)
            and not (desc.config & ofp.OFPPC_PORT_DOWN)
        )
        driver.on_port_status(msg.datapath.id, desc.port_no, up)

    @set_ev_cls(  # type: ignore[untyped-decorator]
        ofp_event.EventOFPErrorMsg, [HANDSHAKE_DISPATCHER, CONFIG_DISPATCHER, MAIN_DISPATCHER]
    )
    def error(self, ev: Any) -> None:
        driver = current()
        msg = ev.msg
        if driver is not None and msg.datapath.id is not None:
            driver.on_error(msg.datapath.id, msg.xid, msg.type, msg.code)

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def port_desc(self, ev: Any) -> None:
        driver = current()
        if driver is None:
            return
        ofp = ev.msg.datapath.ofproto
        ports = {
            p.port_no: not (p.state & ofp.OFPPS_LINK_DOWN) and not (p.config & ofp.OFPPC_PORT_DOWN)
            for p in ev.msg.body
            if p.port_no <= ofp.OFPP_MAX
        }
        driver.on_port_desc(ev.msg.datapath.id, ports)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)  # type: ignore[untyped-decorator]
    def state_change(self, ev: Any) -> None:
        driver = current()
        if driver is not None and ev.datapath.id is not None:
            driver.on_disconnect(ev.datapath.id)
