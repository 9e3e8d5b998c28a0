"""HTTP/1.1 for the NAP (RFC 9112) on llhttp, Node.js's parser, through ``httptools``: bytes in, events out.

Nothing here parses bytes by hand. :class:`Parser` feeds what a peer sent to llhttp in its strict mode, which refuses
ambiguous framing (Content-Length with Transfer-Encoding, chunk sizes such as ``0x5``, ``+5`` or ``0_5``, a
Content-Length that is not digits, obs-fold, bare LF) and hands back :class:`Head`, :class:`Body`, :data:`END` and
:class:`Upgrade` events: 1xx responses are heads of their own followed by the final one, an accepted Upgrade or CONNECT
ends HTTP on the connection and gives the bytes after it. The proxy forwards only what the parser validated: heads are
written anew from the parsed fields (:func:`request_head`, :func:`response_head`) without hop-by-hop fields, bodies
from the decoded body events (:func:`encode_body`), so a byte llhttp did not accept never leaves the NAP.

The measurement behind the choice of llhttp over h11 is in docs/decisions.md ("HTTP/1.1 parser (issue 12)").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import httptools

MAX_HEAD = 64 * 1024
MAX_HEADERS = 200
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$")
#: Fields that belong to one connection (RFC 9110 section 7.6.1) and never cross the NAP; Transfer-Encoding and
#: Content-Length are written from the framing the parser found.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
        "transfer-encoding",
        "content-length",
    }
)


class Reader(Protocol):
    """What both asyncio.StreamReader and the transport's StreamBuffer offer."""

    async def read(self, n: int = ..., /) -> bytes: ...


class HttpError(Exception):
    """A request or response that cannot be handled; ``status`` is what the client gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class Head:
    """A request or response head as llhttp validated it."""

    method: str = ""
    target: str = ""
    status: int = 0
    reason: str = ""
    version: str = "1.1"
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: "none", "length", "chunked" or "close" (RFC 9112 section 6.3).
    framing: str = "none"
    length: int = 0
    keep_alive: bool = True
    #: The message asks to switch protocols (Upgrade, or CONNECT for requests).
    upgrade: bool = False

    def get(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every ``name`` field, lower-cased."""
        return {t.strip().lower() for v in self.values(name) for t in v.split(",") if t.strip()}

    @property
    def informational(self) -> bool:
        return 100 <= self.status < 200 and self.status != 101


@dataclass(slots=True)
class Body:
    """Decoded body bytes (chunk framing removed)."""

    data: bytes


class _End:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


#: The message is complete.
END = _End()


@dataclass(slots=True)
class Upgrade:
    """HTTP ends on this connection (an Upgrade or CONNECT); ``rest`` are the bytes that followed the head."""

    rest: bytes


Event = Head | Body | _End | Upgrade


