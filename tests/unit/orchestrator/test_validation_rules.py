# ruff: noqa: E501  (the rule tables below are one case per line)
"""One bad template per validation rule (ORCH-2 consistency check, ORCH-7 consolidation with the deployed state,
ORCH-8/SFEMC-2 surrogate policies): each asserts the ERROR and its template path; nothing else is wrong with it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from flame_control.orchestrator.model import Catalogue, Problem, ServiceTemplate, Severity, TemplateInvalid
from flame_control.orchestrator.template import parse_template
from flame_control.orchestrator.validation import check_template, raise_if_invalid
from tests.unit.orchestrator.base_template import NODES, POLICIES, base, policy, props, text

Doc = dict[str, Any]
METRICS = {"nap_http": {"requests", "latency_ms", "bytes_in", "bytes_out", "errors"}}


def _other_service(
    fqdn: str = "other.video.flame.example", cpus: float = 0.5, site: str = "site-dc"
) -> ServiceTemplate:
    doc = base()
    doc["metadata"]["service_name"] = "other"
    nodes = doc["topology_template"]["node_templates"]
    nodes.pop("edge_b")
    nodes.pop("edge_a")
    doc["topology_template"]["policies"] = []
    props(doc, "origin").update(fqdn=fqdn, cpus=cpus, placement={"site": site})
    tpl, problems = parse_template(text(doc))
    assert tpl is not None and not problems, problems
    return tpl


def _set(node: str, **values: Any) -> Callable[[Doc], None]:
    return lambda d: props(d, node).update(values)


def _place(node: str, **values: Any) -> Callable[[Doc], None]:
    return lambda d: props(d, node).setdefault("placement", {}).update(values)


def _pol(name: str, **values: Any) -> Callable[[Doc], None]:
    return lambda d: policy(d, name)["properties"].update(values)


def _trig(**values: Any) -> Callable[[Doc], None]:
    return lambda d: policy(d, "latency")["properties"]["trigger"].update(values)


def _del_node_prop(node: str, key: str) -> Callable[[Doc], None]:
    return lambda d: props(d, node).pop(key)


def _top(**values: Any) -> Callable[[Doc], None]:
    return lambda d: d.update(values)


def _rename_node(d: Doc) -> None:
    nodes = d["topology_template"]["node_templates"]
    nodes["Origin"] = nodes.pop("origin")


def _policy_named_like_node(d: Doc) -> None:
    d["topology_template"]["policies"].append({"origin": {"type": "flame.policies.Kpi", "properties": {}}})


P = f"{POLICIES}.latency.properties.trigger"
K = f"{POLICIES}.demand.properties"

# (rule, mutation, expected path, context)
CASES: list[tuple[str, Callable[[Doc], None], str, str]] = [
    # parsing: types, shapes, TOSCA grammar
    ("unknown-node-type", lambda d: d["topology_template"]["node_templates"]["origin"].update(type="flame.nodes.Nope"), f"{NODES}.origin.type", ""),
    ("normative-type-not-deployable", lambda d: d["topology_template"]["node_templates"]["origin"].update(type="tosca.nodes.Compute", properties={}), f"{NODES}.origin.type", ""),
    ("catalogue-type-in-template", lambda d: d["topology_template"]["node_templates"]["origin"].update(type="flame.nodes.Nap", properties={}), f"{NODES}.origin.type", ""),
    ("unknown-policy-type", lambda d: policy(d, "connect").update(type="flame.policies.Nope"), f"{POLICIES}.connect.type", ""),
    ("missing-required-property", _del_node_prop("origin", "fqdn"), f"{NODES}.origin.properties.fqdn", ""),
    ("property-type", _set("origin", cpus="lots"), f"{NODES}.origin.properties.cpus", ""),
    ("property-type-nested", _place("origin", near={"latitude": "north", "longitude": 0}), f"{NODES}.origin.properties.placement.near.latitude", ""),
    ("unknown-property", _set("origin", colour="blue"), f"{NODES}.origin.properties.colour", ""),
    ("unknown-node-field", lambda d: d["topology_template"]["node_templates"]["origin"].update(bogus=1), f"{NODES}.origin.bogus", ""),
    ("unknown-policy-field", lambda d: policy(d, "connect").update(bogus=1), f"{POLICIES}.connect.bogus", ""),
    ("imports-not-fetched", _top(imports=["https://example.org/types.yaml"]), "imports[0]", ""),
    ("tosca-grammar-section", _top(bogus_section=1), "bogus_section", ""),
    ("tosca-version", _top(tosca_definitions_version="tosca_simple_yaml_9_9"), "tosca_definitions_version", ""),
    ("policy-shape", lambda d: d["topology_template"]["policies"].append("oops"), f"{POLICIES}[3]", ""),
    ("duplicate-name", _policy_named_like_node, f"{POLICIES}.origin", ""),
    ("targets-shape", lambda d: policy(d, "connect").update(targets="edge_a"), f"{POLICIES}.connect.targets", ""),
    ("duration-syntax", _pol("connect", cooldown="soon"), f"{POLICIES}.connect.properties.cooldown", ""),
    # service
    ("service-name-syntax", lambda d: d["metadata"].update(service_name="Bad_Name"), "metadata.service_name", ""),
    ("service-name-missing", lambda d: d.pop("metadata"), "metadata.service_name", ""),
    ("service-already-deployed", lambda d: None, "metadata.service_name", "deployed-vod"),
    ("service-not-deployed-on-update", lambda d: None, "metadata.service_name", "updating"),
    ("no-endpoints", lambda d: d["topology_template"]["node_templates"].update(origin={"type": "tosca.nodes.Root"}, edge_a={"type": "tosca.nodes.Root"}, edge_b={"type": "tosca.nodes.Root"}), NODES, ""),
    # endpoints
    ("node-name", _rename_node, f"{NODES}.Origin", ""),
    ("fqdn-syntax", _set("origin", fqdn="not a host"), f"{NODES}.origin.properties.fqdn", ""),
    ("image-name", _set("origin", image=""), f"{NODES}.origin.properties.image", ""),
    ("vim-unknown", _set("origin", vim="kvm"), f"{NODES}.origin.properties.vim", ""),
    ("cpus-positive", _set("origin", cpus=0), f"{NODES}.origin.properties.cpus", ""),
    ("memory-positive", _set("origin", memory_mb=-1), f"{NODES}.origin.properties.memory_mb", ""),
    ("port-range", _set("origin", port=70000), f"{NODES}.origin.properties.port", ""),
    ("initial-state", _set("origin", initial_state="running"), f"{NODES}.origin.properties.initial_state", ""),
    ("environment-name", _set("origin", environment={"1BAD": "x"}), f"{NODES}.origin.properties.environment.1BAD", ""),
    ("placement-tier-value", _place("origin", tier="cloud"), f"{NODES}.origin.properties.placement.tier", ""),
    ("placement-distance-needs-near", _place("origin", max_distance_km=5), f"{NODES}.origin.properties.placement.max_distance_km", ""),
    ("placement-near-range", _place("origin", near={"latitude": 100, "longitude": 0}), f"{NODES}.origin.properties.placement.near.latitude", ""),
    # FQDNs
    ("surrogate-mismatch", _set("edge_a", image="other-image"), f"{NODES}.edge_a.properties.fqdn", ""),
    ("surrogate-same-site", _place("edge_a", site="site-dc"), f"{NODES}.edge_a.properties.placement.site", ""),
    ("fqdn-served-by-deployed-service", lambda d: None, f"{NODES}.origin.properties.fqdn", "deployed-same-fqdn"),
    # state-change policies
    ("policy-unknown-target", lambda d: policy(d, "connect").update(targets=["ghost"]), f"{POLICIES}.connect.targets", ""),
    ("policy-no-targets", lambda d: policy(d, "connect").update(targets=[]), f"{POLICIES}.connect.targets", ""),
    ("policy-to-state", _pol("connect", to_state="running"), f"{POLICIES}.connect.properties.to_state", ""),
    ("policy-from-state", _pol("connect", from_state="gone"), f"{POLICIES}.connect.properties.from_state", ""),
    ("policy-noop", _pol("connect", to_state="placed"), f"{POLICIES}.connect.properties.to_state", ""),
    ("policy-cooldown-negative", _pol("connect", cooldown="-5s"), f"{POLICIES}.connect.properties.cooldown", ""),
    ("trigger-unknown-kpi", lambda d: policy(d, "connect")["properties"].update(trigger={"kpi": "ghost"}), f"{POLICIES}.connect.properties.trigger.kpi", ""),
    ("trigger-kpi-and-metric", lambda d: policy(d, "connect")["properties"].update(trigger={"kpi": "demand", "measurement": "nap_http"}), f"{POLICIES}.connect.properties.trigger", ""),
    ("trigger-empty", lambda d: policy(d, "connect")["properties"].update(trigger={}), f"{POLICIES}.connect.properties.trigger", ""),
    ("trigger-missing", lambda d: policy(d, "connect")["properties"].pop("trigger"), f"{POLICIES}.connect.properties.trigger", ""),
    ("trigger-aggregation", _trig(aggregation="median"), f"{P}.aggregation", ""),
    ("trigger-window-zero", _trig(window=0), f"{P}.window", ""),
    ("trigger-window-negative", _trig(window="-30s"), f"{P}.window", ""),
    ("trigger-kind", _trig(kind="spike"), f"{P}.kind", ""),
    ("trigger-comparison-missing", _trig(comparison=""), f"{P}.comparison", ""),
    ("trigger-comparison-unknown", _trig(comparison="ge"), f"{P}.comparison", ""),
    ("trigger-hysteresis-inverted", _trig(clear_threshold=60), f"{P}.clear_threshold", ""),
    ("trigger-field-missing", lambda d: policy(d, "latency")["properties"]["trigger"].pop("field"), f"{P}.field", ""),
    ("trigger-unknown-measurement", _trig(measurement="nap_htp"), f"{P}.measurement", "metrics"),
    ("trigger-unknown-field", _trig(field="latency"), f"{P}.field", "metrics"),
    ("trigger-scope-empty-value", _trig(scope={"flame_location": ""}), f"{P}.scope.flame_location", ""),
    # KPIs
    ("kpi-kind", _pol("demand", kind="spike"), f"{K}.kind", ""),
    ("kpi-measurement-missing", lambda d: policy(d, "demand")["properties"].pop("measurement"), f"{K}.measurement", ""),
    ("kpi-deadman-without-period", _pol("demand", kind="deadman"), f"{K}.deadman", ""),
    ("kpi-relative-needs-aggregation", lambda d: (_pol("demand", kind="relative")(d), policy(d, "demand")["properties"].pop("aggregation")), f"{K}.aggregation", ""),
    ("kpi-comparison-missing", _pol("demand", comparison=""), f"{K}.comparison", ""),
    ("kpi-window-negative", _pol("demand", window="-1m"), f"{K}.window", ""),
    ("kpi-for-negative", _pol("demand", **{"for": -3}), f"{K}.for", ""),
    ("kpi-hysteresis-inverted", _pol("demand", clear_threshold=80), f"{K}.clear_threshold", ""),
    ("kpi-unknown-measurement", _pol("demand", measurement="cpu_load"), f"{K}.measurement", "metrics"),
    ("kpi-group-by-empty", _pol("demand", group_by=[""]), f"{K}.group_by[0]", ""),
    # against the catalogue (ORCH-5, ORCH-7)
    ("placement-unknown-site", _place("origin", site="site-moon"), f"{NODES}.origin.properties.placement.site", "catalogue"),
    ("placement-unknown-region", _place("origin", region="cardiff"), f"{NODES}.origin.properties.placement.region", "catalogue"),
    ("placement-no-site-of-tier", lambda d: props(d, "origin").update(placement={"tier": "dc"}), f"{NODES}.origin.properties.placement.tier", "catalogue-edge-only"),
    ("vim-not-offered-at-site", _set("edge_a", vim="openstack"), f"{NODES}.edge_a.properties.vim", "catalogue"),
    ("capacity-cpus", _set("origin", cpus=64), f"{NODES}.origin.properties.placement", "catalogue"),
    ("capacity-memory", _set("origin", memory_mb=10**6), f"{NODES}.origin.properties.placement", "catalogue"),
    ("capacity-counts-deployed", _set("edge_a", cpus=1), f"{NODES}.edge_a.properties.placement", "catalogue-deployed-edge-full"),
    ("placement-unsatisfiable", lambda d: props(d, "origin").update(placement={"near": {"latitude": 48.85, "longitude": 2.35}, "max_distance_km": 50}), f"{NODES}.origin.properties.placement", "catalogue"),
]  # fmt: skip


def _context(kind: str, catalogue: Catalogue) -> dict[str, Any]:
    ctx: dict[str, Any] = {"catalogue": None, "deployed": {}}
    if kind.startswith("catalogue"):
        ctx["catalogue"] = catalogue
    if kind == "catalogue-edge-only":
        ctx["catalogue"] = dataclasses.replace(catalogue, sites=tuple(s for s in catalogue.sites if s.tier == "edge"))
    if kind == "catalogue-deployed-edge-full":
        ctx["deployed"] = {"other": _other_service(cpus=3.5, site="site-edge-a")}
        ctx["placements"] = {"other": {"origin": "site-edge-a"}}
    if kind == "deployed-vod":
        ctx["deployed"] = {"vod": parse_template(text(base()))[0]}
    if kind == "updating":
        ctx["updating"] = True
    if kind == "deployed-same-fqdn":
        ctx["deployed"] = {"other": _other_service(fqdn="vod.video.flame.example")}
    if kind == "metrics":
        ctx["known_metrics"] = METRICS
    return ctx


def _check(doc: Doc, ctx: dict[str, Any]) -> list[Problem]:
    catalogue, deployed = ctx.pop("catalogue"), ctx.pop("deployed")
    return check_template(text(doc), catalogue, deployed, **ctx)[1]


def test_the_base_template_is_valid_in_every_context(catalogue: Catalogue) -> None:
    """ORCH-2: the base template has no problem, so each case below proves exactly one rule."""
    for kind in sorted(
        {c[3] for c in CASES} - {"deployed-vod", "updating", "deployed-same-fqdn", "catalogue-edge-only"}
    ):
        assert _check(base(), _context(kind, catalogue)) == [], kind


@pytest.mark.parametrize(("rule", "mutate", "path", "kind"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_reports_an_error_at_its_template_path(
    rule: str, mutate: Callable[[Doc], None], path: str, kind: str, catalogue: Catalogue
) -> None:
    """ORCH-2/ORCH-7: one bad template per rule -> an ERROR at the expected path, with a hint; deploy refused."""
    doc = base()
    mutate(doc)
    problems = _check(doc, _context(kind, catalogue))
    at_path = [p for p in problems if p.path == path and p.severity is Severity.ERROR]
    assert at_path, f"{rule}: no error at {path}; got {problems}"
    assert all(p.hint for p in problems), problems
    with pytest.raises(TemplateInvalid):
        raise_if_invalid(problems)


def test_capacity_is_counted_from_deployed_services_without_their_placements(catalogue: Catalogue) -> None:
    """ORCH-7: without recorded placements, deployed services are re-placed deterministically to count their usage."""
    doc = base()
    props(doc, "origin").update(cpus=8)
    deployed = {"other": _other_service(cpus=10, site="site-dc")}
    problems = check_template(text(doc), catalogue, deployed)[1]
    assert [p.path for p in problems] == [f"{NODES}.origin.properties.placement"]
    assert "needs 8 cpus, 6 of 16 free" in problems[0].message


def test_an_update_releases_the_services_own_resources(catalogue: Catalogue) -> None:
    """ORCH-7: updating a service does not count its current endpoints against the new template."""
    doc = base()
    props(doc, "origin").update(cpus=12)
    current = parse_template(text(doc))[0]
    assert current is not None
    problems = check_template(
        text(doc), catalogue, {"vod": current}, updating=True, placements={"vod": {"origin": "site-dc"}}
    )[1]
    assert problems == []


def test_warnings_do_not_block_and_carry_hints() -> None:
    """ORCH-8: from_state differing from the target's initial state and two policies on one endpoint are warnings."""
    doc = base()
    policy(doc, "connect")["properties"]["from_state"] = "booted"
    policy(doc, "latency")["targets"] = ["edge_a"]
    problems = check_template(text(doc))[1]
    assert {p.severity for p in problems} == {Severity.WARNING}
    assert {p.path for p in problems} == {f"{POLICIES}.connect.properties.from_state", f"{POLICIES}.latency.targets"}
    raise_if_invalid(problems)


