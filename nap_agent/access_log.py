"""One access-log line per request at the client NAP, as Envoy's or nginx's access log: logger ``flame.nap.access``
at INFO, structured fields (JSON with ``--log-json``): client address, method, Host, target, status, bytes in (request
body) and out (response, head included), duration, and the upstream (server NAP id, or ``local``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("flame.nap.access")


@dataclass
class AccessLine:
    """What one request did; filled in as it goes, written once at its end."""

    client: str
    method: str
    target: str
    host: str = ""
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    upstream: str = ""

    def emit(self, enabled: bool, seconds: float) -> None:
        if not enabled or not log.isEnabledFor(logging.INFO):
            return
        fields = {
            "client": self.client,
            "method": self.method,
            "host": self.host,
            "target": self.target[:512],
            "status": self.status,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration_ms": round(seconds * 1000, 3),
            "upstream": self.upstream,
        }
        log.info("access", extra={"fields": fields})


def status_of(first: bytes) -> int:
    """The final status of a relayed response from its first bytes (1xx heads before it skipped; 0 if unknown)."""
    at = 0
    while first.startswith(b"HTTP/1.1 ", at) and len(first) >= at + 12:
        code = first[at + 9 : at + 12]
        if not code.isdigit():
            return 0
        if code[:1] != b"1" or code == b"101":
            return int(code)
        end = first.find(b"\r\n\r\n", at)
        if end < 0:
            return int(code)
        at = end + 4
    return 0