class Parser:
    """One direction of one connection: ``feed`` bytes, get events; ``eof`` when the peer closed.

    ``request``: parse requests (else responses). ``head_only``: the response answers HEAD or CONNECT, so its final head
    ends it (llhttp cannot be told this, so only the head's bytes are fed to it). Heads larger than ``max_head`` raise
    :class:`HttpError` 431 for requests and 502 for responses (an oversized answer is the origin's fault)."""

    def __init__(self, request: bool, head_only: bool = False, max_head: int = MAX_HEAD) -> None:
        self.request = request
        self.head_only = head_only
        self.max_head = max_head
        self._bad = 400 if request else 502
        self._p = httptools.HttpRequestParser(self) if request else httptools.HttpResponseParser(self)
        self._events: list[Event] = []
        self._head: Head | None = None
        self._in_head = False
        self._head_bytes = 0
        self._in_body = False
        self._upgraded = False
        self._closed_after = False
        self._broken = False
        self._pending = bytearray()  # head_only: bytes of the head not yet complete

    # -- llhttp callbacks ---------------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._head = Head()
        self._in_head = True
        self._head_bytes = 0

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.max_head:
            raise HttpError(431 if self.request else 502, f"message head larger than {self.max_head} bytes")

    def on_url(self, url: bytes) -> None:
        assert self._head is not None
        self._count(len(url) + 16)
        self._head.target = url.decode("latin-1")

    def on_status(self, reason: bytes) -> None:
        assert self._head is not None
        self._head.reason = reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._head
        if head is None or not self._in_head:
            return  # a trailer field: not forwarded (RFC 9110 section 6.5.1 lets a proxy drop them)
        if len(head.headers) >= MAX_HEADERS:
            raise HttpError(431 if self.request else 502, f"more than {MAX_HEADERS} header fields")
        self._count(len(name) + len(value) + 4)
        head.headers.append((name.decode("ascii"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        head = self._head
        assert head is not None
        self._in_head = False
        p = self._p
        head.version = p.get_http_version()
        if not head.version.startswith("1."):
            raise HttpError(self._bad, f"HTTP/{head.version} is not spoken here")
        if isinstance(p, httptools.HttpRequestParser):
            head.method = p.get_method().decode("ascii")
        else:
            head.status = p.get_status_code()
        head.keep_alive = p.should_keep_alive()
        head.upgrade = p.should_upgrade() or head.method == "CONNECT"
        te = ",".join(head.values("transfer-encoding"))
        cl = head.get("content-length")
        if te:
            head.framing = "chunked" if te.lower().replace(" ", "").split(",")[-1] == "chunked" else "close"
            if head.framing == "close" and self.request:
                raise HttpError(400, "a request's transfer coding must end in chunked")
        elif cl is not None:
            head.framing, head.length = "length", int(cl)
        elif self.request or self.head_only or head.status in (204, 304) or 100 <= head.status < 200:
            head.framing = "none"
        else:
            head.framing = "close"
        if self.head_only or (not self.request and head.status in (204, 304)) or 100 <= head.status < 200:
            head.framing, head.length = "none", 0
        self._events.append(head)
        self._in_body = True

    def on_body(self, data: bytes) -> None:
        self._events.append(Body(data))

    def on_message_complete(self) -> None:
        self._in_body = False
        head = self._head
        if head is not None and not (self.request and head.upgrade) and head.status != 101:
            self._events.append(END)
            if not head.keep_alive:
                self._closed_after = True
        self._head = None

    # -- feeding ------------------------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; raises :class:`HttpError` for anything llhttp refuses."""
        if self._upgraded:
            return [Upgrade(data)] if data else []
        if self.head_only:
            return self._feed_head_only(data)
        in_head = self._head is not None and self._in_head
        try:
            self._p.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded = True
            self._events.append(Upgrade(data[int(exc.args[0]) :]))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__ or exc.__cause__
            if isinstance(cause, HttpError):
                raise cause from None
            raise HttpError(self._bad, f"malformed message: {exc}") from None
        except httptools.HttpParserError as exc:
            # bytes after a message that closes the connection are simply not read; garbage after a complete message
            # leaves it complete but the connection unusable (``idle`` stays False)
            self._broken = True
            if not self._closed_after and END not in self._events:
                raise HttpError(self._bad, f"malformed message: {exc}") from None
        if in_head and self._head is not None and self._in_head:
            self._count(len(data))  # a field still in llhttp's hands: bounded by what was fed meanwhile
        events, self._events = self._events, []
        return events

    def _feed_head_only(self, data: bytes) -> list[Event]:
        pending = self._pending
        pending += data
        out: list[Event] = []
        while not self._upgraded:
            end = pending.find(b"\r\n\r\n")
            if end < 0:
                if len(pending) > self.max_head:
                    raise HttpError(self._bad, f"message head larger than {self.max_head} bytes")
                break
            head_bytes = bytes(pending[: end + 4])
            del pending[: end + 4]
            try:
                self._p.feed_data(head_bytes)
            except httptools.HttpParserUpgrade:
                pass
            except httptools.HttpParserError as exc:
                raise HttpError(self._bad, f"malformed message: {exc}") from None
            events, self._events = self._events, []
            out += [e for e in events if e is not END]
            final = next((e for e in events if isinstance(e, Head) and not e.informational), None)
            if final is not None:
                self._upgraded = True
                self._head = None  # llhttp still waits for a body that HEAD/CONNECT answers do not have
                out.append(END if final.status != 101 else Upgrade(b""))
                if pending:
                    out.append(Upgrade(bytes(pending)))
                pending.clear()
        return out

    def eof(self) -> list[Event]:
        """The peer closed: END for a close-delimited body; :class:`HttpError` when a message was cut."""
        if self._head is not None and self._in_body and self._head.framing == "close":
            self._head = None
            self._in_body = False
            return [END]
        if self._head is not None or self._pending:
            raise HttpError(self._bad, "connection closed inside a message")
        return []

    @property
    def idle(self) -> bool:
        """No message started and nothing malformed seen (a clean place for the peer to close, or to reuse)."""
        return self._head is None and not self._pending and not self._broken


# -- writing --------------------------------------------------------------------------------------------------------
def _fields(head: Head, extra: Iterable[tuple[str, str]], keep: frozenset[str] = frozenset()) -> list[str]:
    """The head's end-to-end fields, then ``extra``: a field the head has already (Via) gets the new value appended."""
    named = {t for t in head.tokens("connection")} - keep
    extra = [(k, ", ".join([*head.values(k), v])) for k, v in extra]
    named |= {k.lower() for k, _ in extra}
    lines = [
        f"{k}: {v}"
        for k, v in head.headers
        if (k.lower() not in HOP_BY_HOP or k.lower() in keep) and k.lower() not in named
    ]
    if head.framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
    elif head.framing == "length":
        lines.append(f"Content-Length: {head.length}")
    elif head.status and head.get("content-length") is not None:
        lines.append(f"Content-Length: {head.get('content-length')}")  # a HEAD's or 304's: the GET's length
    lines += [f"{k}: {v}" for k, v in extra]
    return lines


def request_head(head: Head, target: str, host: str, extra: Iterable[tuple[str, str]] = ()) -> bytes:
    """The request as the NAP forwards it: origin-form ``target``, ``Host: host``, HTTP/1.1, no hop-by-hop fields
    (an Upgrade keeps its Upgrade field and says so in Connection), then ``extra`` (Via, Forwarded, ...)."""
    keep = frozenset({"upgrade"}) if head.upgrade and head.method != "CONNECT" else frozenset()
    lines = [f"{head.method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [x for x in _fields(head, extra, keep) if not x.lower().startswith("host:")]
    if keep:
        lines.append("Connection: upgrade")
    elif head.method != "CONNECT":
        lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def response_head(head: Head, extra: Iterable[tuple[str, str]] = ()) -> bytes:
    """A response head as the NAP relays it: HTTP/1.1, no hop-by-hop fields (a 101 keeps Upgrade and Connection)."""
    keep = frozenset({"upgrade"}) if head.status == 101 else frozenset()
    lines = [f"HTTP/1.1 {head.status} {head.reason}".rstrip(), *_fields(head, extra, keep)]
    if keep:
        lines.append("Connection: upgrade")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def encode_body(head: Head, data: bytes) -> bytes:
    """Body bytes framed as ``head`` says (a chunk of their own when chunked)."""
    if head.framing == "chunked":
        return b"%x\r\n%b\r\n" % (len(data), data) if data else b""
    return data


def end_of_body(head: Head) -> bytes:
    """What ends a body framed as ``head`` says (the last chunk when chunked)."""
    return b"0\r\n\r\n" if head.framing == "chunked" else b""


# -- routing ----------------------------------------------------------------------------------------------------------
def request_destination(head: Head) -> tuple[str, str, str]:
    """(FQDN, authority for Host, origin-form target) by the one rule both NAPs apply (RFC 9112 section 3.2): an
    absolute-form target names the destination and a Host field, when present, must agree with it (HTTP/1.0 needs
    none); an origin-form target goes to the Host field; CONNECT's target is the authority itself."""
    target = head.target
    host_field = head.values("host")
    if len(host_field) > 1:
        raise HttpError(400, "more than one Host field")
    if head.method == "CONNECT":
        authority = target
    elif target.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        authority, slash, path = rest.partition("/")
        query = path
        target = "/" + query if slash else "/"
        if "?" in authority:
            authority, _, q = authority.partition("?")
            target = "/?" + q
        if "@" in authority:
            raise HttpError(400, "userinfo in the request target")
        if host_field and host_field[0].strip().lower() != authority.lower():
            raise HttpError(400, "Host does not agree with the absolute-form request target")
    elif target.startswith("/") or (target == "*" and head.method == "OPTIONS"):
        if not host_field:
            raise HttpError(400, "missing Host (origin-form request)")
        authority = host_field[0].strip()
    else:
        raise HttpError(400, "request target must be origin-form or absolute-form")
    fqdn = authority.rsplit(":", 1)[0] if not authority.startswith("[") else authority
    fqdn = fqdn.strip().rstrip(".").lower()
    if not fqdn or not _HOST.match(fqdn):
        raise HttpError(400, "missing or invalid Host")
    return fqdn, authority.lower(), target


REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
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


class Incoming:
    """Events from one reader (a socket or a fabric stream) through a :class:`Parser`, read as they are needed."""

    def __init__(self, reader: Reader, parser: Parser, read_size: int = 1 << 18) -> None:
        self.reader = reader
        self.parser = parser
        self.read_size = read_size
        self._queue: list[Event] = []
        self._at = 0
        self.eof = False
        self.bytes_in = 0

    async def next(self) -> Event | None:
        """The next event; None when the peer closed where no message had started."""
        while self._at >= len(self._queue):
            if self.eof:
                return None
            data = await self.reader.read(self.read_size)
            self._at = 0
            if not data:
                self.eof = True
                self._queue = self.parser.eof()
                continue
            self.bytes_in += len(data)
            self._queue = self.parser.feed(data)
        ev = self._queue[self._at]
        self._at += 1
        return ev

    @property
    def drained(self) -> bool:
        """Every event handed out and the parser between messages: nothing after the last message."""
        return self._at >= len(self._queue) and self.parser.idle

    def pending(self) -> bytes:
        """Bytes already read but not yet handed out as events, after an Upgrade (the tunnel's first bytes)."""
        rest = b"".join(e.rest for e in self._queue[self._at :] if isinstance(e, Upgrade))
        self._queue, self._at = [], 0
        return rest
