"""The built-in SF endpoint (image ``builtin:media-server``): a small asyncio HTTP/1.1 media origin (ORCH-6, SFEMC-6).

The process VIM runs it by default; the docker VIM's busybox image serves the same bytes from files made by
:func:`expected_segment`, so a client checks byte-exactness the same way whichever VIM placed the endpoint.

Routes (GET and HEAD; keep-alive; every response has ``Content-Length`` and ``X-Flame-Endpoint: <endpoint id>``):

- ``/health`` -> 200 ``ok``
- ``/endpoint`` -> 200 with the endpoint id (the docker image serves the same file)
- ``/vod/<asset>/seg<N>.ts[?size=BYTES]`` -> :func:`expected_segment` bytes (default 256 KiB)
- ``/vod/<asset>/index.m3u8[?segments=N]`` -> :func:`playlist`
- anything else 404; other methods 405; malformed requests 400; oversized headers 431. Stdlib only.

Run: ``python -m flame_control.vim.media_server --port P --name ENDPOINT_ID [--host 127.0.0.1]``. SIGTERM exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import re
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

#: Segment size when the request names none.
DEFAULT_SEGMENT_SIZE = 256 * 1024
#: Largest segment a request may ask for.
MAX_SEGMENT_SIZE = 64 * 1024 * 1024
#: Segments listed in a playlist when the request names no count.
DEFAULT_PLAYLIST_SEGMENTS = 10
#: Nominal duration of one segment in the playlist (seconds).
SEGMENT_DURATION_S = 2
#: Request line plus headers larger than this get 431.
MAX_HEADER_BYTES = 16 * 1024
#: A keep-alive connection idle this long is closed.
IDLE_TIMEOUT_S = 30.0
#: Largest request body read (and discarded) on GET/HEAD.
MAX_BODY_BYTES = 64 * 1024

_ASSET = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_SEGMENT_PATH = re.compile(rf"^/vod/(?P<asset>{_ASSET})/seg(?P<n>0|[1-9][0-9]{{0,8}})\.ts$")
_PLAYLIST_PATH = re.compile(rf"^/vod/(?P<asset>{_ASSET})/index\.m3u8$")
_BLOCK = 64
_CHUNK = 64 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
}


def _segment_key(asset: str, n: int) -> bytes:
    return hashlib.blake2b(f"flame-segment\0{asset}\0{n}".encode(), digest_size=64).digest()


def segment_chunks(asset: str, n: int, size: int = DEFAULT_SEGMENT_SIZE) -> Iterator[bytes]:
    """The bytes of segment ``n`` of ``asset`` in chunks: BLAKE2b keyed by (asset, n) over a block counter."""
    if size < 0:
        raise ValueError("size must be >= 0")
    key = _segment_key(asset, n)
    produced = 0
    counter = 0
    while produced < size:
        want = min(_CHUNK, size - produced)
        blocks = []
        for _ in range((want + _BLOCK - 1) // _BLOCK):
            blocks.append(hashlib.blake2b(counter.to_bytes(8, "big"), key=key, digest_size=_BLOCK).digest())
            counter += 1
        chunk = b"".join(blocks)[:want]
        produced += len(chunk)
        yield chunk


@functools.lru_cache(maxsize=64)
def expected_segment(asset: str, n: int, size: int = DEFAULT_SEGMENT_SIZE) -> bytes:
    """Exactly what ``GET /vod/<asset>/seg<n>.ts?size=<size>`` returns, on every VIM (a client's reference)."""
    return b"".join(segment_chunks(asset, n, size))


def playlist(asset: str, segments: int = DEFAULT_PLAYLIST_SEGMENTS) -> bytes:
    """The HLS VOD playlist of ``asset`` with ``segments`` entries (relative URIs ``seg<N>.ts``)."""
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{SEGMENT_DURATION_S}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    for n in range(segments):
        lines += [f"#EXTINF:{SEGMENT_DURATION_S:.1f},", f"seg{n}.ts"]
    lines.append("#EXT-X-ENDLIST")
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class _Response:
    status: int
    #: Fixed body, or None when ``segment`` (asset, n, size) is generated.
    body: bytes | None
    content_type: str = "text/plain"
    segment: tuple[str, int, int] | None = None


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _int_param(query: dict[str, list[str]], name: str, default: int, maximum: int) -> int:
    values = query.get(name)
    if not values:
        return default
    raw = values[-1]
    if not raw.isdigit() or len(raw) > 12 or int(raw) > maximum:
        raise _BadRequest(400, f"{name} must be an integer in 0..{maximum}")
    return int(raw)


class MediaServer:
    """One endpoint's HTTP server; ``serve`` runs until ``stop``."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._stopped = asyncio.Event()
        self._endpoint_header = name.encode("utf-8", "replace").replace(b"\r", b"").replace(b"\n", b"")

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self.port, limit=MAX_HEADER_BYTES)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        self._stopped.set()

    async def serve(self) -> None:
        assert self._server is not None
        await self._stopped.wait()
        self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not self._stopped.is_set():
                if not await self._one_request(reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is to be closed."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_S)
        except TimeoutError:
            return False
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                await self._send(writer, 400, b"incomplete request\n", close=True)
            return False
        except asyncio.LimitOverrunError:
            await self._send(writer, 431, b"request header too large\n", close=True)
            return False
        try:
            method, target, keep_alive, body_length = self._parse_head(head)
            if body_length:
                await asyncio.wait_for(reader.readexactly(body_length), IDLE_TIMEOUT_S)
            response = self._route(method, target)
        except _BadRequest as exc:
            await self._send(writer, exc.status, f"{exc}\n".encode(), close=True)
            return False
        except TimeoutError:
            await self._send(writer, 408, b"request body timed out\n", close=True)
            return False
        await self._send(
            writer,
            response.status,
            response.body,
            response.content_type,
            close=not keep_alive,
            head_only=method == "HEAD",
            segment=response.segment,
        )
        return keep_alive

    def _parse_head(self, head: bytes) -> tuple[str, str, bool, int]:
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes everything
            raise _BadRequest(400, "undecodable request") from exc
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1] or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
            raise _BadRequest(400, "malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
                raise _BadRequest(400, "malformed header line")
            headers[name.lower()] = value.strip()
        if "transfer-encoding" in headers:
            raise _BadRequest(501, "request bodies with Transfer-Encoding are not supported")
        body_length = 0
        if "content-length" in headers:
            raw = headers["content-length"]
            if not raw.isdigit():
                raise _BadRequest(400, "bad Content-Length")
            body_length = int(raw)
            if body_length > MAX_BODY_BYTES:
                raise _BadRequest(413, "request body too large")
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        return method, target, keep_alive, body_length

    def _route(self, method: str, target: str) -> _Response:
        if method not in ("GET", "HEAD"):
            return _Response(405, b"method not allowed\n")
        if not target.startswith("/"):
            raise _BadRequest(400, "request target must be a path")
        split = urlsplit(target)
        path = unquote(split.path)
        query = parse_qs(split.query, keep_blank_values=True)
        if path == "/health":
            return _Response(200, b"ok")
        if path == "/endpoint":
            return _Response(200, self._endpoint_header)
        match = _SEGMENT_PATH.match(path)
        if match:
            size = _int_param(query, "size", DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE)
            return _Response(200, None, "video/mp2t", (match["asset"], int(match["n"]), size))
        match = _PLAYLIST_PATH.match(path)
        if match:
            count = _int_param(query, "segments", DEFAULT_PLAYLIST_SEGMENTS, 100_000)
            return _Response(200, playlist(match["asset"], count), "application/vnd.apple.mpegurl")
        return _Response(404, b"not found\n")

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes | None,
        content_type: str = "text/plain",
        close: bool = False,
        head_only: bool = False,
        segment: tuple[str, int, int] | None = None,
    ) -> None:
        length = len(body) if body is not None else segment[2] if segment is not None else 0
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {length}",
            "Cache-Control: max-age=60" if status == 200 else "Cache-Control: no-store",
        ]
        if status == 405:
            lines.append("Allow: GET, HEAD")
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n").encode("latin-1") + b"X-Flame-Endpoint: " + self._endpoint_header
        writer.write(head + b"\r\n\r\n")
        if not head_only:
            if body is not None:
                writer.write(body)
            elif segment is not None:
                asset, n, size = segment
                if size <= DEFAULT_SEGMENT_SIZE:
                    writer.write(expected_segment(asset, n, size))
                else:
                    for chunk in segment_chunks(asset, n, size):
                        writer.write(chunk)
                        await writer.drain()
        await writer.drain()


async def _main(args: argparse.Namespace) -> int:
    server = MediaServer(args.name, args.host, args.port)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    print(f"media-server {args.name} listening on {server.host}:{server.port}", flush=True)
    await server.serve()
    print(f"media-server {args.name} stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flame_control.vim.media_server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on (0 = any)")
    parser.add_argument("--name", required=True, help="endpoint id, sent as X-Flame-Endpoint")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except OSError as exc:
        print(f"media-server {args.name}: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
