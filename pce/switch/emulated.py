"""The `emulated` switch driver: the same flow tables the PCE would program into OVS, executed in-process, moving real
frames between NAP agents over UDP on loopback. The embedded default (no root) and a test double whose forwarding is
proven equal to real OVS (tests/integration/pce/test_pce_ovs.py compares the same tables on both).

With ``link_latency`` (``services.pce.emulated_link_latency``, off by default) every frame reaches each NAP after the
sum of the configured latencies of the links on its path (topology ``latency``), in order per (ingress, egress) pair,
so a path through the core is measurably slower than one across a single switch (``flame demo`` turns it on). The
delayed frames wait in one heap behind one timer; on Linux that timer is a timerfd, because asyncio's own timers wake
the loop on whole milliseconds (epoll's timeout is rounded up), which turned a 0.2 ms path into ~1.3 ms.

Protocol (docs/emulated-fabric.md): a NAP sends ``ATTACH <nap_id>`` from its UDP socket and gets ``ATTACHED <nap_id>``
(or ``ERROR <reason>``); after that every datagram it sends is one Ethernet frame entering the fabric at its switch
port, and it receives every frame the switches output towards its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import heapq
import itertools
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flame_control.icn import fid as fidlib
from pce.switch.fabric import Fabric
from pce.switch.pipeline import FlowRule
from pce.topology import EMPTY, Topology

log = logging.getLogger("flame.pce.emulated")

ETHERTYPE_ICN = 0x86DD
MAX_FRAME = 65507


SOCKET_BUFFER = 8 << 20


def set_socket_buffers(sock: socket.socket, size: int = SOCKET_BUFFER) -> None:
    """Large send/receive buffers so bursts of frames are not dropped on loopback: above net.core.rmem_max when root
    (SO_RCVBUFFORCE), otherwise as much as the kernel allows."""
    for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, size)


@dataclass
class Counters:
    """Frames the emulated fabric handled."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0


def frame_fid(frame: bytes) -> tuple[int, int, int] | None:
    """(FID, flow label, hop limit) of an ICN frame, or None when it is not one."""
    if len(frame) < 54 or struct.unpack_from("!H", frame, 12)[0] != ETHERTYPE_ICN or frame[14] >> 4 != 6:
        return None
    first_word = struct.unpack_from("!I", frame, 14)[0]
    return fidlib.from_addresses(frame[22:38], frame[38:54]), first_word & 0xFFFFF, frame[21]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC, _TFD_NONBLOCK, _TFD_CLOEXEC, _TFD_TIMER_ABSTIME = 1, os.O_NONBLOCK, os.O_CLOEXEC, 1


