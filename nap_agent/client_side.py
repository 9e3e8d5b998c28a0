"""The client NAP's half: terminate users' TCP connections and carry each request over ICN (SFR-1), or tunnel TLS by SNI
(SFR-19).

HTTP: the listener takes origin-form requests (transparent redirect, or DNS pointing the FQDN at the NAP) and
absolute-form ones (explicit proxy). Requests on one connection are handled in order (pipelining-safe); each picks the
best route *at that moment*, so when the PCE pushes a closer surrogate the next request on a live connection goes there
while the client's TCP connection stays up (SFR-14). Errors the NAP generates carry ``X-Flame-Nap-Error: 1``: 502 when
no NAP serves the Host or the server NAP refuses, 504 when no answer arrives in time, 408/431/400 for bad clients.
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
from nap_agent.dataplane import ClientExchange, DataPlane
from nap_agent.monitoring import HttpStats
from nap_agent.netns import listening_socket

log = logging.getLogger("flame.nap.client")


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


class ClientSide:
    """HTTP and TLS listeners of one NAP."""

    def __init__(
        self, dp: DataPlane, settings: ClientSettings, netns: str = "", stats: HttpStats | None = None
    ) -> None:
        self.dp = dp
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
        route = self.dp.routes.best(fqdn)
        t0 = time.perf_counter()
        if route is None:
            await self._error(writer, 502, f"no NAP serves {fqdn}")
            self.stats.record(fqdn, time.perf_counter() - t0, 0, 0, True)
            return False
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
                    return False
                ex.up.write(b"", fin=True)
            ok, sent = await self._relay_response(ex, writer)
            self.stats.record(fqdn, time.perf_counter() - t0, len(forwarded) + body_in, sent, sent < 0)
            return ok and not http1.wants_close(head) and not ex.close_after
        finally:
            self.dp.close(ex, abort=None if ex.buffer.at_eof() else "client NAP gave up")

    async def _relay_response(self, ex: ClientExchange, writer: asyncio.StreamWriter) -> tuple[bool, int]:
        """(keep the connection, bytes sent to the client; -1 when the NAP answered with its own 5xx)."""
        try:
            data = await within(self.s.response_timeout_s, ex.buffer.read(1 << 18))
        except TimeoutError:
            await self._error(writer, 504, f"no answer from {ex.route.server_nap_id} in time")
            return False, -1
        except ConnectionResetError as exc:
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
            route = self.dp.routes.best(name)
            if route is None:
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
