"""The FLAME TOSCA profile (``flame_profile.yaml``) as data, and the shape checks it drives (ORCH-2, ORCH-5, SFEMC-1).

Pure apart from reading the shipped profile file once. Three things live here:

- ``load_yaml``: YAML text -> data with limits against hostile input (size, nesting depth, aliases and their
  expansion, recursive aliases); syntax errors become Problems with line and column.
- ``TypeSystem``: the profile's types plus a template's own ``node_types``/``policy_types``/``data_types``; resolves
  ``derived_from`` chains and checks entity properties against the declarations (required, type, unknown fields),
  every problem with its dotted path.
- ``placeholders``: a shape-valid stand-in for an entity's properties, handed to tosca-parser so that it checks the
  TOSCA grammar without repeating (unlocatable) value errors our checker already reports with paths.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flame_control.orchestrator.model import Problem

PROFILE_PATH = Path(__file__).with_name("flame_profile.yaml")
#: The import name templates may use for the profile (any path or URL ending in it).
PROFILE_IMPORT = "flame_profile.yaml"

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_ALIASES = 256
MAX_NODES = 200_000

ENDPOINT = "flame.nodes.ServiceFunctionEndpoint"
SITE = "flame.nodes.ComputeSite"
SWITCH = "flame.nodes.Switch"
NAP = "flame.nodes.Nap"
LINK = "flame.nodes.Link"
STATE_CHANGE = "flame.policies.StateChange"
KPI = "flame.policies.Kpi"

_DURATION = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(d|h|m|s|ms|us|ns)?\s*$")
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


_SHOWN = {
    "string": "a string",
    "integer": "a whole number",
    "float": "a number",
    "boolean": "true or false",
    "scalar-unit.time": "a duration",
    "map": "a map",
    "list": "a list",
}


class YamlLimitExceeded(yaml.YAMLError):
    """The document is too big, too deep or expands too much."""


_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class _Open:
    """A collection being scanned: its size so far (aliases expanded), items seen, and mapping keys seen."""

    mapping: bool
    anchor: str | None
    size: int = 1
    items: int = 0
    keys: set[str] | None = None


def _at(mark: Any) -> str:
    return f" (line {mark.line + 1})" if mark is not None else ""


def _prescan(text: str) -> None:
    """Walk the event stream (libyaml's parser when present: a state machine, no recursion) and refuse documents that
    nest too deep, use too many aliases, expand to too many nodes (billion laughs), alias a collection from inside
    itself, or repeat a mapping key. Raises YamlLimitExceeded or yaml.MarkedYAMLError."""
    sizes: dict[str, int] = {}
    stack: list[_Open] = []
    aliases = total = 0

    def child(size: int, key: str | None, mark: Any, new: int = 1) -> None:
        """A finished node of ``size`` nodes (itself and what it holds, aliases expanded) joins its parent; ``new`` of
        them are counted for the first time (1 for a scalar or a collection whose members were counted already, the
        whole expansion for an alias)."""
        nonlocal total
        total += new
        if total > MAX_NODES:
            raise YamlLimitExceeded(f"the document expands to more than {MAX_NODES} nodes (aliases included)")
        if not stack:
            return
        parent = stack[-1]
        parent.size += size
        if parent.mapping and parent.items % 2 == 0 and key is not None and key != "<<":
            assert parent.keys is not None
            if key in parent.keys:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r} (only one would be kept)", problem_mark=mark)
            parent.keys.add(key)
        parent.items += 1

    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            mapping = isinstance(event, yaml.MappingStartEvent)
            stack.append(_Open(mapping, event.anchor, keys=set() if mapping else None))
            if len(stack) > MAX_DEPTH:
                raise YamlLimitExceeded(f"nesting deeper than {MAX_DEPTH} levels{_at(event.start_mark)}")
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            done = stack.pop()
            if done.anchor is not None:
                sizes[done.anchor] = done.size
            child(done.size, None, event.start_mark)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                sizes[event.anchor] = 1
            child(1, event.value, event.start_mark)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in (o.anchor for o in stack):
                raise YamlLimitExceeded(f"recursive alias *{event.anchor}{_at(event.start_mark)}")
            aliases += 1
            if aliases > MAX_ALIASES:
                raise YamlLimitExceeded(f"more than {MAX_ALIASES} aliases")
            size = sizes.get(event.anchor or "", 1)
            child(size, None, event.start_mark, new=size)


def load_yaml(text: str, what: str = "template") -> tuple[Any, list[Problem]]:
    """Parse YAML text safely; (data, []) or (None, [problem])."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        return None, [Problem("", f"{what} is larger than {MAX_BYTES} bytes", f"keep the {what} under 1 MiB")]
    try:
        _prescan(text)
        data = yaml.load(text, Loader=_LOADER)  # a safe loader: CSafeLoader or SafeLoader
    except YamlLimitExceeded as exc:
        return None, [Problem("", f"{what} rejected: {exc}", "write plain YAML without deep nesting or alias bombs")]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return None, [Problem("", f"YAML syntax error at {where}{exc.problem or exc}", "fix the YAML syntax")]
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        return None, [Problem("", f"YAML error: {' '.join(str(exc).split())}", "fix the YAML syntax")]
    return data, []


@functools.cache
def profile() -> Mapping[str, Any]:
    """The shipped profile document (read once)."""
    data = yaml.safe_load(PROFILE_PATH.read_text())
    assert isinstance(data, dict)
    return data


def duration_s(value: Any) -> float | None:
    """Seconds of a duration ("30s", "5 m", "250ms", 30, 1.5), or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    return None


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", dict: "map", list: "list"}.get(
        type(value), type(value).__name__
    )


@dataclass
class TypeSystem:
    """Profile types plus the types a template declares itself."""

    node_types: dict[str, Any]
    policy_types: dict[str, Any]
    data_types: dict[str, Any]

    @classmethod
    def for_document(cls, doc: Mapping[str, Any]) -> TypeSystem:
        """The profile's types overlaid with the document's own (only mappings are taken)."""
        prof = profile()
        out: dict[str, dict[str, Any]] = {}
        for section in ("node_types", "policy_types", "data_types"):
            merged = dict(prof.get(section) or {})
            own = doc.get(section)
            if isinstance(own, dict):
                merged.update({k: v for k, v in own.items() if isinstance(k, str) and isinstance(v, dict)})
            out[section] = merged
        return cls(out["node_types"], out["policy_types"], out["data_types"])

    def chain(self, type_name: str, section: str) -> list[str]:
        """The type and its ancestors known here (stops at normative tosca.* types and at cycles)."""
        types = getattr(self, section)
        chain: list[str] = []
        current: Any = type_name
        while isinstance(current, str) and current in types and current not in chain:
            chain.append(current)
            current = types[current].get("derived_from")
        return chain

    def is_a(self, type_name: str, base: str, section: str = "node_types") -> bool:
        """Whether type_name is base or derived from it."""
        return base in self.chain(type_name, section)

    def known(self, type_name: str, section: str) -> bool:
        """Declared in the profile or the document."""
        return type_name in getattr(self, section)

    def properties(self, type_name: str, section: str) -> dict[str, Any]:
        """Property definitions of a type including inherited ones (derived types override)."""
        props: dict[str, Any] = {}
        for name in reversed(self.chain(type_name, section)):
            defined = getattr(self, section)[name].get("properties")
            if isinstance(defined, dict):
                props.update({k: v for k, v in defined.items() if isinstance(v, dict)})
        return props

    def check_properties(self, values: Any, defs: Mapping[str, Any], path: str, what: str) -> list[Problem]:
        """Shape problems of a property map against definitions: unknown, missing required, wrong type."""
        if values is None:
            values = {}
        if not isinstance(values, dict):
            return [Problem(path, f"must be a map of properties, not {_type_name(values)}", "write key: value pairs")]
        problems: list[Problem] = []
        for key in values:
            if key not in defs:
                known = ", ".join(sorted(defs)) or "none"
                problems.append(Problem(f"{path}.{key}", f"unknown property of {what}", f"known properties: {known}"))
        for key, spec in defs.items():
            if key not in values or values[key] is None:
                if spec.get("required", True) and "default" not in spec:
                    problems.append(Problem(f"{path}.{key}", f"required property of {what} is missing", f"add {key}"))
                continue
            problems.extend(self.check_value(values[key], spec, f"{path}.{key}"))
        return problems

    def check_value(self, value: Any, spec: Mapping[str, Any], path: str) -> list[Problem]:
        """Problems of one value against a property (or entry) definition."""
        kind = str(spec.get("type", "string"))
        bad = Problem(path, f"must be {_SHOWN.get(kind, kind)}, not {_type_name(value)}", "")
        if kind == "string":
            ok = isinstance(value, str)
            hint = "quote the value"
        elif kind == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
            hint = "write a whole number"
        elif kind == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            hint = "write a finite number"
        elif kind == "boolean":
            ok, hint = isinstance(value, bool), "write true or false"
        elif kind == "scalar-unit.time":
            ok, hint = duration_s(value) is not None, "write e.g. 30s, 5m, 250ms or a number of seconds"
        elif kind in ("map", "list"):
            container = dict if kind == "map" else list
            if not isinstance(value, container):
                return [Problem(path, bad.message, f"write a {kind}")]
            entry = spec.get("entry_schema")
            entry = {"type": entry} if isinstance(entry, str) else entry
            if not isinstance(entry, dict):
                return []
            items = value.items() if isinstance(value, dict) else enumerate(value)
            out: list[Problem] = []
            for k, v in items:
                sub = f"{path}.{k}" if isinstance(value, dict) else f"{path}[{k}]"
                if isinstance(value, dict) and not isinstance(k, str):
                    out.append(Problem(sub, "map keys must be strings", "quote the key"))
                out.extend(self.check_value(v, entry, sub))
            return out
        elif kind in self.data_types:
            return self.check_properties(value, self.properties(kind, "data_types"), path, kind)
        else:
            return []  # other TOSCA types: tosca-parser checks them
        return [] if ok else [Problem(path, bad.message, hint)]


def placeholders(types: TypeSystem, defs: Mapping[str, Any]) -> dict[str, Any]:
    """Shape-valid values for the required properties of ``defs`` (for tosca-parser's grammar check)."""
    out: dict[str, Any] = {}
    for key, spec in defs.items():
        if spec.get("required", True) and "default" not in spec:
            out[key] = _placeholder(types, spec)
    return out


def _placeholder(types: TypeSystem, spec: Mapping[str, Any]) -> Any:
    kind = str(spec.get("type", "string"))
    simple: dict[str, Any] = {
        "string": "x",
        "integer": 1,
        "float": 1.0,
        "boolean": False,
        "map": {},
        "list": [],
        "scalar-unit.time": "1 s",
    }
    if kind in simple:
        return simple[kind]
    if kind in types.data_types:
        return placeholders(types, types.properties(kind, "data_types"))
    return "x"
