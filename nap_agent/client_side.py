"""The client NAP's half: terminate users' TCP connections and carry each request over ICN (SFR-1), or tunnel TLS by SNI
(SFR-19).

HTTP: the listener takes origin-form requests (transparent redirect, or DNS pointing the FQDN at the NAP) and
absolute-form ones (explicit proxy). Requests on one connection are handled in order (pipelining-safe); each picks the
best route *at that moment*, so when the PCE pushes a closer surrogate the next request on a live connection goes there
while the client's TCP connection stays up (SFR-14). Errors the NAP generates carry ``X-Flame-Nap-Error: 1``: 502 when
no NAP serves the Host or the server NAP refuses, 504 when no answer arrives in time, 408/431/400 for bad clients.

A user attached at the very NAP that fronts the FQDN (its local services: the nearest surrogate, cost 0) is served by
the local endpoint directly, with the server side's replay (pooled connections, streamed response, 502/504): nothing
goes over the fabric to the NAP itself. The choice is made per request like any other, so a live connection moves
between a remote server NAP and the local endpoint as local services are registered and unregistered; TLS for such an
FQDN goes straight to its local ``tls_endpoint``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from flame_control.icn import cid as cidlib
from flame_control.icn import frame as fr
from nap_agent import http1
from nap_agent.access_log import AccessLine, status_of
from nap_agent.aio import within
from nap_agent.client_tls import tls_conn
from nap_agent.dataplane import NOT_SERVED_HERE, ClientExchange, DataPlane
from nap_agent.monitoring import HttpStats
from nap_agent.netns import listening_socket
from nap_agent.routes import Route
from nap_agent.server_side import CONNECTED, ServerSide
from nap_agent.upstream import Conn, UpstreamError, UserOut, send_body, tunnel

log = logging.getLogger("flame.nap.client")

#: ``_relay_response``'s "sent" when the server NAP refused with NOT_SERVED_HERE and nothing went to the client.
_REFUSED = -2


@dataclass
class ClientSettings:
    """Timeouts and limits of the client side."""

    #: A request head must arrive within this (slowloris guard); also the idle keep-alive limit.
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    #: From request sent to the first response byte.
    response_timeout_s: float = 30.0
    #: Largest piece-to-piece gap of a request body (slow uploads are cut with 408 when nothing was answered yet).
    body_timeout_s: float = 30.0
    #: Largest request body accepted (uploads): a larger Content-Length is refused before anything is forwarded, a
    #: chunked body is cut at the limit.
    max_body: int = 1 << 30
    #: Concurrent user connections (HTTP and TLS); more are answered 503 and closed.
    max_connections: int = 10000
    #: CONNECT requests: "refuse" (405) or "tunnel" (a byte tunnel to the FQDN's endpoint through its server NAP).
    connect_method: str = "refuse"
    #: This NAP's name in the Via field it adds.
    via: str = "flame-nap"
    #: One access-log line per request (logger ``flame.nap.access``).
    access_log: bool = True


@dataclass
class ClientCounters:
    """What the client side did."""

    connections: int = 0
    requests: int = 0
    errors_502: int = 0
    errors_504: int = 0
    errors_4xx: int = 0
    refused_connections: int = 0
    #: Requests (and TLS connections) served by this NAP's own local endpoint, without the fabric.
    local_requests: int = 0
    local_tunnels: int = 0


class ClientSide:
    """HTTP and TLS listeners of one NAP."""

    def __init__(
        self,
        dp: DataPlane,
        settings: ClientSettings,
        netns: str = "",
        stats: HttpStats | None = None,
        local: ServerSide | None = None,
    ) -> None:
        self.dp = dp
        #: This NAP's server side: users attached here are served by its local endpoints directly.
        self.local = local
        self.stats = stats if stats is not None else HttpStats()
        self.netns = netns
        self.s = settings
        self.counters = ClientCounters()
        self.servers: list[asyncio.Server] = []
        self._conns: set[asyncio.Task[None]] = set()

    async def listen_http(self, host: str, port: int) -> int:
        sock = listening_socket(self.netns, host, port)
        server = await asyncio.start_server(self._http_conn, sock=sock, limit=http1.MAX_HEAD)
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def listen_tls(self, host: str, port: int) -> int:
        server = await asyncio.start_server(self._tls_conn, sock=listening_socket(self.netns, host, port))
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    def _track(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    def choose(self, fqdn: str, tls: bool = False) -> Route | tuple[str, int] | None:
        """Where a request for ``fqdn`` goes *now*: this NAP's own endpoint (host, port) when it fronts the FQDN (for
        TLS: has a ``tls_endpoint``), else the best route to another server NAP, else None.

        The local endpoint is the nearest surrogate there is (cost 0; the PCE keeps this NAP out of its own route
        list and reports the name in the snapshot's local FQDNs instead), and a NAP never sends a request over the
        fabric to itself: a route naming this NAP is skipped when it no longer fronts the FQDN (just unregistered,
        the PCE's push not yet here), so the next best server NAP takes it."""
        endpoint = self.local.local(cidlib.normalise_fqdn(fqdn), tls) if self.local is not None else None
        if endpoint is not None:
            return endpoint
        return self.dp.routes.best(fqdn, exclude=self.dp.nap_id)

    # -- HTTP -----------------------------------------------------------------------------------------------------
    async def _http_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        self.counters.connections += 1
        try:
            if len(self._conns) > self.s.max_connections:
                self.counters.refused_connections += 1
                await self._error(writer, 503, "too many connections at this NAP")
                return
            peer = writer.get_extra_info("peername")
            client = str(peer[0]) if isinstance(peer, tuple) else ""
            request = http1.Incoming(reader, http1.Parser(request=True))
            first = True
            while True:
                timeout = self.s.header_timeout_s if first else self.s.idle_timeout_s
                try:
                    head = await within(timeout, request.next())
                except TimeoutError:
                    if first or not request.parser.idle:
                        await self._error(writer, 408, "request head not received in time")
                    return
                except http1.HttpError as err:
                    await self._error(writer, err.status, err.message)
                    return
                if head is None:
                    return
                if head is http1.END:
                    continue  # the end of a request without a body
                if not isinstance(head, http1.Head):
                    await self._error(writer, 400, "malformed request")
                    return
                first = False
                if not await self._one_request(head, request, writer, client):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _error(self, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        if status == 502:
            self.counters.errors_502 += 1
        elif status == 504:
            self.counters.errors_504 += 1
        else:
            self.counters.errors_4xx += 1
        with contextlib.suppress(ConnectionError):
            writer.write(http1.error_response(status, message, close=True))
            await writer.drain()

    def _forwarding(self, head: http1.Head, client: str, authority: str) -> list[tuple[str, str]]:
        """Via, X-Forwarded-For (appended to the client's own) and Forwarded (RFC 7239) for the origin."""
        xff = ", ".join([*head.values("x-forwarded-for"), client]) if client else ""
        head.headers = [(k, v) for k, v in head.headers if k.lower() != "x-forwarded-for"]
        node = f'"[{client}]"' if ":" in client else client
        fields = [("Via", f"1.1 {self.s.via}")]
        if client:
            fields += [("X-Forwarded-For", xff), ("Forwarded", f"for={node};host={authority};proto=http")]
        return fields

    async def _one_request(
        self, head: http1.Head, request: http1.Incoming, writer: asyncio.StreamWriter, client: str
    ) -> bool:
        """Carry one request and its response; False when the connection must close afterwards."""
        self.counters.requests += 1
        t0 = time.perf_counter()
        log_line = AccessLine(client, head.method, head.target)
        try:
            keep = await self._dispatch(head, request, writer, client, log_line)
        finally:
            log_line.emit(self.s.access_log, time.perf_counter() - t0)
        return keep

    async def _dispatch(
        self, head: http1.Head, request: http1.Incoming, writer: asyncio.StreamWriter, client: str, line: AccessLine
    ) -> bool:
        t0 = time.perf_counter()
        try:
            fqdn, authority, target = http1.request_destination(head)
            line.host = authority
            if head.method == "CONNECT" and self.s.connect_method != "tunnel":
                raise http1.HttpError(405, "CONNECT is not allowed at this NAP (connect_method: refuse)")
            if head.framing == "length" and head.length > self.s.max_body:
                raise http1.HttpError(413, f"request body larger than {self.s.max_body} bytes")
        except http1.HttpError as err:
            line.status = err.status
            await self._error(writer, err.status, err.message)
            return False
        route = self.choose(fqdn, tls=head.method == "CONNECT" and authority.endswith(":443"))
        if route is None and head.method == "CONNECT":
            route = self.choose(fqdn)
        if route is None:
            line.status = 502
            await self._error(writer, 502, f"no NAP serves {fqdn}")
            self.stats.record(fqdn, time.perf_counter() - t0, 0, 0, True)
            return False
        raw = http1.request_head(head, target, authority, self._forwarding(head, client, authority))
        if not isinstance(route, Route):
            line.upstream = "local"
            return await self._local_request(fqdn, raw, head, route, request, writer, t0, line)
        refused = {self.dp.nap_id}
        while True:
            line.upstream = route.server_nap_id
            ok, again = await self._remote_request(fqdn, raw, head, route, request, writer, t0, refused, line)
            if again is None:
                return ok
            route = again

    async def _remote_request(
        self,
        fqdn: str,
        raw: bytes,
        head: http1.Head,
        route: Route,
        request: http1.Incoming,
        writer: asyncio.StreamWriter,
        t0: float,
        refused: set[str],
        line: AccessLine,
    ) -> tuple[bool, Route | None]:
        """One attempt through server NAP ``route``: (keep the connection, None), or (False, the next route) when
        that NAP refused a request without a body because it does not (or no longer) front the FQDN -- its surrogate
        just left and the PCE's new routes are not here yet; it served nothing, so the request goes to the next
        server NAP rather than becoming a 502.

        The request body goes up while the response comes down (``Expect: 100-continue``: the origin's 100 reaches
        the client before the body leaves it). An Upgrade or CONNECT keeps the up stream open: the server NAP tunnels
        only when the origin accepted (101) and drops the bytes otherwise."""
        ex = self.dp.open(
            route,
            fr.FrameType.HTTP_REQUEST,
            cidlib.http_cid(fqdn),
            cidlib.response_cid(fqdn, head.method, head.target),
        )
        has_body, tunnel = head.framing != "none", head.upgrade
        upload: asyncio.Task[None] | None = None
        failed: list[http1.HttpError] = []
        body_in = [0]
        try:
            ex.up.write(raw, fin=not has_body and not tunnel, flush=has_body or tunnel)
            if has_body or tunnel:
                job = self._upload(ex, head, request, tunnel, failed, body_in)
                upload = asyncio.get_running_loop().create_task(job)
            uploading = (lambda: not upload.done()) if upload is not None else (lambda: False)
            ok, sent = await self._relay_response(ex, writer, not has_body and not tunnel, failed, line, uploading)
            if sent == _REFUSED:
                refused.add(route.server_nap_id)
                by_fqdn = self.dp.routes.by_fqdn.get(cidlib.normalise_fqdn(fqdn), ())
                nxt = next((r for r in by_fqdn if r.server_nap_id not in refused), None)
                if nxt is not None:
                    return False, nxt
                ok, sent = await self._relay_response(ex, writer, False, failed, line)  # nobody else: a 502
            line.bytes_out = max(sent, 0)
            line.bytes_in = body_in[0]
            self.stats.record(fqdn, time.perf_counter() - t0, len(raw) + body_in[0], sent, sent < 0)
            body_done = upload is None or (upload.done() and not failed and not upload.cancelled())
            return ok and head.keep_alive and not ex.close_after and body_done and not tunnel, None
        finally:
            if upload is not None and not upload.done():
                upload.cancel()
                with contextlib.suppress(BaseException):
                    await upload
            self.dp.close(ex, abort=None if ex.buffer.at_eof() else "client NAP gave up")

    async def _upload(
        self,
        ex: ClientExchange,
        head: http1.Head,
        request: http1.Incoming,
        tunnel: bool,
        failed: list[http1.HttpError],
        body_in: list[int],
    ) -> None:
        async def to_fabric(data: bytes) -> None:
            ex.up.write(data, flush=tunnel)
            await ex.up.drain()

        try:
            if tunnel:
                data = request.pending()
                while True:
                    if data:
                        body_in[0] += len(data)
                        await to_fabric(data)
                    data = await request.reader.read(1 << 16)
                    if not data:
                        break
            else:
                body_in[0] = await send_body(request, head, to_fabric, self.s.body_timeout_s, self.s.max_body)
            if not ex.up.fin:
                ex.up.write(b"", fin=True)
        except http1.HttpError as err:
            failed.append(err)  # nothing past the error is forwarded; the server NAP drops the exchange
            self.dp.close(ex, abort=err.message)
            ex.buffer.set_error(ConnectionResetError(err.message))
        except (ConnectionError, asyncio.IncompleteReadError):
            ex.buffer.set_error(ConnectionResetError("client closed"))

    async def _local_request(
        self,
        fqdn: str,
        raw: bytes,
        head: http1.Head,
        endpoint: tuple[str, int],
        request: http1.Incoming,
        writer: asyncio.StreamWriter,
        t0: float,
        line: AccessLine,
    ) -> bool:
        """The user is attached at the NAP that fronts ``fqdn``: the request goes straight to the local endpoint with
        the server side's pool (pooled connections, streamed response, 1xx, Upgrade, 502/504), counted in
        ``nap_http`` like any request at this NAP."""
        assert self.local is not None
        self.counters.local_requests += 1
        out = UserOut(writer, lambda status: setattr(line, "status", status))
        try:
            if head.method == "CONNECT":
                reader_up, writer_up = await self.local.connect(endpoint)
                try:
                    await out.start(http1.Head(status=200), CONNECTED)
                    await tunnel(request, Conn(reader_up, writer_up), out, b"")
                finally:
                    writer_up.close()
                return False
            result = await self.local.pool.exchange(
                endpoint,
                raw,
                head,
                request,
                out,
                self.s.response_timeout_s,
                self.s.body_timeout_s,
                self.s.max_body,
            )
            await writer.drain()
        except (http1.HttpError, OSError, TimeoutError) as exc:
            status, message = (exc.status, exc.message) if isinstance(exc, http1.HttpError) else (502, repr(exc))
            if out.sent:
                return False
            line.status = status
            await self._error(writer, status, message)
            self.stats.record(fqdn, time.perf_counter() - t0, len(raw), 0, status >= 500)
            return False
        except UpstreamError:  # mid-response: the only honest signal left is closing the connection
            self.stats.record(fqdn, time.perf_counter() - t0, len(raw), out.sent, False)
            return False
        self.local.requests_served += 1
        line.bytes_in, line.bytes_out = result.body_in, out.sent
        self.stats.record(fqdn, time.perf_counter() - t0, len(raw) + result.body_in, out.sent, False)
        return not result.close and head.keep_alive

    async def _relay_response(
        self,
        ex: ClientExchange,
        writer: asyncio.StreamWriter,
        retry: bool,
        failed: list[http1.HttpError],
        line: AccessLine,
        uploading: Callable[[], bool] = lambda: False,
    ) -> tuple[bool, int]:
        """(keep the connection, bytes sent to the client; -1 when the NAP answered with its own error; with
        ``retry``, _REFUSED and nothing written when the server NAP refused with NOT_SERVED_HERE). The response
        timeout runs from the end of the request body (a slow upload has its own timeout)."""
        while True:
            try:
                data = await within(self.s.response_timeout_s, ex.buffer.read(1 << 18))
                break
            except TimeoutError:
                if uploading():
                    continue
                line.status = 504
                await self._error(writer, 504, f"no answer from {ex.route.server_nap_id} in time")
                return False, -1
            except ConnectionResetError as exc:
                if retry and str(exc) == NOT_SERVED_HERE:
                    return False, _REFUSED
                status, message = (
                    (failed[0].status, failed[0].message) if failed else (502, f"{ex.route.server_nap_id}: {exc}")
                )
                line.status = status
                await self._error(writer, status, message)
                return False, -1
        if not data:
            line.status = 502
            await self._error(writer, 502, f"{ex.route.server_nap_id} sent an empty answer")
            return False, -1
        line.status = status_of(data)
        sent = 0
        try:
            while data:
                writer.write(data)
                sent += len(data)
                await writer.drain()
                data = await within(self.s.response_timeout_s, ex.buffer.read(1 << 18))
        except (TimeoutError, ConnectionResetError):
            return False, sent  # mid-body: the only honest signal left is closing the connection
        return True, sent

    async def _tls_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await tls_conn(self, reader, writer)
