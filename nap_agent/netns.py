"""Data-plane sockets inside a named network namespace while the agent's control session (gRPC to the PCE) stays in the
agent's own namespace: the split an edge node has between its management and user-facing networks, and how the
OVS tests place NAP agents in per-host namespaces. Linux setns(2) is per thread; a socket keeps the namespace it was
created in, so each socket is created inside a short synchronous ``entered()`` block on the calling thread."""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered(netns: str) -> Iterator[None]:
    """Run the block in network namespace ``netns`` (``ip netns`` name; empty = stay where we are). Root only."""
    if not netns:
        yield
        return
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def tcp_socket(netns: str) -> socket.socket:
    """A non-blocking TCP socket for an outgoing connection in ``netns``."""
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


def listening_socket(netns: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket in ``netns``."""
    with entered(netns):
        sock = socket.create_server((host, port), reuse_port=False)
    sock.setblocking(False)
    return sock


def packet_socket(netns: str, protocol: int) -> socket.socket:
    """An AF_PACKET raw socket in ``netns``."""
    with entered(netns):
        return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(protocol))


def interface_mtu(sock: socket.socket, interface: str) -> int:
    """MTU of ``interface`` as seen from the socket's own namespace (SIOCGIFMTU)."""
    req = struct.pack("16si12x", interface.encode()[:15], 0)
    return int(struct.unpack("16si12x", fcntl.ioctl(sock.fileno(), 0x8921, req))[1])
