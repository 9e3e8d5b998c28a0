"""Media-service template parsing (ORCH-2, ORCH-8, ORCH-9, SFEMC-1, SFEMC-2): TOSCA YAML text -> ``ServiceTemplate``.

Two checks run on every template and both report every problem with its dotted path:

1. the FLAME profile's shapes (``profile.TypeSystem``: known types, required properties, property types, unknown
   fields), with paths such as ``topology_template.node_templates.edge_a.properties.cpus``;
2. the TOSCA grammar, by ``tosca-parser`` with the shipped profile injected as the only import (no network, no file
   access on behalf of the author). tosca-parser sees a copy in which FLAME entities carry shape-valid stand-in
   properties: its own value errors carry no location and would repeat ours (and it rejects ``cpus: 1`` as "not a
   float"), so it judges the rest: sections, version, type hierarchy, requirements, node templates of other types.

Meaning (states, kinds, references, capacity...) is ``validation.validate``'s job. Pure apart from reading the profile.
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from flame_control.orchestrator.model import (
    EndpointNode,
    GeoPoint,
    KpiSpec,
    PlacementConstraint,
    Problem,
    ServiceTemplate,
    Severity,
    StateChangePolicy,
    TriggerSpec,
)
from flame_control.orchestrator.profile import (
    ENDPOINT,
    KPI,
    PROFILE_IMPORT,
    PROFILE_PATH,
    STATE_CHANGE,
    TypeSystem,
    duration_s,
    load_yaml,
    placeholders,
)

NODES = "topology_template.node_templates"
POLICIES = "topology_template.policies"
#: tosca-parser keeps its errors in a process-wide collector: one parse at a time.
_TOSCA_LOCK = threading.Lock()
_QUOTED = re.compile(r'"([^"]*)"')
#: TOSCA Simple Profile versions tosca-parser implements (the profile itself is 1.3).
VERSIONS = ("tosca_simple_yaml_1_0", "tosca_simple_yaml_1_2", "tosca_simple_yaml_1_3")
_NODE_KEYS = {
    "type", "description", "metadata", "directives", "properties", "attributes", "requirements", "capabilities",
    "interfaces", "artifacts", "node_filter", "copy",
}  # fmt: skip
_POLICY_KEYS = {"type", "description", "metadata", "properties", "targets", "triggers"}
#: TOSCA node template sections FLAME endpoints do not use (accepted, reported as ignored).
_IGNORED = ("requirements", "capabilities", "interfaces", "artifacts", "attributes", "node_filter")


def parse_template(text: str) -> tuple[ServiceTemplate | None, list[Problem]]:
    """Parse a media-service template; the template (None when its structure is unusable) and every problem."""
    doc, problems = load_yaml(text, "template")
    if problems:
        return None, problems
    entities, problems = split_document(doc)
    if entities is None:
        return None, problems
    nodes, policies, types = entities
    endpoints: list[EndpointNode] = []
    for name, tpl in nodes.items():
        path = f"{NODES}.{name}"
        kind = tpl["type"]
        if types.is_a(kind, ENDPOINT):
            defs = types.properties(kind, "node_types")
            problems += types.check_properties(tpl.get("properties"), defs, f"{path}.properties", kind)
            endpoints.append(_endpoint(name, tpl.get("properties")))
            problems += [
                Problem(f"{path}.{k}", f"{k} of an SF endpoint are ignored by FLAME", f"remove {k}", Severity.WARNING)
                for k in _IGNORED
                if tpl.get(k)
            ]
        elif types.known(kind, "node_types"):
            problems.append(
                Problem(
                    f"{path}.type", f"{kind} is not a media-service node", f"use {ENDPOINT} (or a type derived from it)"
                )
            )
        else:
            problems.append(_unknown_type(f"{path}.type", kind, ENDPOINT, "node_types"))
    state_changes: list[StateChangePolicy] = []
    kpis: list[KpiSpec] = []
    for name, (_, tpl) in policies.items():
        path = f"{POLICIES}.{name}"
        kind = tpl["type"]
        props = tpl.get("properties")
        if types.is_a(kind, STATE_CHANGE, "policy_types") or types.is_a(kind, KPI, "policy_types"):
            defs = types.properties(kind, "policy_types")
            problems += types.check_properties(props, defs, f"{path}.properties", kind)
        if types.is_a(kind, STATE_CHANGE, "policy_types"):
            state_changes.append(_state_change(name, tpl.get("targets"), props))
        elif types.is_a(kind, KPI, "policy_types"):
            kpis.append(_kpi(name, props))
        else:
            problems.append(_unknown_type(f"{path}.type", kind, f"{STATE_CHANGE} or {KPI}", "policy_types"))
        targets = tpl.get("targets")
        if targets is not None and not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
            problems.append(Problem(f"{path}.targets", "must be a list of node template names", "write [node_a, ...]"))
    metadata = doc.get("metadata")
    meta = {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    name = meta.get("service_name") or meta.get("template_name", "")
    problems += tosca_problems(doc, types, nodes, policies, _endpoint_like(types))
    template = ServiceTemplate(name, tuple(endpoints), tuple(state_changes), tuple(kpis), meta)
    return template, _dedupe(problems)


def split_document(
    doc: Any,
) -> tuple[tuple[dict[str, Any], dict[str, tuple[int, dict[str, Any]]], TypeSystem] | None, list[Problem]]:
    """Top-level structure shared with catalogues: (node templates, policies by name with index, types), problems."""
    if not isinstance(doc, dict):
        return None, [
            Problem("", "must be a YAML mapping (a TOSCA service template)", "start with tosca_definitions_version")
        ]
    problems = _import_problems(doc.get("imports"))
    version = doc.get("tosca_definitions_version")
    if version not in VERSIONS:
        what = "missing" if version is None else f"{version!r} is not supported"
        problems.append(
            Problem("tosca_definitions_version", what, "write tosca_definitions_version: tosca_simple_yaml_1_3")
        )
    topo = doc.get("topology_template")
    if not isinstance(topo, dict):
        hint = "add topology_template with node_templates"
        return None, [*problems, Problem("topology_template", "missing or not a mapping", hint)]
    raw_nodes = topo.get("node_templates")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        hint = "declare at least one node template"
        return None, [*problems, Problem(NODES, "missing, empty or not a mapping", hint)]
    nodes: dict[str, dict[str, Any]] = {}
    for name, tpl in raw_nodes.items():
        path = f"{NODES}.{name}"
        if not isinstance(name, str):
            problems.append(Problem(path, "node template names must be strings", "quote the name"))
        elif not isinstance(tpl, dict) or not isinstance(tpl.get("type"), str):
            problems.append(Problem(f"{path}.type", "a node template needs a type", "add type: <node type name>"))
        else:
            nodes[name] = tpl
            problems += [
                Problem(f"{path}.{k}", "unknown node template field", "see TOSCA 1.3 section 3.8.3")
                for k in tpl
                if k not in _NODE_KEYS
            ]
    policies: dict[str, tuple[int, dict[str, Any]]] = {}
    raw_policies = topo.get("policies") or []
    if not isinstance(raw_policies, list):
        problems.append(Problem(POLICIES, "must be a list of {name: policy} entries", "write - name: {type: ...}"))
        raw_policies = []
    for i, entry in enumerate(raw_policies):
        if not (isinstance(entry, dict) and len(entry) == 1):
            problems.append(Problem(f"{POLICIES}[{i}]", "each entry must be one {name: policy}", "write - name: {...}"))
            continue
        ((name, tpl),) = entry.items()
        path = f"{POLICIES}.{name}"
        if not isinstance(name, str) or not isinstance(tpl, dict) or not isinstance(tpl.get("type"), str):
            problems.append(Problem(f"{path}.type", "a policy needs a name and a type", "add type: <policy type>"))
        elif name in policies or name in nodes:
            problems.append(
                Problem(path, f"duplicate name {name!r}", "give every node template and policy its own name")
            )
        else:
            policies[name] = (i, tpl)
            problems += [
                Problem(f"{path}.{k}", "unknown policy field", "allowed: " + ", ".join(sorted(_POLICY_KEYS)))
                for k in tpl
                if k not in _POLICY_KEYS
            ]
    return (nodes, policies, TypeSystem.for_document(doc)), problems


def _import_problems(imports: Any) -> list[Problem]:
    if imports is None:
        return []
    if not isinstance(imports, list):
        return [Problem("imports", "must be a list", f"write imports: [{PROFILE_IMPORT}] or leave it out")]
    problems = []
    for i, entry in enumerate(imports):
        target = entry
        if isinstance(entry, dict) and len(entry) == 1:
            (target,) = entry.values()
            if isinstance(target, dict):
                target = target.get("file")
        if not (isinstance(target, str) and target.rstrip("/").rsplit("/", 1)[-1] == PROFILE_IMPORT):
            problems.append(
                Problem(
                    f"imports[{i}]",
                    f"only the FLAME profile ({PROFILE_IMPORT}) can be imported; nothing is fetched",
                    "declare your own types under node_types/policy_types/data_types in this template",
                )
            )
    return problems


def _unknown_type(path: str, kind: str, expected: str, section: str) -> Problem:
    if kind.startswith("tosca."):
        return Problem(path, f"{kind} is not deployable by FLAME", f"use {expected}")
    return Problem(path, f"unknown type {kind!r}", f"use {expected} or declare {kind} under {section}")


def _endpoint_like(types: TypeSystem) -> Callable[[str], bool]:
    return lambda kind: types.is_a(kind, ENDPOINT)


# --- tosca-parser ---------------------------------------------------------------------------------------------------


def tosca_problems(
    doc: Mapping[str, Any],
    types: TypeSystem,
    nodes: Mapping[str, Mapping[str, Any]],
    policies: Mapping[str, tuple[int, Mapping[str, Any]]],
    target_ok: Callable[[str], bool],
) -> list[Problem]:
    """TOSCA grammar problems found by tosca-parser on a copy with stand-in FLAME properties and the profile import."""
    from toscaparser.common.exception import ExceptionCollector  # a runtime dependency, imported when first needed
    from toscaparser.tosca_template import ToscaTemplate

    tpl = copy.copy(dict(doc))
    tpl["imports"] = [str(PROFILE_PATH)]
    if tpl.get("tosca_definitions_version") not in VERSIONS:
        tpl["tosca_definitions_version"] = VERSIONS[-1]  # reported by version_problems; judge the rest as 1.3
    topo = dict(tpl["topology_template"])
    stand_ins: dict[str, Mapping[str, Any]] = {}
    for name, node in nodes.items():
        if types.known(node["type"], "node_types"):
            stand_in = {k: v for k, v in node.items() if k != "properties"}
            stand_in["properties"] = placeholders(types, types.properties(node["type"], "node_types"))
            stand_ins[name] = stand_in
        else:  # already reported as unknown or not deployable: keep the name, drop what depends on the type
            stand_ins[name] = {"type": "tosca.nodes.Root"}
    topo["node_templates"] = stand_ins
    entries = []
    for name, (_, policy) in policies.items():
        if not types.known(policy["type"], "policy_types"):
            continue  # already reported
        stand_in = dict(policy)
        stand_in["properties"] = placeholders(types, types.properties(policy["type"], "policy_types"))
        targets = policy.get("targets")
        kept = (
            [t for t in targets if isinstance(t, str) and t in nodes and target_ok(t)]
            if isinstance(targets, list)
            else []
        )
        stand_in.pop("targets", None)
        if kept:
            stand_in["targets"] = kept
        entries.append({name: stand_in})
    topo["policies"] = entries
    tpl["topology_template"] = topo
    with _TOSCA_LOCK:
        try:
            ToscaTemplate(yaml_dict_tpl=tpl, a_file=False)
            return []
        except Exception as exc:  # tosca-parser raises ValidationError, and plain errors on odd input
            caught = list(ExceptionCollector.getExceptions()) or [exc]
            ExceptionCollector.clear()
    return [_tosca_problem(str(e), type(e).__name__, doc, nodes, policies) for e in caught]


def _tosca_problem(
    message: str,
    kind: str,
    doc: Mapping[str, Any],
    nodes: Mapping[str, Mapping[str, Any]],
    policies: Mapping[str, Any],
) -> Problem:
    message = " ".join(message.split()).replace(str(PROFILE_PATH), PROFILE_IMPORT)
    if kind == "ValidationError" and "failed validation with the following" in message:
        message = message.split("error(s):", 1)[-1].strip()
    quoted = _QUOTED.findall(message)
    path = ""
    for q in quoted:
        if q in nodes:
            path = f"{NODES}.{q}"
        elif q in policies:
            path = f"{POLICIES}.{q}"
        else:
            owner = next((n for n, t in nodes.items() if t.get("type") == q), None)
            path = f"{NODES}.{owner}.type" if owner else ""
        if path:
            break
    if not path:
        path = next((q for q in quoted if q in doc), "")
        if "version" in message.lower() and not path:
            path = "tosca_definitions_version"
    if path.startswith(NODES) and "unknown field" in message and len(quoted) >= 3:
        path += f".{quoted[-1]}" if quoted[0] != "properties" else f".properties.{quoted[-1]}"
    return Problem(path, f"TOSCA: {message}", "see the TOSCA Simple Profile 1.3 grammar and docs/tosca-profile.md")


def _dedupe(problems: list[Problem]) -> list[Problem]:
    """Drop tosca-parser problems at a path (or under it) where the profile check already reported one."""
    ours = [p.path for p in problems if not p.message.startswith("TOSCA: ") and p.severity is Severity.ERROR]
    out: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for p in problems:
        if p.message.startswith("TOSCA: ") and p.path and any(o == p.path or o.startswith(p.path + ".") for o in ours):
            continue
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            out.append(p)
    return out


# --- model building (shape-invalid values fall back to the model's defaults; the problem is already reported) ------


def _get(props: Any, key: str, kinds: type | tuple[type, ...], default: Any) -> Any:
    if not isinstance(props, dict):
        return default
    value = props.get(key)
    if value is None or isinstance(value, bool) != (kinds is bool) or not isinstance(value, kinds):
        return default
    return value


def _float(props: Any, key: str, default: float) -> float:
    return float(_get(props, key, (int, float), default))


def _opt_float(props: Any, key: str) -> float | None:
    value = _get(props, key, (int, float), None)
    return None if value is None else float(value)


def _duration(props: Any, key: str, default: float) -> float:
    value = duration_s(props.get(key)) if isinstance(props, dict) else None
    return default if value is None else value


def _str_map(props: Any, key: str) -> dict[str, str]:
    value = _get(props, key, dict, {})
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int | float)}


def _geo(value: Any) -> GeoPoint | None:
    if isinstance(value, dict):
        lat, lon = _opt_float(value, "latitude"), _opt_float(value, "longitude")
        if lat is not None and lon is not None:
            return GeoPoint(lat, lon)
    return None


def _endpoint(name: str, props: Any) -> EndpointNode:
    place = _get(props, "placement", dict, {})
    return EndpointNode(
        name=name,
        fqdn=_get(props, "fqdn", str, ""),
        image=_get(props, "image", str, ""),
        vim=_get(props, "vim", str, ""),
        cpus=_float(props, "cpus", EndpointNode.cpus),
        memory_mb=_get(props, "memory_mb", int, EndpointNode.memory_mb),
        port=_get(props, "port", int, EndpointNode.port),
        initial_state=_get(props, "initial_state", str, EndpointNode.initial_state),
        environment=_str_map(props, "environment"),
        placement=PlacementConstraint(
            site=_get(place, "site", str, ""),
            region=_get(place, "region", str, ""),
            tier=_get(place, "tier", str, ""),
            near=_geo(place.get("near")),
            max_distance_km=_float(place, "max_distance_km", 0.0),
        ),
    )


def _state_change(name: str, targets: Any, props: Any) -> StateChangePolicy:
    trig = _get(props, "trigger", dict, {})
    trigger = TriggerSpec(
        kpi=_get(trig, "kpi", str, ""),
        measurement=_get(trig, "measurement", str, ""),
        field=_get(trig, "field", str, ""),
        aggregation=_get(trig, "aggregation", str, TriggerSpec.aggregation),
        window_s=_duration(trig, "window", TriggerSpec.window_s),
        kind=_get(trig, "kind", str, TriggerSpec.kind),
        comparison=_get(trig, "comparison", str, TriggerSpec.comparison),
        threshold=_float(trig, "threshold", TriggerSpec.threshold),
        clear_threshold=_opt_float(trig, "clear_threshold"),
        scope=_str_map(trig, "scope"),
    )
    names = tuple(t for t in targets if isinstance(t, str)) if isinstance(targets, list) else ()
    return StateChangePolicy(
        name=name,
        targets=names,
        trigger=trigger,
        to_state=_get(props, "to_state", str, StateChangePolicy.to_state),
        from_state=_get(props, "from_state", str, StateChangePolicy.from_state),
        cooldown_s=_duration(props, "cooldown", StateChangePolicy.cooldown_s),
    )


def _kpi(name: str, props: Any) -> KpiSpec:
    group_by = _get(props, "group_by", list, [])
    return KpiSpec(
        name=name,
        kind=_get(props, "kind", str, ""),
        measurement=_get(props, "measurement", str, ""),
        field=_get(props, "field", str, ""),
        aggregation=_get(props, "aggregation", str, ""),
        window_s=_duration(props, "window", 0.0),
        group_by=tuple(str(g) for g in group_by if isinstance(g, str)),
        scope=_str_map(props, "scope"),
        comparison=_get(props, "comparison", str, KpiSpec.comparison),
        threshold=_float(props, "threshold", KpiSpec.threshold),
        clear_threshold=_opt_float(props, "clear_threshold"),
        for_s=_duration(props, "for", 0.0),
        deadman_s=_duration(props, "deadman", 0.0),
    )
