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


def make_table(index: int, lids: Mapping[Direction, int], ilids: Mapping[str, int]) -> LidTable:
    """A LID table from given assignments (e.g. restored from the durable store, issue 13)."""
    return LidTable(index, dict(lids), dict(ilids), _out(lids))


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
    on_tree = set(tree)
    for node in dict.fromkeys([n for n, _ in tree]):
        for lid, nbr in out.get(node, ()):
            if fid & lid == lid and (node, nbr) not in on_tree:
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

    Many trees share everything but their last direction (the routes back to every NAP behind one switch). Extending
    the prefix (FID ``fid``) by a direction leaving its ``last`` switch towards a NAP adds bits ``E`` (that LID and the
    NAP's iLID), which lie within ``reach``: the OR of the LIDs of every direction leaving ``last`` and the iLIDs at
    their far ends. An adjacent off-prefix direction can only be covered by such an extension when the bits its LID
    lacks in ``fid`` (its *residual*) lie within ``reach``; those few are the ``candidates``, and a direction leaks for
    an extension exactly when its residual is a subset of ``E``."""

    table: LidTable
    prefix: tuple[Direction, ...]
    last: str
    fid: int
    reach: int
    #: (residual, direction) of the adjacent off-prefix directions whose residual lies within ``reach``.
    candidates: tuple[tuple[int, Direction], ...]


_ALL_BITS = (1 << fidlib.BITS) - 1


def prefix_check(table: LidTable, prefix: Sequence[Direction], last: str) -> PrefixCheck:
    """The :class:`PrefixCheck` of ``prefix`` (directions) whose extensions leave switch ``last``."""
    fid = 0
    lids = table.lids
    for d in prefix:
        fid |= lids.get(d, 0)
    out = table.out
    reach = 0
    for lid, nbr in out.get(last, ()):
        reach |= lid | table.ilids.get(nbr, 0)
    missing = _ALL_BITS ^ fid  # positive masks: cheaper than ~x in big-int arithmetic
    outside = missing & (_ALL_BITS ^ reach)  # a LID with bits here can never be covered by an extension
    on_prefix = set(prefix)
    candidates = tuple(
        (lid & missing, (node, nbr))
        for node in dict.fromkeys([n for n, _ in prefix] + [last])
        for lid, nbr in out.get(node, ())
        if not lid & outside and (node, nbr) not in on_prefix
    )
    return PrefixCheck(table, tuple(prefix), last, fid, reach, candidates)


def extension_fid(check: PrefixCheck, direction: Direction, destination: str) -> tuple[int, bool]:
    """(FID, false-positive-free) of the prefix extended by ``direction`` (leaving its ``last`` switch) with
    ``destination``'s iLID: the same FID and verdict :func:`fid_for` and :func:`false_positives` give for the whole
    tree, without walking the prefix again."""
    table = check.table
    extra = table.lids.get(direction, 0) | table.ilids[destination]
    fid = check.fid | extra
    if extra & check.reach != extra:  # not an extension towards a neighbour of last: the full check
        return fid, not false_positives(table, fid, (*check.prefix, direction))
    for residual, d in check.candidates:
        if residual & extra == residual and d != direction:
            return fid, False
    return fid, True
