"""The NAP's parser interface (nap_agent/http1.py ``Parser``: bytes in, Head/Body/END/Upgrade events out) on h11, for
measurement only: the HTTP parser benchmark (bench_http_parser.py) and the NAP benchmark with h11 in the NAP agents
(``FLAME_BENCH_PARSER=h11``, through tests/bench/h11_site/sitecustomize.py) compare it with llhttp. Not used by the
NAP: docs/decisions.md ("HTTP/1.1 parser (issue 12)") says why."""

from __future__ import annotations

import h11

from nap_agent import http1


class H11Parser:
    """Same contract as :class:`nap_agent.http1.Parser` (framing, 1xx, Upgrade, HEAD/CONNECT, limits), on h11."""

    def __init__(self, request: bool, head_only: bool = False, max_head: int = http1.MAX_HEAD) -> None:
        self.request, self.head_only, self.max_head = request, head_only, max_head
        self._bad = 400 if request else 502
        self._head: http1.Head | None = None
        self._upgraded = False
        self._conn = self._new()

    def _new(self, data: bytes = b"") -> h11.Connection:
        if self.request:
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
        else:
            conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=self.max_head)
            method = "HEAD" if self.head_only else "GET"
            conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
            conn.send(h11.EndOfMessage())
        if data:
            conn.receive_data(data)
        return conn

    def _head_of(self, ev: h11.Request | h11.Response | h11.InformationalResponse) -> http1.Head:
        headers = [(k.decode("ascii"), v.decode("latin-1")) for k, v in ev.headers.raw_items()]
        head = http1.Head(version=ev.http_version.decode(), headers=headers)
        if isinstance(ev, h11.Request):
            head.method, head.target = ev.method.decode(), ev.target.decode("latin-1")
            if head.get("content-length") and head.get("transfer-encoding"):
                raise http1.HttpError(400, "Content-Length with Transfer-Encoding")
        else:
            head.status, head.reason = ev.status_code, ev.reason.decode("latin-1")
        te, cl = head.get("transfer-encoding"), head.get("content-length")
        if te:
            head.framing = "chunked"
        elif cl is not None:
            head.framing, head.length = "length", int(cl)
        elif self.request or head.status in (204, 304) or head.status < 200:
            head.framing = "none"
        else:
            head.framing = "close"
        if self.head_only or head.status in (204, 304) or 100 <= head.status < 200:
            head.framing = "none"
        conn_tokens = head.tokens("connection")
        head.keep_alive = "close" not in conn_tokens and (head.version == "1.1" or "keep-alive" in conn_tokens)
        head.upgrade = head.method == "CONNECT" or ("upgrade" in conn_tokens and head.get("upgrade") is not None)
        return head

    def feed(self, data: bytes) -> list[http1.Event]:
        if self._upgraded:
            return [http1.Upgrade(data)] if data else []
        self._conn.receive_data(data)
        return self._drain()

    def _drain(self) -> list[http1.Event]:
        out: list[http1.Event] = []
        conn = self._conn
        while True:
            try:
                ev = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint if self.request else 502
                raise http1.HttpError(status, str(exc)) from None
            if ev is h11.NEED_DATA:
                return out
            if ev is h11.PAUSED:
                rest, _ = conn.trailing_data
                if (
                    conn.their_state is h11.SWITCHED_PROTOCOL
                    or conn.our_state is h11.SWITCHED_PROTOCOL
                    or (self._head is not None and self._head.upgrade and self.request)
                ):
                    self._upgraded = True
                    out.append(http1.Upgrade(bytes(rest)))
                    return out
                if self.request:  # next request: a fresh connection state with what is left
                    self._conn = conn = self._new(bytes(rest))
                    continue
                self._upgraded = True  # a response answered: anything after it is not HTTP of ours
                if rest:
                    out.append(http1.Upgrade(bytes(rest)))
                return out
            if isinstance(ev, h11.Request | h11.Response | h11.InformationalResponse):
                head = self._head_of(ev)
                self._head = head
                out.append(head)
                if isinstance(ev, h11.InformationalResponse) and ev.status_code == 101:
                    self._upgraded = True
                    out.append(http1.Upgrade(bytes(conn.trailing_data[0])))
                    return out
                if self.request and head.upgrade and head.method == "CONNECT":
                    continue
            elif isinstance(ev, h11.Data):
                out.append(http1.Body(bytes(ev.data)))
            elif isinstance(ev, h11.EndOfMessage):
                if not (self.request and self._head is not None and self._head.upgrade):
                    out.append(http1.END)
                if self.request and not (self._head is not None and self._head.upgrade):
                    # h11 needs our response before the next request: start afresh on the bytes left
                    rest, _ = conn.trailing_data
                    self._conn = conn = self._new(bytes(rest))
                    self._head = None
            elif isinstance(ev, h11.ConnectionClosed):
                return out

    def eof(self) -> list[http1.Event]:
        self._conn.receive_data(b"")
        try:
            events = self._drain()
        except http1.HttpError:
            raise
        if self._conn.their_state not in (h11.IDLE, h11.DONE, h11.CLOSED, h11.SWITCHED_PROTOCOL, h11.MUST_CLOSE):
            raise http1.HttpError(self._bad, "connection closed inside a message")
        return events

    @property
    def idle(self) -> bool:
        return self._conn.their_state in (h11.IDLE, h11.DONE)