class PreciseTimer:
    """One re-armable one-shot timer on the running event loop at an absolute :func:`time.monotonic` time.

    On Linux a timerfd (nanosecond expiry, woken through the loop's selector); elsewhere, or when timerfd is not
    available, ``loop.call_later`` (whose wake-up the selector rounds up to the next millisecond)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._fd = -1
        self._libc: Any = None
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(None, use_errno=True)
                fd = int(libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC))
                if fd >= 0:
                    self._fd, self._libc = fd, libc
                    self._loop.add_reader(fd, self._expired)

    @property
    def precise(self) -> bool:
        """True when backed by a timerfd."""
        return self._fd >= 0

    def arm(self, when: float) -> None:
        """Fire once at monotonic time ``when`` (at once when it is past), replacing any earlier arming."""
        if self._fd >= 0:
            when = max(when, 1e-9)
            sec = int(when)
            spec = _Itimerspec(_Timespec(0, 0), _Timespec(sec, int((when - sec) * 1e9)))
            if self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) == 0:
                return
            self._close_fd()  # settime failed: fall back to the loop's timers
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_later(max(0.0, when - time.monotonic()), self._fire)

    def _expired(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.read(self._fd, 8)
        self.callback()

    def _fire(self) -> None:
        self._handle = None
        self.callback()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        self._close_fd()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class EmulatedDriver(asyncio.DatagramProtocol):
    """Installed tables per switch + a UDP socket NAPs attach to."""

    kind = "emulated"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        topology: Callable[[], Topology] = lambda: EMPTY,
        link_latency: bool = False,
    ) -> None:
        self.host, self.port = host, port
        self.topology = topology
        #: Delay frames by their path's configured link latency.
        self.link_latency = link_latency
        #: Frames waiting for their path latency: a heap of (due monotonic time, arrival order, frame, address), and
        #: the latest due time per (ingress NAP, egress NAP), so frames between two NAPs never overtake each other.
        self._delayed: list[tuple[float, int, bytes, tuple[str, int]]] = []
        self._order = itertools.count()
        self._pair_due: dict[tuple[str, str], float] = {}
        self._timer: PreciseTimer | None = None
        self.installed: dict[int, list[FlowRule]] = {}
        self.naps: dict[str, tuple[str, int]] = {}
        self.addresses: dict[tuple[str, int], str] = {}
        self.counters = Counters()
        #: Rules added or removed so far (the emulated counterpart of the OpenFlow driver's flow-mods).
        self.flow_mods_sent = 0
        self.port_handler: Callable[[int, int, bool], None] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self._fabric: Fabric | None = None
        #: Forwarding decisions of the installed tables per (ingress NAP, FID, LID table, hop limit), like a
        #: switch's flow cache; dropped whenever tables or wiring change. Targets carry their path latency.
        self._decisions: dict[tuple[str, int, int, int], tuple[tuple[tuple[str, float], ...], int]] = {}

    # -- driver interface -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Nothing to do synchronously; :meth:`listen` opens the socket on the event loop."""

    async def listen(self) -> int:
        """Open the UDP socket; returns the bound port."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.host, self.port))
        set_socket_buffers(sock)
        transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
        self.transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        log.info("emulated fabric listening", extra={"fields": {"address": f"{self.host}:{self.port}"}})
        return self.port

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        self._delayed.clear()

    def set_port_status_handler(self, handler: Callable[[int, int, bool], None]) -> None:
        """Called with (dpid, port, up) when :meth:`set_port_state` changes a port."""
        self.port_handler = handler

    def apply(self, desired: Mapping[int, Sequence[FlowRule]]) -> dict[int, int]:
        """Install the desired tables (the emulated switches are always connected); returns rules changed per dpid."""
        changed = {}
        for dpid, rules in desired.items():
            before = set(self.installed.get(dpid, ()))
            changed[dpid] = len(before ^ set(rules))
            self.installed[dpid] = list(rules)
        for dpid in set(self.installed) - set(desired):
            changed[dpid] = len(self.installed.pop(dpid))
        self._fabric = None
        self._decisions = {}
        self.flow_mods_sent += sum(changed.values())
        return changed

    def connected(self) -> dict[int, int]:
        """dpid -> rules installed."""
        return {dpid: len(rules) for dpid, rules in self.installed.items()}

    def set_port_state(self, dpid: int, port: int, up: bool) -> None:
        """Simulate a port going down/up on an emulated switch (reported like an OpenFlow port-status)."""
        if self.port_handler is not None:
            self.port_handler(dpid, port, up)

    def topology_changed(self) -> None:
        """Drop the cached wiring (links up/down, new topology)."""
        self._fabric = None
        self._decisions = {}

    # -- data path ------------------------------------------------------------------------------------------------
    def fabric(self) -> Fabric:
        """The installed tables wired as the topology says."""
        if self._fabric is None:
            topo = self.topology()
            by_node = {n.id: self.installed.get(n.dpid, []) for n in topo.switches()}
            self._fabric = Fabric(topo, by_node, [{}])
        return self._fabric

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"ATTACH "):
            self._attach(data[7:].decode(errors="replace").strip(), addr)
            return
        nap = self.addresses.get(addr)
        parsed = frame_fid(data)
        self.counters.received += 1
        if nap is None or parsed is None:
            self.counters.dropped += 1
            return
        fid, label, hops = parsed
        key = (nap, fid, label, min(hops, 64))
        decision = self._decisions.get(key)
        if decision is None:
            delivery = self.fabric().send(nap, fid, label, hop_limit=min(hops, 64))
            reached = sorted(delivery.accepted | delivery.rejected)
            decision = (tuple((t, delivery.latency_s.get(t, 0.0)) for t in reached), delivery.dropped_hop_limit)
            if len(self._decisions) > 100_000:
                self._decisions.clear()
            self._decisions[key] = decision
        targets, dropped = decision
        for target, latency in targets:
            address = self.naps.get(target)
            if address is not None and self.transport is not None:
                if self.link_latency and latency > 0:
                    self._send_later((nap, target), latency, data, address)
                else:
                    self.transport.sendto(data, address)
                self.counters.forwarded += 1
        if dropped:
            self.counters.dropped += dropped

    def _send_later(self, key: tuple[str, str], delay: float, data: bytes, address: tuple[str, int]) -> None:
        """Hold a frame for ``delay`` seconds, keeping the order of frames between the same two NAPs."""
        due = max(time.monotonic() + delay, self._pair_due.get(key, 0.0))
        self._pair_due[key] = due
        earliest = self._delayed[0][0] if self._delayed else None
        heapq.heappush(self._delayed, (due, next(self._order), data, address))
        if earliest is None or due < earliest:
            if self._timer is None:
                self._timer = PreciseTimer(self._release)
            self._timer.arm(due)

    def _release(self) -> None:
        """Send every held frame that is due; re-arm the timer for the next one."""
        queue = self._delayed
        now = time.monotonic() + 2e-5  # a wake-up a few microseconds early still sends
        while queue and queue[0][0] <= now:
            _, _, data, address = heapq.heappop(queue)
            if self.transport is not None:
                self.transport.sendto(data, address)
        if queue and self._timer is not None:
            self._timer.arm(queue[0][0])

    def _attach(self, nap_id: str, addr: tuple[str, int]) -> None:
        node = self.topology().nodes.get(nap_id)
        assert self.transport is not None
        if node is None or node.kind != "nap":
            self.transport.sendto(f"ERROR {nap_id!r} is not a NAP of the topology".encode(), addr)
            return
        old = self.naps.get(nap_id)
        if old is not None:
            self.addresses.pop(old, None)
        self.naps[nap_id] = addr
        self.addresses[addr] = nap_id
        self.transport.sendto(f"ATTACHED {nap_id}".encode(), addr)
        log.info("nap attached", extra={"fields": {"nap": nap_id, "address": f"{addr[0]}:{addr[1]}"}})
