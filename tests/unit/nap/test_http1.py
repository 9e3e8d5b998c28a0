"""The NAP's HTTP/1.1 layer on llhttp (issue 12, SFR-1): strict RFC 9112 framing (the request-smuggling cases of the
issue refused), explicit 1xx and Upgrade events, heads written anew from validated fields, and the one routing rule
both NAPs apply."""

from __future__ import annotations

import pytest

from nap_agent import http1

VOD = "vod.example"


def events(raw: bytes, request: bool = True, head_only: bool = False, eof: bool = False) -> list[http1.Event]:
    p = http1.Parser(request, head_only=head_only)
    out = p.feed(raw)
    return out + (p.eof() if eof else [])


def head_of(raw: bytes, request: bool = True) -> http1.Head:
    h = events(raw, request)[0]
    assert isinstance(h, http1.Head)
    return h


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0_5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \xb2\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",
        b"GET /x\r\n\r\n",
        b"\x00\xffgarbage\r\n\r\n",
    ],
    ids=[
        "cl+te",
        "0x5",
        "+5",
        "0_5",
        "cl-xb2",
        "cl-neg",
        "two-cl",
        "te-gzip",
        "obs-fold",
        "bare-lf",
        "space",
        "0.9",
        "bin",
    ],
)
def test_issue12_ambiguous_request_framing_is_refused_with_400(raw: bytes) -> None:
    with pytest.raises(http1.HttpError) as err:
        events(raw)
    assert err.value.status == 400


def test_issue12_a_malformed_or_oversized_response_is_the_origins_fault_502() -> None:
    with pytest.raises(http1.HttpError) as err:
        events(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", request=False)
    assert err.value.status == 502
    with pytest.raises(http1.HttpError) as err:
        events(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100_000 + b"\r\n\r\n", request=False)
    assert err.value.status == 502  # not 431: the user's request was fine
    with pytest.raises(http1.HttpError) as err:
        events(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 100_000 + b"\r\n\r\n")
    assert err.value.status == 431


def test_framing_kinds_and_body_events() -> None:
    assert head_of(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").framing == "none"
    post = events(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    assert isinstance(post[0], http1.Head) and (post[0].framing, post[0].length) == ("length", 5)
    assert post[1:] == [http1.Body(b"hello"), http1.END]
    chunked = events(
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n"
    )
    assert isinstance(chunked[0], http1.Head) and chunked[0].framing == "chunked"
    assert chunked[1:] == [http1.Body(b"hello"), http1.END]  # trailers dropped, not taken as header fields
    assert chunked[0].get("t") is None


def test_responses_1xx_head_close_delimited_and_truncated() -> None:
    ev = events(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        False,
    )
    heads = [e.status for e in ev if isinstance(e, http1.Head)]
    assert heads == [100, 103, 200] and ev[-2:] == [http1.Body(b"hi"), http1.END]
    assert next(e for e in ev if isinstance(e, http1.Head)).informational
    # a HEAD's response has a Content-Length but no body; what follows it is not the body
    ev = events(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", False, head_only=True)
    assert isinstance(ev[0], http1.Head) and ev[1:] == [http1.END]
    assert events(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", False)[1:] == [http1.END]
    ev = events(b"HTTP/1.1 200 OK\r\n\r\nuntil close", False, eof=True)
    assert ev[1:] == [http1.Body(b"until close"), http1.END]
    for cut in (
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ):
        with pytest.raises(http1.HttpError) as err:
            events(cut, False, eof=True)
        assert err.value.status == 502


def test_upgrade_and_connect_end_http_with_the_bytes_after_the_head() -> None:
    ev = events(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nRAW")
    assert isinstance(ev[0], http1.Head) and ev[0].upgrade and ev[1:] == [http1.Upgrade(b"RAW")]
    ev = events(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n\x16\x03")
    assert isinstance(ev[0], http1.Head) and ev[0].method == "CONNECT" and ev[1:] == [http1.Upgrade(b"\x16\x03")]
    ev = events(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00", False)
    assert isinstance(ev[0], http1.Head) and ev[0].status == 101 and ev[1:] == [http1.Upgrade(b"\x81\x00")]


def test_pipelined_requests_are_separate_events() -> None:
    ev = events(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [e.target for e in ev if isinstance(e, http1.Head)] == ["/a", "/b"]
    assert ev.count(http1.END) == 2


def test_issue12_one_routing_rule_absolute_form_wins_and_host_must_agree() -> None:
    proxy = head_of(b"GET http://VOD.example:80/a?b HTTP/1.1\r\nHost: vod.example:80\r\n\r\n")
    assert http1.request_destination(proxy) == ("vod.example", "vod.example:80", "/a?b")
    # HTTP/1.0 without Host works with absolute-form
    assert http1.request_destination(head_of(b"GET http://vod.example/x HTTP/1.0\r\n\r\n"))[0] == "vod.example"
    assert http1.request_destination(head_of(b"GET /x HTTP/1.1\r\nHost: VOD.example.\r\n\r\n"))[0] == "vod.example"
    for bad in (
        b"GET http://vod.example/x HTTP/1.1\r\nHost: other.example\r\n\r\n",
        b"GET /x HTTP/1.0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: bad_host!\r\n\r\n",
        b"GET x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://user@vod.example/ HTTP/1.1\r\n\r\n",
    ):
        with pytest.raises(http1.HttpError) as err:
            http1.request_destination(head_of(bad))
        assert err.value.status == 400
    assert http1.request_destination(head_of(b"CONNECT vod.example:443 HTTP/1.1\r\nHost: vod.example:443\r\n\r\n")) == (
        "vod.example",
        "vod.example:443",
        "vod.example:443",
    )


def test_forwarded_heads_are_written_from_validated_fields_without_hop_by_hop() -> None:
    head = head_of(
        b"POST http://vod.example/a HTTP/1.1\r\nProxy-Connection: keep-alive\r\nConnection: close, X-Secret\r\n"
        b"X-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\nCookie: c=1\r\n\r\n"
    )
    raw = http1.request_head(head, "/a", "vod.example", [("Via", "1.1 nap-a")])
    assert raw.startswith(b"POST /a HTTP/1.1\r\nHost: vod.example\r\n")
    for gone in (b"Proxy-Connection", b"X-Secret", b"Keep-Alive", b"TE:", b"close"):
        assert gone not in raw
    assert b"Cookie: c=1\r\n" in raw and b"Transfer-Encoding: chunked\r\n" in raw and b"Via: 1.1 nap-a\r\n" in raw
    assert http1.encode_body(head, b"abc") == b"3\r\nabc\r\n" and http1.end_of_body(head) == b"0\r\n\r\n"
    up = head_of(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert b"Upgrade: websocket\r\n" in http1.request_head(up, "/ws", "a")
    assert b"Connection: upgrade\r\n" in http1.request_head(up, "/ws", "a")
    resp = head_of(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n", request=False)
    assert http1.response_head(resp) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
