"""How frames leave and enter a NAP: ``emulated`` (UDP to the PCE's emulated fabric on loopback; no root; the embedded
default, docs/emulated-fabric.md) or ``raw`` (AF_PACKET on the interface attached to an OVS bridge; root)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from flame_control.icn import frame as fr
from nap_agent.netns import interface_mtu, packet_socket
from pce.switch.emulated import NOT_ATTACHED, attach_message, set_socket_buffers

log = logging.getLogger("flame.nap.fabric")
ETH_P_ICN = 0x86DD


class FabricPort:
    """Common surface: ``send(frame)``, ``close()``, ``mtu``, ``mac``."""

    mtu: int = 1500
    mac: bytes = b"\x00" * 6
    kind: str = ""

    def send(self, frame: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class EmulatedPort(FabricPort, asyncio.DatagramProtocol):
    """Attached to the emulated fabric: ``ATTACH <nap_id> <proof>`` then one Ethernet frame per datagram.

    The proof needs this NAP's fabric secret, which the PCE hands out over the NAP session (:meth:`set_secret`). Once
    attached, the socket talks to the NAP's own fabric port (``ATTACHED <nap> <port>``). The port stays attached by
    itself (issue 14): it re-sends ATTACH every ``keepalive_s`` (the fabric confirms each), and goes back to the
    fabric's main address and attaches again at once when the fabric says ``not attached``, its own port is gone, a
    new secret arrives (a restarted fabric knows no address and hands out new secrets), or the fabric stopped
    confirming."""

    kind = "emulated"

    def __init__(
        self,
        nap_id: str,
        fabric: tuple[str, int],
        on_frame: Callable[[bytes], None],
        mtu: int,
        keepalive_s: float = 1.0,
    ) -> None:
        self.nap_id, self.fabric_addr, self.on_frame, self.mtu = nap_id, fabric, on_frame, mtu
        self.keepalive_s = keepalive_s
        self.transport: asyncio.DatagramTransport | None = None
        self.attached = asyncio.Event()
        self.error: str | None = None
        self.secret = b""
        self.attaches = 0
        self._confirmed_at = 0.0
        self._sock: socket.socket | None = None
        self._wake = asyncio.Event()
        self._attacher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Bind and keep attaching in the background (the fabric may start later, or not know this NAP yet: the
        topology can arrive after us); :attr:`attached` is set once the fabric confirmed, :attr:`error` says why not."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        set_socket_buffers(sock)
        sock.bind(("127.0.0.1", 0))
        sock.connect(self.fabric_addr)
        self._sock = sock
        transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
        self.transport = transport
        self._attacher = loop.create_task(self._attach())

    def set_secret(self, secret: bytes) -> None:
        """This NAP's fabric secret from its PCE session: attach with it now."""
        if secret != self.secret:
            self.secret = secret
            self._detach()

    async def _attach(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.05
        while self.transport is not None and not self.transport.is_closing():
            if self.secret:
                own = self.transport.get_extra_info("sockname")
                self.transport.sendto(attach_message(self.nap_id, self.secret, own))
            self._wake.clear()
            wait = delay if not self.attached.is_set() else self.keepalive_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            if self.attached.is_set():
                delay = 0.05
                if loop.time() - self._confirmed_at > 3.5 * self.keepalive_s:
                    self._detach()  # the fabric stopped confirming: gone or restarted
            else:
                delay = min(delay * 2, self.keepalive_s)

    def _detach(self) -> None:
        """Back to the fabric's main address; attach again at once."""
        self.attached.clear()
        if self._sock is not None and self._sock.fileno() >= 0:
            with contextlib.suppress(OSError):
                self._sock.connect(self.fabric_addr)
        self._wake.set()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data[:1] in (b"A", b"E") and len(data) < 300:
            text = data.decode(errors="replace")
            if text.startswith("ATTACHED "):
                self.error = None
                self._confirmed_at = asyncio.get_running_loop().time()
                own = text.split()[2:3]
                if own and own[0].isdigit() and self._sock is not None and not self.attached.is_set():
                    with contextlib.suppress(OSError):
                        self._sock.connect((self.fabric_addr[0], int(own[0])))  # this NAP's own fabric port
                if not self.attached.is_set():
                    self.attaches += 1
                    self.attached.set()
                return
            if text.startswith("ERROR "):
                reason = text[6:]
                if reason == NOT_ATTACHED:
                    self._detach()  # the fabric forgot us (it restarted): attach again at once
                elif self.error != reason:
                    log.warning("fabric refused attach", extra={"fields": {"nap": self.nap_id, "error": reason}})
                self.error = reason
                return
        self.on_frame(data)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: the fabric (or our port) is gone
        log.debug("fabric socket error: %s", exc)
        if self.attached.is_set():
            self._detach()

    def send(self, frame: bytes) -> None:
        if self.transport is not None:
            self.transport.sendto(frame)

    def close(self) -> None:
        if self._attacher is not None:
            self._attacher.cancel()
        if self.transport is not None:
            self.transport.close()


class RawPort(FabricPort):
    """AF_PACKET on an interface attached to an OVS bridge (root). Frames we sent ourselves are ignored."""

    kind = "raw"

    def __init__(self, interface: str, on_frame: Callable[[bytes], None], netns: str = "") -> None:
        self.interface, self.on_frame = interface, on_frame
        self.sock = packet_socket(netns, ETH_P_ICN)
        set_socket_buffers(self.sock)
        self.sock.bind((interface, ETH_P_ICN))
        self.sock.setblocking(False)
        self.mac = self.sock.getsockname()[4][:6]
        self.mtu = interface_mtu(self.sock, interface)
        self.send_errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(256):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            if addr[2] != socket.PACKET_OUTGOING:
                self.on_frame(data)

    def send(self, frame: bytes) -> None:
        try:
            self.sock.send(frame)
        except (BlockingIOError, InterruptedError):
            self.send_errors += 1  # the transport retransmits
        except OSError as exc:
            self.send_errors += 1
            log.warning("raw send on %s failed: %s", self.interface, exc)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


def payload_size(port: FabricPort) -> int:
    """Stream segment size for a port's MTU."""
    return fr.max_payload(port.mtu)
