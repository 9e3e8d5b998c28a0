"""The process VIM (ORCH-6) against real processes: the built-in media server's lifecycle, byte-exact segments
(SFEMC-6: the endpoint image's content), adoption by a restarted controller, crash detection, boot and placement
failures, and no stray process after delete (checked by PID)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flame_control.vim.base import LABEL_ENDPOINT, InstanceSpec, InstanceStatus, VimDriver, VimError, VimErrorKind
from flame_control.vim.media_server import expected_segment
from flame_control.vim.process import BUILTIN_MEDIA_SERVER, ProcessVim
from tests.integration.vim.helpers import http_get
from tests.support.procs import free_port, port_open, wait_for


def _spec(node: str = "edge-1", image: str = BUILTIN_MEDIA_SERVER, port: int = 0) -> InstanceSpec:
    return InstanceSpec(endpoint_id=f"vod/{node}", media_service="vod", image=image, port=port)


def _pid_gone(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return raw.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def vim(tmp_path: Path) -> Iterator[ProcessVim]:
    driver = ProcessVim(tmp_path / "state", boot_timeout_s=10, stop_grace_s=3)
    try:
        yield driver
    finally:
        for inst in driver.list():
            driver.delete(inst.instance_id)


def test_process_vim_implements_the_driver_protocol(vim: ProcessVim) -> None:
    assert isinstance(vim, VimDriver)
    assert vim.name == "process"


def test_lifecycle_serves_health_and_byte_exact_segments_then_leaves_nothing(vim: ProcessVim) -> None:
    created = vim.create(_spec())
    assert created.status is InstanceStatus.CREATED and created.address == ""
    assert created.endpoint_id == "vod/edge-1" and created.media_service == "vod"
    assert (vim.state_dir / created.instance_id / "spec.json").exists()

    running = vim.start(created.instance_id)
    assert running.status is InstanceStatus.RUNNING
    status, headers, body = http_get(running.address, "/health")
    assert (status, body) == (200, b"ok")
    assert headers["x-flame-endpoint"] == "vod/edge-1"
    status, headers, body = http_get(running.address, "/vod/demo/seg3.ts")
    assert status == 200 and body == expected_segment("demo", 3)
    assert int(headers["content-length"]) == len(body) == 256 * 1024
    status, _, body = http_get(running.address, "/vod/demo/seg0.ts?size=1000")
    assert body == expected_segment("demo", 0, 1000)
    assert http_get(running.address, "/nope")[0] == 404

    pid = vim.pid_of(created.instance_id)
    assert pid is not None
    assert vim.start(created.instance_id) == running  # idempotent: same process, same address
    assert vim.pid_of(created.instance_id) == pid

    stopped = vim.stop(created.instance_id)
    assert stopped.status is InstanceStatus.CREATED
    assert _pid_gone(pid)
    assert vim.stop(created.instance_id).status is InstanceStatus.CREATED

    again = vim.start(created.instance_id)
    assert again.address == running.address  # the assigned port is kept
    pid2 = vim.pid_of(created.instance_id)
    assert pid2 is not None and pid2 != pid
    vim.delete(created.instance_id)
    assert _pid_gone(pid2)
    assert not (vim.state_dir / created.instance_id).exists()
    assert vim.get(created.instance_id) is None
    assert vim.list() == []
    vim.delete(created.instance_id)  # idempotent


def test_sigterm_makes_the_media_server_exit_zero(vim: ProcessVim) -> None:
    inst = vim.start(vim.create(_spec()).instance_id)
    pid = vim.pid_of(inst.instance_id)
    assert pid is not None
    child = vim._children[pid]
    os.kill(pid, signal.SIGTERM)
    assert child.wait(5) == 0


def test_restarted_controller_adopts_running_instance_without_duplicates(vim: ProcessVim, tmp_path: Path) -> None:
    first = vim.start(vim.create(_spec()).instance_id)
    pid = vim.pid_of(first.instance_id)

    restarted = ProcessVim(tmp_path / "state")
    listed = restarted.list()
    assert [i.instance_id for i in listed] == [first.instance_id]
    assert listed[0].status is InstanceStatus.RUNNING and listed[0].address == first.address
    again = restarted.create(_spec())  # same endpoint: the existing instance, not a second one
    assert again.instance_id == first.instance_id and again.status is InstanceStatus.RUNNING
    assert restarted.start(again.instance_id).address == first.address
    assert restarted.pid_of(again.instance_id) == pid
    assert len(list((tmp_path / "state").iterdir())) == 1
    assert restarted.list(media_service="other") == []

    restarted.delete(first.instance_id)
    assert pid is not None
    wait_for(lambda: _pid_gone(pid), 5, what="adopted process gone")


def test_crash_is_reported_exited_and_start_recovers(vim: ProcessVim) -> None:
    inst = vim.start(vim.create(_spec()).instance_id)
    pid = vim.pid_of(inst.instance_id)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: vim.get(inst.instance_id).status is InstanceStatus.EXITED, 5, what="EXITED")  # type: ignore[union-attr]
    crashed = vim.get(inst.instance_id)
    assert crashed is not None and "-9" in crashed.detail and crashed.address == ""
    assert vim.start(inst.instance_id).status is InstanceStatus.RUNNING


def test_command_that_exits_at_boot_is_a_boot_error_with_the_log_tail(vim: ProcessVim) -> None:
    image = f"{sys.executable} -c \"import sys; print('config file /etc/x missing'); sys.exit(3)\""
    inst = vim.create(_spec(image=image))
    with pytest.raises(VimError) as err:
        vim.start(inst.instance_id)
    assert err.value.kind is VimErrorKind.BOOT
    assert "code 3" in str(err.value) and "config file /etc/x missing" in str(err.value)
    assert vim.get(inst.instance_id).status is InstanceStatus.EXITED  # type: ignore[union-attr]


def test_command_that_never_listens_is_a_boot_error_and_is_killed(tmp_path: Path) -> None:
    vim = ProcessVim(tmp_path / "state", boot_timeout_s=0.5, stop_grace_s=1)
    inst = vim.create(_spec(image="sleep 30"))
    with pytest.raises(VimError) as err:
        vim.start(inst.instance_id)
    assert err.value.kind is VimErrorKind.BOOT and "within 0.5s" in str(err.value)
    assert vim.get(inst.instance_id).status is InstanceStatus.CREATED  # type: ignore[union-attr]
    vim.delete(inst.instance_id)


def test_missing_executable_is_a_placement_error(vim: ProcessVim) -> None:
    with pytest.raises(VimError) as err:
        vim.create(_spec(image="/nonexistent/media-origin --port {port}"))
    assert err.value.kind is VimErrorKind.PLACEMENT and "not found" in str(err.value)
    with pytest.raises(VimError) as err:
        vim.create(_spec(image="python3 {nope}"))
    assert err.value.kind is VimErrorKind.PLACEMENT and "placeholder" in str(err.value)
    assert vim.list() == []


def test_argv_template_gets_port_host_name_and_env(vim: ProcessVim) -> None:
    image = f"{sys.executable} -m http.server {{port}} --bind {{host}}"
    inst = vim.start(vim.create(_spec(image=image)).instance_id)
    assert http_get(inst.address, "/")[0] == 200
    pid = vim.pid_of(inst.instance_id)
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"FLAME_ENDPOINT=vod/edge-1" in env and f"PORT={inst.address.rsplit(':', 1)[1]}".encode() in env


def test_fixed_port_in_use_is_a_boot_error(vim: ProcessVim) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        inst = vim.create(_spec(port=port))
        with pytest.raises(VimError) as err:
            vim.start(inst.instance_id)
        assert err.value.kind is VimErrorKind.BOOT and "in use" in str(err.value)


def test_unknown_instance(vim: ProcessVim) -> None:
    assert vim.get("nope") is None and vim.get("../x") is None
    with pytest.raises(VimError) as err:
        vim.start("nope")
    assert err.value.kind is VimErrorKind.NOT_FOUND
    vim.delete("nope")


def test_several_endpoints_are_separate_and_listed_by_label(vim: ProcessVim) -> None:
    a = vim.start(vim.create(_spec("edge-1")).instance_id)
    b = vim.start(vim.create(_spec("edge-2")).instance_id)
    assert a.address != b.address
    assert http_get(b.address, "/health")[1]["x-flame-endpoint"] == "vod/edge-2"
    assert sorted(i.endpoint_id for i in vim.list("vod")) == ["vod/edge-1", "vod/edge-2"]
    labels = (vim.state_dir / a.instance_id / "spec.json").read_text()
    assert LABEL_ENDPOINT in labels
    pids = [vim.pid_of(a.instance_id), vim.pid_of(b.instance_id)]
    for inst in vim.list():
        vim.delete(inst.instance_id)
    t0 = time.monotonic()
    assert all(p is not None and _pid_gone(p) for p in pids)
    assert time.monotonic() - t0 < 1
    assert not port_open(int(a.address.rsplit(":", 1)[1]))
