"""Clean start-up failures and safe defaults of `flame up` and `flame-nap` (issue 11, items 3 and 4), as real
subprocesses on real ports: every start-up problem is one line on stderr and exit code 2, never a traceback; a
state directory belongs to one running process (flock + PID); state is private (0700 / 0600); listening beyond
loopback with authentication off is refused unless allowed, and then warned about at every start."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_binary, require_root
from tests.support.procs import ProcessGroup, free_port, port_open, process_group, wait_for

FLAME = [sys.executable, "-m", "flame_control.cli.main"]
NAP = [sys.executable, "-m", "nap_agent.cli"]
#: A log record of the runtime's formatter (anything else on stderr is the failure line).
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def run(argv: list[str], cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def failure_line(result: subprocess.CompletedProcess[str], prog: str) -> str:
    """Assert the process failed cleanly (exit 2, no traceback, exactly one line on stderr that is not a log record,
    and it is the last one); return that line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    problems = [line for line in lines if not LOG_RECORD.match(line)]
    assert len(problems) == 1, lines
    assert lines[-1] == problems[0], lines
    assert problems[0].startswith(f"{prog}: "), problems
    return problems[0]


def control_ports() -> list[str]:
    return [f"--set=listen.ports.{k}={free_port()}" for k in ("orchestrator", "sfemc", "pce", "clmc")] + [
        "--set=services.pce.emulated_port=0"
    ]


def nap_args(state: Path, port: int | None = None) -> list[str]:
    return [
        "--state-dir", str(state), f"--set=listen.ports.nap={port or free_port()}",
        "--set=services.nap.http_listen=127.0.0.1:0", f"--set=peers.pce=127.0.0.1:{free_port()}",
    ]  # fmt: skip


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port some other process (this test) listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


# -- item 3: clean failures ----------------------------------------------------------------------------------------
def test_tls_enabled_without_cert_and_key_is_one_line_exit_2(tmp_path: Path) -> None:
    up = run([*FLAME, "up", "--state-dir", str(tmp_path / "s"), "--set=tls.enabled=true", *control_ports()], tmp_path)
    assert "tls.cert and tls.key are not set" in failure_line(up, "flame up")
    nap = run([*NAP, *nap_args(tmp_path / "n"), "--set=tls.enabled=true", "--set=tls.cert=/x.pem"], tmp_path)
    assert "tls.key is not set" in failure_line(nap, "flame-nap")


def test_unreadable_tls_key_names_the_setting_and_path(tmp_path: Path) -> None:
    sets = ["--set=tls.enabled=true", f"--set=tls.cert={tmp_path}/c.pem", f"--set=tls.key={tmp_path}/k.pem"]
    (tmp_path / "c.pem").write_text("x")
    up = run([*FLAME, "up", "--state-dir", str(tmp_path / "s"), *sets, *control_ports()], tmp_path)
    assert f"tls.key: cannot read {tmp_path}/k.pem: No such file or directory" in failure_line(up, "flame up")


def test_grpc_port_in_use_names_the_service_and_port_and_starts_nothing(tmp_path: Path, listener: int) -> None:
    state = tmp_path / "s"
    ports = control_ports()
    ports[2] = f"--set=listen.ports.pce={listener}"
    up = run([*FLAME, "up", "--state-dir", str(state), *ports], tmp_path)
    line = failure_line(up, "flame up")
    assert f"pce: gRPC port (listen.ports.pce) 127.0.0.1:{listener} is already in use" in line
    # Checked before any service is built: no service state directory was made, only the services' lock files.
    assert sorted(p.name for p in state.iterdir()) == ["clmc.lock", "orchestrator.lock", "pce.lock", "sfemc.lock"]


def test_metrics_port_in_use_is_refused_before_any_service_starts(tmp_path: Path, listener: int) -> None:
    """An explicit ``metrics.port`` that is taken stops the start before any service is built or serves (before, the
    process served its RPCs for a moment and then died: two processes of a split deployment sharing one config)."""
    state = tmp_path / "s"
    up = run([*FLAME, "up", "--state-dir", str(state), f"--set=metrics.port={listener}", *control_ports()], tmp_path)
    line = failure_line(up, "flame up")
    assert f"metrics endpoint (metrics.port) 127.0.0.1:{listener} is already in use" in line
    assert sorted(p.name for p in state.iterdir()) == ["clmc.lock", "orchestrator.lock", "pce.lock", "sfemc.lock"]


def test_nap_admin_port_in_use_is_one_line(tmp_path: Path, listener: int) -> None:
    nap = run([*NAP, *nap_args(tmp_path / "n", listener)], tmp_path)
    assert f"nap: gRPC port (listen.ports.nap) 127.0.0.1:{listener} is already in use" in failure_line(nap, "flame-nap")


def test_nap_http_port_in_use_names_the_service_and_address(tmp_path: Path, listener: int) -> None:
    args = [*nap_args(tmp_path / "n"), f"--set=services.nap.http_listen=127.0.0.1:{listener}"]
    line = failure_line(run([*NAP, *args], tmp_path), "flame-nap")
    assert line.startswith("flame-nap: nap: ") and f"{listener}" in line, line
    assert "address already in use" in line.lower(), line


