"""``flame demo --fabric ovs``: the Figure 25 topology on Open vSwitch userspace bridges in network namespaces (root).

Sockets in a namespace: Linux setns(2) is per thread and a socket keeps the namespace it was created in, so a socket
is made inside a short ``entered()`` block (as nap_agent/netns.py does for the NAP's data plane).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import threading
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(netns: str) -> Iterator[None]:
    """Run the block in network namespace ``netns`` (an ``ip netns`` name). Root only."""
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


def socket_in(netns: str) -> socket.socket:
    """A non-blocking TCP socket in ``netns`` (for a player attached at a NAP in that namespace)."""
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


def port_open_in(netns: str, port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port inside ``netns``."""
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(0.2)
        sock.connect(("127.0.0.1", port))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def unavailable() -> str | None:
    """Why --fabric ovs cannot run here (None when it can)."""
    return "the OVS backend of flame demo is not built yet"


class OvsBackend:
    """Placeholder until the OVS backend lands."""

    kind = "ovs"
    link_latency = False
