"""The `emulated` switch driver: the same flow tables the PCE would program into OVS, executed in-process, moving real
frames between NAP agents over UDP on loopback. The embedded default (no root) and a test double whose forwarding is
proven equal to real OVS (tests/integration/pce/test_pce_ovs.py compares the same tables on both).

With ``link_latency`` (``services.pce.emulated_link_latency``, off by default) every frame reaches each NAP after the
sum of the configured latencies of the links on its path (topology ``latency``), in order per (ingress, egress) pair,
so a path through the core is measurably slower than one across a single switch (``flame demo`` turns it on). The
delayed frames wait in one heap behind one timer; on Linux that timer is a timerfd, because asyncio's own timers wake
the loop on whole milliseconds (epoll's timeout is rounded up), which turned a 0.2 ms path into ~1.3 ms.

Protocol (docs/emulated-fabric.md): a NAP sends ``ATTACH <nap_id> <proof>`` from its UDP socket and gets
``ATTACHED <nap_id> <port>`` (or ``ERROR <reason>``); after that every datagram it sends is one Ethernet frame entering
the fabric at its switch port, and it receives every frame the switches output towards its port. ``<port>`` is the
NAP's own fabric port: a UDP socket of the fabric connected to the NAP's address, from which the NAP receives its
frames and to which it sends them (and its keep-alive ATTACH). Each NAP's frames queue apart in the kernel and the
event loop reads the NAPs' sockets in turn, so a NAP that floods the fabric fills only its own queue (like a switch
port's ingress queue), not everyone's. The proof is an
HMAC-SHA256, keyed with the NAP's fabric secret, of ``ATTACH <nap_id> <host>:<port>`` (the socket's own address, so a
copied datagram is worthless from any other socket); the PCE hands each NAP its secret over its authenticated NAP
session (issue 12 item 6), so a local process can no longer attach as a NAP and receive its traffic. A datagram from an
address that is not attached is dropped before anything is allocated for it and answered, at most once a second per
address, with ``ERROR not attached`` (a NAP attached to a fabric that restarted re-attaches at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import heapq
import hmac
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


NOT_ATTACHED = "not attached"


def attach_proof(secret: bytes, nap_id: str, address: tuple[str, int]) -> str:
    """The proof a NAP sends with ATTACH from ``address`` (hex HMAC-SHA256 keyed with its fabric secret)."""
    text = f"ATTACH {nap_id} {address[0]}:{address[1]}".encode()
    return hmac.new(secret, text, hashlib.sha256).hexdigest()


def attach_message(nap_id: str, secret: bytes, address: tuple[str, int]) -> bytes:
    """The ATTACH datagram for ``nap_id`` sent from ``address`` (without a secret: no proof, refused)."""
    return f"ATTACH {nap_id} {attach_proof(secret, nap_id, address) if secret else '-'}".encode()


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


class _NapSocket:
    """A NAP's own fabric port: a UDP socket connected to the NAP's address."""

    def __init__(self, driver: EmulatedDriver, nap_id: str, address: tuple[str, int]) -> None:
        self.driver, self.nap_id, self.address = driver, nap_id, address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        set_socket_buffers(self.sock)
        self.sock.bind((driver.host, 0))
        self.sock.connect(address)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(1):  # one per turn of the loop: every NAP's socket gets its turn
            try:
                data = self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP: the NAP's socket is gone
                return
            self.driver._from_nap(self.nap_id, self.address, data)

    def send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError:
            self.driver.counters.dropped += 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


class EmulatedDriver(asyncio.DatagramProtocol):
    """Installed tables per switch + a UDP socket NAPs attach to."""

    kind = "emulated"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        topology: Callable[[], Topology] = lambda: EMPTY,
        link_latency: bool = False,
        key: bytes | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.topology = topology
        #: Derives every NAP's fabric secret (random per fabric: a restarted fabric hands out new secrets).
        self._key = key if key is not None else os.urandom(32)
        self._refused_at: dict[tuple[str, int], float] = {}
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
        #: Each attached NAP's own fabric port.
        self.sockets: dict[str, _NapSocket] = {}
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
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:  # name the port: "Address already in use" alone does not say which (issue 11)
            sock.close()
            raise OSError(exc.errno, f"emulated fabric UDP port {self.host}:{self.port}: {exc.strerror}") from None
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
        for nap_socket in self.sockets.values():
            nap_socket.close()
        self.sockets.clear()
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

    def secret_for(self, nap_id: str) -> bytes:
        """The fabric secret of ``nap_id`` (handed to that NAP over its authenticated NAP session)."""
        return hmac.new(self._key, nap_id.encode(), hashlib.sha256).digest()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"ATTACH "):
            self._attach(data[7:].decode(errors="replace").strip(), addr, self._main_reply(addr))
            return
        nap = self.addresses.get(addr)
        if nap is None:
            self.counters.received += 1
            self.counters.dropped += 1
            self._refuse(addr, NOT_ATTACHED, self._main_reply(addr))
            return
        self._forward(nap, data)

    def _from_nap(self, nap: str, addr: tuple[str, int], data: bytes) -> None:
        """A datagram on a NAP's own fabric port."""
        if data.startswith(b"ATTACH "):
            port = self.sockets.get(nap)
            if port is not None:
                self._attach(data[7:].decode(errors="replace").strip(), addr, port.send)
        elif self.addresses.get(addr) == nap:
            self._forward(nap, data)

    def _main_reply(self, address: tuple[str, int]) -> Callable[[bytes], None]:
        """Answer through the main socket (where the datagram came in: a NAP's socket accepts its peer only)."""

        def reply(data: bytes) -> None:
            if self.transport is not None:
                self.transport.sendto(data, address)

        return reply

    def _deliver(self, address: tuple[str, int], data: bytes) -> None:
        """Send to a NAP's address: through its own fabric port when it has one."""
        nap = self.addresses.get(address)
        port = self.sockets.get(nap) if nap is not None else None
        if port is not None:
            port.send(data)
        elif self.transport is not None:
            self.transport.sendto(data, address)

    def _forward(self, nap: str, data: bytes) -> None:
        """One frame entering the fabric at ``nap``'s port."""
        self.counters.received += 1
        parsed = frame_fid(data)
        if parsed is None:
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
            if address is not None:
                if self.link_latency and latency > 0:
                    self._send_later((nap, target), latency, data, address)
                else:
                    self._deliver(address, data)
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
            self._deliver(address, data)
        if queue and self._timer is not None:
            self._timer.arm(queue[0][0])

    def _refuse(self, addr: tuple[str, int], reason: str, reply: Callable[[bytes], None]) -> None:
        """Answer ``ERROR <reason>``, at most once a second per address (no reflection amplifier)."""
        now = time.monotonic()
        if now - self._refused_at.get(addr, -10.0) < 1.0:
            return
        if len(self._refused_at) > 4096:
            self._refused_at = {a: t for a, t in self._refused_at.items() if now - t < 1.0}
        self._refused_at[addr] = now
        reply(f"ERROR {reason}".encode()[:200])

    def _attach(self, text: str, addr: tuple[str, int], reply: Callable[[bytes], None]) -> None:
        nap_id, _, proof = text.partition(" ")
        node = self.topology().nodes.get(nap_id)
        if node is None or node.kind != "nap":
            reply(f"ERROR {nap_id!r} is not a NAP of the topology".encode()[:200])
            return
        expected = attach_proof(self.secret_for(nap_id), nap_id, addr)
        if not hmac.compare_digest(proof.strip().encode(), expected.encode()):
            self._refuse(addr, f"attach refused for {nap_id}: wrong or missing proof", reply)
            return
        old = self.naps.get(nap_id)
        if old is not None and old != addr:
            self.addresses.pop(old, None)
            stale = self.sockets.pop(nap_id, None)
            if stale is not None:
                stale.close()
        self.naps[nap_id] = addr
        self.addresses[addr] = nap_id
        port = self.sockets.get(nap_id)
        if port is None:
            port = self.sockets[nap_id] = _NapSocket(self, nap_id, addr)
        reply(f"ATTACHED {nap_id} {port.port}".encode())
        if old != addr:
            log.info("nap attached", extra={"fields": {"nap": nap_id, "address": f"{addr[0]}:{addr[1]}"}})