def test_pce_emulated_fabric_udp_port_in_use_names_the_port(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        busy = udp.getsockname()[1]
        ports = [*control_ports()[:-1], f"--set=services.pce.emulated_port={busy}"]
        up = run([*FLAME, "up", "--state-dir", str(tmp_path / "s"), *ports], tmp_path)
    line = failure_line(up, "flame up")
    assert f"pce: emulated fabric UDP port 127.0.0.1:{busy}: Address already in use" in line


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read config {path}: No such file or directory"),
        ("listen: [\n", "{path}: not valid YAML: "),
        ("listen:\n  hots: 0.0.0.0\nservices:\n  pcee: {}\n", "invalid configuration: listen.hots: unknown key"),
        ("- a\n", "{path}: the top level must be a mapping"),
    ],
    ids=["missing", "bad-yaml", "unknown-keys", "not-a-mapping"],
)
def test_unreadable_or_invalid_config_is_one_line_exit_2(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "flame.yaml"
    if content is not None:
        path.write_text(content)
    for prog, argv in (("flame up", [*FLAME, "up"]), ("flame-nap", NAP)):
        line = failure_line(run([*argv, "--config", str(path)], tmp_path), prog)
        assert expected.format(path=path) in line, line


def test_a_config_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    line = failure_line(run([*FLAME, "up", "--config", str(tmp_path)], tmp_path), "flame up")
    assert f"cannot read config {tmp_path}: Is a directory" in line


def test_state_dir_used_by_a_running_flame_up_is_refused_and_the_second_starts_nothing(
    tmp_path: Path, procs: ProcessGroup
) -> None:
    state = tmp_path / "s"
    first_ports = control_ports()
    first = procs.start(
        "first", [*FLAME, "up", "--state-dir", str(state), "--services=pce", *first_ports],
        ready=lambda: "is up" in procs.procs[0].output(), timeout=60,
    )  # fmt: skip
    before = sorted(str(p.relative_to(state)) for p in state.rglob("*"))
    second_port = free_port()
    second = run(
        [*FLAME, "up", "--state-dir", str(state), f"--set=listen.ports.orchestrator={second_port}", *control_ports()],
        tmp_path,
    )
    line = failure_line(second, "flame up")
    assert f"state directory {state} is in use by a running flame up (pid {first.popen.pid}) serving pce" in line
    # The second built no service (no orchestrator, SFEMC or CLMC state: no VIM, no endpoint process) and bound
    # nothing; it left only the lock files of its other services, none of them held.
    after = sorted(str(p.relative_to(state)) for p in state.rglob("*"))
    assert set(after) - set(before) <= {"clmc.lock", "orchestrator.lock", "sfemc.lock"}
    assert not (state / "orchestrator").exists() and not (state / "sfemc").exists()
    assert not port_open(second_port)
    assert (state / "pce.lock").read_text().split() == [str(first.popen.pid), "flame", "up"]
    assert first.popen.poll() is None


def test_a_split_deployment_shares_a_state_directory_but_never_a_service(tmp_path: Path, procs: ProcessGroup) -> None:
    """ORCH-8 split deployment on one config: ``flame up --services pce`` and ``--services clmc`` and a flame-nap run
    side by side on one state directory (each service locks its own ``<service>.lock``); a second process for a
    service that is already served is refused, naming the owner."""
    state = tmp_path / "s"
    pce = procs.start(
        "pce", [*FLAME, "up", "--state-dir", str(state), "--services=pce", *control_ports()],
        ready=lambda: "is up" in procs.procs[0].output(), timeout=60,
    )  # fmt: skip
    clmc = procs.start(
        "clmc", [*FLAME, "up", "--state-dir", str(state), "--services=clmc", *control_ports()],
        ready=lambda: "is up" in procs.procs[1].output(), timeout=60,
    )  # fmt: skip
    nap = procs.start("nap", [*NAP, *nap_args(state)], ready=lambda: "admin service on" in procs.procs[2].output())
    assert (state / "clmc.lock").read_text().split() == [str(clmc.popen.pid), "flame", "up"]
    assert (state / "nap.lock").read_text().split() == [str(nap.popen.pid), "flame-nap"]
    again = run([*NAP, *nap_args(state)], tmp_path)
    assert f"in use by a running flame-nap (pid {nap.popen.pid}) serving nap" in failure_line(again, "flame-nap")
    both = run([*FLAME, "up", "--state-dir", str(state), "--services=clmc,orchestrator", *control_ports()], tmp_path)
    assert f"in use by a running flame up (pid {clmc.popen.pid}) serving clmc" in failure_line(both, "flame up")
    assert not (state / "orchestrator").exists()
    assert pce.popen.poll() is None and clmc.popen.poll() is None and nap.popen.poll() is None


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, procs: ProcessGroup) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state = tmp_path / "s"
    state.mkdir()
    (state / "pce.lock").write_text(f"{dead.pid}\nflame up\n")
    proc = procs.start(
        "up", [*FLAME, "up", "--state-dir", str(state), "--services=pce", *control_ports()],
        ready=lambda: "is up" in procs.procs[0].output(), timeout=60,
    )  # fmt: skip
    assert (state / "pce.lock").read_text().split()[0] == str(proc.popen.pid)
    assert "took over the state directory" in proc.output() and f"pid={dead.pid}" in proc.output()
    assert procs.stop(proc) == 0
    # After a clean stop the next start takes the directory without complaint.
    again = procs.start(
        "again", [*FLAME, "up", "--state-dir", str(state), "--services=pce", *control_ports()],
        ready=lambda: "is up" in procs.procs[-1].output(), timeout=60,
    )  # fmt: skip
    assert (state / "pce.lock").read_text().split()[0] == str(again.popen.pid)


