"""FQDN registrations (SFR-10 from configuration, SFR-11 over RPC and NAP sessions) and name ownership (SFR-21).

Ownership rule: the first subject to register a name claims it. A name is governed by its closest claimed zone
(itself or its nearest claimed parent, e.g. ``video.example.org`` governs ``a.video.example.org``). Only the owner of
that zone, or a subject it delegated the zone to, may register the name. Claims are released when the last
registration under a claimed name goes away and no delegation remains.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from flame_control.runtime.errors import FieldViolation, InvalidArgument, NotFound, PermissionDenied

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


@dataclass(frozen=True)
class Registration:
    """An FQDN served behind a NAP."""

    fqdn: str
    nap_id: str
    owner: str
    endpoint_id: str = ""
    source: str = "rpc"
    registered_at: float = 0.0


@dataclass
class Registry:
    """Registrations, claims and delegations. Pure: times are passed in."""

    registrations: dict[tuple[str, str], Registration] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)
    delegations: dict[str, set[str]] = field(default_factory=dict)

    def zone_of(self, fqdn: str) -> str | None:
        """The closest claimed zone governing ``fqdn`` (itself or a parent)."""
        labels = fqdn.split(".")
        for i in range(len(labels) - 1):
            zone = ".".join(labels[i:])
            if zone in self.claims:
                return zone
        return None

    def may_register(self, fqdn: str, subject: str) -> bool:
        """True when ``subject`` owns the governing zone or was delegated it (or nobody claimed it)."""
        zone = self.zone_of(fqdn)
        if zone is None or self.claims[zone] == subject:
            return True
        labels = fqdn.split(".")
        return any(subject in self.delegations.get(".".join(labels[i:]), ()) for i in range(len(labels) - 1))

    def register(self, reg: Registration) -> Registration:
        """Add or refresh a registration; PermissionDenied when another subject owns the name."""
        if not self.may_register(reg.fqdn, reg.owner):
            zone = self.zone_of(reg.fqdn)
            raise PermissionDenied(
                f"{reg.fqdn!r} is governed by zone {zone!r} owned by another subject; ask its owner to delegate it"
            )
        zone = self.zone_of(reg.fqdn)
        # A name registered under someone's zone (by delegation) stays owned by the zone's owner.
        self.claims.setdefault(reg.fqdn, reg.owner if zone is None else self.claims[zone])
        self.registrations[(reg.fqdn, reg.nap_id)] = reg
        return reg

    def unregister(self, fqdn: str, nap_id: str) -> Registration:
        """Remove one registration; NotFound when absent."""
        reg = self.registrations.pop((fqdn, nap_id), None)
        if reg is None:
            raise NotFound("registration", f"{fqdn}@{nap_id}")
        if not any(f == fqdn for f, _ in self.registrations) and not self.delegations.get(fqdn):
            self.claims.pop(fqdn, None)
        return reg

    def delegate(self, zone: str, owner: str, delegate: str, revoke: bool = False) -> set[str]:
        """Owner of ``zone`` authorises (or revokes) ``delegate`` for it and names under it."""
        current = self.claims.get(zone)
        if current is not None and current != owner:
            raise PermissionDenied(f"only the owner of {zone!r} may delegate it")
        self.claims.setdefault(zone, owner)
        members = self.delegations.setdefault(zone, set())
        if revoke:
            members.discard(delegate)
        else:
            members.add(delegate)
        return set(members)

    def servers(self, fqdn: str) -> list[str]:
        """NAPs serving ``fqdn``, sorted."""
        return sorted(nap for f, nap in self.registrations if f == fqdn)

    def fqdns(self) -> list[str]:
        """Every registered FQDN, sorted."""
        return sorted({f for f, _ in self.registrations})

    def matching(self, fqdn: str = "", nap_id: str = "") -> list[Registration]:
        """Registrations filtered by FQDN and/or NAP, ordered by (fqdn, nap)."""
        return [
            r
            for (f, n), r in sorted(self.registrations.items())
            if (not fqdn or f == fqdn) and (not nap_id or n == nap_id)
        ]

    def drop_naps(self, naps: Iterable[str]) -> list[Registration]:
        """Remove registrations behind NAPs that left the topology; returns them."""
        gone = set(naps)
        removed = [r for (f, n), r in self.registrations.items() if n in gone]
        for r in removed:
            self.registrations.pop((r.fqdn, r.nap_id))
        return removed
