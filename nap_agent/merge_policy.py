"""Which requests coincidental multicast (KPI F3.5) may answer with one response: the rules of a shared HTTP cache
(RFC 9111), as nginx ``proxy_cache_lock`` or Varnish apply them. Pure: heads in, decisions out.

Two steps, because some rules depend on the response:

- :func:`merge_key` when a request arrives at the server NAP: None when it can never share (not GET/HEAD, a body,
  ``Cache-Control: no-store``, an Upgrade); else the key of the group it may join: FQDN, method, target, Range and the
  conditional fields (a 206 for one Range, or a 304 for one validator, answers no other request).
- :func:`shareable` when the response head arrives: may this member, which joined the fetcher's group, receive the
  response fetched with the fetcher's request? No when the response says ``private`` or ``no-store`` or sets a
  cookie, when the fetcher's or the member's request carries Authorization or Cookie and the response is not explicitly
  ``public``, and when the response varies (``Vary``) on a field whose values differ between the two requests (``Vary:
  *`` never matches). A member that may not share is served on its own fetch.
"""

from __future__ import annotations

import hashlib

from nap_agent.http1 import Head

#: Request fields that select a different representation or status: part of the key, so only identical ones merge.
KEY_FIELDS = ("range", "if-range", "if-none-match", "if-modified-since", "if-match", "if-unmodified-since")
#: Request fields that make a response personal unless it is explicitly public (RFC 9111 section 3.5, and cookies as
#: nginx's default cache key treats them).
CREDENTIALS = ("authorization", "cookie")


def merge_key(fqdn: str, head: Head) -> bytes | None:
    """The group key of a request that may share a response, or None when it must be fetched on its own."""
    if head.method not in ("GET", "HEAD") or head.framing != "none" or head.upgrade:
        return None
    if {"no-store"} & head.tokens("cache-control"):
        return None
    h = hashlib.blake2b(digest_size=16)
    for part in (fqdn, head.method, head.target):
        h.update(part.encode("latin-1") + b"\0")
    for name in KEY_FIELDS:
        for value in head.values(name):
            h.update(name.encode() + b"=" + value.strip().encode("latin-1") + b"\0")
    return h.digest()


def _directives(head: Head) -> set[str]:
    return {t.split("=", 1)[0].strip() for t in head.tokens("cache-control")}


def _has_credentials(head: Head) -> bool:
    return any(head.get(name) is not None for name in CREDENTIALS)


def _normalised(head: Head, name: str) -> str:
    return ",".join(" ".join(v.split()) for v in head.values(name))


def response_shareable(response: Head) -> bool:
    """The response may go to anyone whose request matches (before the per-member checks)."""
    if {"private", "no-store"} & _directives(response):
        return False
    return response.get("set-cookie") is None and "*" not in response.tokens("vary")


def shareable(fetcher: Head, member: Head, response: Head) -> bool:
    """May ``member`` receive ``response``, fetched with ``fetcher``'s request?"""
    if member is fetcher:
        return True
    if not response_shareable(response):
        return False
    if (_has_credentials(fetcher) or _has_credentials(member)) and "public" not in _directives(response):
        return False
    return all(_normalised(fetcher, name) == _normalised(member, name) for name in response.tokens("vary"))
