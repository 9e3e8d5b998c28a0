"""Template validation (ORCH-2, ORCH-7, ORCH-8, SFEMC-2): what a parsed template means, checked against the profile's
allowed values, the infrastructure catalogue and the deployed state. Pure.

Every rule reports a ``Problem`` with the template path and a fix hint (the rules and their names are listed in
docs/tosca-profile.md). The caller deploys nothing when there is an ERROR (``TemplateInvalid``). ``check_template``
runs parsing and validation together, as ``ValidateTemplate`` and ``flame validate`` do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from flame_control.orchestrator.model import (
    Catalogue,
    KpiSpec,
    Problem,
    ServiceTemplate,
    Severity,
    StateChangePolicy,
    TemplateInvalid,
    TriggerSpec,
)
from flame_control.orchestrator.placement import SiteUsage, place, usage_of
from flame_control.orchestrator.template import NODES, POLICIES, parse_template
from pce.registry import fqdn_problem, normalise_fqdn

SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d+)?|100)$")
HELD_STATES = ("connected", "booted", "placed")
VIMS = ("process", "docker", "openstack")
TIERS = ("dc", "edge")
KINDS = ("threshold", "relative", "deadman")
AGGREGATIONS = ("mean", "min", "max", "sum", "count")
COMPARISONS = ("gt", "lt")


def check_template(
    text: str,
    catalogue: Catalogue | None = None,
    deployed: Mapping[str, ServiceTemplate] | None = None,
    **kwargs: object,
) -> tuple[ServiceTemplate | None, list[Problem]]:
    """Parse and validate; a validation problem is dropped where parsing already reported one at (or above) its path."""
    template, problems = parse_template(text)
    if template is None:
        return None, problems
    reported = [p.path for p in problems if p.severity is Severity.ERROR]
    for p in validate(template, catalogue, deployed or {}, **kwargs):  # type: ignore[arg-type]
        if not any(p.path == r or p.path.startswith(r + ".") for r in reported):
            problems.append(p)
    return template, problems


def raise_if_invalid(problems: list[Problem]) -> None:
    """TemplateInvalid when any problem is an ERROR."""
    if any(p.severity is Severity.ERROR for p in problems):
        raise TemplateInvalid(problems)


def validate(
    template: ServiceTemplate,
    catalogue: Catalogue | None,
    deployed: Mapping[str, ServiceTemplate],
    *,
    updating: bool = False,
    known_metrics: Mapping[str, set[str]] | None = None,
    placements: Mapping[str, Mapping[str, str]] | None = None,
    default_vim: str = "process",
) -> list[Problem]:
    """Every problem of a parsed template. ``deployed``: services in force by name (ORCH-7 consolidation);
    ``placements``: their endpoint -> site maps (else re-derived deterministically); ``known_metrics``: measurement ->
    fields the CLMC knows (None skips the metric rules)."""
    problems: list[Problem] = []
    problems += _service_rules(template, deployed, updating)
    problems += _endpoint_rules(template)
    problems += _fqdn_rules(template, deployed)
    kpi_names = {k.name for k in template.kpis}
    for kpi in template.kpis:
        problems += _kpi_rules(kpi, known_metrics)
    for policy in template.policies:
        problems += _policy_rules(policy, template, kpi_names, known_metrics)
    problems += _policy_overlap(template)
    if catalogue is not None:
        problems += _catalogue_rules(template, catalogue, deployed, updating, placements or {}, default_vim)
    return problems


def _service_rules(template: ServiceTemplate, deployed: Mapping[str, ServiceTemplate], updating: bool) -> list[Problem]:
    path = "metadata.service_name"
    out = []
    if not template.name:
        out.append(Problem(path, "the media service has no name", "add metadata: {service_name: <name>}"))
    elif not SERVICE_NAME.match(template.name):
        hint = "use 1-63 lower-case letters, digits or '-', starting with a letter or digit"
        out.append(Problem(path, f"service name {template.name!r} is not valid", hint))
    elif template.name in deployed and not updating:
        hint = "update the deployed service instead, or choose another service_name"
        out.append(Problem(path, f"media service {template.name!r} is already deployed", hint))
    elif template.name not in deployed and updating:
        out.append(Problem(path, f"media service {template.name!r} is not deployed", "deploy it first (no update)"))
    if not template.endpoints:
        out.append(Problem(NODES, "the template has no SF endpoints", "add a flame.nodes.ServiceFunctionEndpoint node"))
    return out


def _endpoint_rules(template: ServiceTemplate) -> list[Problem]:
    out: list[Problem] = []
    for ep in template.endpoints:
        base = f"{NODES}.{ep.name}"
        props = f"{base}.properties"
        if not NODE_NAME.match(ep.name):
            hint = "use 1-63 lower-case letters, digits, '_' or '-' (it names instances and descriptors)"
            out.append(Problem(base, f"node name {ep.name!r} is not valid", hint))
        why = fqdn_problem(ep.fqdn)
        if why:
            out.append(
                Problem(f"{props}.fqdn", f"FQDN {ep.fqdn!r} {why}", "write a host name such as vod.video.flame.example")
            )
        if not IMAGE.match(ep.image):
            out.append(
                Problem(f"{props}.image", f"image {ep.image!r} is not a valid image name", "e.g. vod-media-server")
            )
        if ep.vim not in ("", *VIMS):
            out.append(
                Problem(f"{props}.vim", f"unknown VIM {ep.vim!r}", "use " + ", ".join(VIMS) + " or leave it out")
            )
        if not (math.isfinite(ep.cpus) and ep.cpus > 0):
            out.append(Problem(f"{props}.cpus", "must be greater than 0", "e.g. cpus: 0.5"))
        if ep.memory_mb <= 0:
            out.append(Problem(f"{props}.memory_mb", "must be greater than 0", "e.g. memory_mb: 256"))
        if not 0 <= ep.port <= 65535:
            out.append(Problem(f"{props}.port", "must be 0..65535", "0 means the image's default port"))
        if ep.initial_state not in HELD_STATES:
            hint = "use " + ", ".join(HELD_STATES)
            out.append(Problem(f"{props}.initial_state", f"unknown state {ep.initial_state!r}", hint))
        for key in ep.environment:
            if not ENV_NAME.match(key):
                out.append(
                    Problem(f"{props}.environment.{key}", "not a valid variable name", "use letters, digits, '_'")
                )
        c, where = ep.placement, f"{props}.placement"
        if c.tier and c.tier not in TIERS:
            out.append(Problem(f"{where}.tier", f"unknown tier {c.tier!r}", "use dc or edge"))
        if c.near is not None:
            if not -90 <= c.near.latitude <= 90:
                out.append(Problem(f"{where}.near.latitude", "must be within -90..90", "degrees north"))
            if not -180 <= c.near.longitude <= 180:
                out.append(Problem(f"{where}.near.longitude", "must be within -180..180", "degrees east"))
        if c.max_distance_km < 0 or not math.isfinite(c.max_distance_km):
            out.append(Problem(f"{where}.max_distance_km", "must be a distance >= 0", "write kilometres, e.g. 10"))
        elif c.max_distance_km > 0 and c.near is None:
            out.append(Problem(f"{where}.max_distance_km", "needs near", "add near: {latitude: ..., longitude: ...}"))
    return out


#: Durations longer than this are warned about (issue 14: `window: 30000` meant 30 s, not 8.3 h).
PLAUSIBLE_S = 3600.0


def implausible_duration(path: str, seconds: float) -> list[Problem]:
    """A warning for a duration over an hour, naming the unit probably meant (a bare number counts as seconds)."""
    if not math.isfinite(seconds) or seconds <= PLAUSIBLE_S:
        return []
    n = f"{seconds:g}"
    meant = f"{n}ms ({seconds / 1000:g} s)" if seconds >= 1000 else f"{n}s"
    return [
        Problem(
            path,
            f"{seconds / 3600:.1f} h is implausibly long; a bare number is read as seconds",
            f"if milliseconds were meant, write {meant}; write the unit (e.g. {n}s) to keep it",
            Severity.WARNING,
        )
    ]


def _fqdn_rules(template: ServiceTemplate, deployed: Mapping[str, ServiceTemplate]) -> list[Problem]:
    """Endpoints sharing an FQDN are surrogates of one service function: same image and port, different sites.
    An FQDN served by another deployed media service cannot be served by this one (ORCH-7)."""
    out: list[Problem] = []
    first: dict[str, str] = {}
    eps = {ep.name: ep for ep in template.endpoints}
    for ep in template.endpoints:
        fqdn = normalise_fqdn(ep.fqdn)
        path = f"{NODES}.{ep.name}.properties"
        if fqdn in first:
            other = eps[first[fqdn]]
            comparable = all(IMAGE.match(e.image) and 0 <= e.port <= 65535 for e in (ep, other))
            if comparable and (other.image, other.port) != (ep.image, ep.port):
                hint = f"give it its own FQDN, or the image and port of {other.name!r} to make it a surrogate"
                out.append(
                    Problem(
                        f"{path}.fqdn", f"duplicate FQDN {ep.fqdn!r} of {other.name!r} with another image/port", hint
                    )
                )
            elif ep.placement.site and ep.placement.site == other.placement.site:
                hint = "place surrogates of one FQDN at different sites (a NAP registers an FQDN once)"
                out.append(
                    Problem(f"{path}.placement.site", f"{other.name!r} already serves {ep.fqdn!r} at this site", hint)
                )
        else:
            first[fqdn] = ep.name
    for name, service in sorted(deployed.items()):
        if name == template.name:
            continue
        served = {normalise_fqdn(e.fqdn) for e in service.endpoints}
        for fqdn, node in first.items():
            ep = eps[node]
            if fqdn in served:
                hint = "choose another FQDN (each FQDN belongs to one media service)"
                out.append(
                    Problem(
                        f"{NODES}.{ep.name}.properties.fqdn", f"{ep.fqdn!r} is served by media service {name!r}", hint
                    )
                )
    return out


def _condition_rules(
    path: str,
    kind: str,
    measurement: str,
    field: str,
    aggregation: str,
    window_s: float,
    comparison: str,
    threshold: float,
    clear: float | None,
    scope: Mapping[str, str],
    known_metrics: Mapping[str, set[str]] | None,
    *,
    raw_allowed: bool,
) -> list[Problem]:
    """Rules shared by KPIs and metric triggers."""
    out: list[Problem] = []
    if kind not in KINDS:
        out.append(Problem(f"{path}.kind", f"unknown kind {kind!r}", "use " + ", ".join(KINDS)))
    if not measurement:
        out.append(Problem(f"{path}.measurement", "missing measurement", "name a CLMC measurement, e.g. nap_http"))
    elif known_metrics is not None and measurement not in known_metrics:
        known = ", ".join(sorted(known_metrics)) or "none"
        out.append(Problem(f"{path}.measurement", f"unknown measurement {measurement!r}", f"known: {known}"))
    elif known_metrics is not None and field and field not in known_metrics[measurement]:
        known = ", ".join(sorted(known_metrics[measurement])) or "none"
        out.append(Problem(f"{path}.field", f"{measurement} has no field {field!r}", f"known fields: {known}"))
    if kind != "deadman" and not field:
        out.append(Problem(f"{path}.field", f"a {kind} condition needs a field", "name a field, e.g. latency_ms"))
    if aggregation and aggregation not in AGGREGATIONS and not PERCENTILE.match(aggregation):
        hint = "use " + ", ".join(AGGREGATIONS) + " or pNN (e.g. p95)"
        out.append(Problem(f"{path}.aggregation", f"unknown aggregation {aggregation!r}", hint))
    if not aggregation and not raw_allowed:
        out.append(Problem(f"{path}.aggregation", "missing aggregation", "e.g. aggregation: mean"))
    if kind == "relative" and not aggregation:
        out.append(Problem(f"{path}.aggregation", "a relative condition compares aggregates", "e.g. aggregation: mean"))
    needs_window = bool(aggregation) or kind in ("relative", "deadman")
    if not math.isfinite(window_s) or window_s < 0 or (needs_window and window_s == 0):
        hint = "write a positive duration, e.g. window: 30s"
        what = "period" if kind == "deadman" else "window"
        out.append(Problem(f"{path}.window", f"the {what} must be greater than 0", hint))
    else:
        out += implausible_duration(f"{path}.window", window_s)
    if kind in ("threshold", "relative"):
        if not comparison:
            out.append(Problem(f"{path}.comparison", f"a {kind} condition needs a comparison", "use gt or lt"))
        elif comparison not in COMPARISONS:
            out.append(Problem(f"{path}.comparison", f"unknown comparison {comparison!r}", "use gt or lt"))
        if not math.isfinite(threshold):
            out.append(Problem(f"{path}.threshold", "must be a finite number", "write the threshold"))
        if clear is not None and (
            not math.isfinite(clear)
            or (comparison == "gt" and clear > threshold)
            or (comparison == "lt" and clear < threshold)
        ):
            side = "at or below" if comparison == "gt" else "at or above"
            hint = f"with comparison {comparison}, clear_threshold must be {side} threshold {threshold:g} (hysteresis)"
            out.append(Problem(f"{path}.clear_threshold", "hysteresis is inverted", hint))
    for key, value in scope.items():
        if not key or not value:
            out.append(
                Problem(f"{path}.scope.{key}", "scope tags need a name and a value", "e.g. flame_location: nap-edge-a1")
            )
    return out


def _kpi_rules(kpi: KpiSpec, known_metrics: Mapping[str, set[str]] | None) -> list[Problem]:
    path = f"{POLICIES}.{kpi.name}.properties"
    out = _condition_rules(
        path, kpi.kind, kpi.measurement, kpi.field, kpi.aggregation, kpi.window_s if kpi.kind != "deadman" else 1.0,
        kpi.comparison, kpi.threshold, kpi.clear_threshold, kpi.scope, known_metrics, raw_allowed=True,
    )  # fmt: skip
    if kpi.kind == "deadman" and not kpi.deadman_s > 0:
        out.append(Problem(f"{path}.deadman", "a deadman KPI needs a silence period", "e.g. deadman: 2m"))
    if kpi.for_s < 0 or not math.isfinite(kpi.for_s):
        out.append(Problem(f"{path}.for", "must not be negative", "e.g. for: 30s (or leave it out)"))
    for i, tag in enumerate(kpi.group_by):
        if not tag:
            out.append(Problem(f"{path}.group_by[{i}]", "empty tag name", "e.g. group_by: [flame_location]"))
    return out


def _policy_rules(
    policy: StateChangePolicy,
    template: ServiceTemplate,
    kpi_names: set[str],
    known_metrics: Mapping[str, set[str]] | None,
) -> list[Problem]:
    base = f"{POLICIES}.{policy.name}"
    props = f"{base}.properties"
    eps = {ep.name: ep for ep in template.endpoints}
    out: list[Problem] = []
    if not policy.targets:
        out.append(
            Problem(f"{base}.targets", "a state-change policy needs targets", "write targets: [<endpoint node>]")
        )
    for target in policy.targets:
        if target not in eps:
            known = ", ".join(sorted(eps)) or "none"
            out.append(
                Problem(f"{base}.targets", f"{target!r} is not an SF endpoint node of this template", f"known: {known}")
            )
    for prop, state in (("to_state", policy.to_state), ("from_state", policy.from_state)):
        if state not in HELD_STATES:
            out.append(Problem(f"{props}.{prop}", f"unknown state {state!r}", "use " + ", ".join(HELD_STATES)))
    if policy.to_state == policy.from_state:
        out.append(
            Problem(
                f"{props}.to_state", "to_state equals from_state: the policy does nothing", "e.g. placed -> connected"
            )
        )
    if policy.cooldown_s < 0 or not math.isfinite(policy.cooldown_s):
        out.append(Problem(f"{props}.cooldown", "must not be negative", "e.g. cooldown: 30s"))
    else:
        out += implausible_duration(f"{props}.cooldown", policy.cooldown_s)
    for target in policy.targets:
        ep = eps.get(target)
        if ep is not None and ep.initial_state != policy.from_state and policy.from_state in HELD_STATES:
            hint = f"set from_state: {ep.initial_state} (or initial_state: {policy.from_state})"
            msg = f"{target!r} starts {ep.initial_state} but returns to {policy.from_state} when the trigger clears"
            out.append(Problem(f"{props}.from_state", msg, hint, Severity.WARNING))
    out += _trigger_rules(f"{props}.trigger", policy.trigger, kpi_names, known_metrics)
    return out


def _trigger_rules(
    path: str, trigger: TriggerSpec, kpi_names: set[str], known_metrics: Mapping[str, set[str]] | None
) -> list[Problem]:
    if trigger.kpi:
        if trigger.measurement or trigger.field:
            return [Problem(path, "a trigger names a kpi or a metric condition, not both", "remove measurement/field")]
        if trigger.kpi not in kpi_names:
            known = ", ".join(sorted(kpi_names)) or "none declared"
            return [
                Problem(
                    f"{path}.kpi",
                    f"unknown KPI {trigger.kpi!r}",
                    f"name a flame.policies.Kpi of this template ({known})",
                )
            ]
        return []
    if not trigger.measurement:
        return [
            Problem(path, "the trigger names neither a kpi nor a measurement", "add kpi: <name> or measurement/field")
        ]
    return _condition_rules(
        path, trigger.kind, trigger.measurement, trigger.field, trigger.aggregation, trigger.window_s,
        trigger.comparison, trigger.threshold, trigger.clear_threshold, trigger.scope, known_metrics, raw_allowed=False,
    )  # fmt: skip


def _policy_overlap(template: ServiceTemplate) -> list[Problem]:
    owner: dict[str, str] = {}
    out = []
    for policy in template.policies:
        for target in policy.targets:
            if target in owner and owner[target] != policy.name:
                hint = "one state-change policy per endpoint (combine the conditions in one KPI)"
                msg = f"{target!r} is already driven by policy {owner[target]!r}: they may fight"
                out.append(Problem(f"{POLICIES}.{policy.name}.targets", msg, hint, Severity.WARNING))
            owner.setdefault(target, policy.name)
    return out


def _catalogue_rules(
    template: ServiceTemplate,
    catalogue: Catalogue,
    deployed: Mapping[str, ServiceTemplate],
    updating: bool,
    placements: Mapping[str, Mapping[str, str]],
    default_vim: str,
) -> list[Problem]:
    sites = {s.name: s for s in catalogue.sites}
    regions = {s.region for s in catalogue.sites if s.region}
    tiers = {s.tier for s in catalogue.sites}
    out: list[Problem] = []
    for ep in template.endpoints:
        c, where = ep.placement, f"{NODES}.{ep.name}.properties"
        if c.site and c.site not in sites:
            out.append(
                Problem(
                    f"{where}.placement.site", f"unknown site {c.site!r}", "known sites: " + ", ".join(sorted(sites))
                )
            )
        elif c.site and (ep.vim or default_vim) not in sites[c.site].vims:
            hint = f"use one of {', '.join(sites[c.site].vims)} or another site"
            out.append(Problem(f"{where}.vim", f"site {c.site!r} does not offer VIM {ep.vim or default_vim!r}", hint))
        if c.region and c.region not in regions:
            hint = "known regions: " + (", ".join(sorted(regions)) or "none")
            out.append(Problem(f"{where}.placement.region", f"no site in region {c.region!r}", hint))
        if c.tier in TIERS and c.tier not in tiers:
            out.append(Problem(f"{where}.placement.tier", f"no {c.tier} site in the catalogue", "relax the tier"))
    if out:
        return out
    usage = _deployed_usage(template, catalogue, deployed, updating, placements, default_vim)
    placed = place(template, catalogue, usage, default_vim=default_vim)
    return placed if isinstance(placed, list) else []


def _deployed_usage(
    template: ServiceTemplate,
    catalogue: Catalogue,
    deployed: Mapping[str, ServiceTemplate],
    updating: bool,
    placements: Mapping[str, Mapping[str, str]],
    default_vim: str,
) -> dict[str, SiteUsage]:
    """Usage of the other deployed services (the one being updated releases its own)."""
    usage: dict[str, SiteUsage] = {}
    for name, service in sorted(deployed.items()):
        if updating and name == template.name:
            continue
        where = placements.get(name)
        if where is None:
            guess = place(service, catalogue, usage, default_vim=default_vim)
            where = guess if isinstance(guess, dict) else {}
        for site, used in usage_of([(service, where)], catalogue).items():
            prior = usage.get(site, SiteUsage())
            usage[site] = SiteUsage(
                prior.cpus + used.cpus, prior.memory_mb + used.memory_mb, prior.endpoints + used.endpoints
            )
    return usage
