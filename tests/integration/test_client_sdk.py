"""The client SDK for other platforms (issue 11 item 8):

- `flame-control-api` (sdk/python, built by scripts/build_sdk.py) installed ALONE into a fresh venv calls a running
  `flame up` and decodes a BadRequest's field violations from the google.rpc.Status details;
- its dependency floors match the versions the stubs were generated with;
- buf.gen.yaml's managed mode gives every FLAME proto its language options (go_package, java_package, ...) without
  any option in the .proto files, and leaves google/rpc/status.proto to googleapis (not generated, own options);
- google.rpc comes from googleapis-common-protos, never a private generated copy that registers the same file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_binary
from tests.support.procs import ProcessGroup, free_port, port_open

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "flame_control" / "api"

CLIENT = r"""
import importlib.util, json, sys
import grpc
from google.rpc import error_details_pb2, status_pb2
from flame_control.api.flame.pce.v1 import pce_pb2, pce_pb2_grpc

assert importlib.util.find_spec("flame_control.runtime") is None, "the control plane is installed: not an SDK-only env"
stub = pce_pb2_grpc.PceServiceStub(grpc.insecure_channel(sys.argv[1]))
topology = stub.GetTopology(pce_pb2.GetTopologyRequest(), timeout=10)
try:
    stub.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn="not a name!", nap_id=""), timeout=10)
    raise SystemExit("RegisterFqdn accepted bad input")
except grpc.RpcError as err:
    raw = dict(err.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    violations = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            violations += [{"field": v.field, "description": v.description} for v in bad.field_violations]
    print(json.dumps({"code": err.code().name, "status_code": status.code, "violations": violations,
                      "topology_version": topology.version}))
"""


def _venv_python(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin" / "python"


@pytest.mark.slow
def test_sdk_alone_in_a_fresh_venv_calls_flame_up_and_decodes_bad_request_field_violations(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    from scripts.build_sdk import build

    wheel = build(tmp_path / "dist")
    python = _venv_python(tmp_path / "sdk-venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, env=env
    )
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "flame-control-api" in names and "flame-control" not in names, names
    assert {"grpcio", "protobuf", "googleapis-common-protos"} <= names

    port = free_port()
    procs.start(
        "flame-up",
        [sys.executable, "-m", "flame_control.cli.main", "up", "--services", "pce", "--state-dir", str(tmp_path / "s"),
         f"--set=listen.ports.pce={port}", "--set=services.pce.emulated_port=0", "--set=metrics.enabled=false"],
        env={"PYTHONUNBUFFERED": "1"}, ready=lambda: port_open(port), timeout=60,
    )  # fmt: skip
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    # Run from an empty directory so nothing from this checkout can be imported.
    (tmp_path / "empty").mkdir()
    done = subprocess.run(
        [str(python), str(script), f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60,
        cwd=tmp_path / "empty", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["code"] == "INVALID_ARGUMENT" and result["status_code"] == 3
    assert "fqdn" in {v["field"] for v in result["violations"]}, result


def test_sdk_dependency_floors_are_the_versions_the_stubs_were_generated_with() -> None:
    deps = tomllib.loads((ROOT / "sdk" / "python" / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = dict(re.match(r"([\w-]+)>=([\d.]+)", d).groups() for d in deps)  # type: ignore[union-attr]
    grpc_text = (STUBS / "flame" / "pce" / "v1" / "pce_pb2_grpc.py").read_text()
    assert floors["grpcio"] == re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_text).group(1)  # type: ignore[union-attr]
    pb_text = (STUBS / "flame" / "pce" / "v1" / "pce_pb2.py").read_text()
    gencode = re.search(r"Domain.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", pb_text).groups()  # type: ignore[union-attr]
    assert floors["protobuf"] == ".".join(gencode)
    assert set(floors) == {"grpcio", "protobuf", "googleapis-common-protos"}


def test_buf_managed_mode_sets_language_options_and_leaves_google_rpc_to_googleapis(tmp_path: Path) -> None:
    buf = str(Path(sys.executable).parent / "buf")
    if not Path(buf).exists():
        buf = require_binary("buf", "pip install buf-bin")
    template = yaml.safe_load((ROOT / "buf.gen.yaml").read_text())
    # The real managed-mode settings and inputs; only the plugins are swapped for one that reports the options.
    plugin = [sys.executable, str(ROOT / "tests" / "support" / "protoc_gen_options.py")]
    template["plugins"] = [{"local": plugin, "out": str(tmp_path / "out"), "strategy": "all"}]
    (tmp_path / "gen.yaml").write_text(yaml.safe_dump(template))
    done = subprocess.run(
        [buf, "generate", "--template", str(tmp_path / "gen.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "BUF_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "options.json").read_text())
    flame_files = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto" / "flame").rglob("*.proto"))
    assert report["generate"] == flame_files  # google/rpc/status.proto is not generated
    for name in flame_files:
        opts = report["options"][name]
        pkg = str(Path(name).parent)  # flame/pce/v1
        assert opts["go_package"].startswith(f"github.com/flame-project/flame-control/gen/go/{pkg};"), (name, opts)
        assert opts["java_package"] == "org.flameproject." + pkg.replace("/", "."), (name, opts)
        assert opts["java_multiple_files"] is True and opts["csharp_namespace"].startswith("FlameProject."), opts
        # The .proto files carry no language options (managed mode is the one place; buf breaking sees no change).
        assert "option go_package" not in (ROOT / "proto" / name).read_text()
    status = report["options"]["google/rpc/status.proto"]
    assert status["go_package"] == "google.golang.org/genproto/googleapis/rpc/status;status"
    assert status["java_package"] == "com.google.rpc"


def test_google_rpc_comes_from_googleapis_common_protos_not_a_private_copy() -> None:
    import google.rpc

    assert not (STUBS / "google").exists(), "a generated google.rpc copy would register google/rpc/status.proto twice"
    importers = [p for p in STUBS.rglob("*_pb2.py") if "google/rpc/status.proto" in p.read_text()]
    assert importers, "no stub uses google.rpc.Status"
    for path in importers:
        assert "from google.rpc import status_pb2" in path.read_text(), path
    # The vendored proto (for buf and protoc) is googleapis' own file, byte for byte apart from comments.
    upstream = Path(google.rpc.__path__[0]) / "status.proto"

    def code(text: str) -> list[str]:
        return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("//")]

    assert code((ROOT / "proto" / "google" / "rpc" / "status.proto").read_text()) == code(upstream.read_text())
    # Every stub and googleapis' error details load together in one interpreter (one descriptor pool, no clash).
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in sorted(STUBS.rglob("*_pb2.py"))]
    probe = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
    probe += "from google.rpc import error_details_pb2, status_pb2\nprint('ok')\n"
    done = subprocess.run([sys.executable, "-c", probe, *modules], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr
