"""Received bytes waiting for their consumer (an HTTP connection or tunnel), with the asyncio.StreamReader methods the
HTTP code uses; fed by a :class:`nap_agent.transport.RecvStream`, which bounds what it holds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class StreamBuffer:
    """Received bytes for a consumer, with the asyncio.StreamReader methods the HTTP code uses."""

    def __init__(self, on_consumed: Callable[[], None] = lambda: None) -> None:
        self._buf = bytearray()
        self._eof = False
        self.error: BaseException | None = None
        self._event = asyncio.Event()
        self.on_consumed = on_consumed

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data
        self._event.set()

    def feed_eof(self) -> None:
        self._eof = True
        self._event.set()

    def set_error(self, exc: BaseException) -> None:
        self.error = exc
        self._event.set()

    def at_eof(self) -> bool:
        return self._eof and not self._buf

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        self._event.clear()
        await self._event.wait()
        if self.error is not None:
            raise self.error

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self.on_consumed()
        return data

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all buffered when -1); b"" at EOF."""
        while not self._buf and not self._eof:
            await self._wait()
        return self._take(len(self._buf) if n < 0 else n)

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._eof:
                raise asyncio.IncompleteReadError(bytes(self._buf), n)
            await self._wait()
        return self._take(n)

    async def readuntil(self, separator: bytes = b"\n", limit: int = 1 << 16) -> bytes:
        start = 0
        while True:
            i = self._buf.find(separator, start)
            if i >= 0:
                if i + len(separator) > limit:
                    raise asyncio.LimitOverrunError("separator beyond the limit", i)
                return self._take(i + len(separator))
            if len(self._buf) > limit:
                raise asyncio.LimitOverrunError("separator not found within the limit", len(self._buf))
            if self._eof:
                raise asyncio.IncompleteReadError(bytes(self._buf), None)
            start = max(0, len(self._buf) - len(separator) + 1)
            await self._wait()

    async def readline(self) -> bytes:
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial
