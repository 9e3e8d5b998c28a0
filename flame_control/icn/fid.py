"""256-bit link identifiers (LIDs) and forwarding identifiers (FIDs): representation and wire layout.

This is the one definition both the PCE and the NAP obey (ARCHITECTURE section 4).

Representation: a LID or FID is a Python ``int`` in ``[0, 2**256)``; bit *i* is ``1 << i``.

Wire layout (inside the IPv6-shaped fabric header): the **source** address carries FID bits 0..127 and the
**destination** address bits 128..255. Each address is the 128-bit half written big-endian, so bit 0 of the FID is the
least-significant bit of the last byte of the source address, and bit 128 is the least-significant bit of the last
byte of the destination address. An OpenFlow match ``ipv6_src=(lo(LID), lo(LID)), ipv6_dst=(hi(LID), hi(LID))``
therefore tests ``FID & LID == LID``.
"""

from __future__ import annotations

from collections.abc import Iterable

BITS = 256
HALF = 128
MASK_256 = (1 << BITS) - 1
MASK_128 = (1 << HALF) - 1


def check(value: int) -> int:
    """Return ``value`` if it fits in 256 bits, else raise ValueError."""
    if not 0 <= value <= MASK_256:
        raise ValueError(f"LID/FID must be a 256-bit unsigned value, got {value.bit_length()} bits")
    return value


def combine(ids: Iterable[int]) -> int:
    """OR of LIDs/FIDs (a path FID is the OR of its links' LIDs and the destination iLID)."""
    out = 0
    for i in ids:
        out |= check(i)
    return out


def delivers(fid: int, lid: int) -> bool:
    """True when a frame with ``fid`` goes out of the link/port identified by ``lid`` (``FID & LID == LID``)."""
    return lid != 0 and fid & lid == lid


def split(fid: int) -> tuple[int, int]:
    """(low 128 bits, high 128 bits) as ints: the IPv6 source and destination address values."""
    check(fid)
    return fid & MASK_128, fid >> HALF


def join(low: int, high: int) -> int:
    """Inverse of :func:`split`."""
    if not (0 <= low <= MASK_128 and 0 <= high <= MASK_128):
        raise ValueError("each half must fit in 128 bits")
    return (high << HALF) | low


def to_addresses(fid: int) -> tuple[bytes, bytes]:
    """(source address bytes, destination address bytes), 16 bytes each, big-endian."""
    low, high = split(fid)
    return low.to_bytes(16, "big"), high.to_bytes(16, "big")


def from_addresses(src: bytes, dst: bytes) -> int:
    """Inverse of :func:`to_addresses`."""
    if len(src) != 16 or len(dst) != 16:
        raise ValueError("IPv6 addresses are 16 bytes")
    return join(int.from_bytes(src, "big"), int.from_bytes(dst, "big"))


def to_bytes(value: int) -> bytes:
    """32-byte big-endian form used in protobuf ``bytes`` fields (bit 0 in the last byte)."""
    return check(value).to_bytes(32, "big")


def from_bytes(data: bytes) -> int:
    """Inverse of :func:`to_bytes`; accepts exactly 32 bytes."""
    if len(data) != 32:
        raise ValueError(f"a LID/FID is 32 bytes on the wire, got {len(data)}")
    return int.from_bytes(data, "big")
