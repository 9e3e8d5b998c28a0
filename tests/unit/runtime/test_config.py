"""The one config loader: file + env + flags, strict about unknown keys (foundation issue)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flame_control.runtime.config import ConfigError, load_config


def test_defaults_listen_on_loopback_only() -> None:
    config, _ = load_config(environ={})
    assert config.listen.host == "127.0.0.1"
    assert config.listen.port("pce") == 50053
    assert config.peer_target("clmc") == "127.0.0.1:50054"


def test_file_then_env_then_flags_override_in_that_order(tmp_path: Path) -> None:
    f = tmp_path / "flame.yaml"
    f.write_text("listen:\n  ports:\n    pce: 6000\n    clmc: 6001\nlogging:\n  level: debug\n")
    env = {"FLAME_LISTEN__PORTS__PCE": "7000"}
    config, _ = load_config(f, ["listen.ports.clmc=8000"], environ=env)
    assert config.listen.port("pce") == 7000
    assert config.listen.port("clmc") == 8000
    assert config.logging.level == "debug"


def test_unknown_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    f = tmp_path / "flame.yaml"
    f.write_text("listen:\n  hots: 0.0.0.0\n")
    with pytest.raises(ConfigError, match=r"listen\.hots: unknown key"):
        load_config(f, environ={})


def test_unknown_service_section_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"services\.pcee: unknown service"):
        load_config(sets=["services.pcee.x=1"], environ={})


def test_bad_flag_syntax_is_explained() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(sets=["listen.host"], environ={})


def test_non_mapping_file_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "flame.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(f, environ={})


def test_wrong_type_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"listen\.ports\.pce"):
        load_config(sets=["listen.ports.pce=notaport"], environ={})
