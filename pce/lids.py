"""Link identifiers (LIDs) for every switch output direction and internal LIDs (iLIDs) for every NAP (SFR-8).

Up to 256 identifiers, each gets one distinct bit: FIDs are exact and never deliver off their tree. Past 256, LIDs get
``k`` bits (Bloom-filter style) and, as in LIPSIN, ``d`` independent LID tables are kept; for each tree the PCE picks
a table whose FID has no false positive on any link adjacent to the tree (:func:`choose_table`). Allocation is
deterministic (a hash of the identifier name and table number), so a restarted PCE assigns the same LIDs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from flame_control.icn import fid as fidlib
from pce.topology import Topology

#: A direction: (from node, to node) over a link; switches match the LID of their output port's direction.
Direction = tuple[str, str]


@dataclass(frozen=True)
class LidTable:
    """One assignment of LIDs to directions and iLIDs to NAPs."""

    index: int
    lids: Mapping[Direction, int]
    ilids: Mapping[str, int]
    #: node -> ((LID, neighbour), ...) of every direction leaving it (for fast false-positive checks).
    out: Mapping[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)


#: Bits per LID of each Bloom table: small trees fit best with many bits, large trees with few (LIPSIN's idea of
#: tables with different k), so a tree of any size finds a table without false positives more often.
BLOOM_BITS: tuple[int, ...] = (7, 6, 5, 5, 4, 4, 3, 2)


@dataclass(frozen=True)
class LidPlan:
    """All LID tables of a topology (one table when every identifier has its own bit)."""

    tables: tuple[LidTable, ...]
    bits_per_lid: tuple[int, ...]

    @property
    def exact(self) -> bool:
        """True when identifiers are single distinct bits (no false positives possible)."""
        return self.bits_per_lid == (1,)


def directions(topo: Topology) -> list[Direction]:
    """Every direction leaving a switch (the ones that need a LID), sorted."""
    out = []
    for link in topo.links.values():
        for (src, _), (dst, _) in ((link.a, link.b), (link.b, link.a)):
            if topo.nodes[src].kind == "switch":
                out.append((src, dst))
    return sorted(out)


def _bits(name: str, table: int, k: int) -> int:
    value, counter = 0, 0
    while bin(value).count("1") < k:
        digest = hashlib.blake2b(f"{table}:{counter}:{name}".encode(), digest_size=8).digest()
        value |= 1 << (int.from_bytes(digest, "big") % fidlib.BITS)
        counter += 1
    return value


def plan(topo: Topology, bits_per_lid: tuple[int, ...] = BLOOM_BITS) -> LidPlan:
    """Assign LIDs and iLIDs; exact single bits when they fit in 256, else one Bloom table per entry of
    ``bits_per_lid`` (k bits per LID in that table)."""
    dirs = directions(topo)
    naps = topo.naps()
    names = [f"{a}>{b}" for a, b in dirs] + [f"ilid:{n}" for n in naps]
    if len(names) <= fidlib.BITS:
        lids = {d: 1 << i for i, d in enumerate(dirs)}
        ilids = {n: 1 << (len(dirs) + i) for i, n in enumerate(naps)}
        return LidPlan((LidTable(0, lids, ilids, _out(lids)),), (1,))
    out = []
    for t, k in enumerate(bits_per_lid):
        lids = {d: _bits(f"{d[0]}>{d[1]}", t, k) for d in dirs}
        ilids = {n: _bits(f"ilid:{n}", t, k) for n in naps}
        out.append(LidTable(t, lids, ilids, _out(lids)))
    return LidPlan(tuple(out), tuple(bits_per_lid))


def _out(lids: Mapping[Direction, int]) -> dict[str, tuple[tuple[int, str], ...]]:
    grouped: dict[str, list[tuple[int, str]]] = {}
    for (a, b), lid in sorted(lids.items()):
        grouped.setdefault(a, []).append((lid, b))
    return {a: tuple(v) for a, v in grouped.items()}


def fid_for(table: LidTable, tree: Iterable[Direction], destinations: Iterable[str]) -> int:
    """OR of the LIDs of the tree's switch directions and the destination NAPs' iLIDs."""
    value = 0
    for d in tree:
        value |= table.lids.get(d, 0)
    for nap in destinations:
        value |= table.ilids[nap]
    return value


def false_positives(table: LidTable, fid: int, tree: Sequence[Direction]) -> list[Direction]:
    """Directions leaving a switch on the tree, not on the tree, whose LID the FID contains (frames would leak)."""
    leaks = []
    out = table.out
    seen: set[str] = set()
    for node, _ in tree:
        if node in seen:
            continue
        seen.add(node)
        for lid, nbr in out.get(node, ()):
            if fid & lid == lid and (node, nbr) not in tree:
                leaks.append((node, nbr))
    return sorted(leaks)


def choose_table(
    lid_plan: LidPlan, tree: Sequence[Direction], destinations: Sequence[str]
) -> tuple[LidTable, int, bool]:
    """The first table whose FID for ``tree`` has no false positive: (table, fid, false_positive_free)."""
    if lid_plan.exact:
        table = lid_plan.tables[0]
        return table, fid_for(table, tree, destinations), True
    best: tuple[LidTable, int, int] | None = None
    for table in lid_plan.tables:
        fid = fid_for(table, tree, destinations)
        leaks = false_positives(table, fid, tree)
        if not leaks:
            return table, fid, True
        if best is None or len(leaks) < best[2]:
            best = (table, fid, len(leaks))
    assert best is not None
    return best[0], best[1], False


@dataclass(frozen=True)
class PrefixCheck:
    """False-positive state of a tree prefix in one Bloom table, to test many one-direction extensions cheaply.

    Many trees share everything but their last direction (the routes back to every NAP behind one switch). For the
    prefix's FID ``fid``, every direction adjacent to the prefix (leaving one of its nodes or the ``last`` switch) and
    not on it is reduced to its *residual*: the LID bits the prefix FID lacks. An extension by one direction and one
    destination iLID (bits ``E``) leaks through exactly the directions whose residual is a subset of ``E``."""

    table: LidTable
    fid: int
    #: Directions whose LID the prefix FID already contains (residual 0).
    covered: tuple[Direction, ...]
    #: Lowest bit of the residual -> ((residual, direction), ...) for the others.
    by_low_bit: Mapping[int, tuple[tuple[int, Direction], ...]]


def prefix_check(table: LidTable, prefix: Sequence[Direction], last: str) -> PrefixCheck:
    """The :class:`PrefixCheck` of ``prefix`` (directions) whose extensions leave switch ``last``."""
    fid = 0
    for d in prefix:
        fid |= table.lids.get(d, 0)
    on_prefix = set(prefix)
    covered: list[Direction] = []
    by_low: dict[int, list[tuple[int, Direction]]] = {}
    for node in dict.fromkeys([n for n, _ in prefix] + [last]):
        for lid, nbr in table.out.get(node, ()):
            d = (node, nbr)
            if d in on_prefix:
                continue
            residual = lid & ~fid
            if residual == 0:
                covered.append(d)
            else:
                by_low.setdefault(residual & -residual, []).append((residual, d))
    return PrefixCheck(table, fid, tuple(covered), {b: tuple(v) for b, v in by_low.items()})


def extension_fid(check: PrefixCheck, direction: Direction, destination: str) -> tuple[int, bool]:
    """(FID, false-positive-free) of the prefix extended by ``direction`` (leaving its ``last`` switch) with
    ``destination``'s iLID: the same FID and verdict :func:`fid_for` and :func:`false_positives` give for the whole
    tree, without walking the prefix again."""
    table = check.table
    extra = table.lids.get(direction, 0) | table.ilids[destination]
    fid = check.fid | extra
    if any(d != direction for d in check.covered):
        return fid, False
    bits = extra & ~check.fid
    while bits:
        low = bits & -bits
        bits ^= low
        for residual, d in check.by_low_bit.get(low, ()):
            if residual & ~extra == 0 and d != direction:
                return fid, False
    return fid, True
