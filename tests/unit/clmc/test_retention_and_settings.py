"""Retention (CLMC-10) on the embedded backend and strict CLMC settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from clmc.endpoint_config import transition
from clmc.service import Settings, apply_retention, retention_ns
from clmc.storage.base import Selection, SeriesData
from clmc.storage.embedded import EmbeddedStore

S = 1_000_000_000
T0 = 1_700_000_000 * S


def test_clmc10_retention_deletes_only_points_older_than_the_period(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "m.sqlite")
    times = [T0 - h * 3600 * S for h in range(48)]
    store.write([SeriesData("nap_http", (("flame_location", "a"),), times, {"requests": list(range(48))})])
    store.write([SeriesData("sf_http", (), [T0 - 30 * 3600 * S], {"cpu": [1.0]})])
    assert apply_retention(store, T0, retention_ns("1d")) == 23 + 1  # older than exactly 24 h
    assert store.count(Selection("nap_http")) == 25 and store.measurements() == ["nap_http"]
    assert apply_retention(store, T0, 0) == 0


def test_settings_are_strict_and_retention_parsed() -> None:
    assert retention_ns("90m") == 90 * 60 * S and retention_ns("2w") == 14 * 86400 * S and retention_ns("") == 0
    with pytest.raises(ValidationError):
        Settings(retention="30 days")
    with pytest.raises(ValidationError):
        Settings(backend="mysql")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(unknown_key=1)  # type: ignore[call-arg]


def test_clmc4_endpoint_track_sums_and_most_recent_stay() -> None:
    track = transition(None, "booting", T0)
    track = transition(track, "booted", T0 + 4 * S)
    track = transition(track, "booting", T0 + 5 * S)
    track = transition(track, "booted", T0 + 7 * S)
    assert track.sums == {"booting": 6.0, "booted": 1.0} and track.msts == {"booting": 2.0, "booted": 1.0}
    late = transition(track, "connected", T0)  # an out-of-order event never makes time negative
    assert late.sums["booted"] == 1.0 and late.state == "connected"


def test_clmc11_embedded_aggregation_skips_text_values_of_a_mixed_field(tmp_path: Path) -> None:
    from clmc.storage.base import AggKind, AggQuery

    store = EmbeddedStore(tmp_path / "m.sqlite")
    store.write([SeriesData("m", (), [T0, T0 + S, T0 + 2 * S], {"f": [1.0, "n/a", 3.0]})])
    q = AggQuery("m", "f", AggKind.MEAN, T0, T0 + 10 * S, 0)
    assert [(w.value, w.count) for s in store.aggregate(q) for w in s.windows] == [(2.0, 2)]
    reopened = EmbeddedStore(tmp_path / "m.sqlite")  # the text-field list is durable
    assert [(w.value, w.count) for s in reopened.aggregate(q) for w in s.windows] == [(2.0, 2)]
