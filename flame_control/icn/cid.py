"""Content identifiers (ARCHITECTURE section 4): 8 bytes = namespace (1 byte) + 7 bytes of BLAKE2b.

- HTTP CID: namespace 0x01, BLAKE2b-56 of the lower-cased FQDN (trailing dot removed).
- rCID (HTTP response): namespace 0x02, BLAKE2b-56 of ``fqdn SP method SP request-target`` (FQDN lower-cased); requests
  with the same rCID at the same time can share one response (coincidental multicast, KPI F3.5).
- IP CID: namespace 0x03, prefix length (1 byte), two zero bytes, IPv4 address (4 bytes).

BLAKE2b (keyed by a fixed personalisation) replaces the old 32-bit ``h*31+c`` hash: 56 bits make a collision among a
million names about 1 in 10^5 (birthday bound), and a collision only merges two names' routes, never misdelivers bytes
(the server NAP checks the Host header).
"""

from __future__ import annotations

import hashlib
import ipaddress

NS_HTTP = 0x01
NS_RESPONSE = 0x02
NS_IP = 0x03
_PERSON = b"flame-cid-v1"


def _h56(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=7, person=_PERSON).digest()


def normalise_fqdn(fqdn: str) -> str:
    """Lower-case, without a trailing dot."""
    return fqdn.strip().rstrip(".").lower()


def http_cid(fqdn: str) -> bytes:
    """The CID of an FQDN."""
    return bytes([NS_HTTP]) + _h56(normalise_fqdn(fqdn))


def response_cid(fqdn: str, method: str, target: str) -> bytes:
    """The rCID of one request (FQDN + method + resource)."""
    return bytes([NS_RESPONSE]) + _h56(f"{normalise_fqdn(fqdn)} {method.upper()} {target}")


def ip_cid(network: str) -> bytes:
    """The CID of an IPv4 prefix (``10.1.0.0/16``) or address (``/32``)."""
    net = ipaddress.IPv4Network(network, strict=False)
    return bytes([NS_IP, net.prefixlen, 0, 0]) + net.network_address.packed
