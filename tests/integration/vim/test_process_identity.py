"""Process identity in the process VIM (issue 14 item 2, ORCH-6) against real processes: an instance is its processes
(PID + start time from /proc/PID/stat, plus the instance label every descendant inherits), not a command line. Images
that ``exec`` or fork are adopted after a driver restart (crash, overlap with a second driver, graceful stop), never
started twice, and delete leaves no process behind.

Before issue 14, liveness compared /proc/PID/cmdline with the recorded argv: an image that execs read as dead after a
restart and was started again (3 endpoints grew to 6, 9, 12, 15 processes over restarts) and delete left the earlier
copies listening."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flame_control.vim.base import InstanceSpec, InstanceStatus
from flame_control.vim.process import ProcessVim, start_time
from tests.support.procs import port_open, wait_for

PY = sys.executable
#: A shell that execs the server (same PID, another command line).
EXECS = f"/bin/sh -c 'exec {PY} -m http.server {{port}} --bind {{host}}'"
#: A shell that forks the server and waits for it (the server is a child in the same process group).
FORKS = f"/bin/sh -c '{PY} -m http.server {{port}} --bind {{host}} & wait'"
#: A launcher that daemonises the server into a session of its own and exits.
DAEMONISES = f"/bin/sh -c 'setsid {PY} -m http.server {{port}} --bind {{host}} >/dev/null 2>&1 & sleep 1'"


def labelled(vim: ProcessVim) -> list[int]:
    """PIDs of every live process carrying one of ``vim``'s instance labels (read from /proc, not the driver)."""
    needle = f"FLAME_VIM_INSTANCE={vim.label_prefix}".encode()
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            env = (p / "environ").read_bytes()
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state != "Z":
            found.append(int(p.name))
    return found


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "state"
    try:
        yield root
    finally:
        vim = ProcessVim(root, stop_grace_s=2)
        for inst in vim.list():
            vim.delete(inst.instance_id)


def _spec(node: str, image: str) -> InstanceSpec:
    return InstanceSpec(endpoint_id=f"vod/{node}", media_service="vod", image=image)


@pytest.mark.parametrize("image", [EXECS, FORKS], ids=["execs", "forks"])
def test_orch6_exec_and_fork_images_are_adopted_across_restarts_never_duplicated(state: Path, image: str) -> None:
    first = ProcessVim(state, boot_timeout_s=15, stop_grace_s=2)
    ids = [first.start(first.create(_spec(f"e{i}", image)).instance_id).instance_id for i in range(3)]
    before = sorted(labelled(first))
    assert len(before) >= 3
    # Crash-restart, then an overlapping second driver, then a graceful restart: each adopts, none starts anything.
    for _ in range(3):
        again = ProcessVim(state, boot_timeout_s=15, stop_grace_s=2)
        for iid in ids:
            inst = again.get(iid)
            assert inst is not None and inst.status is InstanceStatus.RUNNING, inst
            assert again.start(iid).status is InstanceStatus.RUNNING
        again.close()
    assert sorted(labelled(first)) == before
    last = ProcessVim(state, stop_grace_s=2)
    for iid in ids:
        last.delete(iid)
    wait_for(lambda: labelled(last) == [], 10, what="every labelled process gone")


def test_orch6_daemonising_image_runs_is_adopted_and_delete_leaves_no_process(state: Path) -> None:
    vim = ProcessVim(state, boot_timeout_s=15, stop_grace_s=2)
    inst = vim.start(vim.create(_spec("d", DAEMONISES)).instance_id)
    port = int(inst.address.rpartition(":")[2])
    wait_for(lambda: len(labelled(vim)) == 1, 10, what="the launcher gone, the daemon left")
    restarted = ProcessVim(state, stop_grace_s=2)
    assert restarted.get(inst.instance_id).status is InstanceStatus.RUNNING  # type: ignore[union-attr]
    assert restarted.start(inst.instance_id).address == inst.address
    assert len(labelled(vim)) == 1
    restarted.delete(inst.instance_id)
    wait_for(lambda: labelled(vim) == [] and not port_open(port), 10, what="the daemon gone")


def test_orch6_a_reused_pid_is_not_mistaken_for_the_instance(state: Path) -> None:
    """Identity is PID + start time: a run record naming a live PID with another start time reads as exited."""
    vim = ProcessVim(state, boot_timeout_s=15, stop_grace_s=2)
    inst = vim.start(vim.create(_spec("p", EXECS)).instance_id)
    pid = vim.pid_of(inst.instance_id)
    assert pid is not None and start_time(pid) is not None
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: labelled(vim) == [], 10, what="killed")
    run = state / inst.instance_id / "run.json"
    text = run.read_text().replace(f'"pid": {pid}', f'"pid": {os.getpid()}')  # a live PID that is someone else
    run.write_text(text)
    fresh = ProcessVim(state, stop_grace_s=2)
    assert fresh.get(inst.instance_id).status is InstanceStatus.EXITED  # type: ignore[union-attr]
    fresh.delete(inst.instance_id)  # must not signal the test process
    assert os.getpid() > 0
