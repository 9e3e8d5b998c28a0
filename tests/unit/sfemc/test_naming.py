"""SFEMC-7 / SFR-21: delegated name registration: zone owners, delegates, revocation, nested zones (the one
implementation in flame_control.naming shared by the PCE and the SFEMC)."""

from __future__ import annotations

import pytest

from flame_control import naming
from flame_control.naming import NameAuthority, check_fqdn, enclosing_zones
from flame_control.runtime.errors import InvalidArgument, PermissionDenied


def test_sfemc7_first_claimant_owns_the_zone_and_names_under_it() -> None:
    a = NameAuthority()
    assert a.may_register("video.example.org", "bob")  # nobody claimed it
    assert a.claim("Video.Example.org.", "alice") == "alice"
    assert a.owner_of("hd.video.example.org") == "alice"
    assert a.governing_zone("x.hd.video.example.org") == "video.example.org"
    assert a.governing_zone("example.org") is None
    assert a.may_register("hd.video.example.org", "alice")
    assert not a.may_register("hd.video.example.org", "bob")
    with pytest.raises(PermissionDenied, match=r"zone .video\.example\.org."):
        a.claim("hd.video.example.org", "bob")


def test_sfemc7_owner_delegates_and_revokes() -> None:
    """A delegate may register the zone and names under it; the names stay the owner's; revoking takes it back."""
    a = NameAuthority()
    a.claim("video.example.org", "alice")
    assert a.delegate("video.example.org", "alice", "sfemc-svc") == {"sfemc-svc"}
    assert a.may_register("edge-1.video.example.org", "sfemc-svc")
    assert a.claim("edge-1.video.example.org", "sfemc-svc") == "alice"  # owned by the zone owner, not the delegate
    assert a.delegates("video.example.org") == ["sfemc-svc"]
    assert a.delegate("video.example.org", "alice", "sfemc-svc", revoke=True) == set()
    assert not a.may_register("edge-2.video.example.org", "sfemc-svc")
    assert a.delegates("video.example.org") == []


def test_sfemc7_only_the_owner_delegates() -> None:
    a = NameAuthority()
    a.claim("video.example.org", "alice")
    a.delegate("video.example.org", "alice", "bob")
    with pytest.raises(PermissionDenied):
        a.delegate("video.example.org", "mallory", "mallory")
    with pytest.raises(PermissionDenied):  # a delegate may not delegate further
        a.delegate("video.example.org", "bob", "carol")
    with pytest.raises(PermissionDenied):  # nor may anyone else carve a sub-zone out of alice's
        a.delegate("hd.video.example.org", "mallory", "mallory")


def test_sfemc7_delegating_an_unclaimed_zone_claims_it() -> None:
    a = NameAuthority()
    a.delegate("cdn.example.org", "alice", "bob")
    assert a.owner_of("cdn.example.org") == "alice"
    assert a.may_register("a.cdn.example.org", "bob")
    assert not a.may_register("a.cdn.example.org", "carol")
    assert a.delegate("other.example.org", "alice", "bob", revoke=True) == set()
    assert a.owner_of("other.example.org") is None  # revoking claims nothing


def test_sfemc7_nested_zones_closest_claim_governs() -> None:
    """A delegation of an outer zone reaches into sub-zones of the same owner but not into a nested zone another
    subject claimed first."""
    a = NameAuthority()
    a.claim("live.example.org", "carol")  # claimed before its parent
    a.claim("example.org", "alice")
    a.claim("vod.example.org", "alice")
    a.delegate("example.org", "alice", "bob")
    assert a.governing_zone("x.live.example.org") == "live.example.org"
    assert a.may_register("x.vod.example.org", "bob")  # alice's sub-zone: her delegation covers it
    assert not a.may_register("x.live.example.org", "bob")  # carol's zone: alice's delegation stops there
    assert a.may_register("x.live.example.org", "carol")
    a.delegate("live.example.org", "carol", "bob")
    assert a.may_register("x.live.example.org", "bob")


def test_sfemc7_release_keeps_delegated_claims() -> None:
    a = NameAuthority()
    a.claim("video.example.org", "alice")
    a.claim("music.example.org", "alice")
    a.delegate("music.example.org", "alice", "bob")
    assert a.release("video.example.org")
    assert not a.release("music.example.org")  # delegations remain: the owner set them up deliberately
    assert not a.release("never.example.org")
    assert a.may_register("video.example.org", "bob")


def test_sfemc7_authority_json_round_trip() -> None:
    a = NameAuthority()
    a.claim("video.example.org", "alice")
    a.delegate("video.example.org", "alice", "bob")
    a.delegate("video.example.org", "alice", "ann")
    doc = a.to_json()
    assert doc == {"claims": {"video.example.org": "alice"}, "delegations": {"video.example.org": ["ann", "bob"]}}
    assert NameAuthority.from_json(doc) == a
    with pytest.raises(ValueError):
        NameAuthority.from_json({"claims": {}, "extra": 1})
    with pytest.raises(ValueError):
        NameAuthority.from_json({"delegations": {"a.b": "bob"}})


def test_sfr11_fqdn_syntax_lives_in_the_shared_module_and_pce_reexports_it() -> None:
    """The PCE's historical imports resolve to the shared implementation (one implementation, SFR-11/SFR-21)."""
    from pce import registry

    assert registry.check_fqdn is naming.check_fqdn
    assert registry.fqdn_problem is naming.fqdn_problem
    assert registry.normalise_fqdn is naming.normalise_fqdn
    assert isinstance(registry.Registry().authority, NameAuthority)
    assert check_fqdn("A.Example.ORG.") == "a.example.org"
    with pytest.raises(InvalidArgument):
        check_fqdn("single", "endpoints[0].fqdn")
    assert list(enclosing_zones("a.b.example.org")) == ["a.b.example.org", "b.example.org", "example.org"]
