"""HTTP/1.1 parser benchmark (`flame bench http_parser`, issue 12): the NAP's per-message parser work with llhttp
(``httptools``, what nap_agent/http1.py uses) side by side with h11 behind the same interface
(tests/bench/h11_parser.py), on realistic messages: curl's GET request head, a browser GET with cookies, the origin's
1 KB response, a 103 + 200 pair, and an 8 MB chunked response fed in 256 KiB reads. Each figure is llhttp's value
with h11's as the baseline; both sides parse and write the same bytes (head written anew, body framed anew)."""

from __future__ import annotations

import time
from collections.abc import Callable

from flame_control.benchmark import Figure, median
from nap_agent import http1
from tests.bench.h11_parser import H11Parser

CURL_GET = (
    b"GET /bytes/1024?r=17 HTTP/1.1\r\nHost: vod.video.flame.example\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
)
BROWSER_GET = (
    b"GET /video/seg-00042.m4s HTTP/1.1\r\nHost: vod.video.flame.example\r\nConnection: keep-alive\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n"
    b"Accept: */*\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-GB,en;q=0.9\r\n"
    b"Range: bytes=0-1048575\r\nCookie: session=3f2a9c1e; prefs=dark\r\nReferer: http://vod.video.flame.example/\r\n\r\n"
)
RESPONSE_1K = (
    b"HTTP/1.1 200 OK\r\nServer: origin\r\nDate: Sat, 05 Dec 2026 08:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nX-Origin: dc\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024
)
EARLY = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNK = b"y" * 16384
CHUNKED_8M = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + (b"4000\r\n" + CHUNK + b"\r\n") * 512 + b"0\r\n\r\n"
)

ParserType = Callable[..., http1.Parser | H11Parser]


def relay(parser: http1.Parser | H11Parser, data: bytes, request: bool, read: int = 1 << 18) -> int:
    """What the NAP does with a message: parse, write the head anew, frame the body anew; bytes written."""
    written = 0
    head: http1.Head | None = None
    for i in range(0, len(data), read):
        for ev in parser.feed(data[i : i + read]):
            if isinstance(ev, http1.Head):
                head = ev
                raw = (
                    http1.request_head(ev, ev.target, "vod.video.flame.example") if request else http1.response_head(ev)
                )
                written += len(raw)
            elif isinstance(ev, http1.Body):
                assert head is not None
                written += len(http1.encode_body(head, ev.data))
    return written


def per_message_us(make: ParserType, data: bytes, request: bool, n: int) -> float:
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            relay(make(request), data, request)
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return median(runs)


def chunked_mbit_s(make: ParserType, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        relay(make(False), CHUNKED_8M, False)
        runs.append(len(CHUNKED_8M) * 8 / (time.perf_counter() - t0) / 1e6)
    return median(runs)


def run(quick: bool) -> list[Figure]:
    n = 2000 if quick else 10000
    cond = "one core, Python 3.11; parse + head written anew + body framed anew, as the NAP does per message"
    figures = []
    for fid, data, request in (
        ("parse_curl_get_us", CURL_GET, True),
        ("parse_browser_get_us", BROWSER_GET, True),
        ("parse_response_1k_us", RESPONSE_1K, False),
        ("parse_103_then_200_us", EARLY, False),
    ):
        ll = per_message_us(http1.Parser, data, request, n)
        h = per_message_us(H11Parser, data, request, n)
        figures.append(Figure(f"{fid}_llhttp", ll, "us", h, None, f"baseline = h11; {cond}"))
        figures.append(Figure(f"{fid}_speedup", h / ll, "x", None, None, "h11 time / llhttp time"))
    ll = chunked_mbit_s(http1.Parser, 3 if quick else 10)
    h = chunked_mbit_s(H11Parser, 3 if quick else 10)
    figures.append(Figure("chunked_8mb_mbit_s_llhttp", ll, "Mbit/s", h, None, f"baseline = h11; {cond}"))
    return figures
