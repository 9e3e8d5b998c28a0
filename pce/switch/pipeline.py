"""The switch pipeline the PCE programs (ARCHITECTURE section 4), as pure data.

Multi-table (n rules for n fabric ports): table i holds one rule
``eth_type=0x86DD, ipv6_src=(lo(LID_i), lo(LID_i)), ipv6_dst=(hi(LID_i), hi(LID_i)) -> output:port_i, goto_table:i+1``
and a table-miss rule ``goto_table:i+1``; the last table has no goto. A frame therefore leaves by every port whose LID
its FID contains, and by no other. LIDs are direction-specific (the LID of port p is the direction *leaving* through
p), so a FID built by the PCE never names the ingress port of a frame on its own path.

Single-table variant (for switches with one table): one rule per non-empty subset of ports, matching the OR of their
LIDs, priority = subset size, so the most specific subset wins; 2^n - 1 rules, refused past ``MAX_SINGLE_TABLE_PORTS``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations

from flame_control.icn import fid as fidlib

ETH_TYPE_ICN = 0x86DD
MAX_SINGLE_TABLE_PORTS = 12
RULE_PRIORITY = 100
MISS_PRIORITY = 0


@dataclass(frozen=True)
class FlowRule:
    """One OpenFlow 1.3 rule. ``lid`` is None for table-miss rules; ``outputs`` are port numbers."""

    table_id: int
    priority: int
    lid: int | None
    outputs: tuple[int, ...]
    goto_table: int | None
    #: LID table this rule belongs to, matched on the IPv6 flow label (None = any; exact single-bit LIDs).
    flow_label: int | None = None

    @property
    def cookie(self) -> int:
        """A deterministic 64-bit cookie from the rule's content (identifies rules the PCE owns)."""
        digest = hashlib.blake2b(
            repr((self.table_id, self.priority, self.lid, self.outputs, self.goto_table)).encode(), digest_size=8
        )
        return int.from_bytes(digest.digest(), "big") & 0x7FFF_FFFF_FFFF_FFFF

    def match_text(self) -> str:
        """The match in ovs-ofctl syntax."""
        if self.lid is None:
            return ""
        lo, hi = fidlib.to_addresses(self.lid)
        src, dst = _ipv6(lo), _ipv6(hi)
        return f"ipv6,ipv6_src={src}/{src},ipv6_dst={dst}/{dst}"

    def actions_text(self) -> str:
        """The actions in ovs-ofctl syntax."""
        parts = [f"output:{p}" for p in self.outputs]
        if self.goto_table is not None:
            parts.append(f"goto_table:{self.goto_table}")
        return ",".join(parts) or "drop"


def _ipv6(raw: bytes) -> str:
    import ipaddress

    return str(ipaddress.IPv6Address(raw))


@dataclass(frozen=True)
class SwitchConfig:
    """What one switch must do: the LID of the direction leaving through each fabric port."""

    dpid: int
    ports: Mapping[int, int]
    single_table: bool = False
    #: LIDs of the same ports in LID tables 1..d-1 (Bloom mode past 256 links, SFR-8); empty in exact mode.
    extra_tables: tuple[Mapping[int, int], ...] = ()


def multi_table(ports: Mapping[int, int], extra_tables: tuple[Mapping[int, int], ...] = ()) -> list[FlowRule]:
    """n rules + n miss rules for n ports, tables in port order (d rules per port with d LID tables)."""
    ordered = sorted(ports.items())
    lid_tables = (ports, *extra_tables)
    rules = []
    for i, (port, _) in enumerate(ordered):
        nxt = i + 1 if i + 1 < len(ordered) else None
        for t, table in enumerate(lid_tables):
            label = t if extra_tables else None
            rules.append(FlowRule(i, RULE_PRIORITY, table[port], (port,), nxt, label))
        rules.append(FlowRule(i, MISS_PRIORITY, None, (), nxt))
    return rules


def single_table(ports: Mapping[int, int]) -> list[FlowRule]:
    """2^n - 1 subset rules in table 0."""
    if len(ports) > MAX_SINGLE_TABLE_PORTS:
        raise ValueError(f"single-table pipeline needs 2^n-1 rules; {len(ports)} ports exceed {MAX_SINGLE_TABLE_PORTS}")
    ordered = sorted(ports.items())
    rules = []
    for size in range(1, len(ordered) + 1):
        for subset in combinations(ordered, size):
            lid = fidlib.combine(lid for _, lid in subset)
            rules.append(FlowRule(0, RULE_PRIORITY + size, lid, tuple(p for p, _ in subset), None))
    return rules


def flows_for(cfg: SwitchConfig) -> list[FlowRule]:
    """The rules of one switch."""
    if cfg.single_table:
        if cfg.extra_tables:
            raise ValueError("the single-table pipeline supports exact (single-bit) LIDs only")
        return single_table(cfg.ports)
    return multi_table(cfg.ports, cfg.extra_tables)


def diff(installed: Iterable[FlowRule], desired: Iterable[FlowRule]) -> tuple[list[FlowRule], list[FlowRule]]:
    """(deletes, adds) turning ``installed`` into ``desired``; send deletes first, then adds, then a barrier."""
    have, want = set(installed), set(desired)
    key = lambda r: (r.table_id, -r.priority, r.cookie)  # noqa: E731
    return sorted(have - want, key=key), sorted(want - have, key=key)


def outputs(rules: Iterable[FlowRule], fid: int, in_port: int | None = None, flow_label: int = 0) -> set[int]:
    """Execute rules on a frame carrying ``fid`` (and LID table ``flow_label``): the ports it leaves by."""
    by_table: dict[int, list[FlowRule]] = {}
    for r in rules:
        by_table.setdefault(r.table_id, []).append(r)
    out: set[int] = set()
    table: int | None = 0 if by_table else None
    while table is not None:
        candidates = sorted(by_table.get(table, []), key=lambda r: -r.priority)
        hit = next((r for r in candidates if _matches(r, fid, flow_label)), None)
        if hit is None:
            break
        out.update(hit.outputs)
        table = hit.goto_table
    if in_port is not None:
        out.discard(in_port)
    return out


def _matches(rule: FlowRule, fid: int, flow_label: int) -> bool:
    if rule.lid is None:
        return True
    if rule.flow_label is not None and rule.flow_label != flow_label:
        return False
    return fidlib.delivers(fid, rule.lid)
