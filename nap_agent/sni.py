"""Server Name Indication from a TLS ClientHello (RFC 8446 4.1.2, RFC 6066 3), so the NAP routes HTTPS by name without
holding keys (SFR-19). Pure: bytes in, name or a reason out."""

from __future__ import annotations

import struct

#: A ClientHello larger than this is refused (hostile sizes); real ones are a few hundred bytes to ~16 KiB.
MAX_HELLO = 64 * 1024


class SniError(ValueError):
    """Not a TLS ClientHello with a server name."""


def record_length(head: bytes) -> int:
    """Length of the first TLS record from its 5-byte header; raises :class:`SniError` when it is not a handshake."""
    if len(head) < 5 or head[0] != 0x16 or head[1] != 0x03:
        raise SniError("not a TLS handshake record")
    return int.from_bytes(head[3:5], "big")


def server_name(record: bytes) -> str:
    """The host name in the ClientHello carried by ``record`` (one whole TLS record, header included)."""
    if len(record) > MAX_HELLO:
        raise SniError("ClientHello too large")
    length = record_length(record)
    body = record[5 : 5 + length]
    if len(body) < length or not body or body[0] != 0x01:
        raise SniError("not a complete ClientHello")
    pos = 4 + 2 + 32  # handshake header, legacy version, random
    try:
        pos += 1 + body[pos]  # session id
        (n,) = struct.unpack_from("!H", body, pos)
        pos += 2 + n  # cipher suites
        pos += 1 + body[pos]  # compression methods
        (ext_total,) = struct.unpack_from("!H", body, pos)
        pos += 2
        end = pos + ext_total
        while pos + 4 <= end:
            ext_type, ext_len = struct.unpack_from("!HH", body, pos)
            pos += 4
            if ext_type == 0:  # server_name
                (list_len,) = struct.unpack_from("!H", body, pos)
                p = pos + 2
                while p + 3 <= pos + 2 + list_len:
                    kind, name_len = struct.unpack_from("!BH", body, p)
                    if kind == 0:
                        name = body[p + 3 : p + 3 + name_len].decode("ascii")
                        if not name or len(name) > 253:
                            raise SniError("bad server name")
                        return name.lower().rstrip(".")
                    p += 3 + name_len
            pos += ext_len
    except (struct.error, IndexError, UnicodeDecodeError):
        raise SniError("malformed ClientHello") from None
    raise SniError("ClientHello carries no server name")
