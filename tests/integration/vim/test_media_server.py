"""The built-in SF endpoint (ORCH-6, SFEMC-6) as a real process: byte-exact segments and playlist, HEAD, keep-alive,
the endpoint header on every response, bad requests answered 400/405/431 without killing the server, SIGTERM -> 0."""

from __future__ import annotations

import http.client
import signal
import socket
import sys

import pytest

from flame_control.vim.media_server import expected_segment, playlist
from tests.support.procs import Proc, ProcessGroup, free_port, port_open


@pytest.fixture
def server(procs: ProcessGroup) -> tuple[Proc, int]:
    port = free_port()
    argv = [sys.executable, "-m", "flame_control.vim.media_server", "--port", str(port), "--name", "vod/edge-9"]
    return procs.start("media-server", argv, ready=lambda: port_open(port), timeout=15), port


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_keep_alive_connection_serves_segments_playlist_and_head(server: tuple[Proc, int]) -> None:
    _, port = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for n in range(3):
        conn.request("GET", f"/vod/film/seg{n}.ts?size=100000")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("X-Flame-Endpoint") == "vod/edge-9"
        assert resp.read() == expected_segment("film", n, 100000)
    conn.request("GET", "/vod/film/index.m3u8?segments=3")
    assert conn.getresponse().read() == playlist("film", 3)
    conn.request("HEAD", "/vod/film/seg7.ts")
    resp = conn.getresponse()
    assert resp.status == 200 and int(resp.getheader("Content-Length", "0")) == 256 * 1024 and resp.read() == b""
    conn.request("GET", "/health")
    assert conn.getresponse().read() == b"ok"
    conn.close()
    assert expected_segment("film", 1, 10) == expected_segment("film", 1, 100)[:10]  # prefix-stable stream


def test_bad_requests_are_answered_and_the_server_keeps_serving(server: tuple[Proc, int]) -> None:
    proc, port = server
    assert _raw(port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert _raw(port, b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert _raw(port, b"GET /vod/a/seg1.ts?size=-1 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert _raw(port, b"GET /x HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")
    assert _raw(port, b"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").startswith(b"HTTP/1.1 501 ")
    reply = _raw(port, b"DELETE /health HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 405 ") and b"Allow: GET, HEAD" in reply
    reply = _raw(port, b"GET /vod/../etc/passwd HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 404 ") and b"X-Flame-Endpoint: vod/edge-9" in reply
    with socket.create_connection(("127.0.0.1", port), timeout=5) as half:
        half.sendall(b"GET /health HTTP/1.1\r\n")  # half a request, then the client goes away
    assert proc.popen.poll() is None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/health")
    assert conn.getresponse().read() == b"ok"
    conn.close()


def test_sigterm_exits_zero(server: tuple[Proc, int]) -> None:
    proc, _ = server
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.popen.wait(5) == 0
    assert "listening on 127.0.0.1" in proc.output()
