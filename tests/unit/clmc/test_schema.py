"""The CLMC's schema (CLMC-7, issue 15): field types from the model, then storage, then the first claim; a file
written before field types were recorded learns them on open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from clmc.schema import FieldTypes
from clmc.storage.base import SeriesData
from clmc.storage.embedded import EmbeddedStore

T0 = 1_700_000_000 * 1_000_000_000


def test_clmc7_model_types_win_and_first_claim_decides_the_rest() -> None:
    types = FieldTypes({"app": {"v": "float"}, "nap_http": {"latency_ms": "integer"}})
    assert types.expected("nap_http", "latency_ms") == "float"  # the model, not a stray stored type
    assert types.claim({("app", "v"): "integer"}) == {("app", "v"): "float"}
    assert types.claim({("app", "w"): "string", ("app", "v"): "integer"}) == {("app", "v"): "float"}
    assert types.expected("app", "w") is None  # all or none
    assert types.claim({("app", "w"): "string"}) == {}
    assert types.expected("app", "w") == "string"


def test_clmc7_embedded_file_from_before_learns_its_field_types_on_open(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    store = EmbeddedStore(path)
    store.write([SeriesData("app", (("a", "b"),), [T0], {"n": [3], "x": [0.5]})])
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM field_types")
    reopened = EmbeddedStore(path)
    assert reopened.field_types() == {"app": {"n": "integer", "x": "float"}}
    reopened.close()
