"""endpoint_config derived from endpoint state transitions (CLMC-4, CLMC-7; FLAME's configuration model).

For every endpoint ConfigEvent with a ``to_state``, the CLMC writes an ``endpoint_config`` point at the event's time
carrying, for every state, ``<state>_sum`` (total seconds spent in it so far) and ``<state>_mst`` (seconds of the most
recent stay), plus ``current_state``. Pure: the caller keeps the per-endpoint track (persisted in the state file).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from clmc.model import ENDPOINT_STATES
from clmc.storage.base import FieldVal, SeriesData, TagTuple, canonical_tags

#: Tags that identify an endpoint (those present on the event are kept on its endpoint_config points).
ENDPOINT_TAGS = ("flame_sfc", "flame_sfci", "flame_sfp", "flame_sf", "flame_sfe", "flame_server", "flame_location")


@dataclass
class EndpointTrack:
    """Where an endpoint is in its lifecycle and how long it spent in each state (seconds)."""

    state: str
    entered_ns: int
    sums: dict[str, float] = field(default_factory=dict)
    msts: dict[str, float] = field(default_factory=dict)


def endpoint_tags(tags: Mapping[str, str]) -> TagTuple | None:
    """The endpoint identity of an event's tags, or None when it names no endpoint (no flame_sfe)."""
    if "flame_sfe" not in tags:
        return None
    return canonical_tags({k: v for k, v in tags.items() if k in ENDPOINT_TAGS})


def transition(track: EndpointTrack | None, to_state: str, at_ns: int) -> EndpointTrack:
    """The track after entering ``to_state`` at ``at_ns`` (an event older than the current stay counts as 0 s)."""
    if track is None:
        return EndpointTrack(to_state, at_ns)
    stay = max(0, at_ns - track.entered_ns) / 1e9
    sums = dict(track.sums)
    msts = dict(track.msts)
    sums[track.state] = sums.get(track.state, 0.0) + stay
    msts[track.state] = stay
    return EndpointTrack(to_state, max(at_ns, track.entered_ns), sums, msts)


def endpoint_config_point(tags: TagTuple, track: EndpointTrack, at_ns: int) -> SeriesData:
    """The endpoint_config point for a track."""
    fields: dict[str, list[FieldVal | None]] = {}
    for state in ENDPOINT_STATES:
        fields[f"{state}_sum"] = [track.sums.get(state, 0.0)]
        fields[f"{state}_mst"] = [track.msts.get(state, 0.0)]
    fields["current_state"] = [track.state]
    return SeriesData("endpoint_config", tags, [at_ns], fields)
