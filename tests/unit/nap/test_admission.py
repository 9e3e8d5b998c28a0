"""Issue 12 item 5 at the server NAP's core: the admission of server exchanges (nap_agent/admission.py) and the data
plane's checks before any allocation (nap_agent/dataplane.py), with real frames and no sockets. Before: every first
frame allocated an exchange until ``max_server_exchanges`` (then everyone got 502), whatever its reply path."""

from __future__ import annotations

import asyncio

from flame_control.icn import cid as cidlib
from flame_control.icn import frame as fr
from nap_agent.admission import Admission, Limits
from nap_agent.dataplane import DataPlane
from nap_agent.routes import RouteTable
from nap_agent.transport import TransportSettings

VOD = "vod.video.flame.example"
ILID = 1 << 200


def test_a_full_source_evicts_its_own_oldest_never_started_first() -> None:
    a = Admission(Limits(max_server_exchanges=100, max_exchanges_per_source=3, max_unverified_active=2))
    flood, real = (1, 0), (2, 0)
    assert [a.add(s, flood, 0.0) for s in (10, 11, 12)] == [True, True, False]  # 12 waits: 2 unverified active
    assert a.make_room(flood) == [12]  # its own never-started one goes first
    assert a.make_room(real) == []  # another source is not touched


def test_a_full_table_evicts_unverified_never_verified_or_trusted() -> None:
    a = Admission(Limits(max_server_exchanges=3, max_exchanges_per_source=10, max_unverified_active=10))
    real, flood = (2, 0), (1, 0)
    a.add(1, real, 0.0)
    assert a.verify(1, 0.1) == []  # verified: trusted source from now on
    a.add(2, real, 0.2)  # trusted: never counted as unverified
    a.add(3, flood, 0.3)
    assert a.make_room((3, 0)) == [3]
    a.remove(3, 0.4)
    a.add(4, real, 0.5)
    assert a.make_room(flood) is None  # only verified/trusted exchanges left: the newcomer is refused


def test_unverified_origin_work_is_bounded_and_waiting_ones_start_when_a_slot_frees() -> None:
    a = Admission(Limits(max_unverified_active=2))
    started = [a.add(s, (s, 0), 0.0) for s in range(5)]
    assert started == [True, True, False, False, False]
    assert a.remove(0, 1.0) == [2]  # a slot freed: the oldest waiting one starts
    assert a.verify(1, 1.0) == [3]  # verified ones leave the unverified slots too


def test_trust_expires() -> None:
    a = Admission(Limits(trust_s=10.0))
    a.add(1, (5, 0), 0.0)
    a.verify(1, 0.0)
    assert a.is_trusted((5, 0), 9.0) and not a.is_trusted((5, 0), 11.0)


def test_frames_without_a_way_back_are_dropped_before_any_allocation() -> None:
    async def go() -> None:
        sent: list[bytes] = []
        dp = DataPlane("nap-dc", sent.append, TransportSettings())
        dp.set_routes(RouteTable(1, (ILID,), {}, frozenset({VOD}), {cidlib.http_cid(VOD): VOD}))
        started: list[int] = []
        dp.on_server_exchange = lambda sx: started.append(sx.session)
        head = b"GET / HTTP/1.1\r\nHost: " + VOD.encode() + b"\r\n\r\n"
        cid, rcid = cidlib.http_cid(VOD), cidlib.response_cid(VOD, "GET", "/")
        for reply in (0, ILID, ILID | 0xFF):  # no reply path, or one that leads back to this NAP itself
            frame = fr.encode(ILID, 0, fr.FrameType.HTTP_REQUEST, fr.Flags.FIN, cid, rcid, 7, 0, reply, 0, head)
            dp.on_frame(frame)
        assert dp.counters.frames_invalid_path == 3
        assert not dp.server and not started and not sent
        good = fr.encode(ILID, 0, fr.FrameType.HTTP_REQUEST, fr.Flags.FIN, cid, rcid, 8, 0, 1 << 3, 0, head)
        dp.on_frame(good)
        assert started == [8]

    asyncio.run(go())
