"""The PCE programming real Open vSwitch bridges (userspace datapath) through os-ken, with NAP hosts in network
namespaces sending real frames (marker `ovs`, root). The roadmap's integration topology: three switches in a
triangle, two NAPs each (Figure 25). Proves: unicast reaches only its target; a multicast FID reaches exactly its
set; the emulated fabric (pure tables) and OVS deliver the same frames the same way; a link taken down on the switch
makes the PCE push new FIDs and frames arrive over the alternate path (SFR-13); a restarted PCE resyncs the switches
without touching established flows."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from flame_control.api.flame.pce.v1 import pce_pb2, pce_pb2_grpc
from flame_control.icn import fid as fidlib
from pce.core import PceCore
from pce.topology import load_file
from tests.integration.pce.test_emulated_fabric import fabric_for
from tests.support.ovs import OvsTestbed, available, ovs_testbed
from tests.support.procs import ProcessGroup, free_port, port_open, wait_for

pytestmark = pytest.mark.ovs

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "topologies" / "flame-integration.yaml"
VOD = "vod.video.flame.example"
SWITCHES = {"sw-dc": 1, "sw-edge-a": 2, "sw-edge-b": 3}
HOSTS = {
    "nap-dc": ("sw-dc", 1),
    "nap-dc-2": ("sw-dc", 2),
    "nap-edge-a1": ("sw-edge-a", 1),
    "nap-edge-a2": ("sw-edge-a", 2),
    "nap-edge-b1": ("sw-edge-b", 1),
    "nap-edge-b2": ("sw-edge-b", 2),
}
TRUNKS = {
    "dc-a": ("sw-dc", 3, "sw-edge-a", 3),
    "dc-b": ("sw-dc", 4, "sw-edge-b", 3),
    "a-b": ("sw-edge-a", 4, "sw-edge-b", 4),
}


class Fabric:
    """The running testbed: OVS bridges + hosts + a PCE process with the os-ken driver."""

    def __init__(self, bed: OvsTestbed, procs: ProcessGroup, state: Path) -> None:
        self.bed, self.procs, self.state = bed, procs, state
        self.grpc_port, self.of_port = free_port(), free_port()
        self.bridges = {
            name: bed.add_bridge(name[-2:] if name != "sw-dc" else "dc", dpid) for name, dpid in SWITCHES.items()
        }
        self.trunk_ifaces: dict[str, tuple[str, str]] = {}
        for link, (a, pa, b, pb) in TRUNKS.items():
            self.trunk_ifaces[link] = self.bed.link_bridges(self.bridges[a], pa, self.bridges[b], pb)
        for host, (sw, port) in HOSTS.items():
            bed.add_host(host, self.bridges[sw], port)
        self.start_pce()
        for br in self.bridges.values():
            bed.set_controller(br, self.of_port)
        self.wait_switches()

    def start_pce(self) -> None:
        argv = [
            sys.executable, "-m", "flame_control.cli.main", "up", "--services", "pce", "--state-dir", str(self.state),
            f"--set=listen.ports.pce={self.grpc_port}", "--set=services.pce.fabric=osken",
            f"--set=services.pce.openflow_port={self.of_port}", f"--set=services.pce.topology_file={EXAMPLE}",
        ]  # fmt: skip
        self.pce = self.procs.start("pce", argv, cwd=ROOT, ready=lambda: port_open(self.grpc_port), timeout=60)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.stub = pce_pb2_grpc.PceServiceStub(self.channel)

    def wait_switches(self) -> None:
        def all_connected() -> bool:
            reply = self.stub.ListSwitches(pce_pb2.ListSwitchesRequest())
            return len(reply.switches) == 3 and all(s.connected for s in reply.switches)

        wait_for(all_connected, 30, 0.2, "all three switches connected and synced")

    def deliver(self, source: str, fid: int, label: int = 0, marker: str = "m") -> dict[str, int]:
        """Send one frame from ``source``; host -> frames it received."""
        receivers = {}
        for host in HOSTS:
            if host == source:
                continue
            p = self.bed.popen_in(
                host, [sys.executable, "-m", "tests.support.frames", "recv", self.bed.hosts[host].inner, "1.5"]
            )
            receivers[host] = p
        for p in receivers.values():
            assert p.stdout is not None
            assert json.loads(p.stdout.readline())["ready"]
        sent = self.bed.exec_in(
            source,
            [
                sys.executable,
                "-m",
                "tests.support.frames",
                "send",
                self.bed.hosts[source].inner,
                f"{fid:x}",
                "--label",
                str(label),
                "--marker",
                marker,
            ],
        )
        assert sent.returncode == 0, sent.stderr
        got = {}
        for host, p in receivers.items():
            out, _ = p.communicate(timeout=10)
            frames = [json.loads(line) for line in out.splitlines() if line.strip() and "fid" in line]
            frames = [f for f in frames if f["marker"].startswith(marker)]
            if frames:
                got[host] = len(frames)
        return got


@pytest.fixture
def fabric(tmp_path: Path, procs: ProcessGroup) -> Iterator[Fabric]:
    reason = available()
    if reason:
        pytest.skip(reason)
    with ovs_testbed(tmp_path / "ovs") as bed:
        f = Fabric(bed, procs, tmp_path / "state")
        f.stub.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn=VOD, nap_id="nap-dc"))
        try:
            yield f
        finally:
            f.channel.close()
            procs.stop_all()


def test_sfr4_unicast_fid_reaches_only_its_target_on_real_ovs(fabric: Fabric) -> None:
    path = fabric.stub.ResolvePath(pce_pb2.ResolvePathRequest(client_nap_id="nap-edge-a1", fqdn=VOD)).path
    assert fabric.deliver("nap-edge-a1", fidlib.from_bytes(path.fid), path.lid_table, "uni") == {"nap-dc": 1}
    back = fabric.deliver("nap-dc", fidlib.from_bytes(path.reverse_fid), path.reverse_lid_table, "back")
    assert back == {"nap-edge-a1": 1}


def test_multicast_fid_reaches_exactly_its_set_on_real_ovs(fabric: Fabric) -> None:
    tree = fabric.stub.ComputeMulticastTree(
        pce_pb2.ComputeMulticastTreeRequest(
            source_nap_id="nap-dc", destination_nap_ids=["nap-edge-a1", "nap-edge-b2", "nap-dc-2"]
        )
    ).tree
    assert tree.false_positive_free
    got = fabric.deliver("nap-dc", fidlib.from_bytes(tree.fid), tree.lid_table, "multi")
    assert got == {"nap-edge-a1": 1, "nap-edge-b2": 1, "nap-dc-2": 1}


def test_emulated_driver_pure_tables_and_ovs_deliver_the_same_frames_the_same_way(fabric: Fabric) -> None:
    core = PceCore()
    core.apply_topology(load_file(EXAMPLE))  # deterministic LIDs: the same tables the PCE programmed
    emulated = core.fabric()
    table = core.plan.tables[0]
    rng = random.Random(5)
    lids = list(table.lids.values()) + list(table.ilids.values())
    cases = []
    for _ in range(6):
        source = rng.choice(sorted(HOSTS))
        cases.append((source, fidlib.combine(rng.sample(lids, rng.randint(1, 8)))))

    async def through_emulated_driver() -> list[set[str]]:
        driver, naps = await fabric_for(core)
        out = [set(await naps.send_and_collect(src, fid, 0, f"em{i}")) for i, (src, fid) in enumerate(cases)]
        naps.close()
        driver.close()
        return out

    over_udp = asyncio.run(through_emulated_driver())
    for i, (source, fid) in enumerate(cases):
        expected = emulated.send(source, fid)
        reached = expected.accepted | expected.rejected
        got = fabric.deliver(source, fid, 0, f"eq{i}")
        assert set(got) == reached == over_udp[i], (source, hex(fid))


def test_sfr13_link_down_on_the_switch_pushes_new_fids_and_traffic_takes_the_alternate_path(fabric: Fabric) -> None:
    before = fabric.stub.ResolvePath(pce_pb2.ResolvePathRequest(client_nap_id="nap-edge-a1", fqdn=VOD)).path
    assert "dc-a" in before.link_ids
    dc_side, _ = fabric.trunk_ifaces["dc-a"]
    fabric.bed.set_link(dc_side, up=False)

    def rerouted() -> bool:
        p = fabric.stub.ResolvePath(pce_pb2.ResolvePathRequest(client_nap_id="nap-edge-a1", fqdn=VOD)).path
        return "dc-a" not in p.link_ids

    wait_for(rerouted, 15, 0.2, "the PCE to route around the failed link")
    after = fabric.stub.ResolvePath(pce_pb2.ResolvePathRequest(client_nap_id="nap-edge-a1", fqdn=VOD)).path
    assert list(after.node_ids) == ["nap-edge-a1", "sw-edge-a", "sw-edge-b", "sw-dc", "nap-dc"]
    assert fabric.deliver("nap-edge-a1", fidlib.from_bytes(after.fid), after.lid_table, "alt") == {"nap-dc": 1}
    assert fabric.deliver("nap-edge-a1", fidlib.from_bytes(before.fid), before.lid_table, "old") == {}
    topo = fabric.stub.GetTopology(pce_pb2.GetTopologyRequest()).topology
    assert next(link for link in topo.links if link.id == "dc-a").down


def test_restarted_pce_resyncs_switches_without_touching_established_flows(fabric: Fabric) -> None:
    path = fabric.stub.ResolvePath(pce_pb2.ResolvePathRequest(client_nap_id="nap-edge-b2", fqdn=VOD)).path
    flows_before = {
        br: sorted(line.split(",")[0] for line in fabric.bed.dump_flows(br)) for br in fabric.bridges.values()
    }
    assert all(len(v) > 0 for v in flows_before.values())
    fabric.procs.stop(fabric.pce)
    fabric.channel.close()
    time.sleep(0.5)
    # the switches keep forwarding on their flows while the PCE is away (fail_mode=secure)
    assert fabric.deliver("nap-edge-b2", fidlib.from_bytes(path.fid), path.lid_table, "away") == {"nap-dc": 1}
    fabric.start_pce()
    fabric.wait_switches()
    for br, cookies in flows_before.items():
        assert sorted(line.split(",")[0] for line in fabric.bed.dump_flows(br)) == cookies
        # no rule was deleted and re-added: every flow's age predates the restart
        ages = [float(line.split("duration=")[1].split("s")[0]) for line in fabric.bed.dump_flows(br)]
        assert min(ages) >= 0.5
    assert fabric.deliver("nap-edge-b2", fidlib.from_bytes(path.fid), path.lid_table, "back") == {"nap-dc": 1}
