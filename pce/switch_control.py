"""The PCE servicer's switch side (issue 13): programming through the driver with honest confirmation, port states
from the switches (events and the port descriptions read at connect) with a hold-down against flapping, OpenFlow
errors logged and sent to the CLMC, and ListSwitches / ListFlows showing what the switches really hold."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from flame_control.api.flame.clmc.v1 import model_pb2
from flame_control.api.flame.pce.v1 import pce_pb2
from flame_control.clmc_events import ConfigEventPublisher, config_event
from flame_control.runtime.errors import FieldViolation, InvalidArgument
from pce.core import PceCore

log = logging.getLogger("flame.pce")

#: A port must stay up this long before its link is used again (a down is applied at once).
PORT_UP_HOLD_S = 2.0


class SwitchControl:
    """Mixin of PceServicer: everything between the core's desired rules and the switch driver."""

    core: PceCore
    driver: Any
    lock: asyncio.Lock
    loop: asyncio.AbstractEventLoop | None
    #: Config events to the CLMC (switch errors), or None.
    events: ConfigEventPublisher | None = None
    port_up_hold_s: float = PORT_UP_HOLD_S

    #: Replica of a group on etcd (pce/replica.py), or None; and the store revision the core was loaded at.
    replica: Any = None
    store_revision: int = 0

    def persist(self, *sections: str) -> None: ...
    def leads(self) -> bool:
        raise NotImplementedError

    def push(self, naps: set[str]) -> None: ...

    # -- programming ----------------------------------------------------------------------------------------------
    async def program(self) -> list[str]:
        """Push the desired rules of every switch to the driver (diff-based; returns after the barriers).

        Returns the node ids of switches that did not confirm (they are degraded and repaired by the audit): the
        change itself is applied, so callers report it with its version, never as failed (issue 13)."""
        if self.driver is None or (self.driver.kind != "emulated" and not self.leads()):
            return []  # replicas: followers leave real switches to the leader; an emulated fabric is their own
        by_dpid = {self.core.topology.nodes[n].dpid: rules for n, rules in self.core.switch_rules().items()}
        if self.driver.kind == "emulated":
            self.driver.topology_changed()
            self.driver.apply(by_dpid)
            return []
        await asyncio.to_thread(self.driver.apply, by_dpid)
        bad = set(self.driver.unconfirmed())
        return [sw.id for sw in self.core.topology.switches() if sw.dpid in bad]

    async def start_driver(self) -> None:
        """on_start hook: start the OpenFlow controller and program the switches once they connect."""
        if self.events is not None:
            self.events.start()
        self.loop = asyncio.get_running_loop()
        if self.driver is None:
            if self.replica is not None:
                await self.replica.start(self.store_revision)
            return
        self.driver.set_port_status_handler(self._port_status_from_thread)
        if self.driver.kind == "emulated":
            await self.driver.listen()
        else:
            self.driver.set_error_handler(self._error_from_thread)
            await asyncio.to_thread(self.driver.start)
        await self.program()
        if self.replica is not None:
            await self.replica.start(self.store_revision)

    async def stop_switches(self) -> None:
        """Close the emulated fabric's socket (os-ken threads end with the process) and flush CLMC events."""
        if self.driver is not None and self.driver.kind == "emulated":
            self.driver.close()
        if self.events is not None:
            await self.events.stop()

    # -- port state -----------------------------------------------------------------------------------------------
    def _port_status_from_thread(self, dpid: int, port: int, up: bool) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.port_event, dpid, port, up)

    def port_event(self, dpid: int, port: int, up: bool) -> None:
        """A port's state (status event or port description): down applies now; up only after it stayed up for
        ``port_up_hold_s`` (hold-down: a flapping port does not pull routes back and forth)."""
        pending: dict[tuple[int, int], asyncio.TimerHandle] = self.__dict__.setdefault("_pending_up", {})
        handle = pending.pop((dpid, port), None)
        if handle is not None:
            handle.cancel()
        if not up:
            self._spawn(self.port_status(dpid, port, False))
            return
        link = self._link_at(dpid, port)
        if link is None or not link.down or link.id in self.core.admin_down:
            return
        loop = asyncio.get_running_loop()
        pending[(dpid, port)] = loop.call_later(
            self.port_up_hold_s, lambda: self._spawn(self.port_status(dpid, port, True))
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        tasks: set[asyncio.Task[None]] = self.__dict__.setdefault("_tasks", set())
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _link_at(self, dpid: int, port: int) -> Any:
        switch = next((n for n in self.core.topology.switches() if n.dpid == dpid), None)
        if switch is None:
            return None
        return next((lk for lk in self.core.topology.links.values() if (switch.id, port) in (lk.a, lk.b)), None)

    async def port_status(self, dpid: int, port: int, up: bool) -> None:
        """Apply a switch's port state to the link on that port (SFR-13)."""
        self.__dict__.setdefault("_pending_up", {}).pop((dpid, port), None)
        link = self._link_at(dpid, port)
        if link is None or link.down == (not up) or not self.leads():
            return
        if up and link.id in self.core.admin_down:
            log.info("port up on an administratively down link: stays down", extra={"fields": {"link": link.id}})
            return
        async with self.lock:
            affected = self.core.set_link_state(link.id, up)
            self.persist("links")
            self.push(affected)
        log.info(
            "link state from switch", extra={"fields": {"link": link.id, "up": up, "affected_naps": len(affected)}}
        )
        await self.program()

    # -- errors ---------------------------------------------------------------------------------------------------
    def _error_from_thread(self, dpid: int, error: Any) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.switch_error, dpid, error)

    def switch_error(self, dpid: int, error: Any) -> None:
        """An OpenFlow error (already logged by the driver): a config event to the CLMC."""
        node = next((n.id for n in self.core.topology.switches() if n.dpid == dpid), f"dpid-{dpid:x}")
        if self.events is not None:
            self.events.publish(
                config_event(
                    "pce",
                    "switch",
                    {"flame_server": node},
                    event="openflow_error",
                    failure=model_pb2.FAILURE_CATEGORY_NETWORK,
                    message=f"OpenFlow error type {error.type} code {error.code} on {error.request} (xid {error.xid})",
                )
            )

    # -- RPCs -----------------------------------------------------------------------------------------------------
    async def ListSwitches(self, request: pce_pb2.ListSwitchesRequest, context: Any) -> pce_pb2.ListSwitchesResponse:
        rules = self.core.switch_rules()
        kind = self.driver.kind if self.driver is not None else "none"
        connected = self.driver.connected() if self.driver is not None else {}
        status = self.driver.status() if kind == "osken" else {}
        reply = pce_pb2.ListSwitchesResponse()
        for sw in self.core.topology.switches():
            st = status.get(sw.dpid)
            held = st["held"] if st is not None else (len(rules[sw.id]) if kind == "emulated" else 0)
            msg = reply.switches.add(
                node_id=sw.id,
                dpid=sw.dpid,
                connected=sw.dpid in connected,
                flow_count=held,
                driver=kind,
                desired_flow_count=len(rules[sw.id]),
                degraded_reason=st["degraded"] if st is not None else "",
            )
            if st is not None:
                for e in st["errors"]:
                    err = msg.errors.add(xid=e.xid, type=e.type, code=e.code, request=e.request, transient=e.transient)
                    err.time.FromNanoseconds(int(e.at * 1e9))
                if st["last_audit_wall"]:
                    msg.last_audit_time.FromNanoseconds(int(st["last_audit_wall"] * 1e9))
        return reply

    async def ListFlows(self, request: pce_pb2.ListFlowsRequest, context: Any) -> pce_pb2.ListFlowsResponse:
        node = self.core.topology.nodes.get(request.node_id)
        if node is None or node.kind != "switch":
            raise InvalidArgument([FieldViolation("node_id", f"{request.node_id!r} is not a switch of the topology")])
        rules = self.core.switch_rules()[node.id]
        reply = pce_pb2.ListFlowsResponse()
        for r in rules:
            reply.flows.add(
                table_id=r.table_id,
                priority=r.priority,
                cookie=r.cookie,
                match=r.match_text(),
                actions=r.actions_text(),
            )
        return reply
