"""The server NAP's half of HTTP-over-ICN (SFR-1) and SNI tunnels (SFR-19): replay a client NAP's request to the local
endpoint over pooled keep-alive connections and stream the response back on a down stream. :meth:`ServerSide.replay` is
also how the client side serves its own users' requests for FQDNs this NAP fronts (no fabric involved).

Coincidental multicast (KPI F3.5): while a cacheable request (GET/HEAD without a body) for rCID R is being fetched from
the endpoint, further requests for R from any client NAP join it; the response goes out once, with the OR of their
FIDs. ``coalesce_window_s`` (default 0) additionally holds a new fetch that long to collect joiners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from flame_control.icn import cid as cidlib
from flame_control.icn import frame as fr
from nap_agent import http1
from nap_agent.aio import within
from nap_agent.dataplane import DataPlane, ServerExchange
from nap_agent.netns import tcp_socket
from nap_agent.transport import Path, SendStream

log = logging.getLogger("flame.nap.server")


@dataclass
class ServerSettings:
    """Timeouts and limits of the server side."""

    connect_timeout_s: float = 5.0
    #: From request sent to the endpoint until its response head.
    response_timeout_s: float = 30.0
    #: The request head must arrive from the client NAP within this.
    request_timeout_s: float = 15.0
    coalesce_window_s: float = 0.0
    #: Idle pooled connections kept per endpoint.
    pool_size: int = 32


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: Taken from the pool (it served a response before): the endpoint may have closed it meanwhile.
    reused: bool = False


@dataclass
class _Pending:
    members: dict[int, Path] = field(default_factory=dict)
    exchanges: list[ServerExchange] = field(default_factory=list)


class ServerSide:
    """Serves the server exchanges of one NAP."""

    def __init__(
        self,
        dp: DataPlane,
        local: Callable[[str, bool], tuple[str, int] | None],
        settings: ServerSettings,
        netns: str = "",
    ) -> None:
        self.dp = dp
        self.netns = netns
        self.local = local
        self.s = settings
        self.pool: dict[tuple[str, int], list[_Conn]] = {}
        self.pending: dict[bytes, _Pending] = {}
        self.requests_served = 0
        self.upstream_errors = 0
        dp.on_server_exchange = self._start

    def _start(self, sx: ServerExchange) -> None:
        handler = self._http if sx.kind is fr.FrameType.HTTP_REQUEST else self._tunnel
        sx.task = asyncio.get_running_loop().create_task(self._run(handler, sx))

    async def _run(self, handler: Callable[[ServerExchange], object], sx: ServerExchange) -> None:
        try:
            await handler(sx)  # type: ignore[misc]
        except (asyncio.CancelledError, ConnectionResetError):
            pass
        except Exception:
            log.exception("server exchange failed", extra={"fields": {"session": sx.session}})
        finally:
            self.dp.finish_server(sx)

    # -- HTTP -----------------------------------------------------------------------------------------------------
    async def _http(self, sx: ServerExchange) -> None:
        try:
            head = await within(self.s.request_timeout_s, http1.read_head(sx.recv.buffer, request=True))
            if head is None:
                return
            fqdn, target = http1.request_destination(head)
            endpoint = self.local(fqdn, False)
            if endpoint is None:
                raise http1.HttpError(502, f"no local endpoint for {fqdn} at this NAP")
            framing = http1.body_framing(head, request=True)
        except TimeoutError:
            await self._answer_error([sx], 408, "request head not received in time")
            return
        except http1.HttpError as err:
            await self._answer_error([sx], err.status, err.message)
            return
        key = None
        if head.method in ("GET", "HEAD") and framing.kind == "none":
            key = cidlib.response_cid(fqdn, head.method, target) + head.method.encode()
            joined = self.pending.get(key)
            if joined is not None:
                joined.members[sx.session] = sx.reply
                joined.exchanges.append(sx)
                await self._wait_answered(sx)
                return
        group = _Pending({sx.session: sx.reply}, [sx])
        if key is not None:
            self.pending[key] = group
            if self.s.coalesce_window_s > 0:
                await asyncio.sleep(self.s.coalesce_window_s)
        try:
            await self._fetch(sx, head, target, endpoint, framing, group, key)
        finally:
            if key is not None and self.pending.get(key) is group:
                del self.pending[key]

    async def _wait_answered(self, sx: ServerExchange) -> None:
        """A joiner waits until the group's response stream is done (the fetcher's task does the work)."""
        while sx.session in self.dp.server and self.dp.member_group.get(sx.session) is None:
            await asyncio.sleep(0.01)
        group = self.dp.member_group.get(sx.session)
        g = self.dp.groups.get(group) if group is not None else None
        if g is not None:
            await g.stream.finished.wait()

    async def _fetch(
        self,
        sx: ServerExchange,
        head: http1.Head,
        target: str,
        endpoint: tuple[str, int],
        framing: http1.Framing,
        group: _Pending,
        key: bytes | None,
    ) -> None:
        stream: SendStream | None = None

        async def start(rhead: http1.Head) -> http1.Sink:
            nonlocal stream
            self._close_group(group, key)
            out = stream = self.dp.respond(dict(group.members), fr.FrameType.HTTP_RESPONSE, sx.rcid)
            out.write(rhead.raw)

            async def to_fabric(data: bytes) -> None:
                out.write(data)
                await out.drain()

            return to_fabric

        try:
            _, close = await self.replay(endpoint, head, target, framing, sx.recv.buffer, start)
        except (http1.HttpError, asyncio.IncompleteReadError, ConnectionError) as exc:
            self._close_group(group, key)
            if stream is None and sx.session not in self.dp.member_group:
                status, message = replay_error(exc)
                await self._answer_error(group.exchanges, status, message)
            return
        assert stream is not None
        stream.write(b"", fin=True, close=close)
        self.requests_served += len(group.members)
        await stream.finished.wait()

    async def replay(
        self,
        endpoint: tuple[str, int],
        head: http1.Head,
        target: str,
        framing: http1.Framing,
        body: http1.Reader,
        start: Callable[[http1.Head], Awaitable[http1.Sink]],
        response_timeout_s: float | None = None,
        max_body: int | None = None,
    ) -> tuple[int, bool]:
        """Replay one request to a local endpoint over a pooled keep-alive connection and stream its response.

        The request body comes from ``body`` (a client NAP's up stream, or the user's own connection when the user is
        attached at this NAP: nap_agent/client_side.py). ``start(response_head)`` is awaited once the endpoint's head
        arrived and returns the sink of the response body (raw, chunk framing included). Before ``start``, a failure
        raises :class:`http1.HttpError` with what the user should get: 502 (endpoint unreachable, or closed without a
        response), 504 (no response head within ``response_timeout_s``, default the server setting), or the status of
        a malformed request body; after it, errors end the body (``HttpError``, ``IncompleteReadError`` or
        ``ConnectionError``) and the caller can only cut its connection. Returns (request body bytes, True when the
        response was delimited by closing or asked to close).

        A pooled connection the endpoint closed meanwhile (servers that close after each response or after an idle
        time; the close may not have reached us yet) that ends before any response byte is not an error when the
        request has no body: it is replayed on the next pooled connection or a fresh one (RFC 9112 section 9.3.1),
        so the user never sees that race."""
        while True:
            try:
                conn = await self._acquire(endpoint)
            except (OSError, TimeoutError) as exc:
                self.upstream_errors += 1
                raise http1.HttpError(502, f"local endpoint {endpoint[0]}:{endpoint[1]}: {exc}") from None
            replayable = conn.reused and framing.kind == "none"
            reusable = False
            try:
                conn.writer.write(http1.forwarded_head(head, target))

                async def to_endpoint(data: bytes, conn: _Conn = conn) -> None:
                    conn.writer.write(data)
                    await conn.writer.drain()

                body_in = await http1.relay_body(body, framing, to_endpoint, max_body)
                timeout = self.s.response_timeout_s if response_timeout_s is None else response_timeout_s
                try:
                    await conn.writer.drain()
                    rhead = await within(timeout, http1.read_head(conn.reader, request=False))
                except TimeoutError:
                    raise http1.HttpError(504, "local endpoint did not answer in time") from None
                except ConnectionError:
                    if replayable:
                        continue  # a stale pooled connection (finally closes it): once more on a fresh one
                    raise
                if rhead is None:
                    if replayable:
                        continue
                    raise http1.HttpError(502, "local endpoint closed the connection without a response")
                rframing = http1.body_framing(rhead, request=False, request_method=head.method)
                sink = await start(rhead)
                await http1.relay_body(conn.reader, rframing, sink)
                close = rframing.kind == "close" or http1.wants_close(rhead)
                reusable = not close and not http1.wants_close(head)
                return body_in, close
            except (http1.HttpError, asyncio.IncompleteReadError, ConnectionError):
                self.upstream_errors += 1
                raise
            finally:
                if reusable:
                    self._release(endpoint, conn)
                else:
                    conn.writer.close()

    def _close_group(self, group: _Pending, key: bytes | None) -> None:
        if key is not None and self.pending.get(key) is group:
            del self.pending[key]

    async def _answer_error(self, exchanges: list[ServerExchange], status: int, message: str) -> None:
        members = {x.session: x.reply for x in exchanges if x.session in self.dp.server}
        if not members:
            return
        stream = self.dp.respond(members, fr.FrameType.HTTP_RESPONSE, exchanges[0].rcid)
        stream.write(http1.error_response(status, message, close=True), fin=True, close=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stream.finished.wait(), 10)

    async def _acquire(self, endpoint: tuple[str, int]) -> _Conn:
        idle = self.pool.get(endpoint, [])
        while idle:
            conn = idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                conn.reused = True
                return conn
            conn.writer.close()
        reader, writer = await self.connect(endpoint)
        return _Conn(reader, writer)

    async def connect(self, endpoint: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to a local endpoint, from the data-plane namespace (``connect_timeout_s``)."""
        return await asyncio.wait_for(self._connect(endpoint), self.s.connect_timeout_s)

    async def _connect(self, endpoint: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = tcp_socket(self.netns)
        try:
            await asyncio.get_running_loop().sock_connect(sock, endpoint)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    def _release(self, endpoint: tuple[str, int], conn: _Conn) -> None:
        idle = self.pool.setdefault(endpoint, [])
        if len(idle) < self.s.pool_size:
            idle.append(conn)
        else:
            conn.writer.close()

    def close(self) -> None:
        for idle in self.pool.values():
            for conn in idle:
                conn.writer.close()
        self.pool.clear()

    # -- TLS by SNI (SFR-19) --------------------------------------------------------------------------------------
    async def _tunnel(self, sx: ServerExchange) -> None:
        """Bytes both ways between the client NAP and the local endpoint's TLS port; the NAP holds no keys."""
        try:
            first = await asyncio.wait_for(sx.recv.buffer.readuntil(b"\n"), self.s.request_timeout_s)
            fqdn = first.decode("ascii", errors="replace").strip().lower()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        endpoint = self.local(fqdn, True)
        stream: SendStream = self.dp.respond({sx.session: sx.reply}, fr.FrameType.TUNNEL_DOWN, sx.rcid)
        if endpoint is None:
            stream.write(b"", fin=True)
            return
        try:
            reader, writer = await self.connect(endpoint)
        except (OSError, TimeoutError):
            stream.write(b"", fin=True)
            return

        async def up() -> None:
            try:
                while data := await sx.recv.buffer.read(1 << 16):
                    writer.write(data)
                    await writer.drain()
            finally:
                with contextlib.suppress(OSError):
                    writer.write_eof()

        async def down() -> None:
            while data := await reader.read(1 << 16):
                stream.write(data, flush=True)
                await stream.drain()
            stream.write(b"", fin=True)

        try:
            await asyncio.gather(up(), down())
            await stream.finished.wait()
        finally:
            writer.close()


def replay_error(exc: BaseException) -> tuple[int, str]:
    """The status and message a failed replay (before its response started) answers with."""
    if isinstance(exc, http1.HttpError):
        return exc.status, exc.message
    return 502, f"local endpoint: {exc!r}"
