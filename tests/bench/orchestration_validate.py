"""Validation time of a large media-service template (figure ``validate_ms_200_nodes``, ORCH-2/ORCH-7): parse (profile
shapes + tosca-parser grammar) and validate (rules, consolidation, placement against a catalogue) of a generated
template with ``n_nodes`` SF endpoints, a StateChange policy per edge surrogate and a KPI per edge site."""

from __future__ import annotations

import statistics
import time

import yaml

from flame_control.orchestrator.catalogue import parse_catalogue
from flame_control.orchestrator.model import Severity
from flame_control.orchestrator.validation import check_template

#: Surrogates per FQDN (each on its own site: a NAP registers an FQDN once).
SURROGATES = 10


def _sites(n_nodes: int) -> int:
    return max(SURROGATES, -(-n_nodes // 8))  # at most 8 endpoints per site, enough sites for the surrogates


def generate_catalogue(n_sites: int) -> str:
    """A catalogue of ``n_sites`` edge sites (one NAP each) behind a chain of switches, plus a data centre."""
    nodes: dict[str, object] = {}
    switches = max(1, -(-n_sites // 16))
    for s in range(switches):
        nodes[f"sw-{s}"] = {"type": "flame.nodes.Switch", "properties": {"dpid": s + 1, "region": "bench"}}
        if s:
            nodes[f"trunk-{s}"] = {
                "type": "flame.nodes.Link",
                "properties": {
                    "a_node": f"sw-{s - 1}",
                    "a_port": 100,
                    "b_node": f"sw-{s}",
                    "b_port": 101,
                    "latency_ms": 1,
                },
            }
    for i in range(n_sites):
        lat, lon = 51.0 + i * 0.01, -2.6 + (i % 7) * 0.01
        nodes[f"nap-{i}"] = {
            "type": "flame.nodes.Nap",
            "properties": {"region": "bench", "location": {"latitude": lat, "longitude": lon}},
        }
        nodes[f"site-{i}"] = {
            "type": "flame.nodes.ComputeSite",
            "properties": {
                "nap": f"nap-{i}", "region": "bench", "tier": "edge", "location": {"latitude": lat, "longitude": lon},
                "cpus": 8, "memory_mb": 16384, "max_endpoints": 8, "vims": ["process", "docker"],
            },
        }  # fmt: skip
        nodes[f"l-{i}"] = {
            "type": "flame.nodes.Link",
            "properties": {
                "a_node": f"sw-{i // 16}",
                "a_port": i % 16 + 1,
                "b_node": f"nap-{i}",
                "b_port": 1,
                "capacity_mbps": 1000,
            },
        }
    doc = {"tosca_definitions_version": "tosca_simple_yaml_1_3", "topology_template": {"node_templates": nodes}}
    return yaml.safe_dump(doc, sort_keys=False)


def generate_template(n_nodes: int, *, edge_policies: bool = True, compact: bool = False) -> tuple[str, str]:
    """(template text, catalogue text): a valid template with ``n_nodes`` endpoints and a catalogue they fit.
    ``edge_policies=False`` leaves out the StateChange policy per edge surrogate; ``compact`` leaves default properties out
    and writes leaf mappings in flow style (both keep a 2,000-endpoint template under the gRPC API's 1 MiB document limit)."""
    n_sites = _sites(n_nodes)
    nodes: dict[str, object] = {}
    policies: list[object] = []
    for i in range(n_nodes):
        group, member = divmod(i, SURROGATES)
        site = (group * SURROGATES + member * 7) % n_sites if n_sites > SURROGATES else member
        name = f"ep-{i:04d}"
        props = {
            "fqdn": f"svc{group}.video.flame.example", "image": "vod-media-server", "cpus": 0.5, "memory_mb": 256,
            "initial_state": "connected" if member == 0 else "placed", "environment": {"ROLE": "surrogate"},
            "placement": {"site": f"site-{site}"},
        }  # fmt: skip
        if compact:  # defaults left out
            props = {k: v for k, v in props.items() if k in ("fqdn", "image", "placement", "initial_state")}
        nodes[name] = {"type": "flame.nodes.ServiceFunctionEndpoint", "properties": props}
        if member and edge_policies:
            policies.append(
                {
                    f"connect-{name}": {
                        "type": "flame.policies.StateChange",
                        "targets": [name],
                        "properties": {
                            "trigger": {
                                "measurement": "nap_http", "field": "latency_ms", "aggregation": "p95", "window": "30s",
                                "threshold": 40, "clear_threshold": 20, "scope": {"flame_location": f"nap-{site}"},
                            },
                            "cooldown": "1m",
                        },
                    }
                }
            )  # fmt: skip
    for s in range(min(n_sites, 20)):
        policies.append(
            {
                f"demand-{s}": {
                    "type": "flame.policies.Kpi",
                    "properties": {
                        "kind": "threshold", "measurement": "nap_http", "field": "requests", "aggregation": "sum",
                        "window": "30s", "threshold": 100, "clear_threshold": 50, "scope": {"flame_location": f"nap-{s}"},
                    },
                }
            }
        )  # fmt: skip
    doc = {
        "tosca_definitions_version": "tosca_simple_yaml_1_3",
        "metadata": {"service_name": "bench"},
        "topology_template": {"node_templates": nodes, "policies": policies},
    }
    if not compact:
        return yaml.safe_dump(doc, sort_keys=False), generate_catalogue(n_sites)
    # One line per endpoint (flow style): 5,000 endpoints in ~0.8 MB.
    lines = [
        f"    {name}: {yaml.safe_dump(node, default_flow_style=True, width=1000).strip()}"
        for name, node in nodes.items()
    ]
    doc["topology_template"] = {"node_templates": {}, "policies": policies}
    head, _, tail = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None).partition("  node_templates: {}\n")
    return head + "  node_templates:\n" + "\n".join(lines) + "\n" + tail, generate_catalogue(n_sites)


def measure_validate_ms(n: int, repeats: int, *, compact: bool = False) -> float:
    """Median milliseconds of parse + validate (against the catalogue) of an ``n``-node template (``compact``: the
    one-line-per-endpoint form without per-edge policies, which keeps 5,000 endpoints under the 1 MiB limit)."""
    template, catalogue_text = generate_template(n, edge_policies=not compact, compact=compact)
    catalogue, problems = parse_catalogue(catalogue_text)
    assert catalogue is not None, problems
    check_template(template, catalogue, {})  # warm up (imports, profile cache)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        _, problems = check_template(template, catalogue, {})
        times.append((time.perf_counter() - started) * 1000)
        errors = [p for p in problems if p.severity is Severity.ERROR]
        assert not errors, errors[:5]
    return statistics.median(times)


if __name__ == "__main__":
    for n in (10, 50, 200):
        print(n, f"{measure_validate_ms(n, 5):.1f} ms")
