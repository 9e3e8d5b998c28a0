"""Send and capture raw ICN-shaped frames on an interface (AF_PACKET; root), for fabric tests.

    python -m tests.support.frames send IFACE FID_HEX [--label N] [--marker TEXT] [--count N]
    python -m tests.support.frames recv IFACE SECONDS        # prints one JSON line per captured frame

A test frame: Ethernet (broadcast destination, ethertype 0x86DD), a 40-byte IPv6-shaped header whose source and
destination addresses carry the FID (flame_control/icn/fid.py), flow label = LID table, next header 253 (experimental),
hop limit 64, then the marker as payload. Only what the switches match on is real; the NAP agent's own frame format is
in flame_control/icn/.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time

from flame_control.icn import fid as fidlib

ETH_P_ALL = 0x0003
ETHERTYPE = 0x86DD
NEXT_HEADER = 253


def build(fid: int, label: int, marker: bytes, src_mac: bytes) -> bytes:
    """One frame."""
    src, dst = fidlib.to_addresses(fid)
    first_word = (6 << 28) | (label & 0xFFFFF)
    ipv6 = struct.pack("!IHBB", first_word, len(marker), NEXT_HEADER, 64) + src + dst
    return b"\xff" * 6 + src_mac + struct.pack("!H", ETHERTYPE) + ipv6 + marker


def parse(frame: bytes) -> dict[str, object] | None:
    """(fid, label, hop limit, marker) of a test frame, or None for other traffic."""
    if len(frame) < 54 or struct.unpack("!H", frame[12:14])[0] != ETHERTYPE or frame[20] != NEXT_HEADER:
        return None
    first_word, length, _, hops = struct.unpack("!IHBB", frame[14:22])
    fid = fidlib.from_addresses(frame[22:38], frame[38:54])
    return {
        "fid": f"{fid:x}",
        "label": first_word & 0xFFFFF,
        "hops": hops,
        "marker": frame[54 : 54 + length].decode(errors="replace"),
    }


def send(iface: str, fid: int, label: int, marker: str, count: int) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((iface, 0))
        mac = s.getsockname()[4]
        for i in range(count):
            s.send(build(fid, label, f"{marker}#{i}".encode(), mac))


def recv(iface: str, seconds: float) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as s:
        s.bind((iface, 0))
        s.settimeout(0.1)
        print(json.dumps({"ready": True}), flush=True)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                frame, addr = s.recvfrom(65535)
            except TimeoutError:
                continue
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            parsed = parse(frame)
            if parsed is not None:
                print(json.dumps(parsed), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("iface")
    s.add_argument("fid")
    s.add_argument("--label", type=int, default=0)
    s.add_argument("--marker", default="x")
    s.add_argument("--count", type=int, default=1)
    r = sub.add_parser("recv")
    r.add_argument("iface")
    r.add_argument("seconds", type=float)
    ns = p.parse_args(argv)
    if ns.cmd == "send":
        send(ns.iface, int(ns.fid, 16), ns.label, ns.marker, ns.count)
    else:
        recv(ns.iface, ns.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
