"""Pure parsers of the NAP: TLS ClientHello SNI from Python's real ssl module (SFR-19) and IP-over-ICN prefix names
and longest-prefix match (SFR-2). The HTTP/1.1 layer has its own tests (test_http1.py)."""

from __future__ import annotations

import ipaddress
import ssl

import pytest

from flame_control.api.flame.pce.v1 import nap_session_pb2
from flame_control.icn import fid as fidlib
from nap_agent import ip_over_icn, sni
from nap_agent.routes import RouteTable


def client_hello(name: str | None) -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_sfr19_sni_from_a_real_client_hello() -> None:
    record = client_hello("Vod.Video.Flame.Example")
    assert sni.server_name(record) == "vod.video.flame.example"
    assert sni.record_length(record[:5]) == len(record) - 5


def test_sfr19_bad_client_hellos() -> None:
    ctx_no_sni = ssl.create_default_context()
    ctx_no_sni.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx_no_sni.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    with pytest.raises(sni.SniError):
        sni.server_name(outgoing.read())  # no server_name extension
    record = client_hello("a.example")
    for cut in (0, 3, 5, 20, len(record) - 1):
        with pytest.raises(sni.SniError):
            sni.server_name(record[:cut])
    with pytest.raises(sni.SniError):
        sni.server_name(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(sni.SniError):
        sni.server_name(b"\x16\x03\x01" + b"\xff\xff" + b"\x00" * 70000)


def test_sfr2_prefix_names_and_longest_prefix_match() -> None:
    assert ip_over_icn.prefix_name("10.1.0.0/24") == "10-1-0-0-24.ip.flame.internal"
    assert ip_over_icn.name_prefix("10-1-0-0-24.ip.flame.internal") == ipaddress.IPv4Network("10.1.0.0/24")
    assert ip_over_icn.name_prefix("vod.video.flame.example") is None
    assert ip_over_icn.name_prefix("10-1-0-1-24.ip.flame.internal") is None  # host bits set
    snap = nap_session_pb2.Snapshot(version=1, ilid=fidlib.to_bytes(1))
    for name, nap in (("10-0-0-0-8.ip.flame.internal", "wide"), ("10-1-0-0-16.ip.flame.internal", "narrow")):
        route = snap.routes.add(fqdn=name)
        route.servers.add(server_nap_id=nap, fid=fidlib.to_bytes(2), reverse_fid=fidlib.to_bytes(4))
    table = ip_over_icn.PrefixTable.from_routes(RouteTable.from_snapshot(snap))
    hit = table.lookup(ipaddress.IPv4Address("10.1.2.3"))
    assert hit is not None and hit[1].server_nap_id == "narrow"
    hit = table.lookup(ipaddress.IPv4Address("10.9.2.3"))
    assert hit is not None and hit[1].server_nap_id == "wide"
    assert table.lookup(ipaddress.IPv4Address("192.168.0.1")) is None
    packet = bytes.fromhex("4500001c000000004001" + "0000" + "0a010001" + "0a020001") + b"\0" * 8
    assert ip_over_icn.destination(packet) == ipaddress.IPv4Address("10.2.0.1")
    assert ip_over_icn.destination(packet[:10]) is None
    assert ip_over_icn.destination(b"\x60" + packet[1:]) is None  # IPv6
    assert ip_over_icn.destination(packet[:2] + b"\xff\xff" + packet[4:]) is None  # total length lies
