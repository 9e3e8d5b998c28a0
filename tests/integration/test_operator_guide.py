"""docs/operator-guide.md stays true (issue 11, item 9): every shell block of the guide is run, in order, against the
real processes the guide itself starts (`flame up`, `flame-nap`, with TLS and tokens and without), and every error
transcript is replayed and must fail with the message it shows.

The guide marks its blocks with HTML comments the renderer hides:
- ``<!-- guide-test: run -->`` before a ```` ```sh ```` block: run with ``bash -euo pipefail``; must exit 0;
- ``<!-- guide-test: background NAME -->`` before a one-command block: started and kept running (ready when it prints
  that it is up), until ``<!-- guide-test: stop NAME -->``, where SIGTERM must stop it with exit 0;
- ``<!-- guide-test: error -->`` before a transcript (``$ command`` then its output): the command must fail and print
  every line the transcript shows (``...`` abbreviates: only the text before it is compared).
Every ```` ```sh ```` block must carry a marker, so nothing in the guide escapes the test.

The only liberty taken: the guide's documented default ports (50051-50054, 50060, 50070, 8080, 9000) are replaced by
free ports, in the commands' text and through ``FLAME_*`` environment variables, because other runs share the machine.
Commands run in a temp directory holding a link to the repository's ``examples/``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.procs import Proc, ProcessGroup, free_port

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "operator-guide.md"
MARK = re.compile(r"<!-- guide-test: (run|background|stop|error)(?: ([\w-]+))? -->\n")
FENCE = re.compile(r"\s*```(\w*)\n(.*?)^```", re.M | re.S)


@dataclass
class Step:
    kind: str
    name: str
    body: str
    line: int


def guide_steps(text: str) -> list[Step]:
    """The marked steps of the guide, in order."""
    steps = []
    for m in MARK.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        body = ""
        if m.group(1) != "stop":
            fence = FENCE.match(text, m.end())
            assert fence, f"operator-guide.md:{line}: a guide-test marker must be followed by a fenced block"
            body = fence.group(2)
        steps.append(Step(m.group(1), m.group(2) or "", body, line))
    return steps


def test_every_shell_block_of_the_guide_is_marked_for_this_test() -> None:
    text = GUIDE.read_text()
    marked_at = {m.end() for m in MARK.finditer(text)}
    for fence in re.finditer(r"^```sh\n", text, re.M):
        assert fence.start() in marked_at, f"operator-guide.md:{text.count(chr(10), 0, fence.start()) + 1}: unmarked"


@dataclass
class Ports:
    by_default: dict[int, int]

    @classmethod
    def fresh(cls) -> Ports:
        return cls({p: free_port() for p in (50051, 50052, 50053, 50054, 50060, 50070, 8080, 9000)})

    def substitute(self, text: str) -> str:
        def host_port(m: re.Match[str]) -> str:
            return f"{m.group(1)}:{self.by_default.get(int(m.group(2)), int(m.group(2)))}"

        text = re.sub(r"(127\.0\.0\.1|localhost):(\d+)\b", host_port, text)
        return re.sub(r"--port (\d+)\b", lambda m: f"--port {self.by_default.get(int(m[1]), int(m[1]))}", text)

    def env(self) -> dict[str, str]:
        p = self.by_default
        keys = {"orchestrator": 50051, "sfemc": 50052, "pce": 50053, "clmc": 50054, "nap": 50060}
        env = {f"FLAME_LISTEN__PORTS__{k.upper()}": str(p[v]) for k, v in keys.items()}
        env["FLAME_SERVICES__PCE__EMULATED_PORT"] = str(p[50070])
        env["FLAME_SERVICES__NAP__FABRIC"] = f"127.0.0.1:{p[50070]}"
        env["FLAME_SERVICES__NAP__HTTP_LISTEN"] = f"127.0.0.1:{p[8080]}"
        return env


def run_block(script: str, cwd: Path, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``bash -euo pipefail`` in its own session; whatever it left running in the background is ended afterwards.
    Output goes to a file, not a pipe: a background child (e.g. an endpoint started with ``&``) keeps a pipe open."""
    log = cwd.parent / "block.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            proc.wait(timeout)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, log.read_text(errors="replace"), "")


def transcript_commands(body: str) -> list[tuple[str, list[str]]]:
    """``(command, expected output lines)`` of an error transcript."""
    out: list[tuple[str, list[str]]] = []
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("$ "):
            cmd = lines[i][2:]
            while cmd.endswith("\\"):
                i += 1
                cmd = cmd[:-1] + " " + lines[i].strip()
            out.append((cmd, []))
        elif out and lines[i].split("...")[0].strip():
            out[-1][1].append(lines[i].split("...")[0].strip())
        i += 1
    return out


@pytest.mark.slow
def test_operator_guide_commands_run_against_real_processes(tmp_path: Path, procs: ProcessGroup) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    ports = Ports.fresh()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        **ports.env(),
    }
    background: dict[str, Proc] = {}
    steps = guide_steps(GUIDE.read_text())
    assert {s.kind for s in steps} == {"run", "background", "stop", "error"}, steps
    for step in steps:
        where = f"operator-guide.md:{step.line}"
        body = ports.substitute(step.body)
        if step.kind == "run":
            result = run_block(body, work, env)
            assert result.returncode == 0, f"{where}: exit {result.returncode}\n{body}\n--- output:\n{result.stdout}"
        elif step.kind == "background":
            command = " ".join(line for line in body.splitlines() if line.strip() and not line.startswith("#"))
            own = {**env, "FLAME_STATE_DIR": str(tmp_path / f"state-{step.name}")}
            n = len(procs.procs)
            background[step.name] = procs.start(
                step.name, ["bash", "-c", f"exec {command}"], env=own, cwd=work,
                ready=lambda n=n: re.search(r"is up|admin service on", procs.procs[n].output()) is not None,
                timeout=90,
            )  # fmt: skip
        elif step.kind == "stop":
            proc = background.pop(step.name)
            assert procs.stop(proc, grace=30) == 0, f"{where}: {step.name} did not stop cleanly:\n{proc.output()}"
        else:
            for command, expected in transcript_commands(body):
                result = run_block(command, work, env)
                assert result.returncode != 0, f"{where}: {command} succeeded:\n{result.stdout}"
                assert expected, f"{where}: the transcript shows no output"
                for line in expected:
                    assert line in result.stdout, f"{where}: {line!r} not in the output of {command}:\n{result.stdout}"
    assert not background, f"started by the guide but never stopped: {sorted(background)}"
