"""Simulated video players: asyncio HTTP/1.1 keep-alive clients that watch an asset through their NAP's HTTP port.

A player fetches the asset's playlist once, then segment after segment (``/vod/<asset>/seg<N>.ts``) at its rate, on
one kept-alive TCP connection to its NAP (the NAP terminates TCP, so the surrogate behind a request can change between
two requests on that connection: SFR-14). Every body is checked byte-exact against
:func:`~flame_control.vim.media_server.expected_segment`; every request becomes a :class:`~.scenario.Sample`.

When its NAP stops answering (connection refused or reset twice in a row) a player re-attaches at the other NAP of
the same switch (``FAILOVER``), like a UE moving to the next access point; each failed attempt is recorded with the
error, so the summary can say exactly what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from flame_control.demo.scenario import FAILOVER, Sample
from flame_control.vim.media_server import DEFAULT_SEGMENT_SIZE, expected_segment, playlist

#: Longest wait for a response head or body.
REQUEST_TIMEOUT_S = 15.0
#: How long stop() lets a request in flight finish before cancelling it.
STOP_GRACE_S = 3.0
MAX_HEAD = 16 * 1024


@dataclass(frozen=True)
class Attachment:
    """How to reach a NAP's HTTP port: host:port, inside network namespace ``netns`` ("" = ours)."""

    nap: str
    host: str
    port: int
    netns: str = ""


Resolver = Callable[[str], Attachment | None]
Sink = Callable[[Sample], None]


async def open_connection(att: Attachment) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to ``att`` (from inside its namespace when it has one)."""
    if not att.netns:
        return await asyncio.open_connection(att.host, att.port, limit=MAX_HEAD * 4)
    from flame_control.demo.ovs import socket_in

    sock = socket_in(att.netns)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (att.host, att.port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=MAX_HEAD * 4)


class HttpError(Exception):
    """A response that was not 200 (the connection stays usable when ``keep``)."""

    def __init__(self, status: int, endpoint: str, keep: bool) -> None:
        super().__init__(f"http {status}")
        self.status, self.endpoint, self.keep = status, endpoint, keep


async def get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fqdn: str, path: str, agent: str
) -> tuple[str, float, bytes]:
    """One GET on an open connection: (X-Flame-Endpoint, seconds to the response head, body)."""
    t0 = time.perf_counter()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {fqdn}\r\nUser-Agent: flame-demo/{agent}\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
    ttfb = time.perf_counter() - t0
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await asyncio.wait_for(reader.readexactly(length), REQUEST_TIMEOUT_S) if length else b""
    endpoint = headers.get("x-flame-endpoint", "")
    if status != 200:
        keep = "close" not in headers.get("connection", "").lower() and "content-length" in headers
        raise HttpError(status, endpoint, keep)
    return endpoint, ttfb, body


def _error_of(exc: BaseException) -> str:
    if isinstance(exc, HttpError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connect: refused"
    if isinstance(exc, (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError)):
        return f"reset: {type(exc).__name__}"
    return f"error: {type(exc).__name__}: {exc}"


class Player:
    """One viewer of ``service`` attached at ``nap``."""

    _serial = itertools.count(1)

    def __init__(
        self,
        name: str,
        service: str,
        fqdn: str,
        asset: str,
        nap: str,
        resolve: Resolver,
        rate: float,
        sink: Sink,
        epoch: float,
        segments: int = 10,
        size: int = DEFAULT_SEGMENT_SIZE,
        kind: str = "segment",
    ) -> None:
        self.name, self.service, self.fqdn, self.asset = name, service, fqdn, asset
        self.nap = nap
        self.home = nap
        self.resolve, self.rate, self.sink, self.epoch = resolve, rate, sink, epoch
        self.segments, self.size, self.kind = segments, size, kind
        self.next_segment = zlib.crc32(name.encode()) % segments
        self.conn = 0
        self.failed_over_to = ""
        self.errors = 0
        self.ok_after_failover = 0
        self._stop = asyncio.Event()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._consecutive_conn_errors = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"player {self.name}")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            # Let a request in flight finish (it becomes a sample), but do not wait out a dead NAP's timeout.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), STOP_GRACE_S)
            if not self._task.done():
                self._task.cancel()
        self._close()

    def _close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    async def run(self) -> None:
        """Play until stopped: playlist once, then segments at ``rate`` per second."""
        interval = 1.0 / self.rate
        due = time.monotonic()
        await self._request(f"/vod/{self.asset}/index.m3u8", "playlist", playlist(self.asset))
        while not self._stop.is_set():
            n = self.next_segment
            self.next_segment = (n + 1) % self.segments
            suffix = "" if self.size == DEFAULT_SEGMENT_SIZE else f"?size={self.size}"
            expected = expected_segment(self.asset, n, self.size)
            await self._request(f"/vod/{self.asset}/seg{n}.ts{suffix}", self.kind, expected)
            due = max(due + interval, time.monotonic())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, due - time.monotonic()))

    async def _request(self, path: str, kind: str, expected: bytes) -> None:
        sent = time.monotonic()
        t0 = time.perf_counter()
        endpoint, ttfb, error = "", float("nan"), ""
        nap = self.nap
        try:
            if self._streams is None:
                att = self.resolve(self.nap)
                if att is None:
                    raise ConnectionRefusedError(f"{self.nap} has no HTTP port")
                self._streams = await open_connection(att)
                self.conn = next(self._serial)
            endpoint, ttfb, body = await get(*self._streams, self.fqdn, path, self.name)
            if body != expected:
                error = "mismatch"
            self._consecutive_conn_errors = 0
        except HttpError as exc:
            error, endpoint = str(exc), exc.endpoint
            if not exc.keep:
                self._close()
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            error = _error_of(exc)
            self._close()
            if not isinstance(exc, TimeoutError):
                self._consecutive_conn_errors += 1
                if self._consecutive_conn_errors >= 2 and not self.failed_over_to and self.nap in FAILOVER:
                    self.failed_over_to = self.nap = FAILOVER[self.nap]
                    self._consecutive_conn_errors = 0
        latency = (time.perf_counter() - t0) * 1000
        if error:
            self.errors += 1
        elif self.failed_over_to:
            self.ok_after_failover += 1
        self.sink(
            Sample(
                t=sent - self.epoch,
                service=self.service,
                nap=nap,
                player=self.name,
                endpoint=endpoint,
                ttfb_ms=ttfb * 1000,
                latency_ms=latency if not error else float("nan"),
                ok=not error,
                error=error,
                conn=self.conn,
                size=len(expected),
                kind=kind,
            )
        )
        if error and not self._stop.is_set():
            # Do not spin on a dead NAP: back off a little before the next attempt.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.2)


async def fetch_once(att: Attachment, fqdn: str, path: str, expected: bytes, agent: str) -> tuple[bool, str, float]:
    """One request on a fresh connection: (byte-exact 200, endpoint or error, seconds)."""
    t0 = time.perf_counter()
    try:
        reader, writer = await open_connection(att)
        try:
            endpoint, _ttfb, body = await get(reader, writer, fqdn, path, agent)
        finally:
            writer.close()
    except (OSError, asyncio.IncompleteReadError, TimeoutError, HttpError) as exc:
        return False, _error_of(exc), time.perf_counter() - t0
    if body != expected:
        return False, "mismatch", time.perf_counter() - t0
    return True, endpoint, time.perf_counter() - t0
