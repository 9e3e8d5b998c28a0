"""The server NAP's half of HTTP-over-ICN (SFR-1) and SNI tunnels (SFR-19): parse a client NAP's request (it came over
the fabric, so it is validated again), replay it to the local endpoint (nap_agent/upstream.py) and stream the response
back on a down stream. :attr:`ServerSide.pool` also serves the client side's users attached at this NAP.

Coincidental multicast (KPI F3.5): while a request that a shared cache could answer (nap_agent/merge_policy.py) is
being fetched, further requests with the same merge key from any client NAP join it; when the response head arrives,
the members it may be shared with get it in one down stream with the OR of their FIDs, and the others are fetched on
their own. ``coalesce_window_s`` (default 0) additionally holds a new fetch that long to collect joiners.

CONNECT (``connect_method: tunnel``) opens a byte tunnel to the FQDN's local endpoint (its ``tls_endpoint`` for port
443 when there is one); an Upgrade that the endpoint accepts (101) becomes a tunnel the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from flame_control.icn import frame as fr
from nap_agent import http1, merge_policy
from nap_agent.aio import within
from nap_agent.dataplane import DataPlane, ServerExchange
from nap_agent.netns import tcp_socket
from nap_agent.transport import SendStream
from nap_agent.upstream import Conn, Pool, UpstreamError, tunnel

log = logging.getLogger("flame.nap.server")


@dataclass
class ServerSettings:
    """Timeouts and limits of the server side."""

    connect_timeout_s: float = 5.0
    #: From request sent to the endpoint until its response head, and between pieces of the response.
    response_timeout_s: float = 30.0
    #: The request head must arrive from the client NAP within this, and each piece of its body.
    request_timeout_s: float = 15.0
    coalesce_window_s: float = 0.0
    #: Idle pooled connections kept per endpoint.
    pool_size: int = 32
    #: This NAP's name in the Via fields it adds.
    via: str = "flame-nap"


@dataclass
class _Member:
    sx: ServerExchange
    head: http1.Head
    #: Set when the response head is known: True = answered on the group's stream, False = fetch on its own.
    decision: asyncio.Future[bool]


@dataclass
class _Group:
    fetcher: _Member
    key: bytes | None
    joiners: list[_Member] = field(default_factory=list)
    stream: SendStream | None = None


class _FabricOut:
    """A response going out on one down stream to the group's members (upstream.Out)."""

    def __init__(self, side: ServerSide, group: _Group) -> None:
        self.side, self.group = side, group
        self.held: list[bytes] = []
        self.flush = False

    @property
    def stream(self) -> SendStream | None:
        return self.group.stream

    def _open(self, shared: list[_Member]) -> SendStream:
        members = {m.sx.session: m.sx.reply for m in [self.group.fetcher, *shared]}
        stream = self.side.dp.respond(members, fr.FrameType.HTTP_RESPONSE, self.group.fetcher.sx.rcid)
        self.group.stream = stream
        return stream

    async def informational(self, raw: bytes) -> None:
        if self.group.key is not None and self.group.stream is None:
            self.held.append(raw)  # the members are known with the final head
            return
        stream = self.group.stream or self._open([])
        stream.write(raw, flush=True)
        await stream.drain()

    async def start(self, head: http1.Head, raw: bytes) -> None:
        group = self.group
        self.side.close_group(group)
        shared = []
        for m in group.joiners:
            ok = merge_policy.shareable(group.fetcher.head, m.head, head)
            if ok:
                shared.append(m)
            if not m.decision.done():
                m.decision.set_result(ok)
        stream = group.stream or self._open(shared)
        self.flush = head.status == 101 or (200 <= head.status < 300 and group.fetcher.head.method == "CONNECT")
        stream.write(b"".join(self.held) + raw, flush=self.flush)
        self.held.clear()
        await stream.drain()

    async def data(self, data: bytes) -> None:
        stream = self.group.stream
        assert stream is not None
        stream.write(data, flush=self.flush)
        await stream.drain()


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
        self.pool = Pool(self.connect, settings.pool_size, f"1.1 {settings.via}")
        self.pending: dict[bytes, _Group] = {}
        self.requests_served = 0
        self.tunnels = 0
        dp.on_server_exchange = self._start

    @property
    def upstream_errors(self) -> int:
        return self.pool.errors

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
        request = http1.Incoming(sx.recv.buffer, http1.Parser(request=True))
        try:
            head = await within(self.s.request_timeout_s, request.next())
            if not isinstance(head, http1.Head):
                return
            fqdn, authority, target = http1.request_destination(head)
            endpoint = self.local(fqdn, head.method == "CONNECT" and authority.endswith(":443"))
            if endpoint is None and head.method == "CONNECT":
                endpoint = self.local(fqdn, False)
            if endpoint is None:
                raise http1.HttpError(502, f"no local endpoint for {fqdn} at this NAP")
        except TimeoutError:
            await self._answer_error([sx], 408, "request head not received in time")
            return
        except http1.HttpError as err:
            await self._answer_error([sx], err.status, err.message)
            return
        if head.method == "CONNECT":
            await self._connect_tunnel(sx, head, endpoint, request)
            return
        me = _Member(sx, head, asyncio.get_running_loop().create_future())
        key = merge_policy.merge_key(fqdn, head)
        if key is not None:
            joined = self.pending.get(key)
            if joined is not None:
                joined.joiners.append(me)
                if await me.decision:
                    if joined.stream is not None:
                        await joined.stream.finished.wait()
                    return
                key = None  # this member may not share the response: fetched on its own
        group = _Group(me, key)
        if key is not None:
            self.pending[key] = group
            if self.s.coalesce_window_s > 0:
                await asyncio.sleep(self.s.coalesce_window_s)
        try:
            await self._fetch(group, endpoint, authority, target, request)
        finally:
            self.close_group(group)
            for m in group.joiners:  # e.g. the fetcher was cancelled before its fetch: they fetch on their own
                if not m.decision.done():
                    m.decision.set_result(False)

    def close_group(self, group: _Group) -> None:
        if group.key is not None and self.pending.get(group.key) is group:
            del self.pending[group.key]

    async def _fetch(
        self, group: _Group, endpoint: tuple[str, int], authority: str, target: str, request: http1.Incoming
    ) -> None:
        head = group.fetcher.head
        out = _FabricOut(self, group)
        raw = http1.request_head(head, target, authority, self.pool.via)
        try:
            result = await self.pool.exchange(
                endpoint, raw, head, request, out, self.s.response_timeout_s, self.s.request_timeout_s
            )
        except http1.HttpError as err:
            if group.stream is None:
                self.close_group(group)
                for m in group.joiners:
                    if not m.decision.done():
                        m.decision.set_result(False)  # fetched on their own: maybe they fare better
                await self._answer_error([group.fetcher.sx], err.status, err.message)
            else:
                self._abort(group.stream, err.message)
            return
        except UpstreamError as err:
            if group.stream is not None:
                self._abort(group.stream, str(err))
            return
        finally:
            for m in group.joiners:
                if not m.decision.done():
                    m.decision.set_result(False)
        assert group.stream is not None
        group.stream.write(b"", fin=True, close=result.close)
        self.requests_served += len(group.stream.members)
        await group.stream.finished.wait()

    def _abort(self, stream: SendStream, reason: str) -> None:
        """The response cannot be completed: the members' client NAPs cut their users' connections at once."""
        self.dp.abort_response(stream, f"upstream: {reason}")

    async def _connect_tunnel(
        self, sx: ServerExchange, head: http1.Head, endpoint: tuple[str, int], request: http1.Incoming
    ) -> None:
        try:
            reader, writer = await self.connect(endpoint)
        except (OSError, TimeoutError) as exc:
            await self._answer_error([sx], 502, f"local endpoint {endpoint[0]}:{endpoint[1]}: {exc}")
            return
        group = _Group(_Member(sx, head, asyncio.get_running_loop().create_future()), None)
        out = _FabricOut(self, group)
        self.tunnels += 1
        try:
            await out.start(http1.Head(status=200, reason="Connection Established"), CONNECTED)
            await tunnel(request, Conn(reader, writer), out, b"")
        finally:
            writer.close()
        assert group.stream is not None
        group.stream.write(b"", fin=True, close=True)
        await group.stream.finished.wait()

    async def _answer_error(self, exchanges: list[ServerExchange], status: int, message: str) -> None:
        members = {x.session: x.reply for x in exchanges if x.session in self.dp.server}
        if not members:
            return
        stream = self.dp.respond(members, fr.FrameType.HTTP_RESPONSE, exchanges[0].rcid)
        stream.write(http1.error_response(status, message, close=True), fin=True, close=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stream.finished.wait(), 10)

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

    def close(self) -> None:
        self.pool.close()

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


#: What the NAP answers a CONNECT it tunnels.
CONNECTED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
