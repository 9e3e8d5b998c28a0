"""HTTP checks shared by the VIM driver tests: an endpoint answers /health and serves a byte-exact segment."""

from __future__ import annotations

import http.client


def http_get(address: str, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` from ``host:port``: (status, lower-cased headers, body)."""
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()
