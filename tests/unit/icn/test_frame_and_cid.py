"""ICN frame layout and content identifiers (ARCHITECTURE section 4): byte-exact vectors written out by hand from the
documented layout, round trips, and garbage of every kind raising FrameError and nothing else."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flame_control.icn import cid, frame

FID = (0xAB << 248) | (0x01 << 128) | 0x02  # bit patterns in both halves


def test_http_request_frame_vector_is_byte_exact() -> None:
    data = frame.encode(
        FID, 3, frame.FrameType.HTTP_REQUEST, frame.Flags.FIN, bytes.fromhex("0102030405060708"),
        bytes.fromhex("1112131415161718"), 0x0102030405060708, 5, 0x99, 2, b"GET", b"\xaa\xbb\xcc\xdd\xee\xff",
    )  # fmt: skip
    eth = "ffffffffffff" + "aabbccddeeff" + "86dd"  # broadcast, source MAC, ethertype
    ipv6 = "60000003" + "0047" + "fd" + "40"  # version 6 | flow label 3 (LID table); 68+3 bytes; next header 253; hops
    src = "00" * 15 + "02"  # FID bits 0..127 (bit 1 set)
    dst = "ab" + "00" * 14 + "01"  # FID bits 128..255 (bit 128, and 0xab in bits 248..255)
    expected = bytes.fromhex(eth + ipv6 + src + dst)
    expected += (
        bytes.fromhex(
            "01"
            "01"
            "0001"  # ICN version 1, type HTTP_REQUEST, flags FIN
            "0102030405060708"
            "1112131415161718"  # CID, rCID
            "0102030405060708"
            "00000005"  # session, sequence
            "0002"
            "0003"  # reply LID table, payload length
        )
        + (0x99).to_bytes(32, "big")
        + b"GET"
    )
    assert data == expected
    assert len(data) == frame.HEADERS + 3
    f = frame.decode(data)
    assert (f.fid, f.label, f.type, f.flags, f.session, f.seq, f.reply_fid, f.reply_label, f.payload) == (
        FID, 3, frame.FrameType.HTTP_REQUEST, frame.Flags.FIN, 0x0102030405060708, 5, 0x99, 2, b"GET",
    )  # fmt: skip


def test_ack_payload_vector() -> None:
    data = frame.encode_ack(frame.AckInfo(member=7, cumulative=9, window=64, missing=(10, 12)))
    assert data == bytes.fromhex("0000000000000007000000090000004000020000000a0000000c")
    assert frame.decode_ack(data) == frame.AckInfo(7, 9, 64, (10, 12))


def test_member_list_vector() -> None:
    data = frame.encode_members([1, 2]) + b"body"
    assert data == bytes.fromhex("000200000000000000010000000000000002") + b"body"
    assert frame.decode_members(data) == ([1, 2], b"body")


@settings(max_examples=60, deadline=None)
@given(
    fid=st.integers(0, (1 << 256) - 1),
    label=st.integers(0, 255),
    kind=st.sampled_from(list(frame.FrameType)),
    session=st.integers(0, (1 << 64) - 1),
    seq=st.integers(0, (1 << 32) - 1),
    payload=st.binary(max_size=2000),
)
def test_round_trip(fid: int, label: int, kind: frame.FrameType, session: int, seq: int, payload: bytes) -> None:
    data = frame.encode(fid, label, kind, 0, b"c" * 8, b"r" * 8, session, seq, fid ^ 1, label, payload)
    f = frame.decode(data)
    assert (f.fid, f.label, f.type, f.session, f.seq, f.reply_fid, f.payload) == (
        fid, label, kind, session, seq, fid ^ 1, payload,
    )  # fmt: skip
    assert frame.peek_fid(data) == (fid, label)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_raises_frame_error_only(data: bytes) -> None:
    with contextlib.suppress(frame.FrameError):
        frame.decode(data)
    for parse in (frame.decode_ack, frame.decode_members):
        with contextlib.suppress(frame.FrameError):
            parse(data)


def test_truncated_and_lying_frames() -> None:
    good = frame.encode(FID, 0, frame.FrameType.ACK, 0, b"c" * 8, b"r" * 8, 1, 0, 0, 0, b"x" * 40)
    for n in range(len(good)):
        with pytest.raises(frame.FrameError):
            frame.decode(good[:n])
    lying = bytearray(good)
    lying[18:20] = (9000).to_bytes(2, "big")
    with pytest.raises(frame.FrameError):
        frame.decode(bytes(lying))
    unknown = bytearray(good)
    unknown[frame.ETH_LEN + frame.IPV6_LEN + 1] = 200
    with pytest.raises(frame.FrameError):
        frame.decode(bytes(unknown))
    with pytest.raises(frame.FrameError):
        frame.decode_members((5000).to_bytes(2, "big") + b"\0" * 8)
    with pytest.raises(frame.FrameError):
        frame.decode_ack(bytes(16) + (300).to_bytes(2, "big"))  # more NACKs than allowed


def test_cids_normalise_and_namespace() -> None:
    assert cid.http_cid("VOD.Video.Flame.Example.") == cid.http_cid("vod.video.flame.example")
    expected = hashlib.blake2b(b"vod.video.flame.example", digest_size=7, person=b"flame-cid-v1").digest()
    assert cid.http_cid("vod.video.flame.example") == b"\x01" + expected
    assert cid.response_cid("a.example", "get", "/x")[0] == cid.NS_RESPONSE
    assert cid.response_cid("a.example", "GET", "/x") != cid.response_cid("a.example", "GET", "/y")
    assert cid.ip_cid("10.1.2.3/24") == bytes([3, 24, 0, 0, 10, 1, 2, 0])
