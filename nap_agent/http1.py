"""HTTP/1.1 message framing for the NAP (RFC 9112): heads, body lengths, chunked relay, error responses.

Both sides of the NAP use it: the client NAP reads requests from clients, the server NAP reads responses from its local
endpoints. Bodies are relayed as raw bytes (chunk framing included), never re-encoded, so what the server sent is what
the client gets, byte for byte.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

MAX_HEAD = 64 * 1024
MAX_HEADERS = 200
MAX_CHUNK_LINE = 4096
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$")


class Reader(Protocol):
    """What both asyncio.StreamReader and the transport's StreamBuffer offer."""

    async def readuntil(self, separator: bytes = ..., /) -> bytes: ...

    async def readexactly(self, n: int, /) -> bytes: ...

    async def read(self, n: int = ..., /) -> bytes: ...


class HttpError(Exception):
    """A request or response that cannot be handled; ``status`` is what the client gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Head:
    """A parsed request or response head."""

    first: tuple[str, str, str]
    headers: list[tuple[str, str]]
    raw: bytes

    def get(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def method(self) -> str:
        return self.first[0]

    @property
    def target(self) -> str:
        return self.first[1]

    @property
    def status(self) -> int:
        return int(self.first[1])


async def read_head(reader: Reader, request: bool) -> Head | None:
    """The next head, or None on a clean end of stream before any byte; raises :class:`HttpError`."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise HttpError(400, "connection closed inside the message head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, f"message head larger than {MAX_HEAD} bytes") from None
    if len(raw) > MAX_HEAD:
        raise HttpError(431, f"message head larger than {MAX_HEAD} bytes")
    return parse_head(raw.lstrip(b"\r\n"), request)


def parse_head(raw: bytes, request: bool) -> Head:
    """Parse a head ending in CRLF CRLF; raises :class:`HttpError` (400) for malformed ones."""
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) != 3:
        raise HttpError(400, "malformed start line")
    try:
        first = tuple(p.decode("ascii") for p in parts)
    except UnicodeDecodeError:
        raise HttpError(400, "start line is not ASCII") from None
    if request and (not _TOKEN.match(parts[0]) or not first[2].startswith("HTTP/1.")):
        raise HttpError(400, "malformed request line")
    if not request and (not first[0].startswith("HTTP/1.") or not first[1].isdigit() or len(first[1]) != 3):
        raise HttpError(502, "malformed status line from the endpoint")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header fields")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise HttpError(400 if request else 502, "malformed header field")
        headers.append((name.decode("ascii"), value.strip().decode("latin-1")))
    return Head((first[0], first[1], first[2]), headers, raw)


@dataclass(frozen=True)
class Framing:
    """How a body is delimited: ``length`` bytes, ``chunked``, until ``close``, or none."""

    kind: str
    length: int = 0


NO_BODY = Framing("none")


def body_framing(head: Head, request: bool, request_method: str = "GET") -> Framing:
    """RFC 9112 section 6.3 for requests and responses."""
    if not request:
        status = head.status
        if request_method == "HEAD" or 100 <= status < 200 or status in (204, 304):
            return NO_BODY
    te = ",".join(head.values("transfer-encoding")).lower()
    if te:
        if te.replace(" ", "").split(",")[-1] != "chunked":
            if request:
                raise HttpError(400, "unsupported transfer-encoding")
            return Framing("close")
        if head.get("content-length") is not None and request:
            raise HttpError(400, "both transfer-encoding and content-length")
        return Framing("chunked")
    lengths = {v.strip() for v in ",".join(head.values("content-length")).split(",") if v.strip()}
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise HttpError(400 if request else 502, "invalid content-length")
        return Framing("length", int(next(iter(lengths))))
    return NO_BODY if request else Framing("close")


Sink = Callable[[bytes], Awaitable[None]]


async def relay_body(reader: Reader, framing: Framing, sink: Sink, max_bytes: int | None = None) -> int:
    """Copy a body (raw, chunk framing included) from ``reader`` to ``sink``; returns bytes copied. Raises
    :class:`HttpError` on malformed chunking, :class:`asyncio.IncompleteReadError` when the peer closes early."""
    total = 0
    if framing.kind == "length":
        left = framing.length
        while left:
            data = await reader.read(min(left, 1 << 18))
            if not data:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(data)
            total += len(data)
            await sink(data)
    elif framing.kind == "close":
        while data := await reader.read(1 << 18):
            total += len(data)
            await sink(data)
    elif framing.kind == "chunked":
        while True:
            line = await reader.readuntil(b"\r\n")
            if len(line) > MAX_CHUNK_LINE:
                raise HttpError(400, "chunk size line too long")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpError(400, "malformed chunk size") from None
            await sink(line)
            total += len(line)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = await reader.readuntil(b"\r\n")
                    await sink(trailer)
                    total += len(trailer)
                    if trailer == b"\r\n":
                        return total
            left = size + 2
            while left:
                data = await reader.read(min(left, 1 << 18))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(data)
                total += len(data)
                await sink(data)
            if max_bytes is not None and total > max_bytes:
                raise HttpError(413, "body too large")
    if max_bytes is not None and total > max_bytes:
        raise HttpError(413, "body too large")
    return total


def request_destination(head: Head) -> tuple[str, str]:
    """(FQDN, origin-form target) from an origin-form request with Host or an absolute-form (explicit proxy) one."""
    target = head.target
    if target.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        authority, slash, path = rest.partition("/")
        host, target = authority, "/" + path if slash else "/"
    else:
        host = head.get("host") or ""
        if not target.startswith("/") and target != "*":
            raise HttpError(400, "request target must be origin-form or absolute-form")
    fqdn = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    fqdn = fqdn.strip().rstrip(".").lower()
    if not fqdn or not _HOST.match(fqdn):
        raise HttpError(400, "missing or invalid Host")
    return fqdn, target


def forwarded_head(head: Head, target: str) -> bytes:
    """The request head as the server NAP replays it: origin-form target, no proxy-only fields."""
    lines = [f"{head.method} {target} {head.first[2]}"]
    lines += [f"{k}: {v}" for k, v in head.headers if k.lower() not in ("proxy-connection", "proxy-authorization")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def wants_close(head: Head) -> bool:
    """The message asks to close the connection after it (or is HTTP/1.0 without keep-alive)."""
    tokens = {t.strip().lower() for v in head.values("connection") for t in v.split(",")}
    if head.first[2] == "HTTP/1.0" or head.first[0] == "HTTP/1.0":
        return "keep-alive" not in tokens
    return "close" in tokens


REASONS = {
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def error_response(status: int, message: str, close: bool = False) -> bytes:
    """A small text/plain response generated by the NAP (``X-Flame-Nap-Error`` says it was the NAP)."""
    body = f"{status} {REASONS.get(status, 'Error')}: {message}\n".encode()
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nX-Flame-Nap-Error: 1\r\n"
    )
    if close:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode() + body
