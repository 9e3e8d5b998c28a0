"""`flame demo` end to end (issue 7): the roadmap's integration scenario (Figure 25 topology, the vod media service,
a KPI-driven edge surrogate) run as a user runs it, non-interactively, asserting on its machine-readable summary.

Proves: every endpoint reached its states (origin connected, edge_a placed -> connected -> placed, edge_b placed);
every player request succeeded byte-exact; the edge-A KPI fired once and cleared once; traffic at nap-edge-a2 moved
to vod/edge_a on live connections (SFR-14) and back; 5 media services served side by side (F3.6); nothing the demo
started is left running (no child PID, no process whose command line or working directory is under its state dir).
With ``--fabric ovs`` the same on Open vSwitch userspace bridges programmed by the PCE through os-ken (root), once
with the process VIM and once with every endpoint a container on a private dockerd (``--vim docker``). Killing
one NAP agent mid-run: its players fail over to the other NAP of the switch after clean errors, everyone else
carries on, and the summary says what happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flame_control.demo.procs import pid_alive

ROOT = Path(__file__).resolve().parents[2]


def run_demo(tmp_path: Path, *flags: str, timeout: float = 240) -> tuple[int, dict[str, Any], str]:
    state = tmp_path / "state"
    out = tmp_path / "summary.json"
    argv = [sys.executable, "-m", "flame_control.cli.main", "demo", "--quick", "--state-dir", str(state)]
    proc = subprocess.run(
        [*argv, "--json", str(out), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert out.exists(), f"no summary written (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.returncode, json.loads(out.read_text()), proc.stdout


def processes_under(path: Path) -> list[str]:
    """Live processes whose command line or working directory is under ``path``."""
    found = []
    needle = str(path.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if needle in cmdline or cwd.startswith(needle):
            found.append(f"{entry.name}: {cmdline[:200]} (cwd {cwd})")
    return found


def assert_nothing_left(summary: dict[str, Any], state: Path) -> None:
    assert summary["processes"]["left_running"] == []
    started = summary["processes"]["started"]
    assert any(p["name"] == "flame-up" for p in started)
    assert any("process VIM" in p["name"] for p in started), started  # endpoint instances were tracked by pid
    for p in started:
        assert not Path(f"/proc/{p['pid']}").exists() or "Z" in Path(f"/proc/{p['pid']}/stat").read_text().split()[2], p
    assert processes_under(state) == []


def assert_scenario(summary: dict[str, Any], *, killed: bool = False) -> None:
    failed = [c for c in summary["checks"] if not c["ok"]]
    assert not failed, json.dumps(failed, indent=2)
    eps = summary["endpoints"]
    assert "connected" in eps["vod/origin"]["states_reached"]
    edge_a = eps["vod/edge_a"]["states_reached"]
    assert edge_a.index("placed") < edge_a.index("connected") < len(edge_a) - 1 - edge_a[::-1].index("placed")
    assert eps["vod/edge_a"]["final_state"] == "placed"
    assert "placed" in eps["vod/edge_b"]["states_reached"]
    assert (summary["kpi"]["fired"], summary["kpi"]["cleared"]) == (1, 1)
    share = summary["share_at_edge_a"]
    assert share["before_kpi"] == {"vod/origin": 1.0}
    assert share["with_edge_connected"].get("vod/edge_a", 0) >= 0.9
    assert share["after_clear"].get("vod/origin", 0) >= 0.9
    assert any(s["to"] == "vod/edge_a" for s in summary["in_session_switches"])
    r = summary["requests"]
    assert r["byte_exact_mismatches"] == 0 and r["ok"] > 100
    if not killed:
        assert r["failed"] == 0, r
    assert len(summary["services"]) == 5 and all(n > 0 for n in r["by_service"].values()), r["by_service"]
    k = summary["kpis"]
    assert set(k) == {"F3.2", "F3.3", "F3.4", "F3.5", "F3.6"}
    assert k["F3.4"]["to_first_served_s"] is not None and k["F3.4"]["to_first_served_s"] < 30
    assert k["F3.3"]["first_served"]["max"] < 60
    assert k["F3.5"]["gain_x"] is not None and k["F3.5"]["gain_x"] > 1
    assert k["F3.6"]["serving"] == 5


def test_packaged_demo_data_matches_the_examples() -> None:
    """flame_control/demo/data ships copies of the examples (installed packages have no examples/): no drift."""
    data = ROOT / "flame_control" / "demo" / "data"
    assert (data / "vod.yaml").read_text() == (ROOT / "examples/media-services/vod.yaml").read_text()
    assert (data / "flame-integration.yaml").read_text() == (
        ROOT / "examples/infrastructure/flame-integration.yaml"
    ).read_text()


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_runs_the_integration_scenario_and_leaves_nothing_running(tmp_path: Path) -> None:
    code, summary, out = run_demo(tmp_path, "--report", str(tmp_path / "kpi.md"))
    assert code == 0, out[-4000:]
    assert summary["ok"] and summary["fabric"] == "emulated" and summary["link_latency_emulated"]
    assert_scenario(summary)
    assert_nothing_left(summary, tmp_path / "state")
    report = (tmp_path / "kpi.md").read_text()
    for kid in ("F3.2", "F3.3", "F3.4", "F3.5", "F3.6"):
        assert f"| {kid} " in report
    assert "flame demo: OK" in out  # the terminal summary table


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_killed_nap_agent_players_fail_over_and_the_rest_carry_on(tmp_path: Path) -> None:
    """SIGKILL nap-edge-b2 (an access NAP) mid-run: its players see clean connection errors, re-attach at nap-edge-b1
    and are served again; no other request fails; the scenario at edge A completes; the summary names the kill."""
    code, summary, out = run_demo(tmp_path, "--kill-nap", "nap-edge-b2", "--at", "6")
    assert code == 0, out[-4000:]
    assert_scenario(summary, killed=True)
    (kill,) = summary["killed"]
    assert kill["nap"] == "nap-edge-b2" and kill["players"] >= 5
    assert kill["players_recovered"] == kill["players"] and kill["failed_over_to"] == "nap-edge-b1"
    r = summary["requests"]
    assert r["failed_outside_killed_naps"] == 0
    assert set(r["errors_by_kind"]) <= {"connect", "reset", "timeout"}, r["errors_by_kind"]
    assert r["by_nap"].get("nap-edge-b1", 0) > 0
    assert summary["crashed"] == []
    assert "killed nap-edge-b2" in out
    assert_nothing_left(summary, tmp_path / "state")


@pytest.mark.e2e
@pytest.mark.ovs
@pytest.mark.slow
def test_demo_on_open_vswitch(tmp_path: Path) -> None:
    """The same scenario with --fabric ovs: three userspace bridges programmed by the PCE through os-ken, NAP agents
    on raw interfaces, users in network namespaces; bridges, namespaces and veths removed afterwards."""
    from flame_control.demo.ovs import unavailable

    reason = unavailable()
    if reason:
        pytest.skip(f"--fabric ovs: {reason}")
    code, summary, out = run_demo(tmp_path, "--fabric", "ovs", "--vim", "process", timeout=300)
    assert code == 0, out[-4000:]
    assert summary["fabric"] == "ovs"
    assert_scenario(summary)
    assert_nothing_left(summary, tmp_path / "state")
    ovs = summary["fabric_info"]
    assert ovs["bridges"] and ovs["namespaces"]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    for name in ovs["namespaces"]:
        assert name not in netns
    for iface in ovs["interfaces"]:
        assert f" {iface}@" not in links and f" {iface}:" not in links


def ovs_objects_gone(ovs: dict[str, Any]) -> None:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    for name in ovs["namespaces"]:
        assert name not in netns
    for iface in ovs["interfaces"]:
        assert f" {iface}@" not in links and f" {iface}:" not in links
    for daemon, pid in ovs["daemons"].items():
        assert not pid_alive(pid), daemon  # detached daemons: gone, or a zombie until init reaps it


@pytest.mark.e2e
@pytest.mark.ovs
@pytest.mark.docker
@pytest.mark.slow
def test_demo_on_open_vswitch_with_the_docker_vim(tmp_path: Path) -> None:
    """--fabric ovs --vim docker (ORCH-6, issue 7): every endpoint of the five services runs as a container of the
    busybox media image on a private dockerd the demo starts; the players tell the surrogates apart by the image's
    X-Flame-Endpoint header, so traffic moving to vod/edge_a is seen on the players' connections; afterwards no
    dockerd, containerd, shim or container process, no mount and no directory of that daemon, and no bridge,
    namespace or veth of the demo is left."""
    from flame_control.demo.docker import mounts_below, processes_of
    from flame_control.demo.docker import unavailable as docker_unavailable
    from flame_control.demo.ovs import unavailable

    reason = unavailable() or docker_unavailable()
    if reason:
        pytest.skip(f"--fabric ovs --vim docker: {reason}")
    code, summary, out = run_demo(tmp_path, "--fabric", "ovs", "--vim", "docker", timeout=360)
    assert code == 0, out[-4000:]
    assert summary["fabric"] == "ovs"
    vim = summary["vim"]
    assert vim["kind"] == "docker" and vim["image"] == "vod-busybox" and vim["image_id"].startswith("sha256:"), vim
    assert_scenario(summary)  # all checks pass; traffic at nap-edge-a2 moved to vod/edge_a and back
    assert summary["share_at_edge_a"]["with_edge_connected"].get("vod/edge_a", 0) >= 0.9
    assert "VIM: docker" in out
    # nothing left running: the demo's children by PID, everything under its state dir, the daemon and its root
    started = summary["processes"]["started"]
    assert summary["processes"]["left_running"] == [] and vim["left"] == []
    assert not any("process VIM" in p["name"] for p in started)  # no endpoint ran as a process
    assert any(p["name"].startswith("dockerd-") and p["pid"] == vim["dockerd_pid"] for p in started), started
    for p in started:
        assert not Path(f"/proc/{p['pid']}").exists() or "Z" in Path(f"/proc/{p['pid']}/stat").read_text().split()[2], p
    assert processes_under(tmp_path / "state") == []
    root = Path(vim["root"])
    assert not root.exists() and processes_of(root) == [] and mounts_below(root) == []
    assert vim["containers_removed_at_cleanup"] == []  # the SFEMC deleted its containers with the services
    ovs_objects_gone(summary["fabric_info"])
