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
from dataclasses import dataclass

from flame_control.icn import cid as cidlib
from flame_control.icn import frame as fr
from nap_agent import http1, sni
from nap_agent.aio import within
from nap_agent.dataplane import NOT_SERVED_HERE, ClientExchange, DataPlane
from nap_agent.monitoring import HttpStats
from nap_agent.netns import listening_socket
from nap_agent.routes import Route
from nap_agent.server_side import ServerSide, replay_error

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
    #: Largest request body accepted (uploads).
    max_body: int = 1 << 30


@dataclass
class ClientCounters:
    """What the client side did."""

    connections: int = 0
    requests: int = 0
    errors_502: int = 0
    errors_504: int = 0
    errors_4xx: int = 0
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
            first = True
            while True:
                timeout = self.s.header_timeout_s if first else self.s.idle_timeout_s
                try:
                    head = await within(timeout, http1.read_head(reader, request=True))
                except TimeoutError:
                    if first:
                        await self._error(writer, 408, "request head not received in time")
                    return
                except http1.HttpError as err:
                    await self._error(writer, err.status, err.message)
                    return
                if head is None:
                    return
                first = False
                if not await self._one_request(head, reader, writer):
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

    async def _one_request(self, head: http1.Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Carry one request and its response; False when the connection must close afterwards."""
        self.counters.requests += 1
        try:
            fqdn, target = http1.request_destination(head)
            framing = http1.body_framing(head, request=True)
        except http1.HttpError as err:
            await self._error(writer, err.status, err.message)
            return False
        route = self.choose(fqdn)
        t0 = time.perf_counter()
        if route is None:
            await self._error(writer, 502, f"no NAP serves {fqdn}")
            self.stats.record(fqdn, time.perf_counter() - t0, 0, 0, True)
            return False
        if not isinstance(route, Route):
            return await self._local_request(fqdn, target, head, framing, route, reader, writer, t0)
        refused = {self.dp.nap_id}
        while True:
            ok, again = await self._remote_request(fqdn, target, head, framing, route, reader, writer, t0, refused)
            if again is None:
                return ok
            route = again

    async def _remote_request(
        self,
        fqdn: str,
        target: str,
        head: http1.Head,
        framing: http1.Framing,
        route: Route,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        t0: float,
        refused: set[str],
    ) -> tuple[bool, Route | None]:
        """One attempt through server NAP ``route``: (keep the connection, None), or (False, the next route) when
        that NAP refused a request without a body because it does not (or no longer) front the FQDN -- its surrogate
        just left and the PCE's new routes are not here yet; it served nothing, so the request goes to the next
        server NAP rather than becoming a 502."""
        ex = self.dp.open(
            route, fr.FrameType.HTTP_REQUEST, cidlib.http_cid(fqdn), cidlib.response_cid(fqdn, head.method, target)
        )
        try:
            forwarded = http1.forwarded_head(head, target)
            body_in = 0
            ex.up.write(forwarded, fin=framing.kind == "none")
            if framing.kind != "none":

                async def to_fabric(data: bytes) -> None:
                    ex.up.write(data)
                    await ex.up.drain()

                try:
                    body_in = await http1.relay_body(reader, framing, to_fabric, self.s.max_body)
                except http1.HttpError as err:
                    self.dp.close(ex, abort=err.message)
                    await self._error(writer, err.status, err.message)
                    return False, None
                ex.up.write(b"", fin=True)
            retry = framing.kind == "none"
            ok, sent = await self._relay_response(ex, writer, retry)
            if sent == _REFUSED:
                refused.add(route.server_nap_id)
                by_fqdn = self.dp.routes.by_fqdn.get(cidlib.normalise_fqdn(fqdn), ())
                nxt = next((r for r in by_fqdn if r.server_nap_id not in refused), None)
                if nxt is not None:
                    return False, nxt
                ok, sent = await self._relay_response(ex, writer)  # nobody else: the refusal becomes the 502
            self.stats.record(fqdn, time.perf_counter() - t0, len(forwarded) + body_in, sent, sent < 0)
            return ok and not http1.wants_close(head) and not ex.close_after, None
        finally:
            self.dp.close(ex, abort=None if ex.buffer.at_eof() else "client NAP gave up")

    async def _local_request(
        self,
        fqdn: str,
        target: str,
        head: http1.Head,
        framing: http1.Framing,
        endpoint: tuple[str, int],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        t0: float,
    ) -> bool:
        """The user is attached at the NAP that fronts ``fqdn``: replay the request straight to the local endpoint
        with the server side's code (pooled connections, streamed response, 502/504), and count it in ``nap_http``
        like any request at this NAP."""
        assert self.local is not None
        self.counters.local_requests += 1
        sent = 0

        async def start(rhead: http1.Head) -> http1.Sink:
            nonlocal sent
            writer.write(rhead.raw)
            sent += len(rhead.raw)

            async def to_user(data: bytes) -> None:
                nonlocal sent
                writer.write(data)
                sent += len(data)
                await writer.drain()

            return to_user

        forwarded = len(http1.forwarded_head(head, target))
        try:
            body_in, close = await self.local.replay(
                endpoint, head, target, framing, reader, start, self.s.response_timeout_s, self.s.max_body
            )
            await writer.drain()
        except (http1.HttpError, asyncio.IncompleteReadError, ConnectionError) as exc:
            if sent:  # mid-body: the only honest signal left is closing the connection
                self.stats.record(fqdn, time.perf_counter() - t0, forwarded, sent, False)
                return False
            status, message = replay_error(exc)
            await self._error(writer, status, message)
            self.stats.record(fqdn, time.perf_counter() - t0, forwarded, 0, status >= 500)
            return False
        self.local.requests_served += 1
        self.stats.record(fqdn, time.perf_counter() - t0, forwarded + body_in, sent, False)
        return not close and not http1.wants_close(head)

    async def _relay_response(
        self, ex: ClientExchange, writer: asyncio.StreamWriter, retry: bool = False
    ) -> tuple[bool, int]:
        """(keep the connection, bytes sent to the client; -1 when the NAP answered with its own 5xx; with ``retry``,
        _REFUSED and nothing written when the server NAP refused with NOT_SERVED_HERE)."""
        try:
            data = await within(self.s.response_timeout_s, ex.buffer.read(1 << 18))
        except TimeoutError:
            await self._error(writer, 504, f"no answer from {ex.route.server_nap_id} in time")
            return False, -1
        except ConnectionResetError as exc:
            if retry and str(exc) == NOT_SERVED_HERE:
                return False, _REFUSED
            await self._error(writer, 502, f"{ex.route.server_nap_id}: {exc}")
            return False, -1
        if not data:
            await self._error(writer, 502, f"{ex.route.server_nap_id} sent an empty answer")
            return False, -1
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

    # -- TLS by SNI (SFR-19) --------------------------------------------------------------------------------------
    async def _tls_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        self.counters.connections += 1
        try:
            try:
                head = await asyncio.wait_for(reader.readexactly(5), self.s.header_timeout_s)
                length = sni.record_length(head)
                if length > sni.MAX_HELLO:
                    raise sni.SniError("ClientHello too large")
                record = head + await asyncio.wait_for(reader.readexactly(length), self.s.header_timeout_s)
                name = sni.server_name(record)
            except (TimeoutError, asyncio.IncompleteReadError, sni.SniError):
                return
            route = self.choose(name, tls=True)
            if route is None:
                return
            if not isinstance(route, Route):
                await self._local_tunnel(route, record, reader, writer)
                return
            ex = self.dp.open(
                route, fr.FrameType.TUNNEL_UP, cidlib.http_cid(name), cidlib.response_cid(name, "TLS", "")
            )
            ex.up.write(name.encode() + b"\n" + record, flush=True)

            async def up() -> None:
                while data := await reader.read(1 << 16):
                    ex.up.write(data, flush=True)
                    await ex.up.drain()
                ex.up.write(b"", fin=True)

            async def down() -> None:
                while data := await ex.buffer.read(1 << 16):
                    writer.write(data)
                    await writer.drain()
                with contextlib.suppress(OSError):
                    writer.write_eof()

            try:
                await asyncio.gather(up(), down())
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                self.dp.close(ex, abort=None if ex.buffer.at_eof() else "client closed")
        finally:
            writer.close()

    async def _local_tunnel(
        self,
        endpoint: tuple[str, int],
        record: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """TLS for an FQDN this NAP fronts: the raw bytes go straight to its local ``tls_endpoint`` (no keys here);
        an endpoint that cannot be reached closes the connection without anything forwarded."""
        assert self.local is not None
        self.counters.local_tunnels += 1
        try:
            up_reader, up_writer = await self.local.connect(endpoint)
        except (OSError, TimeoutError):
            return
        up_writer.write(record)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(1 << 16):
                dst.write(data)
                await dst.drain()
            with contextlib.suppress(OSError):
                dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            up_writer.close()
