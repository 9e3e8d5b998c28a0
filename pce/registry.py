"""FQDN registrations (SFR-10 from configuration, SFR-11 over RPC and NAP sessions) and name ownership (SFR-21).

Ownership and delegation (who may register which name) live in :mod:`flame_control.naming`, shared with the SFEMC
(SFEMC-7); this module keeps the registrations and asks the authority on every one. The FQDN syntax helpers are
re-exported from there so existing ``from pce.registry import check_fqdn`` imports keep working.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from flame_control.naming import NameAuthority, check_fqdn, fqdn_problem, normalise_fqdn
from flame_control.runtime.errors import NotFound, PermissionDenied

__all__ = ["NameAuthority", "Registration", "Registry", "check_fqdn", "fqdn_problem", "normalise_fqdn"]


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
    """Registrations, and the name authority (claims and delegations) they are checked against. Pure."""

    registrations: dict[tuple[str, str], Registration] = field(default_factory=dict)
    authority: NameAuthority = field(default_factory=NameAuthority)

    @property
    def claims(self) -> dict[str, str]:
        """Zone -> owner (the authority's)."""
        return self.authority.claims

    @property
    def delegations(self) -> dict[str, set[str]]:
        """Zone -> delegated subjects (the authority's)."""
        return self.authority.delegations

    def zone_of(self, fqdn: str) -> str | None:
        """The closest claimed zone governing ``fqdn`` (itself or a parent)."""
        return self.authority.governing_zone(fqdn)

    def may_register(self, fqdn: str, subject: str) -> bool:
        """True when ``subject`` owns the governing zone or was delegated it (or nobody claimed it)."""
        return self.authority.may_register(fqdn, subject)

    def register(self, reg: Registration) -> Registration:
        """Add or refresh a registration; PermissionDenied when another subject owns the name."""
        self.authority.claim(reg.fqdn, reg.owner)
        self.registrations[(reg.fqdn, reg.nap_id)] = reg
        return reg

    def unregister(self, fqdn: str, nap_id: str, subject: str | None = None) -> Registration:
        """Remove one registration; NotFound when absent. The last one under a name releases its claim.

        ``subject``: who asks (None: an operator or a component, who may remove any registration). Anyone else must
        own the registration or the zone governing the name (issue 13: no unregister-then-claim hijack)."""
        reg = self.registrations.get((fqdn, nap_id))
        if reg is None:
            raise NotFound("registration", f"{fqdn}@{nap_id}")
        if subject is not None and subject not in (reg.owner, self.authority.owner_of(fqdn)):
            raise PermissionDenied(
                f"{fqdn!r} at {nap_id!r} is registered by another subject; only its owner or an operator may remove it"
            )
        del self.registrations[(fqdn, nap_id)]
        if not any(f == fqdn for f, _ in self.registrations):
            self.authority.release(fqdn)
        return reg

    def delegate(self, zone: str, owner: str, delegate: str, revoke: bool = False) -> set[str]:
        """Owner of ``zone`` authorises (or revokes) ``delegate`` for it and names under it."""
        return self.authority.delegate(zone, owner, delegate, revoke)

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
