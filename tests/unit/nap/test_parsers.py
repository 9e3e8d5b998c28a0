"""Pure parsers of the NAP: TLS ClientHello SNI from Python's real ssl module (SFR-19), HTTP/1.1 framing rules
(RFC 9112 6.3) and chunked relay, IP-over-ICN prefix names and longest-prefix match (SFR-2)."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl

import pytest

from flame_control.api.flame.pce.v1 import nap_session_pb2
from flame_control.icn import fid as fidlib
from nap_agent import http1, ip_over_icn, sni
from nap_agent.routes import RouteTable
from nap_agent.transport import StreamBuffer


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


def parse(raw: bytes, request: bool = True) -> http1.Head:
    return http1.parse_head(raw, request)


def test_http_framing_rules() -> None:
    get = parse(b"GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert http1.body_framing(get, True) == http1.NO_BODY
    post = parse(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
    assert http1.body_framing(post, True) == http1.Framing("length", 5)
    chunked = parse(b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert http1.body_framing(chunked, True).kind == "chunked"
    for bad in (
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    ):
        with pytest.raises(http1.HttpError) as err:
            http1.body_framing(parse(bad), True)
        assert err.value.status == 400
    ok = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", request=False)
    assert http1.body_framing(ok, False, "HEAD") == http1.NO_BODY
    assert http1.body_framing(parse(b"HTTP/1.1 304 Not Modified\r\n\r\n", False), False) == http1.NO_BODY
    assert http1.body_framing(parse(b"HTTP/1.1 200 OK\r\n\r\n", False), False).kind == "close"
    with pytest.raises(http1.HttpError):
        parse(b"GET /x\r\n\r\n")
    with pytest.raises(http1.HttpError):
        parse(b"GET /x HTTP/1.1\r\nbad header\r\n\r\n")


def test_destinations_and_forwarded_heads() -> None:
    proxy = parse(b"GET http://VOD.example:80/a?b HTTP/1.1\r\nProxy-Connection: keep-alive\r\n\r\n")
    assert http1.request_destination(proxy) == ("vod.example", "/a?b")
    assert b"Proxy-Connection" not in http1.forwarded_head(proxy, "/a?b")
    assert http1.forwarded_head(proxy, "/a?b").startswith(b"GET /a?b HTTP/1.1\r\n")
    for bad in (
        b"GET /x HTTP/1.1\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: bad_host!\r\n\r\n",
        b"GET x HTTP/1.1\r\nHost: a\r\n\r\n",
    ):
        with pytest.raises(http1.HttpError):
            http1.request_destination(parse(bad))
    assert http1.wants_close(parse(b"GET / HTTP/1.0\r\n\r\n"))
    assert not http1.wants_close(parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))


def test_chunked_relay_is_byte_exact_with_trailers() -> None:
    async def go() -> bytes:
        wire = b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT"
        buf = StreamBuffer()
        buf.feed(wire)
        out = bytearray()

        async def sink(d: bytes) -> None:
            out.extend(d)

        n = await http1.relay_body(buf, http1.Framing("chunked"), sink)
        assert n == len(out) and await buf.read(4) == b"NEXT"
        return bytes(out)

    assert asyncio.run(go()) == b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"

    async def bad() -> None:
        buf = StreamBuffer()
        buf.feed(b"zz\r\n")

        async def sink(d: bytes) -> None:
            pass

        await http1.relay_body(buf, http1.Framing("chunked"), sink)

    with pytest.raises(http1.HttpError):
        asyncio.run(bad())


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
