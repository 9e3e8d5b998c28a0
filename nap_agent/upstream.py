"""One request to a local endpoint (origin) and its response, for the server NAP and for users attached at the NAP
that fronts the FQDN: pooled keep-alive connections, 1xx relayed before the final response, Upgrade and CONNECT
tunnelled, request body and response streamed at the same time (``Expect: 100-continue``), every byte through the
parser (nap_agent/http1.py).

A connection goes back to the pool only after a complete, well-framed response with nothing after it, to a request
whose body was complete too; anything else closes it, so the next request can never read the rest of this one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from nap_agent import http1
from nap_agent.aio import within


class Out(Protocol):
    """Where a response goes (the user's connection, or a down stream to client NAPs)."""

    async def informational(self, raw: bytes) -> None: ...

    async def start(self, head: http1.Head, raw: bytes) -> None: ...

    async def data(self, data: bytes) -> None: ...


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: Taken from the pool (it served a response before): the endpoint may have closed it meanwhile.
    reused: bool = False


@dataclass
class Result:
    """How an exchange ended: request body bytes, response bytes, and whether the user connection must close."""

    body_in: int = 0
    sent: int = 0
    close: bool = False


class UpstreamError(Exception):
    """The response had started and could not be completed (truncated, malformed, endpoint gone): the user's
    connection must be cut at once, it is the only honest signal left."""


Sink = Callable[[bytes], Awaitable[None]]
Connect = Callable[[tuple[str, int]], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class _Watch:
    """An :class:`Out` that remembers whether anything went out (after that, errors cannot become error responses)."""

    def __init__(self, out: Out) -> None:
        self.out = out
        self.started = False

    async def informational(self, raw: bytes) -> None:
        self.started = True
        await self.out.informational(raw)

    async def start(self, head: http1.Head, raw: bytes) -> None:
        self.started = True
        await self.out.start(head, raw)

    async def data(self, data: bytes) -> None:
        await self.out.data(data)


class Pool:
    """Idle keep-alive connections per endpoint."""

    def __init__(self, connect: Connect, size: int, via: str = "") -> None:
        self.connect = connect
        #: This NAP's Via entry, added to the responses it relays (empty: none).
        self.via = [("Via", via)] if via else []
        self.size = size
        self.idle: dict[tuple[str, int], list[Conn]] = {}
        self.errors = 0

    async def acquire(self, endpoint: tuple[str, int], fresh: bool = False) -> Conn:
        idle = self.idle.get(endpoint, [])
        while idle and not fresh:
            conn = idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                conn.reused = True
                return conn
            conn.writer.close()
        reader, writer = await self.connect(endpoint)
        return Conn(reader, writer)

    def release(self, endpoint: tuple[str, int], conn: Conn) -> None:
        idle = self.idle.setdefault(endpoint, [])
        if len(idle) < self.size:
            idle.append(conn)
        else:
            conn.writer.close()

    def close(self) -> None:
        for idle in self.idle.values():
            for conn in idle:
                conn.writer.close()
        self.idle.clear()

    async def exchange(
        self,
        endpoint: tuple[str, int],
        raw_head: bytes,
        head: http1.Head,
        request: http1.Incoming,
        out: Out,
        response_timeout_s: float,
        body_timeout_s: float,
        max_body: int | None = None,
    ) -> Result:
        """Send ``raw_head`` (the forwarded form of ``head``) and the body events of ``request``, relay the response
        to ``out``. Before ``out.start``: :class:`http1.HttpError` with what the user should get (502 unreachable or
        malformed, 504 no head in time, 408/413/400 for a bad request body); after it: :class:`UpstreamError`.

        A pooled connection the endpoint closed meanwhile that ends before any response byte is not an error when the
        request has no body: it is replayed on a fresh connection (RFC 9112 section 9.3.1)."""
        fresh = False
        while True:
            try:
                conn = await self.acquire(endpoint, fresh)
            except (OSError, TimeoutError) as exc:
                self.errors += 1
                raise http1.HttpError(502, f"local endpoint {endpoint[0]}:{endpoint[1]}: {exc}") from None
            replayable = conn.reused and head.framing == "none" and not head.upgrade
            watch = _Watch(out)
            reusable = False
            try:
                result, reusable = await self._once(
                    conn, raw_head, head, request, watch, response_timeout_s, body_timeout_s, max_body
                )
                return result
            except (ConnectionError, http1.HttpError) as exc:
                if replayable and not watch.started and (isinstance(exc, ConnectionError) or "closed" in str(exc)):
                    fresh = True
                    continue
                self.errors += 1
                if watch.started:
                    raise UpstreamError(str(exc)) from None
                if isinstance(exc, ConnectionError):
                    raise http1.HttpError(502, f"local endpoint: {exc!r}") from None
                raise
            except asyncio.IncompleteReadError as exc:
                self.errors += 1
                raise UpstreamError(str(exc)) from None
            finally:
                if reusable:
                    self.release(endpoint, conn)
                else:
                    conn.writer.close()

    async def _once(
        self,
        conn: Conn,
        raw_head: bytes,
        head: http1.Head,
        request: http1.Incoming,
        out: Out,
        response_timeout_s: float,
        body_timeout_s: float,
        max_body: int | None,
    ) -> tuple[Result, bool]:
        conn.writer.write(raw_head)
        result = Result()
        upload: asyncio.Task[int] | None = None
        relay: asyncio.Future[tuple[http1.Head, bool, bytes]] | None = None
        if head.framing != "none":

            async def to_endpoint(data: bytes) -> None:
                conn.writer.write(data)
                await conn.writer.drain()

            upload = asyncio.get_running_loop().create_task(
                send_body(request, head, to_endpoint, body_timeout_s, max_body)
            )
        try:
            response = http1.Incoming(conn.reader, http1.Parser(False, head_only=head.method in ("HEAD", "CONNECT")))
            if upload is None:
                final, complete, rest = await self._relay(response, out, head, response_timeout_s, result)
            else:
                job = self._relay(response, out, head, response_timeout_s, result, lambda: not upload.done())
                relay = asyncio.ensure_future(job)
                await asyncio.wait({upload, relay}, return_when=asyncio.FIRST_EXCEPTION)
                if upload.done() and upload.exception() is not None:
                    relay.cancel()
                    with contextlib.suppress(BaseException):
                        await relay
                    upload.result()  # raises the request body's error
                final, complete, rest = await relay
            if final.status == 101 or (head.method == "CONNECT" and 200 <= final.status < 300):
                await tunnel(request, conn, out, rest)
                result.close = True
                return result, False
            body_done = upload is None or (upload.done() and upload.exception() is None)
            if upload is not None:
                if body_done:
                    result.body_in = upload.result()
                else:
                    upload.cancel()
                    result.close = True  # answered before the request body ended: the user's connection cannot go on
            result.close = result.close or head.upgrade or final.framing == "close"
            reusable = complete and not rest and body_done and final.keep_alive and not head.upgrade
            return result, reusable
        finally:
            for task in (upload, relay):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task

    async def _relay(
        self,
        response: http1.Incoming,
        out: Out,
        head: http1.Head,
        timeout: float,
        result: Result,
        uploading: Callable[[], bool] = lambda: False,
    ) -> tuple[http1.Head, bool, bytes]:
        """Relay 1xx heads, the final head and its body; (final head, nothing after it, bytes after it). The response
        timeout runs from the end of the request body (a slow upload has its own timeout)."""
        while True:
            try:
                ev = await within(timeout, response.next())
            except TimeoutError:
                if uploading():
                    continue
                raise http1.HttpError(504, "local endpoint did not answer in time") from None
            if ev is None:
                raise http1.HttpError(502, "local endpoint closed the connection without a response")
            if isinstance(ev, http1.Head):
                if ev.informational:
                    raw = http1.response_head(ev, self.via)
                    result.sent += len(raw)
                    await out.informational(raw)
                    continue
                final = ev
                raw = http1.response_head(final, self.via)
                result.sent += len(raw)
                await out.start(final, raw)
                break
        if final.status == 101 and not head.upgrade:
            raise UpstreamError("101 to a request that asked for no upgrade")
        while True:
            ev = await within(timeout, response.next())
            if ev is None:
                raise UpstreamError("local endpoint closed the connection inside the response")
            if isinstance(ev, http1.Body):
                data = http1.encode_body(final, ev.data)
            elif isinstance(ev, http1.Upgrade):
                return final, False, ev.rest + response.pending()
            elif ev is http1.END:
                data = http1.end_of_body(final)
                if data:
                    result.sent += len(data)
                    await out.data(data)
                # anything after the response (bytes, a malformed rest): this connection is not reused
                return final, response.drained, response.pending()
            else:
                raise UpstreamError("a second response head")
            result.sent += len(data)
            await out.data(data)


async def send_body(request: http1.Incoming, head: http1.Head, sink: Sink, timeout: float, max_body: int | None) -> int:
    """Copy a request body (as the parser decoded it, framed anew) to ``writer``; the number of body bytes. Raises
    :class:`http1.HttpError`: 408 when a piece takes longer than ``timeout``, 413 past ``max_body`` (nothing past it
    is forwarded), 400 when the client closed inside the body."""
    total = 0
    while True:
        try:
            ev = await within(timeout, request.next())
        except TimeoutError:
            raise http1.HttpError(408, "request body not received in time") from None
        if ev is None:
            raise http1.HttpError(400, "connection closed inside the request body")
        if isinstance(ev, http1.Body):
            total += len(ev.data)
            if max_body is not None and total > max_body:
                raise http1.HttpError(413, f"request body larger than {max_body} bytes")
            data = http1.encode_body(head, ev.data)
        elif ev is http1.END:
            data = http1.end_of_body(head)
        else:
            raise http1.HttpError(400, "unexpected data in the request body")
        await sink(data)
        if ev is http1.END:
            return total


async def tunnel(request: http1.Incoming, conn: Conn, out: Out, rest: bytes) -> None:
    """Bytes both ways after a 101 or a CONNECT's 2xx, until either side ends."""
    if rest:
        await out.data(rest)

    async def up() -> None:
        data = request.pending()
        while True:
            if data:
                conn.writer.write(data)
                await conn.writer.drain()
            data = await request.reader.read(1 << 16)
            if not data:
                break
        with contextlib.suppress(OSError):
            conn.writer.write_eof()

    async def down() -> None:
        while data := await conn.reader.read(1 << 16):
            await out.data(data)

    up_task = asyncio.ensure_future(up())
    try:
        await down()
    finally:
        up_task.cancel()
        with contextlib.suppress(BaseException):
            await up_task


class UserOut:
    """A response going to a user's own connection (upstream :class:`Out`)."""

    def __init__(self, writer: asyncio.StreamWriter, on_status: Callable[[int], None] = lambda status: None) -> None:
        self.writer = writer
        self.sent = 0
        self.on_status = on_status

    async def informational(self, raw: bytes) -> None:
        self.writer.write(raw)
        self.sent += len(raw)
        await self.writer.drain()

    async def start(self, head: http1.Head, raw: bytes) -> None:
        self.on_status(head.status)
        await self.informational(raw)

    async def data(self, data: bytes) -> None:
        await self.informational(data)
