"""ICN frames on the wire: the one definition the NAP agents (and tests) obey (ARCHITECTURE section 4).

Layout, all integers big-endian (network byte order)::

    Ethernet (14)   dst MAC (6, broadcast) | src MAC (6) | ethertype 0x86DD
    IPv6-shaped(40) word0 = version 6 << 28 | flow label (= LID table, 20 bits) | payload length (u16, ICN
                    header + payload) | next header 253 (experimental) | hop limit (loop guard) |
                    source address = FID bits 0..127 | destination address = FID bits 128..255 (icn/fid.py)
    ICN header (68) version u8 (=1) | type u8 | flags u16 | CID (8) | rCID (8) | session u64 | sequence u32 |
                    reply LID table u16 | payload length u16 | reply FID (32, fid.to_bytes)
    payload         up to the fabric MTU minus 108 bytes (IPv6-shaped + ICN headers)

The reply FID is the path from the receiver back to the sender (the PCE's reverse FID); a server NAP answers and
acknowledges on it, so a client NAP that got a new route after a link failure steers the server with its next frame.

Streams (nap_agent/transport.py): a client NAP opens session S with an "up" stream (HTTP_REQUEST or TUNNEL_UP frames);
the server NAP answers with a "down" stream (HTTP_RESPONSE or TUNNEL_DOWN) whose session is a group id G. Sequence 0 of
every down stream starts with the member list (u16 count, count x u64 session ids) of the up sessions it answers: one
member for a unicast answer, several for coincidental multicast. ACK frames (payload: :class:`AckInfo`) acknowledge
cumulatively and list missing sequence numbers (NACK); flag DOWN says the ACK is for a down stream.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from flame_control.icn import fid as fidlib

ETHERTYPE = 0x86DD
NEXT_HEADER = 253
VERSION = 1
ETH_LEN = 14
IPV6_LEN = 40
ICN_LEN = 68
HEADERS = ETH_LEN + IPV6_LEN + ICN_LEN
#: The IPv6-shaped and ICN headers that count against the fabric MTU (Ethernet does not).
MTU_OVERHEAD = IPV6_LEN + ICN_LEN
DEFAULT_HOP_LIMIT = 64
BROADCAST = b"\xff" * 6

_IPV6 = struct.Struct("!IHBB16s16s")
_ICN = struct.Struct("!BBH8s8sQIHH32s")
_ETH_TYPE = struct.Struct("!H")
_ACK = struct.Struct("!QIIH")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_U16 = struct.Struct("!H")
MAX_NACKS = 256
MAX_MEMBERS = 4096


class FrameType(IntEnum):
    """What a frame carries."""

    HTTP_REQUEST = 1
    HTTP_RESPONSE = 2
    IP = 3
    ACK = 4
    RESET = 5
    TUNNEL_UP = 6
    TUNNEL_DOWN = 7


class Flags(IntFlag):
    """Frame flags."""

    NONE = 0
    #: Last segment of a stream.
    FIN = 0x1
    #: On ACK/RESET: about the down stream (server -> client) rather than the up stream.
    DOWN = 0x2
    #: On the FIN of a response: the response was delimited by closing; the client NAP closes the client connection.
    CLOSE = 0x4


UP_TYPES = frozenset({FrameType.HTTP_REQUEST, FrameType.TUNNEL_UP})
DOWN_TYPES = frozenset({FrameType.HTTP_RESPONSE, FrameType.TUNNEL_DOWN})


class FrameError(ValueError):
    """Not a well-formed ICN frame (garbage, truncated, wrong version or lengths)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame."""

    fid: int
    label: int
    type: FrameType
    flags: Flags
    cid: bytes
    rcid: bytes
    session: int
    seq: int
    reply_fid: int
    reply_label: int
    payload: bytes
    hop_limit: int = DEFAULT_HOP_LIMIT


def encode(
    fid: int,
    label: int,
    ftype: FrameType,
    flags: int,
    cid: bytes,
    rcid: bytes,
    session: int,
    seq: int,
    reply_fid: int,
    reply_label: int,
    payload: bytes,
    src_mac: bytes = b"\x00" * 6,
    hop_limit: int = DEFAULT_HOP_LIMIT,
) -> bytes:
    """One frame as bytes (raises ValueError for out-of-range fields)."""
    if len(payload) > 0xFFFF - ICN_LEN:
        raise ValueError(f"payload of {len(payload)} bytes does not fit one frame")
    if len(cid) != 8 or len(rcid) != 8:
        raise ValueError("CID and rCID are 8 bytes")
    src, dst = fidlib.to_addresses(fid)
    ipv6 = _IPV6.pack((6 << 28) | (label & 0xFFFFF), ICN_LEN + len(payload), NEXT_HEADER, hop_limit, src, dst)
    icn = _ICN.pack(
        VERSION, ftype, flags, cid, rcid, session, seq, reply_label, len(payload), fidlib.to_bytes(reply_fid)
    )
    return BROADCAST + src_mac + b"\x86\xdd" + ipv6 + icn + payload


def decode(data: bytes) -> Frame:
    """Parse one frame; raises :class:`FrameError` for anything that is not a well-formed ICN frame."""
    if len(data) < HEADERS:
        raise FrameError(f"truncated: {len(data)} bytes, headers alone are {HEADERS}")
    if _ETH_TYPE.unpack_from(data, 12)[0] != ETHERTYPE:
        raise FrameError("not an ICN frame (ethertype)")
    word0, plen, nh, hops, src, dst = _IPV6.unpack_from(data, ETH_LEN)
    if word0 >> 28 != 6 or nh != NEXT_HEADER:
        raise FrameError("not an ICN frame (version/next header)")
    version, ftype, flags, cid, rcid, session, seq, rlabel, length, rfid = _ICN.unpack_from(data, ETH_LEN + IPV6_LEN)
    if version != VERSION:
        raise FrameError(f"unsupported ICN version {version}")
    if plen != ICN_LEN + length or len(data) < HEADERS + length:
        raise FrameError("length fields disagree with the frame size")
    try:
        kind = FrameType(ftype)
    except ValueError:
        raise FrameError(f"unknown frame type {ftype}") from None
    return Frame(
        fid=fidlib.from_addresses(src, dst),
        label=word0 & 0xFFFFF,
        type=kind,
        flags=Flags(flags & 0x7),
        cid=cid,
        rcid=rcid,
        session=session,
        seq=seq,
        reply_fid=fidlib.from_bytes(rfid),
        reply_label=rlabel,
        payload=data[HEADERS : HEADERS + length],
        hop_limit=hops,
    )


def peek_fid(data: bytes) -> tuple[int, int] | None:
    """(FID, LID table) of a frame without decoding the rest, or None when it is not an ICN frame (fast filter)."""
    if len(data) < HEADERS or data[12] != 0x86 or data[13] != 0xDD or data[20] != NEXT_HEADER:
        return None
    label = _U32.unpack_from(data, ETH_LEN)[0] & 0xFFFFF
    return fidlib.from_addresses(data[22:38], data[38:54]), label


def accepts(fid: int, ilid: int) -> bool:
    """A NAP accepts a frame when ``FID & iLID == iLID`` (and its iLID is known)."""
    return ilid != 0 and fid & ilid == ilid


@dataclass(frozen=True, slots=True)
class AckInfo:
    """Payload of an ACK frame: which member acknowledges, next expected sequence, receive window, missing ones."""

    member: int
    cumulative: int
    window: int
    missing: tuple[int, ...] = ()


def encode_ack(info: AckInfo) -> bytes:
    """ACK payload bytes (at most :data:`MAX_NACKS` missing sequence numbers are carried)."""
    missing = info.missing[:MAX_NACKS]
    return _ACK.pack(info.member, info.cumulative, info.window, len(missing)) + b"".join(_U32.pack(m) for m in missing)


def decode_ack(payload: bytes) -> AckInfo:
    """Parse an ACK payload; raises :class:`FrameError`."""
    if len(payload) < _ACK.size:
        raise FrameError("truncated ACK")
    member, cum, window, count = _ACK.unpack_from(payload)
    if count > MAX_NACKS or len(payload) < _ACK.size + 4 * count:
        raise FrameError("ACK missing-list length is wrong")
    missing = tuple(_U32.unpack_from(payload, _ACK.size + 4 * i)[0] for i in range(count))
    return AckInfo(member, cum, window, missing)


def encode_members(members: list[int]) -> bytes:
    """Member-list prefix of sequence 0 of a down stream."""
    if not 0 < len(members) <= MAX_MEMBERS:
        raise ValueError("a down stream answers 1..4096 members")
    return _U16.pack(len(members)) + b"".join(_U64.pack(m) for m in members)


def decode_members(payload: bytes) -> tuple[list[int], bytes]:
    """(members, rest of the payload) of sequence 0 of a down stream; raises :class:`FrameError`."""
    if len(payload) < 2:
        raise FrameError("truncated member list")
    (count,) = _U16.unpack_from(payload)
    end = 2 + 8 * count
    if count == 0 or count > MAX_MEMBERS or len(payload) < end:
        raise FrameError("bad member list")
    return [_U64.unpack_from(payload, 2 + 8 * i)[0] for i in range(count)], payload[end:]


def max_payload(mtu: int) -> int:
    """Payload bytes per frame for a fabric MTU (IPv6-shaped packet size, as on an interface)."""
    if mtu < MTU_OVERHEAD + 64:
        raise ValueError(f"fabric MTU {mtu} is too small (minimum {MTU_OVERHEAD + 64})")
    return min(mtu, 0xFFFF) - MTU_OVERHEAD
