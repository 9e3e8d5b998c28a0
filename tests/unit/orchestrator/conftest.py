"""Fixtures of the orchestrator's template tests."""

from __future__ import annotations

import pytest

from flame_control.orchestrator.catalogue import parse_catalogue
from flame_control.orchestrator.model import Catalogue
from tests.unit.orchestrator.base_template import CATALOGUE


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    """The example catalogue of the FLAME integration topology (ORCH-3)."""
    cat, problems = parse_catalogue(CATALOGUE.read_text())
    assert cat is not None, problems
    return cat
