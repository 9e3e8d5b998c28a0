"""The server side's pooled endpoint connections against an endpoint that closes after every response (busybox
httpd, the docker VIM's media image, does): a request that lands on a pooled connection the endpoint has closed, or
is closing, is replayed on a fresh connection instead of failing with a 502 (RFC 9112 section 9.3.1); a request with a
body is not replayed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from nap_agent import http1
from nap_agent.server_side import ServerSettings, ServerSide

BODY = b"x" * 1000


async def one_response_per_connection(close_after_s: float) -> tuple[asyncio.Server, list[int]]:
    """An endpoint that answers one request per connection with Content-Length (no ``Connection: close``), then
    closes the connection ``close_after_s`` later without reading anything more."""
    served: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        served.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
        await writer.drain()
        await asyncio.sleep(close_after_s)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), served


class Collect:
    """An upstream.Out that keeps the response body."""

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.heads: list[bytes] = []

    async def informational(self, raw: bytes) -> None:
        self.heads.append(raw)

    async def start(self, head: http1.Head, raw: bytes) -> None:
        self.heads.append(raw)

    async def data(self, data: bytes) -> None:
        self.body.append(data)


async def replay(side: ServerSide, port: int, request: bytes) -> bytes:
    incoming = http1.Incoming(_reader(request), http1.Parser(request=True))
    head = await incoming.next()
    assert isinstance(head, http1.Head)
    out = Collect()
    raw = http1.request_head(head, head.target, "vod.example")
    await side.pool.exchange(("127.0.0.1", port), raw, head, incoming, out, 5.0, 5.0)
    return b"".join(out.body)


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def server_side() -> ServerSide:
    return ServerSide(cast(Any, SimpleNamespace()), lambda fqdn, tls: None, ServerSettings(connect_timeout_s=2))


def test_a_stale_pooled_connection_is_replayed_on_a_fresh_one() -> None:
    async def scenario() -> None:
        server, served = await one_response_per_connection(0.2)
        port = server.sockets[0].getsockname()[1]
        side = server_side()
        get = b"GET /seg0.ts HTTP/1.1\r\nHost: vod.example\r\n\r\n"
        async with server:
            assert await replay(side, port, get) == BODY
            # the pooled connection still looks alive; the endpoint closes it without answering
            assert len(side.pool.idle[("127.0.0.1", port)]) == 1
            assert await replay(side, port, get) == BODY
            await asyncio.sleep(0.3)  # now the close has arrived: the pool check alone drops it
            assert await replay(side, port, get) == BODY
        assert side.upstream_errors == 0
        assert len(served) == 3

    asyncio.run(scenario())


def test_a_request_with_a_body_is_not_replayed() -> None:
    async def scenario() -> None:
        server, _ = await one_response_per_connection(0.2)
        port = server.sockets[0].getsockname()[1]
        side = server_side()
        async with server:
            assert await replay(side, port, b"GET / HTTP/1.1\r\nHost: vod.example\r\n\r\n") == BODY
            post = b"POST /up HTTP/1.1\r\nHost: vod.example\r\nContent-Length: 2\r\n\r\nhi"
            try:
                await replay(side, port, post)
            except http1.HttpError as err:  # the endpoint's FIN (or RST: the request was unread) reaches the caller
                assert err.status == 502
            except ConnectionError:
                pass
            else:
                raise AssertionError("a POST on a stale connection was answered")
        assert side.upstream_errors == 1

    asyncio.run(scenario())


async def scripted(answer: bytes) -> tuple[asyncio.Server, list[int]]:
    """An endpoint that reads one request head and writes ``answer`` (then keeps the connection open)."""
    served: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            served.append(1)
            writer.write(answer)
            await writer.drain()

    return await asyncio.start_server(handle, "127.0.0.1", 0), served


def test_issue12_a_connection_is_pooled_only_after_a_complete_well_framed_response() -> None:
    async def scenario() -> None:
        get = b"GET / HTTP/1.1\r\nHost: vod.example\r\n\r\n"
        for answer, pooled in (
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
            (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", False),  # bytes after it
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", False),
        ):
            server, _ = await scripted(answer)
            port = server.sockets[0].getsockname()[1]
            side = server_side()
            async with server:
                assert await replay(side, port, get) == b"ok"
            assert len(side.pool.idle.get(("127.0.0.1", port), [])) == (1 if pooled else 0), answer

    asyncio.run(scenario())
