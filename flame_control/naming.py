"""FQDN syntax and name ownership with delegation (SFR-11, SFR-21, SFEMC-7): one implementation shared by the PCE
(which checks every registration) and the SFEMC (which checks an owner's endpoints before registering their names).

This is the deliberately small shared module of ARCHITECTURE section 2: no service package imports another, both
import this. Pure: no I/O, no clock.

Ownership rules:

- The first subject to register (claim) a name owns it. A claim under a zone someone already owns belongs to that
  zone's owner (a delegate registering ``hd.video.example.org`` does not become its owner).
- A name is governed by its closest claimed zone: the name itself or its nearest claimed parent
  (``video.example.org`` governs ``a.video.example.org``). The top-level label alone is never a zone.
- The owner of the governing zone may register the name; so may any subject the owner delegated that zone, or an
  enclosing zone of the same owner, to. A nested zone owned by *another* subject (claimed before its parent was)
  stops the walk: delegations of the outer owner do not reach into it.
- Only the owner of a zone delegates or revokes it. Delegating an unclaimed zone claims it for the delegator.
- A claim is released when the caller says nothing is registered under the name any more, unless delegations on it
  remain (the owner set them up deliberately).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from flame_control.runtime.errors import FieldViolation, InvalidArgument, PermissionDenied

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalise_fqdn(fqdn: str) -> str:
    """Lower-case, strip one trailing dot."""
    return fqdn.strip().lower().removesuffix(".")


def fqdn_problem(fqdn: str) -> str | None:
    """Why ``fqdn`` is not a valid host name (RFC 1123), or None."""
    name = normalise_fqdn(fqdn)
    if not name:
        return "must not be empty"
    if len(name) > 253:
        return "must be at most 253 characters"
    labels = name.split(".")
    if len(labels) < 2:
        return "must have at least two labels (e.g. video.example.org)"
    for label in labels:
        if not _LABEL.match(label):
            return f"label {label!r} must be 1-63 letters, digits or '-', not starting or ending with '-'"
    if labels[-1].isdigit():
        return "the top-level label must not be numeric"
    return None


def check_fqdn(fqdn: str, field_path: str = "fqdn") -> str:
    """Normalised FQDN or InvalidArgument naming the field."""
    problem = fqdn_problem(fqdn)
    if problem:
        raise InvalidArgument([FieldViolation(field_path, problem)])
    return normalise_fqdn(fqdn)


def enclosing_zones(fqdn: str) -> Iterator[str]:
    """``fqdn`` and its parents, nearest first, without the bare top-level label."""
    labels = normalise_fqdn(fqdn).split(".")
    for i in range(len(labels) - 1):
        yield ".".join(labels[i:])


@dataclass
class NameAuthority:
    """Zone claims (zone -> owner) and delegations (zone -> subjects). Names are normalised on the way in."""

    claims: dict[str, str] = field(default_factory=dict)
    delegations: dict[str, set[str]] = field(default_factory=dict)

    def governing_zone(self, fqdn: str) -> str | None:
        """The closest claimed zone governing ``fqdn`` (itself or a parent), or None when nobody claimed it."""
        return next((z for z in enclosing_zones(fqdn) if z in self.claims), None)

    def owner_of(self, fqdn: str) -> str | None:
        """Owner of the zone governing ``fqdn``, or None."""
        zone = self.governing_zone(fqdn)
        return None if zone is None else self.claims[zone]

    def may_register(self, fqdn: str, subject: str) -> bool:
        """True when ``subject`` owns the governing zone, was delegated it (or an enclosing zone of the same owner),
        or nobody claimed it."""
        owner = self.owner_of(fqdn)
        if owner is None or owner == subject:
            return True
        for zone in enclosing_zones(fqdn):
            zone_owner = self.claims.get(zone)
            if zone_owner is not None and zone_owner != owner:
                return False  # a nested zone of another subject: the outer owner's delegations stop here
            if subject in self.delegations.get(zone, ()):
                return True
        return False

    def check_register(self, fqdn: str, subject: str) -> None:
        """PermissionDenied (naming the governing zone) unless ``subject`` may register ``fqdn``."""
        if not self.may_register(fqdn, subject):
            zone = self.governing_zone(fqdn)
            raise PermissionDenied(
                f"{normalise_fqdn(fqdn)!r} is governed by zone {zone!r} owned by another subject; "
                "ask its owner to delegate it"
            )

    def claim(self, fqdn: str, subject: str) -> str:
        """Record that ``subject`` registers ``fqdn``; returns the name's owner (the governing zone's owner, or
        ``subject`` for an unclaimed name). PermissionDenied when ``subject`` may not register it."""
        self.check_register(fqdn, subject)
        name = normalise_fqdn(fqdn)
        owner = self.owner_of(name) or subject
        return self.claims.setdefault(name, owner)

    def release(self, fqdn: str) -> bool:
        """Drop the claim on ``fqdn`` (the caller has nothing registered under it any more) unless delegations on it
        remain; True when it was released."""
        name = normalise_fqdn(fqdn)
        if name not in self.claims or self.delegations.get(name):
            return False
        del self.claims[name]
        return True

    def delegate(self, zone: str, owner: str, delegate: str, revoke: bool = False) -> set[str]:
        """Owner of ``zone`` authorises (or revokes) ``delegate`` for it and the names under it; returns the zone's
        delegates now. PermissionDenied when ``owner`` does not own the zone (or the zone governing it)."""
        name = normalise_fqdn(zone)
        current = self.owner_of(name)
        if current is not None and current != owner:
            raise PermissionDenied(f"only the owner of {name!r} may delegate it")
        if revoke:
            members = self.delegations.get(name, set())
            members.discard(delegate)
            if not members:
                self.delegations.pop(name, None)
            return set(members)
        self.claims.setdefault(name, owner)
        members = self.delegations.setdefault(name, set())
        members.add(delegate)
        return set(members)

    def delegates(self, zone: str) -> list[str]:
        """Subjects delegated ``zone`` (exactly that zone), sorted."""
        return sorted(self.delegations.get(normalise_fqdn(zone), ()))

    def to_json(self) -> dict[str, Any]:
        """A JSON document of the claims and delegations (sorted, stable)."""
        return {
            "claims": dict(sorted(self.claims.items())),
            "delegations": {z: sorted(m) for z, m in sorted(self.delegations.items()) if m},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> NameAuthority:
        """The authority of a :meth:`to_json` document; ValueError on unknown keys or wrong shapes."""
        unknown = set(doc) - {"claims", "delegations"}
        if unknown:
            raise ValueError(f"unknown keys in name authority document: {sorted(unknown)}")
        claims = doc.get("claims", {})
        delegations = doc.get("delegations", {})
        if not isinstance(claims, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in claims.items()
        ):
            raise ValueError("claims must map zone names to owners")
        if not isinstance(delegations, dict) or not all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in delegations.values()
        ):
            raise ValueError("delegations must map zone names to lists of subjects")
        return cls(dict(claims), {str(z): set(m) for z, m in delegations.items() if m})
