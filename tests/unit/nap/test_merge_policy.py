"""Coincidental multicast (KPI F3.5) merges only what a shared HTTP cache may share (issue 12, RFC 9111): the pure
policy of nap_agent/merge_policy.py."""

from __future__ import annotations

from nap_agent import http1, merge_policy

FQDN = "vod.example"


def req(*fields: str, method: str = "GET", target: str = "/seg") -> http1.Head:
    raw = f"{method} {target} HTTP/1.1\r\nHost: {FQDN}\r\n" + "".join(f + "\r\n" for f in fields) + "\r\n"
    if method == "POST":
        raw = raw[:-2] + "Content-Length: 1\r\n\r\nx"
    head = http1.Parser(True).feed(raw.encode())[0]
    assert isinstance(head, http1.Head)
    return head


def resp(*fields: str) -> http1.Head:
    raw = "HTTP/1.1 200 OK\r\n" + "".join(f + "\r\n" for f in fields) + "Content-Length: 0\r\n\r\n"
    head = http1.Parser(False).feed(raw.encode())[0]
    assert isinstance(head, http1.Head)
    return head


def key(head: http1.Head) -> bytes | None:
    return merge_policy.merge_key(FQDN, head)


def test_f35_only_get_and_head_without_body_or_no_store_or_upgrade_have_a_key() -> None:
    assert key(req()) is not None and key(req(method="HEAD")) is not None
    assert key(req(method="HEAD")) != key(req())
    assert key(req(method="POST")) is None
    assert key(req("Cache-Control: no-store")) is None
    assert key(req("Connection: upgrade", "Upgrade: websocket")) is None


def test_issue12_range_and_validators_merge_only_when_identical() -> None:
    r1, r2, r3 = req("Range: bytes=0-999"), req("Range: bytes=5000-5999"), req("Range: bytes=9000-9099")
    assert len({key(r1), key(r2), key(r3), key(req())}) == 4
    assert key(req("Range: bytes=0-999")) == key(r1)
    assert key(req('If-None-Match: "a"')) != key(req())


def test_issue12_credentials_share_only_an_explicitly_public_response() -> None:
    alice, bob, anon = req("Cookie: user=alice"), req("Cookie: user=bob"), req()
    assert key(alice) == key(bob)  # they may wait for the same fetch ...
    assert not merge_policy.shareable(alice, bob, resp())  # ... but Bob never gets Alice's personal response
    assert not merge_policy.shareable(alice, anon, resp())
    assert not merge_policy.shareable(anon, bob, resp())
    assert not merge_policy.shareable(req("Authorization: Bearer a"), req("Authorization: Bearer b"), resp())
    assert merge_policy.shareable(alice, bob, resp("Cache-Control: public, max-age=60"))
    assert merge_policy.shareable(anon, req(), resp())


def test_issue12_private_no_store_and_set_cookie_are_never_shared() -> None:
    for fields in (("Cache-Control: private",), ("Cache-Control: no-store",), ("Set-Cookie: s=1",)):
        assert not merge_policy.shareable(req(), req(), resp(*fields))
    assert merge_policy.shareable(req(), req(), resp("Cache-Control: max-age=10"))
    fetcher = req()
    assert merge_policy.shareable(fetcher, fetcher, resp("Cache-Control: private"))  # the fetcher's own response


def test_issue12_vary_compares_the_fields_it_names() -> None:
    gz, br = req("Accept-Encoding: gzip"), req("Accept-Encoding: br")
    assert not merge_policy.shareable(gz, br, resp("Vary: Accept-Encoding"))
    assert merge_policy.shareable(gz, req("Accept-Encoding:  gzip"), resp("Vary: accept-encoding"))
    assert merge_policy.shareable(gz, br, resp())
    assert not merge_policy.shareable(req(), req(), resp("Vary: *"))
    assert not merge_policy.shareable(req("X-Lang: de"), req(), resp("Vary: X-Lang"))
