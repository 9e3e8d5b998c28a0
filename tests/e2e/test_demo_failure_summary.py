"""The demo's failure summary (issue 11): when a component fails to start, the summary shows that component's last
error line whole (it used to cut a traceback mid-word, `config, settings = load_f`), and the demo's logs are private."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flame_control.demo.procs import ProcessGroup, StartError

ROOT = Path(__file__).resolve().parents[2]


def test_a_component_dying_with_a_traceback_is_reported_by_its_exception_line_whole(tmp_path: Path) -> None:
    crash = (
        "def load_from_args():\n    import flame_missing_dependency\n"
        + "".join(f"def f{i}():\n    {'load_from_args' if i == 0 else f'f{i - 1}'}()\n" for i in range(30))
        + "f29()\n"
    )
    group = ProcessGroup(tmp_path / "logs")
    with pytest.raises(StartError) as info:
        group.start("flame-up", [sys.executable, "-c", crash], env={"PYTHONPATH": ""}, ready=lambda: False)
    first = str(info.value).splitlines()[0]
    assert first == "flame-up exited with 1: ModuleNotFoundError: No module named 'flame_missing_dependency'"
    assert f"(log: {tmp_path / 'logs' / 'flame-up.log'})" in str(info.value)


@pytest.mark.e2e
def test_demo_summary_names_the_failing_component_and_its_whole_error_line(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "summary.json"
    # Every child inherits this: flame-nap refuses to listen beyond loopback without authentication (one line).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FLAME_LISTEN__HOST": "0.0.0.0"}
    argv = [sys.executable, "-m", "flame_control.cli.main", "demo", "--quick", "--state-dir", str(state)]
    proc = subprocess.run([*argv, "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    reason = (
        "refusing to listen on 0.0.0.0 with authentication off: anyone who reaches these ports could control the "
        "platform; turn on auth.enabled (tokens) or mutual TLS (tls.client_ca), listen on 127.0.0.1, or set "
        "listen.allow_insecure: true to accept the risk"
    )
    summary = json.loads(out.read_text())
    start = next(p for p in summary["phases"] if p["name"] == "start")
    assert start["ok"] is False
    assert start["detail"].startswith("nap-") and start["detail"].endswith(f"exited with 2: flame-nap: {reason}")
    table_line = next(line for line in proc.stdout.splitlines() if line.strip().startswith("start "))
    assert table_line.endswith(start["detail"]), table_line
    assert f"  error: {start['detail']}" in proc.stdout
    assert summary["processes"]["left_running"] == []
    # The demo's state (logs of every component) is private to its owner.
    for path in [state, *state.rglob("*")]:
        mode = os.stat(path).st_mode & 0o777
        assert mode & 0o077 == 0, (str(path), oct(mode))
