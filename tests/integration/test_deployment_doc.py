"""docs/deployment.md stays true (issue 11 item 7): every config file it shows (YAML blocks starting with
``# /etc/flame/...``) passes the one config loader, including each service section it holds, and names every control
service and the NAP agent somewhere; the units it installs exist in deploy/systemd/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flame_control.runtime.config import load_config
from flame_control.runtime.registry import CONTROL_PLANE

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deployment.md").read_text()
BLOCKS = [b for b in re.findall(r"```yaml\n(.*?)```", DOC, re.S) if b.startswith("# /etc/flame/")]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.splitlines()[0][2:] for b in BLOCKS])
def test_every_config_in_the_deployment_doc_loads_with_its_service_sections(block: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(block)
    keys = re.findall(r"^  (\w+):\s*$", block.split("\nservices:\n", 1)[1], re.M)
    assert keys, block.splitlines()[0]
    config, settings = load_config(path, environ={}, service_keys=keys)
    assert set(settings) == set(keys)
    assert config.tls.enabled and config.auth.enabled  # beyond loopback: never without TLS and tokens


def test_the_deployment_doc_covers_every_service_and_ships_its_units() -> None:
    assert len(BLOCKS) == 3
    shown = "".join(BLOCKS)
    for key in (*CONTROL_PLANE, "nap"):
        assert f"  {key}:\n" in shown, key
    for unit in re.findall(r"deploy/systemd/([\w@.-]+)", DOC):
        assert (ROOT / "deploy" / "systemd" / unit).exists(), unit