# -- item 4: safe by default ---------------------------------------------------------------------------------------
def test_state_is_private_directories_0700_files_0600(tmp_path: Path, procs: ProcessGroup) -> None:
    """The CLMC database, the SFEMC store, the lock: nobody but the owner reads them. An older, world-readable
    state directory is tightened at start."""
    state = tmp_path / "s"
    (state / "clmc").mkdir(parents=True)
    os.chmod(state, 0o755)
    os.chmod(state / "clmc", 0o755)
    old = state / "clmc" / "old.json"
    old.write_text("{}")
    os.chmod(old, 0o644)
    proc = procs.start(
        "up", [*FLAME, "up", "--state-dir", str(state), *control_ports()],
        ready=lambda: "is up" in procs.procs[0].output(), timeout=60,
    )  # fmt: skip
    files = [p for p in state.rglob("*") if p.is_file()]
    names = {str(p.relative_to(state)) for p in files}
    assert {"pce.lock", "clmc/metrics.sqlite", "clmc/clmc_state.sqlite", "sfemc/sfemc.json"} <= names, names
    for path in [state, *state.rglob("*")]:
        mode = os.stat(path).st_mode & 0o777
        assert mode & 0o077 == 0, (str(path), oct(mode))
        assert mode == (0o700 if path.is_dir() else 0o600), (str(path), oct(mode))
    assert procs.stop(proc) == 0


def test_version_flags() -> None:
    from importlib.metadata import version

    for argv, prog in ((FLAME, "flame"), (NAP, "flame-nap")):
        out = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == f"{prog} {version('flame-control')}", out


@pytest.mark.parametrize("host", ["0.0.0.0", "'::'", "192.0.2.1"])
def test_listening_beyond_loopback_without_auth_is_refused(tmp_path: Path, host: str) -> None:
    argv = [*FLAME, "up", "--state-dir", str(tmp_path / "s"), f"--set=listen.host={host}", *control_ports()]
    up = run(argv, tmp_path)
    assert "refusing to listen on" in failure_line(up, "flame up")
    assert not (tmp_path / "s").exists()  # refused before the state directory was touched
    nap = run([*NAP, *nap_args(tmp_path / "n"), f"--set=listen.host={host}"], tmp_path)
    assert "listen.allow_insecure: true" in failure_line(nap, "flame-nap")


def test_allow_insecure_serves_beyond_loopback_and_warns_at_every_start(tmp_path: Path) -> None:
    """In a private network namespace (nothing listens beyond loopback on the machine itself)."""
    require_root("network namespaces")
    ip = require_binary("ip", "apt-get install -y iproute2")
    ns = f"fl{uuid.uuid4().hex[:8]}"
    subprocess.run([ip, "netns", "add", ns], check=True)
    try:
        subprocess.run([ip, "netns", "exec", ns, ip, "link", "set", "lo", "up"], check=True)
        for attempt in range(2):
            (tmp_path / f"run{attempt}").mkdir()
            with process_group(tmp_path / f"run{attempt}") as group:
                argv = [ip, "netns", "exec", ns, *FLAME, "up", "--services=pce", "--state-dir", str(tmp_path / "s"),
                        "--set=listen.host=0.0.0.0", "--set=listen.allow_insecure=true", *control_ports()]  # fmt: skip
                proc = group.start("up", argv, ready=lambda: "is up" in group.procs[0].output(), timeout=60)
                out = proc.output()
                assert "warning" in out and "listening on 0.0.0.0 with authentication off" in out, out
                assert "0.0.0.0:" in out.split("is up", 1)[1]
                assert group.stop(proc) == 0
    finally:
        subprocess.run([ip, "netns", "delete", ns], check=False)


def test_a_loopback_listener_or_authenticated_one_starts_without_a_warning(tmp_path: Path, procs: ProcessGroup) -> None:
    proc = procs.start(
        "up", [*FLAME, "up", "--state-dir", str(tmp_path / "s"), "--services=pce", *control_ports()],
        ready=lambda: "is up" in procs.procs[0].output(), timeout=60,
    )  # fmt: skip
    wait_for(lambda: "state in" in proc.output(), 10)
    assert "authentication off" not in proc.output()
