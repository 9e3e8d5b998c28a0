"""The HTTP proxy limits of a NAP (`services.nap.http`), with the defaults an operator of Envoy or nginx expects."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class HttpProxySettings(BaseModel):
    """Limits and behaviour of the NAP's HTTP proxy (issue 12). The header and response timeouts stay in the NAP
    section itself (``header_timeout_s``, ``response_timeout_s``)."""

    model_config = ConfigDict(extra="forbid")

    #: Concurrent user connections accepted (HTTP and TLS); more are answered 503 and closed.
    max_connections: Annotated[int, Field(ge=1)] = 10000
    #: Keep-alive connections idle longer than this are closed.
    idle_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    #: A request body that makes no progress for this long is cut (slow uploads): 408 when nothing was answered yet.
    body_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    #: Largest request body: a larger Content-Length is refused with 413 before anything is forwarded, a chunked body
    #: is cut at the limit.
    max_body_bytes: Annotated[int, Field(ge=0)] = 1 << 30
    #: CONNECT: "refuse" (405) or "tunnel" (a byte tunnel to the FQDN's endpoint, through its server NAP).
    connect: Literal["refuse", "tunnel"] = "refuse"
    #: One access-log line per request (logger ``flame.nap.access``; JSON with the JSON log format).
    access_log: bool = True
