"""``flame validate FILE [--catalogue FILE]`` (ORCH-2, ORCH-7): offline, every problem on its own line, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from flame_control.cli.main import main
from tests.unit.orchestrator.base_template import CATALOGUE, NODES, VOD, base, props, text


def test_orch2_valid_example_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(VOD)]) == 0
    assert "valid media service 'vod'" in capsys.readouterr().out


def test_valid_example_against_the_catalogue_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(VOD), "--catalogue", str(CATALOGUE)]) == 0


def test_problems_are_printed_with_path_and_hint_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = base()
    props(doc, "origin").update(fqdn="bad host", cpus=64)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text(doc))
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"ERROR {NODES}.origin.properties.fqdn: FQDN 'bad host'" in out and "(hint: " in out
    assert "placement" not in out  # no catalogue: capacity is not checked
    assert main(["validate", str(bad), "--catalogue", str(CATALOGUE)]) == 1
    assert f"ERROR {NODES}.origin.properties.placement: no site can take endpoint 'origin'" in capsys.readouterr().out


def test_a_bad_catalogue_is_reported_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cat = tmp_path / "cat.yaml"
    cat.write_text(CATALOGUE.read_text().replace("dpid: 2", "dpid: 1"))
    assert main(["validate", str(VOD), "--catalogue", str(cat)]) == 1
    assert f"{cat}: {NODES}.sw-edge-a.properties.dpid: dpid 1 already used" in capsys.readouterr().out


def test_unreadable_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert main(["validate", str(VOD), "--catalogue", str(tmp_path / "missing.yaml")]) == 2


def test_orch2_offline_validate_checks_metrics_against_the_static_information_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14: `flame validate` without a CLMC still refuses a KPI on a field the information model lacks."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(VOD.read_text().replace("field: requests", "field: no_such_field"))
    assert main(["validate", str(bad)]) == 1
    assert "nap_http has no field 'no_such_field'" in capsys.readouterr().out
