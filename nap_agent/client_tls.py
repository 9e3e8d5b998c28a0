"""The client NAP's TLS listener (SFR-19): route a TLS connection by the server name of its ClientHello, through
the server NAP that fronts it or straight to this NAP's local ``tls_endpoint``; the NAP holds no keys."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from flame_control.icn import cid as cidlib
from flame_control.icn import frame as fr
from nap_agent import sni
from nap_agent.routes import Route

if TYPE_CHECKING:
    from nap_agent.client_side import ClientSide


async def tls_conn(side: ClientSide, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A TLS connection routed by its ClientHello's server name, without keys (SFR-19)."""
    side._track()
    side.counters.connections += 1
    try:
        if len(side._conns) > side.s.max_connections:
            side.counters.refused_connections += 1
            return
        try:
            head = await asyncio.wait_for(reader.readexactly(5), side.s.header_timeout_s)
            length = sni.record_length(head)
            if length > sni.MAX_HELLO:
                raise sni.SniError("ClientHello too large")
            record = head + await asyncio.wait_for(reader.readexactly(length), side.s.header_timeout_s)
            name = sni.server_name(record)
        except (TimeoutError, asyncio.IncompleteReadError, sni.SniError):
            return
        route = side.choose(name, tls=True)
        if route is None:
            return
        if not isinstance(route, Route):
            await local_tunnel(side, route, record, reader, writer)
            return
        ex = side.dp.open(route, fr.FrameType.TUNNEL_UP, cidlib.http_cid(name), cidlib.response_cid(name, "TLS", ""))
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
            side.dp.close(ex, abort=None if ex.buffer.at_eof() else "client closed")
    finally:
        writer.close()


async def local_tunnel(
    side: ClientSide,
    endpoint: tuple[str, int],
    record: bytes,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """TLS for an FQDN this NAP fronts: the raw bytes go straight to its local ``tls_endpoint`` (no keys here);
    an endpoint that cannot be reached closes the connection without anything forwarded."""
    assert side.local is not None
    side.counters.local_tunnels += 1
    try:
        up_reader, up_writer = await side.local.connect(endpoint)
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
