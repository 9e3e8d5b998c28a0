"""A TUN device (Linux /dev/net/tun, IFF_TUN | IFF_NO_PI) read and written on the asyncio loop; root. Created in the
agent's data-plane network namespace when one is configured."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Callable

from nap_agent.netns import entered

log = logging.getLogger("flame.nap.tun")
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
SIOCSIFMTU = 0x8922


class Tun:
    """One TUN interface; packets in go to ``on_packet``; :meth:`write` sends one out to the hosts."""

    def __init__(self, name: str, on_packet: Callable[[bytes], None], netns: str = "", mtu: int = 1400) -> None:
        if len(name.encode()) > 15:
            raise ValueError("interface names are at most 15 bytes")
        self.name, self.on_packet = name, on_packet
        with entered(netns):
            self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
            fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                fcntl.ioctl(s.fileno(), SIOCSIFMTU, struct.pack("16si12x", name.encode(), mtu))
        self.write_errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        for _ in range(64):
            try:
                packet = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. the interface went away
                log.warning("tun read failed: %s", exc)
                return
            self.on_packet(packet)

    def write(self, packet: bytes) -> None:
        try:
            os.write(self.fd, packet)
        except OSError:
            self.write_errors += 1  # interface down or full: IP is best effort, the inner TCP retransmits

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.fd)
        os.close(self.fd)
