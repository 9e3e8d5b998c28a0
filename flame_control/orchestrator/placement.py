"""Placement of a media service's endpoints on catalogue sites (ORCH-5 geo placement, ORCH-7 capacity). Pure.

Every endpoint gets one site that satisfies all of its constraints: the named site, region and tier, distance from
``near`` (great-circle, haversine) within ``max_distance_km``, the VIM it asks for, and free capacity (cpus, memory,
endpoint slots) after what is already in use and what earlier endpoints of the same template took. Surrogates of one
FQDN go to different sites: a NAP registers an FQDN once (the PCE keys registrations by FQDN and NAP).

Among fitting sites: the named one; else the nearest to ``near``; else the least loaded after placing; ties by name.
Endpoints are placed most-constrained first (named site, then near, then larger), then by name: deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flame_control.naming import normalise_fqdn
from flame_control.orchestrator.model import Catalogue, EndpointNode, GeoPoint, Problem, ServiceTemplate, Site

NODES = "topology_template.node_templates"
EARTH_RADIUS_KM = 6371.0088


@dataclass
class SiteUsage:
    """What is already used at a site (callers may accumulate into it; ``plus`` returns a new one)."""

    cpus: float = 0.0
    memory_mb: int = 0
    endpoints: int = 0

    def plus(self, ep: EndpointNode) -> SiteUsage:
        """Usage with one more endpoint."""
        return SiteUsage(self.cpus + ep.cpus, self.memory_mb + ep.memory_mb, self.endpoints + 1)


def haversine_km(a: GeoPoint, b: GeoPoint) -> float:
    """Great-circle distance in km."""
    lat1, lat2 = math.radians(a.latitude), math.radians(b.latitude)
    dlat, dlon = lat2 - lat1, math.radians(b.longitude - a.longitude)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def constraint_misses(ep: EndpointNode, site: Site, default_vim: str = "process") -> list[str]:
    """Why ``site`` cannot take ``ep`` regardless of load ([] = it can)."""
    c = ep.placement
    misses = []
    if c.site and c.site != site.name:
        misses.append(f"not the named site {c.site!r}")
    if c.region and c.region != site.region:
        misses.append(f"region {site.region or '(none)'!r} is not {c.region!r}")
    if c.tier and c.tier != site.tier:
        misses.append(f"tier {site.tier!r} is not {c.tier!r}")
    if c.near is not None and c.max_distance_km > 0:
        distance = haversine_km(c.near, site.location)
        if not distance <= c.max_distance_km:
            misses.append(f"{distance:.1f} km from near, more than {c.max_distance_km:g} km")
    vim = ep.vim or default_vim
    if vim not in site.vims:
        misses.append(f"VIM {vim!r} not offered (offers {', '.join(site.vims)})")
    return misses


def capacity_misses(ep: EndpointNode, site: Site, used: SiteUsage) -> list[str]:
    """Why ``site`` has no room for ``ep`` given ``used`` ([] = it fits)."""
    after = used.plus(ep)
    misses = []
    if after.cpus > site.cpus + 1e-9:
        misses.append(f"needs {ep.cpus:g} cpus, {max(0.0, site.cpus - used.cpus):g} of {site.cpus:g} free")
    if after.memory_mb > site.memory_mb:
        misses.append(f"needs {ep.memory_mb} MB, {max(0, site.memory_mb - used.memory_mb)} of {site.memory_mb} MB free")
    if after.endpoints > site.max_endpoints:
        misses.append(f"all {site.max_endpoints} endpoint slots in use")
    return misses


def _load(site: Site, used: SiteUsage) -> float:
    return max(
        used.cpus / max(site.cpus, 1e-9),
        used.memory_mb / max(site.memory_mb, 1),
        used.endpoints / max(site.max_endpoints, 1),
    )


def _order(ep: EndpointNode) -> tuple[int, float, int, str]:
    c = ep.placement
    rank = 0 if c.site else 1 if c.near is not None else 2
    return (rank, -ep.cpus, -ep.memory_mb, ep.name)


def place(
    template: ServiceTemplate,
    catalogue: Catalogue,
    usage: Mapping[str, SiteUsage],
    *,
    default_vim: str = "process",
) -> dict[str, str] | list[Problem]:
    """Endpoint name -> site name, or the problems (one per endpoint that cannot be placed, with the reasons)."""
    sites = {s.name: s for s in catalogue.sites}
    used = {name: usage.get(name, SiteUsage()) for name in sites}
    taken: dict[str, set[str]] = {}  # fqdn -> sites already serving it in this template
    result: dict[str, str] = {}
    problems: list[Problem] = []
    for ep in sorted(template.endpoints, key=_order):
        reasons: dict[str, list[str]] = {}
        fitting: list[Site] = []
        for site in sorted(sites.values(), key=lambda s: s.name):
            misses = constraint_misses(ep, site, default_vim) or capacity_misses(ep, site, used[site.name])
            if not misses and site.name in taken.get(normalise_fqdn(ep.fqdn), set()):
                misses = [f"already serves {ep.fqdn} for another surrogate of this template"]
            if misses:
                reasons[site.name] = misses
            else:
                fitting.append(site)
        if not fitting:
            problems.append(_no_site(ep, reasons, bool(sites)))
            continue
        near = ep.placement.near
        if near is not None:
            choice = min(fitting, key=lambda s: (haversine_km(near, s.location), s.name))
        else:
            choice = min(fitting, key=lambda s: (_load(s, used[s.name].plus(ep)), s.name))
        result[ep.name] = choice.name
        used[choice.name] = used[choice.name].plus(ep)
        taken.setdefault(normalise_fqdn(ep.fqdn), set()).add(choice.name)
    if problems:
        return sorted(problems, key=lambda p: p.path)
    return {ep.name: result[ep.name] for ep in template.endpoints}


def _no_site(ep: EndpointNode, reasons: Mapping[str, list[str]], any_site: bool) -> Problem:
    path = f"{NODES}.{ep.name}.properties.placement"
    if not any_site:
        return Problem(
            path, "the catalogue has no compute sites", "apply a catalogue with flame.nodes.ComputeSite nodes"
        )
    named = ep.placement.site
    if named and named in reasons:
        detail = "; ".join(reasons[named])
    else:
        detail = "; ".join(f"{name}: {', '.join(why)}" for name, why in sorted(reasons.items()))
    relevant = [reasons[named]] if named in reasons else list(reasons.values())
    capacity = any(all(w.startswith(("needs", "all ")) for w in why) for why in relevant)
    hint = (
        "free capacity at a matching site, lower cpus/memory_mb, or relax the constraints"
        if capacity
        else "relax site/region/tier/max_distance_km or choose a VIM the matching sites offer"
    )
    return Problem(path, f"no site can take endpoint {ep.name!r}: {detail}", hint)


def usage_of(
    services: Iterable[tuple[ServiceTemplate, Mapping[str, str]]], catalogue: Catalogue
) -> dict[str, SiteUsage]:
    """Site usage of deployed services given their placements (endpoint -> site); unknown sites are skipped."""
    sites = {s.name for s in catalogue.sites}
    used: dict[str, SiteUsage] = {}
    for template, placement in services:
        for ep in template.endpoints:
            site = placement.get(ep.name)
            if site in sites:
                assert site is not None
                used[site] = used.get(site, SiteUsage()).plus(ep)
    return used
