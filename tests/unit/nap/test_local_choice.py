"""Where a NAP sends what its own users ask for (SFR-1, SFR-14, SFR-19, SFR-2): an FQDN the NAP fronts goes to its
local endpoint (cost 0, never over the fabric to itself), anything else to the best *other* server NAP; a route naming
the NAP itself is skipped; the IP prefixes a NAP owns win the longest-prefix match and never leave on the fabric. The
server side's replay, which the local path shares, maps a dead endpoint to 502 and a silent one to 504."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from flame_control.api.flame.pce.v1 import nap_session_pb2
from flame_control.icn import fid as fidlib
from nap_agent import http1
from nap_agent.client_side import ClientSettings, ClientSide
from nap_agent.dataplane import DataPlane
from nap_agent.ip_over_icn import IpOverIcn, prefix_name
from nap_agent.routes import Route, RouteTable
from nap_agent.server_side import ServerSettings, ServerSide
from nap_agent.transport import TransportSettings

ME = "nap-edge-a1"
VOD = "vod.video.flame.example"
LIVE = "live.video.flame.example"


def table(routes: dict[str, list[tuple[str, float]]]) -> RouteTable:
    snap = nap_session_pb2.Snapshot(version=1, ilid=fidlib.to_bytes(1))
    for fqdn, servers in routes.items():
        route = snap.routes.add(fqdn=fqdn)
        for i, (nap, cost) in enumerate(servers):
            route.servers.add(
                server_nap_id=nap, fid=fidlib.to_bytes(2 << i), reverse_fid=fidlib.to_bytes(4 << i), cost=cost
            )
    return RouteTable.from_snapshot(snap)


def sides(local: dict[str, tuple[tuple[str, int] | None, tuple[str, int] | None]]) -> tuple[DataPlane, ClientSide]:
    dp = DataPlane(ME, lambda frame: None, TransportSettings())

    def endpoint(fqdn: str, tls: bool) -> tuple[str, int] | None:
        pair = local.get(fqdn)
        return None if pair is None else pair[1 if tls else 0]

    server = ServerSide(dp, endpoint, ServerSettings())
    return dp, ClientSide(dp, ClientSettings(), local=server)


def test_best_route_never_names_the_nap_itself() -> None:
    t = table({VOD: [(ME, 0.0), ("nap-dc", 3.0)], LIVE: [(ME, 0.0)]})
    assert t.best(VOD) is not None and t.best(VOD).server_nap_id == ME  # type: ignore[union-attr]
    assert t.best(VOD, exclude=ME).server_nap_id == "nap-dc"  # type: ignore[union-attr]
    assert t.best(LIVE, exclude=ME) is None
    assert t.best("nobody.flame.example", exclude=ME) is None


def test_sfr1_sfr19_a_local_fqdn_goes_to_the_local_endpoint_else_to_another_nap() -> None:
    dp, client = sides({VOD: (("127.0.0.1", 9000), None)})
    dp.routes = table({VOD: [("nap-dc", 3.0)], LIVE: [(ME, 0.0), ("nap-edge-a2", 2.0)]})
    # HTTP for a name the NAP fronts: its endpoint (names normalised like Host headers), whatever the PCE lists
    assert client.choose(VOD) == ("127.0.0.1", 9000)
    assert client.choose("VOD.Video.Flame.Example.") == ("127.0.0.1", 9000)
    # TLS for it, but no tls_endpoint here: the best other server NAP (which may have one)
    tls = client.choose(VOD, tls=True)
    assert isinstance(tls, Route) and tls.server_nap_id == "nap-dc"
    # a route naming this NAP for a name it no longer fronts (the PCE's push not here yet): the next best NAP
    live = client.choose(LIVE)
    assert isinstance(live, Route) and live.server_nap_id == "nap-edge-a2"
    assert client.choose("nobody.flame.example") is None


def test_sfr14_the_choice_follows_registration_at_once() -> None:
    local: dict[str, tuple[tuple[str, int] | None, tuple[str, int] | None]] = {}
    dp, client = sides(local)
    dp.routes = table({VOD: [("nap-dc", 3.0)]})
    first = client.choose(VOD)
    assert isinstance(first, Route) and first.server_nap_id == "nap-dc"
    local[VOD] = (("127.0.0.1", 9000), ("127.0.0.1", 9443))
    assert client.choose(VOD) == ("127.0.0.1", 9000) and client.choose(VOD, tls=True) == ("127.0.0.1", 9443)
    del local[VOD]
    again = client.choose(VOD)
    assert isinstance(again, Route) and again.server_nap_id == "nap-dc"


def test_sfr2_own_prefixes_win_the_longest_prefix_match_and_stay_off_the_fabric() -> None:
    sent: list[bytes] = []
    ip = IpOverIcn(ME, ["10.1.0.0/24"], sent.append, lambda p: None, lambda: 1392, lambda: b"\0" * 6)
    ip.set_routes(
        table(
            {
                prefix_name("10.0.0.0/8"): [("nap-wide", 4.0)],
                prefix_name("10.1.0.128/25"): [("nap-narrow", 2.0)],
                prefix_name("10.1.0.0/24"): [(ME, 0.0)],  # a route naming the NAP itself is never used
            }
        )
    )
    assert [str(net) for net, _ in ip.table.entries] == ["10.1.0.128/25", "10.0.0.0/8"]

    def packet(dst: str) -> bytes:
        head = bytes.fromhex("4500001c000000004001" + "0000" + "0a010001")
        return head + ipaddress.IPv4Address(dst).packed + b"\0" * 8

    ip.from_tun(packet("10.1.0.5"))  # ours (/24 beats the remote /8): local, not sent, not looped into the TUN
    assert (ip.counters.own_prefix, ip.counters.packets_out, len(sent)) == (1, 0, 0)
    ip.from_tun(packet("10.1.0.200"))  # a remote /25 inside our /24 is longer: it goes to its owner
    ip.from_tun(packet("10.7.0.1"))  # only the remote /8 covers it
    assert (ip.counters.own_prefix, ip.counters.packets_out, len(sent)) == (1, 2, 2)
    ip.from_tun(packet("192.168.0.1"))
    assert ip.counters.no_route == 1


def test_replay_maps_a_dead_endpoint_to_502_and_a_silent_one_to_504() -> None:
    async def scenario() -> None:
        dp = DataPlane(ME, lambda frame: None, TransportSettings())
        server = ServerSide(dp, lambda fqdn, tls: None, ServerSettings(connect_timeout_s=1.0, response_timeout_s=0.2))
        request = b"GET /x HTTP/1.1\r\nHost: " + VOD.encode() + b"\r\n\r\n"
        started: list[http1.Head] = []

        class Out:
            async def informational(self, raw: bytes) -> None:
                pass

            async def start(self, head: http1.Head, raw: bytes) -> None:
                started.append(head)

            async def data(self, data: bytes) -> None:
                pass

        async def replay(endpoint: tuple[str, int]) -> None:
            body = asyncio.StreamReader()
            body.feed_data(request)
            body.feed_eof()
            incoming = http1.Incoming(body, http1.Parser(request=True))
            head = await incoming.next()
            assert isinstance(head, http1.Head)
            raw = http1.request_head(head, "/x", VOD)
            await server.pool.exchange(endpoint, raw, head, incoming, Out(), 0.2, 1.0)

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            dead = probe.getsockname()
        with pytest.raises(http1.HttpError) as err:
            await replay(dead)
        assert err.value.status == 502 and "local endpoint" in err.value.message
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        try:
            with pytest.raises(http1.HttpError) as err:
                await replay(silent.sockets[0].getsockname()[:2])
            assert err.value.status == 504
        finally:
            silent.close()
        assert started == [] and server.upstream_errors == 2 and server.pool.idle == {}

    asyncio.run(scenario())