def test_every_problem_of_a_template_with_many_faults_is_reported() -> None:
    """ORCH-2: problems are collected, not stopped at the first."""
    doc = base()
    props(doc, "origin").update(cpus="x", fqdn="bad host")
    props(doc, "edge_a").update(initial_state="gone")
    policy(doc, "connect")["targets"] = ["ghost"]
    paths = {p.path for p in check_template(text(doc))[1]}
    assert {
        f"{NODES}.origin.properties.cpus",
        f"{NODES}.origin.properties.fqdn",
        f"{NODES}.edge_a.properties.initial_state",
        f"{POLICIES}.connect.targets",
    } <= paths


def test_orch7_fqdns_differing_only_in_case_are_one_name_for_the_different_sites_rule() -> None:
    """Issue 14: `VOD.video.flame.example` and `vod.video.flame.example` at one site are refused like equal names."""
    doc = base()
    props(doc, "edge_a")["fqdn"] = "VOD.Video.Flame.Example"
    props(doc, "edge_a")["placement"] = {"site": "site-dc"}
    _tpl, problems = check_template(text(doc))
    assert any(p.path.endswith("edge_a.properties.placement.site") and p.severity is Severity.ERROR for p in problems)


def test_orch2_implausible_window_is_warned_about_with_the_unit_probably_meant() -> None:
    """Issue 14: `window: 30000` (30 s in ms meant) is accepted as 8.3 h, with a warning naming 30000ms."""
    doc = base()
    policy(doc, "demand")["properties"]["window"] = 30000
    _tpl, problems = check_template(text(doc))
    warnings = [p for p in problems if p.severity is Severity.WARNING and p.path.endswith(".window")]
    assert warnings and "8.3 h" in warnings[0].message and "30000ms" in warnings[0].hint, problems
    policy(doc, "demand")["properties"]["window"] = "30s"
    assert not [p for p in check_template(text(doc))[1] if p.path.endswith(".window")]
