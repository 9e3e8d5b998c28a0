"""The shipped systemd units (issue 11 item 7; deploy/systemd/): `systemd-analyze verify` accepts them without a single
warning (an unknown or misspelt key is only a warning there, so any output fails the test), their offline security
exposure stays "OK" (<= 3.0: `systemd-analyze security --threshold=30`), every control service has an instance of the
template, state directories are 0700, and the command lines they run are ones `flame` accepts."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from flame_control.cli.main import build_parser
from flame_control.runtime.registry import CONTROL_PLANE
from tests.conftest import require_binary

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALLED_BIN = "/opt/flame/venv/bin/"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


@pytest.fixture
def staged(tmp_path: Path) -> list[Path]:
    """The units as installed, with ExecStart pointing at this environment's console scripts (verify checks that the
    binary exists), one instance of the template per control service."""
    bindir = str(Path(sys.executable).parent) + "/"
    out = []
    for src in sorted(UNITS.glob("*.service")) + sorted(UNITS.glob("*.target")):
        text = src.read_text().replace(INSTALLED_BIN, bindir)
        names = [src.name.replace("@.", f"@{key}.") for key in CONTROL_PLANE] if "@." in src.name else [src.name]
        for name in names:
            (tmp_path / name).write_text(text)
            out.append(tmp_path / name)
    return out


def test_systemd_analyze_verify_accepts_every_unit_without_warnings(staged: list[Path]) -> None:
    analyze = require_binary("systemd-analyze", "apt-get install -y systemd")
    names = {p.name for p in staged}
    assert {f"flame@{k}.service" for k in CONTROL_PLANE} | {"flame-nap.service", "flame-control.target"} <= names
    done = subprocess.run(
        [analyze, "verify", "--man=no", *(f"./{p.name}" for p in staged)],
        cwd=staged[0].parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stdout + done.stderr


@pytest.mark.parametrize("name", ["flame@pce.service", "flame-nap.service"])
def test_units_are_hardened_with_exposure_ok(staged: list[Path], name: str) -> None:
    analyze = require_binary("systemd-analyze", "apt-get install -y systemd")
    path = next(p for p in staged if p.name == name)
    done = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=30", "--no-pager", f"./{path.name}"],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "Overall exposure level" in done.stdout and "OK" in done.stdout.splitlines()[-1], done.stdout[-500:]


@pytest.mark.parametrize("name", ["flame@.service", "flame-nap.service"])
def test_units_keep_state_owner_only_and_never_gain_privileges(name: str) -> None:
    service = unit(name)["Service"]
    assert service["StateDirectoryMode"] == "0700" and service["UMask"] == "0077"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["User"] == "flame"
    # Graceful stop (drain 2 s + grace 5 s by default) fits well inside systemd's stop timeout.
    assert int(service["TimeoutStopSec"]) >= 2 + 5 + 10


def test_control_unit_runs_a_command_line_flame_accepts() -> None:
    argv = shlex.split(unit("flame@.service")["Service"]["ExecStart"])
    assert argv[0] == INSTALLED_BIN + "flame"
    args = [a.replace("%i", "pce").replace("${STATE_DIRECTORY}", "/var/lib/flame/pce") for a in argv[1:]]
    parsed = build_parser().parse_args(args)
    assert (parsed.command, parsed.services, str(parsed.config)) == ("up", "pce", "/etc/flame/flame.yaml")
    nap = shlex.split(unit("flame-nap.service")["Service"]["ExecStart"])
    assert nap[:3] == [INSTALLED_BIN + "flame-nap", "--config", "/etc/flame/nap.yaml"]
