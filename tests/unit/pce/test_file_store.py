"""The embedded PCE state store (issue 13, SFR-20): atomic applies, revisions, prefix reads, watches, one process at a
time, and crash safety: a writer killed with SIGKILL mid-stream leaves a store where every apply is all or nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pce.store.base import Change
from pce.store.file_store import Compacted, FileStore, StoreLocked

WRITER = """
import sys
from pce.store.file_store import FileStore
store = FileStore(sys.argv[1])
i = store.read_all("n/")[0].get("n/a", b"0")
i = int(i)
print("ready", flush=True)
while True:
    i += 1
    v = str(i).encode()
    store.apply({"n/a": v, "n/b": v, f"log/{i:08d}": b"x" * 512}, [f"log/{i - 50:08d}"])
"""


def test_sfr20_apply_is_atomic_revisioned_and_survives_reopen(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state.db")
    assert store.read_all() == ({}, 0)
    r1 = store.apply({"topology": b"T", "regs/a": b"1", "regs/b": b"2"})
    r2 = store.apply({"regs/c": b"3"}, ["regs/a", "missing"])
    assert (r1, r2) == (1, 2)
    assert store.read_all("regs/") == ({"regs/b": b"2", "regs/c": b"3"}, 2)
    store.close()
    again = FileStore(tmp_path / "state.db")
    assert again.read_all() == ({"regs/b": b"2", "regs/c": b"3", "topology": b"T"}, 2)
    assert again.apply({"x": b""}) == 3
    again.close()


def test_sfr20_a_second_process_cannot_open_the_same_store(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state.db")
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from pce.store.file_store import FileStore; FileStore(sys.argv[1])",
         str(tmp_path / "state.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode != 0 and "StoreLocked" in probe.stderr
    store.close()
    FileStore(tmp_path / "state.db").close()  # released on close


def test_sfr20_in_process_lock_refuses_a_second_open(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state.db")
    with pytest.raises(StoreLocked):
        FileStore(tmp_path / "state.db")
    store.close()


def test_sfr20_watch_delivers_backlog_then_live_changes_under_its_prefix(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state.db", history=4)
    store.apply({"a/1": b"x"})
    store.apply({"b/1": b"y"})
    seen: list[Change] = []
    cancel = store.watch("a/", 0, seen.extend)
    assert seen == [Change("a/1", b"x", 1)]
    store.apply({"a/2": b"z"}, ["a/1"])
    assert seen[1:] == [Change("a/1", None, 3), Change("a/2", b"z", 3)]
    cancel()
    store.apply({"a/3": b"w"})
    assert len(seen) == 3
    for i in range(6):
        store.apply({f"c/{i}": b""})
    with pytest.raises(Compacted):
        store.watch("", 1, seen.extend)
    store.close()


def test_sfr20_failed_apply_changes_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state.db")
    store.apply({"k": b"1"})
    with pytest.raises(TypeError):
        store.apply({"k": b"2", "bad": object()})  # type: ignore[dict-item]
    assert store.read_all() == ({"k": b"1"}, 1)
    assert store.apply({"k": b"3"}) == 2
    store.close()


def test_sfr20_writer_killed_mid_stream_leaves_every_apply_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    last = 0
    for round_ in range(4):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        time.sleep(0.15 + 0.1 * round_)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
        store = FileStore(path)
        data, revision = store.read_all()
        a, b = int(data["n/a"]), int(data["n/b"])
        assert a == b, "an apply was torn by the crash"
        assert a > last, "no progress was made or a committed apply was lost"
        logs = sorted(k for k in data if k.startswith("log/"))
        assert logs[-1] == f"log/{a:08d}" and len(logs) <= 50
        assert revision >= a - last
        last = a
        store.close()
