"""Fixtures of the docker-VIM orchestration tests (ORCH-6): a private dockerd holding the busybox media image, and
the control plane (`flame up` + NAP agents) configured with the process and the docker VIM.

``cp`` is the control plane with the process VIM only and the NAP agents of the lifecycle tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from flame_control.api.flame.orchestrator.v1 import orchestrator_pb2 as O
from flame_control.api.flame.pce.v1 import pce_pb2
from flame_control.vim.process import ProcessVim
from tests.support.control_plane import ControlPlane, start_control_plane
from tests.support.docker_media import DockerMedia, docker_media_env
from tests.support.procs import ProcessGroup, wait_for

#: NAP agents of the docker tests: the data centre's NAP, the edge-A site's NAP and edge-A's access NAP (users).
DOCKER_NAPS = ("nap-dc", "nap-edge-a1", "nap-edge-a2")


def _sites(plane: ControlPlane) -> int:
    try:
        return len(plane.orchestrator.GetInfrastructure(O.GetInfrastructureRequest(), timeout=5).sites)
    except grpc.RpcError:
        return 0


def _topology(plane: ControlPlane) -> int:
    try:
        return int(plane.pce.GetTopology(pce_pb2.GetTopologyRequest(), timeout=5).version)
    except grpc.RpcError:
        return 0


@pytest.fixture
def cp(procs: ProcessGroup) -> Iterator[ControlPlane]:
    """`flame up` (process VIM) with the NAP agents nap-dc, nap-edge-a1, nap-edge-a2 and nap-edge-b1, the example
    catalogue applied and its topology at the PCE. Endpoint instances outlive their controller on purpose (adoption
    after a crash): teardown removes them."""
    plane = start_control_plane(procs, naps=("nap-dc", "nap-edge-a1", "nap-edge-a2", "nap-edge-b1"))
    try:
        wait_for(lambda: _sites(plane) == 3, 30, 0.1, "the example catalogue applied")
        wait_for(lambda: _topology(plane) > 0, 30, 0.1, "the topology at the PCE")
        yield plane
    finally:
        procs.stop_all()
        vim = ProcessVim(plane.state_dir / "sfemc" / "process-vim")
        for inst in vim.list():
            vim.delete(inst.instance_id)


@pytest.fixture
def docker_env(tmp_path: Path) -> Iterator[DockerMedia]:
    """A private dockerd for one test with the media image imported (skips without root, dockerd or busybox)."""
    with docker_media_env(tmp_path) as env:
        yield env


@pytest.fixture
def docker_cp(procs: ProcessGroup, docker_env: DockerMedia) -> Iterator[ControlPlane]:
    """`flame up` with ``vims = {process, docker -> the private dockerd}`` and the NAP agents of DOCKER_NAPS, the
    example catalogue applied. On teardown the control plane stops first, then managed containers are removed (the
    daemon itself goes with ``docker_env``)."""
    plane = start_control_plane(
        procs,
        naps=DOCKER_NAPS,
        vims={"process": {}, "docker": {"docker_url": docker_env.docker_url}},
    )
    try:
        wait_for(lambda: _sites(plane) == 3, 30, 0.1, "the example catalogue applied")
        yield plane
    finally:
        procs.stop_all()
        if docker_env.daemon.proc is not None:
            for container in docker_env.managed_containers():
                container.remove(force=True)
