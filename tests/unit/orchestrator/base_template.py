"""A small valid media-service template as data (mutated per test) and paths of the examples."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
VOD = ROOT / "examples/media-services/vod.yaml"
CATALOGUE = ROOT / "examples/infrastructure/flame-integration.yaml"
EP = "flame.nodes.ServiceFunctionEndpoint"
SC = "flame.policies.StateChange"
KPI = "flame.policies.Kpi"
NODES = "topology_template.node_templates"
POLICIES = "topology_template.policies"

BASE: dict[str, Any] = {
    "tosca_definitions_version": "tosca_simple_yaml_1_3",
    "metadata": {"service_name": "vod"},
    "topology_template": {
        "node_templates": {
            "origin": {
                "type": EP,
                "properties": {
                    "fqdn": "vod.video.flame.example",
                    "image": "vod-media-server",
                    "placement": {"site": "site-dc"},
                },
            },
            "edge_a": {
                "type": EP,
                "properties": {
                    "fqdn": "vod.video.flame.example",
                    "image": "vod-media-server",
                    "initial_state": "placed",
                    "placement": {"site": "site-edge-a"},
                },
            },
            "edge_b": {
                "type": EP,
                "properties": {
                    "fqdn": "vod.video.flame.example",
                    "image": "vod-media-server",
                    "initial_state": "placed",
                    "placement": {"site": "site-edge-b"},
                },
            },
        },
        "policies": [
            {
                "demand": {
                    "type": KPI,
                    "properties": {
                        "kind": "threshold",
                        "measurement": "nap_http",
                        "field": "requests",
                        "aggregation": "sum",
                        "window": "30s",
                        "threshold": 50,
                        "clear_threshold": 10,
                        "scope": {"flame_location": "nap-edge-a1"},
                    },
                }
            },
            {
                "connect": {
                    "type": SC,
                    "targets": ["edge_a"],
                    "properties": {"trigger": {"kpi": "demand"}, "cooldown": "1m"},
                }
            },
            {
                "latency": {
                    "type": SC,
                    "targets": ["edge_b"],
                    "properties": {
                        "trigger": {
                            "measurement": "nap_http",
                            "field": "latency_ms",
                            "aggregation": "p95",
                            "window": 30,
                            "threshold": 40,
                            "clear_threshold": 20,
                            "scope": {"flame_location": "nap-edge-b1"},
                        },
                    },
                }
            },
        ],
    },
}


def base() -> dict[str, Any]:
    """A fresh copy of the valid base template."""
    return copy.deepcopy(BASE)


def props(doc: dict[str, Any], node: str) -> dict[str, Any]:
    """Properties of a node template of ``doc``."""
    p: dict[str, Any] = doc["topology_template"]["node_templates"][node]["properties"]
    return p


def policy(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """A policy of ``doc`` by name."""
    for entry in doc["topology_template"]["policies"]:
        if name in entry:
            found: dict[str, Any] = entry[name]
            return found
    raise KeyError(name)


def text(doc: dict[str, Any]) -> str:
    """YAML text of a template."""
    return yaml.safe_dump(doc, sort_keys=False)
