"""The `flame` CLI plumbing: bench JSON schema, token helpers, config errors, service selection."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from flame_control.benchmark import Figure
from flame_control.cli.main import main
from flame_control.cli.up import parse_services
from flame_control.runtime.auth import hash_token


def test_bench_writes_one_json_object_in_the_agreed_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A benchmark module is plain Python with run(quick) -> figures; register one under the area name.
    area = types.ModuleType("tests.bench.bench_orchestration")
    area.run = lambda quick: [Figure("validate_ms_200_nodes", 12.5, "ms", None, "< 100", f"quick={quick}")]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests.bench.bench_orchestration", area)
    out = tmp_path / "r.json"
    assert main(["bench", "orchestration", "--quick", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc) == {"area", "quick", "host", "figures"}
    assert doc["area"] == "orchestration" and doc["quick"] is True
    assert isinstance(doc["host"]["cpus"], int) and isinstance(doc["host"]["python"], str)
    assert doc["figures"] == [
        {
            "id": "validate_ms_200_nodes",
            "value": 12.5,
            "unit": "ms",
            "baseline": None,
            "goal": "< 100",
            "conditions": "quick=True",
        }
    ]
    assert "validate_ms_200_nodes" in capsys.readouterr().out


def test_token_new_prints_token_once_and_only_its_hash_in_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "new", "analyst", "alice"]) == 0
    out = capsys.readouterr().out
    token = out.split(": ", 1)[1].splitlines()[0].strip()
    config_part = out.split("config entry", 1)[1]
    assert token not in config_part
    assert hash_token(token) in config_part


def test_unknown_service_in_services_flag_is_refused() -> None:
    assert parse_services("pce,clmc") == ["pce", "clmc"]
    with pytest.raises(ValueError, match="unknown service"):
        parse_services("pce,dns")


def test_config_error_exits_2_with_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("listen:\n  prots: {}\n")
    with pytest.raises(SystemExit) as info:
        main(["status", "--config", str(bad)])
    assert info.value.code == 2
    assert "listen.prots: unknown key" in capsys.readouterr().err


def test_certs_init_writes_a_pki_with_private_keys_0600(tmp_path: Path) -> None:
    assert main(["certs", "init", str(tmp_path / "pki")]) == 0
    key = tmp_path / "pki" / "server.key"
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600
    assert (tmp_path / "pki" / "ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_log_level_flag_sets_default_and_per_component_levels_over_config(tmp_path: Path) -> None:
    """The roadmap asks for logging controllable by flags: `--log-level warning,pce=debug` beats the config file's
    levels, per component, and a bad level is a clear usage error (exit 2)."""
    import argparse
    import logging

    from flame_control.cli.common import add_config_options, load_from_args

    config = tmp_path / "c.yaml"
    config.write_text("logging: {level: info, levels: {clmc: error, pce: info}}\n")
    parser = argparse.ArgumentParser()
    add_config_options(parser)
    load_from_args(parser.parse_args(["--config", str(config), "--log-level", "warning,pce=debug"]))
    assert logging.getLogger("flame").level == logging.WARNING
    assert logging.getLogger("flame.pce").level == logging.DEBUG
    assert logging.getLogger("flame.clmc").level == logging.ERROR  # from the file, not overridden
    with pytest.raises(SystemExit) as info:
        load_from_args(parser.parse_args(["--log-level", "pce=loud"]))
    assert info.value.code == 2
