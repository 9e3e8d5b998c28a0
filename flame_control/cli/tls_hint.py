"""Why a gRPC server is unreachable when the cause is a TLS mismatch: a plaintext client talking to a TLS server (or
the reverse) only sees UNAVAILABLE, so ``flame status`` asks the port itself which protocol it speaks.

Two probes, no data exchanged beyond a handshake: the HTTP/2 client preface (a plaintext gRPC server answers with a
SETTINGS frame) and a TLS handshake without verification (a TLS server answers with its certificate or an alert).
"""

from __future__ import annotations

import contextlib
import socket
import ssl

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")  # preface + empty SETTINGS
_SETTINGS = 0x04


def _split(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def speaks_plaintext_h2(target: str, timeout: float = 2.0) -> bool:
    """True when ``target`` answers the HTTP/2 preface with a SETTINGS frame (plaintext gRPC)."""
    with contextlib.suppress(OSError, ValueError), socket.create_connection(_split(target), timeout=timeout) as sock:
        sock.sendall(_H2_PREFACE)
        head = sock.recv(9)
        return len(head) >= 4 and head[3] == _SETTINGS
    return False


def speaks_tls(target: str, timeout: float = 2.0) -> bool:
    """True when ``target`` answers a TLS ClientHello as a TLS server (handshake done, or a TLS alert such as
    "certificate required" from an mTLS server)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a diagnostic probe: nothing is sent over this connection
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(_split(target), timeout=timeout) as raw, ctx.wrap_socket(raw) as tls:
            tls.do_handshake()
            return True
    except ssl.SSLError as exc:
        return "ALERT" in (exc.reason or "").upper()
    except (OSError, ValueError):
        return False


def tls_mismatch_hint(target: str, client_uses_tls: bool, timeout: float = 2.0) -> str:
    """A one-line hint when the client's TLS setting does not match the server's, else ``""``."""
    if not client_uses_tls and not speaks_plaintext_h2(target, timeout) and speaks_tls(target, timeout):
        return "server requires TLS: pass --config with tls.enabled: true and tls.server_ca (client cert for mTLS)"
    if client_uses_tls and speaks_plaintext_h2(target, timeout):
        return "server does not use TLS (plaintext): call it without tls.enabled"
    return ""
