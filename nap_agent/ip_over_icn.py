"""IP-over-ICN (SFR-2): IPv4 packets for remote prefixes travel as single ICN frames to the NAP that owns the prefix.

Prefix ownership rides on the PCE's FQDN machinery unchanged: a NAP owning ``10.1.0.0/24`` registers the name
``10-1-0-0-24.ip.flame.internal`` as a local FQDN over its NAP session; every NAP then holds a route (FID) to the
owner, and the prefixes known to a NAP are the names of that form in its route table. Lookup is longest-prefix match.
A frame's CID is ``cid.ip_cid(prefix)``; the payload is the IP packet unchanged (IP is a datagram service: no ICN
transport, the inner TCP does its own reliability). Packets larger than one frame's payload are dropped and counted;
the agent sets the TUN MTU to the frame payload so the hosts' own stacks never send larger ones.

Pure functions here; nap_agent/tun.py is the device, :class:`IpOverIcn` the glue.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from flame_control.icn import cid as cidlib
from flame_control.icn import frame as fr
from nap_agent.routes import Route, RouteTable

log = logging.getLogger("flame.nap.ip")
SUFFIX = ".ip.flame.internal"


def prefix_name(prefix: str) -> str:
    """The FQDN a NAP registers for an IPv4 prefix it owns (``10.1.0.0/24`` -> ``10-1-0-0-24.ip.flame.internal``)."""
    net = ipaddress.IPv4Network(prefix, strict=True)
    return f"{str(net.network_address).replace('.', '-')}-{net.prefixlen}{SUFFIX}"


def name_prefix(name: str) -> ipaddress.IPv4Network | None:
    """Inverse of :func:`prefix_name`; None for any other name."""
    if not name.endswith(SUFFIX):
        return None
    parts = name[: -len(SUFFIX)].split("-")
    if len(parts) != 5:
        return None
    try:
        return ipaddress.IPv4Network(f"{'.'.join(parts[:4])}/{parts[4]}", strict=True)
    except ValueError:
        return None


def destination(packet: bytes) -> ipaddress.IPv4Address | None:
    """Destination of a well-formed IPv4 packet (version 4, header length and total length consistent), else None."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = int.from_bytes(packet[2:4], "big")
    if ihl < 20 or total < ihl or total > len(packet):
        return None
    return ipaddress.IPv4Address(packet[16:20])


@dataclass(frozen=True)
class PrefixTable:
    """Remote prefixes (longest first) with their routes, from a route table."""

    entries: tuple[tuple[ipaddress.IPv4Network, Route], ...]

    @classmethod
    def from_routes(cls, table: RouteTable, exclude: str = "") -> PrefixTable:
        """``exclude``: this NAP's id (a route naming the NAP itself is never used: its prefixes are local)."""
        entries = []
        for name in table.by_fqdn:
            net = name_prefix(name)
            route = table.best(name, exclude=exclude) if net is not None else None
            if net is not None and route is not None:
                entries.append((net, route))
        entries.sort(key=lambda e: -e[0].prefixlen)
        return cls(tuple(entries))

    def lookup(self, address: ipaddress.IPv4Address) -> tuple[ipaddress.IPv4Network, Route] | None:
        """Longest-prefix match."""
        for net, route in self.entries:
            if address in net:
                return net, route
        return None


@dataclass
class IpCounters:
    """What the IP-over-ICN path did."""

    packets_out: int = 0
    packets_in: int = 0
    no_route: int = 0
    not_ipv4: int = 0
    too_big: int = 0
    not_ours: int = 0
    #: Packets from the TUN for one of this NAP's own prefixes (they live behind this NAP, not on the fabric).
    own_prefix: int = 0


class IpOverIcn:
    """Packets from the TUN to frames, frames to the TUN."""

    def __init__(
        self,
        nap_id: str,
        own: list[str],
        send_frame: Callable[[bytes], None],
        write_packet: Callable[[bytes], None],
        max_payload: Callable[[], int],
        src_mac: Callable[[], bytes],
    ) -> None:
        self.nap_id = nap_id
        self.own = [ipaddress.IPv4Network(p, strict=True) for p in own]
        self.send_frame, self.write_packet = send_frame, write_packet
        self.max_payload, self.src_mac = max_payload, src_mac
        self.table = PrefixTable(())
        self.counters = IpCounters()

    def names(self) -> list[str]:
        """The FQDNs this NAP registers for its prefixes."""
        return [prefix_name(str(p)) for p in self.own]

    def set_routes(self, routes: RouteTable) -> None:
        self.table = PrefixTable.from_routes(routes, exclude=self.nap_id)

    def from_tun(self, packet: bytes) -> None:
        """A packet a local host sent into the TUN. The NAP's own prefixes take part in the longest-prefix match: a
        packet whose best match is one of them is local (like an HTTP request for a local FQDN, it never goes over the
        fabric to this NAP itself) and is dropped and counted, since writing it back into the TUN would loop."""
        dst = destination(packet)
        if dst is None:
            self.counters.not_ipv4 += 1
            return
        hit = self.table.lookup(dst)
        own = max((p.prefixlen for p in self.own if dst in p), default=-1)
        if own >= 0 and (hit is None or own >= hit[0].prefixlen):
            self.counters.own_prefix += 1
            return
        if hit is None:
            self.counters.no_route += 1
            return
        if len(packet) > self.max_payload():
            self.counters.too_big += 1
            return
        net, route = hit
        cid = cidlib.ip_cid(str(net))
        self.send_frame(
            fr.encode(
                route.fid, route.label, fr.FrameType.IP, 0, cid, b"\0" * 8, 0, 0, route.reverse_fid,
                route.reverse_label, packet, self.src_mac(),
            )
        )  # fmt: skip
        self.counters.packets_out += 1

    def from_fabric(self, frame: fr.Frame) -> None:
        """An IP frame for this NAP: deliver it when the destination is one of our prefixes."""
        dst = destination(frame.payload)
        if dst is None:
            self.counters.not_ipv4 += 1
            return
        if not any(dst in p for p in self.own):
            self.counters.not_ours += 1
            return
        self.counters.packets_in += 1
        self.write_packet(frame.payload)
