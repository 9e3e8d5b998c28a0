"""A single PCE that survives (issue 13, SFR-20) on real Open vSwitch (marker `ovs`, root), the roadmap's integration
triangle with NAP hosts in namespaces. The topology comes over ApplyTopology (the orchestrator's path), not a file:

- a PCE restart touches no flow (``ovs-ofctl dump-flows`` sampled through the restart holds every flow at every
  sample), and registrations, owners and link states are back;
- a flow deleted by hand is back within one audit period;
- a table limited so it refuses adds is detected (OpenFlow error by xid), reported by ListSwitches (held < desired,
  degraded, the error) and repaired once the switch accepts again;
- a trunk that went down while the PCE was away is read from the port descriptions at reconnect: never routed over.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flame_control.api.flame.pce.v1 import pce_pb2
from flame_control.icn import fid as fidlib
from tests.integration.pce.test_pce_ovs import EXAMPLE, ROOT, VOD, Fabric
from tests.support.ovs import available, ovs_testbed
from tests.support.procs import ProcessGroup, port_open, wait_for

pytestmark = pytest.mark.ovs
AUDIT_S = 2.0


class ApiFabric(Fabric):
    """The testbed with a PCE that gets its topology over ApplyTopology and audits every AUDIT_S seconds."""

    def start_pce(self) -> None:
        import grpc

        from flame_control.api.flame.pce.v1 import pce_pb2_grpc

        argv = [
            sys.executable, "-m", "flame_control.cli.main", "up", "--services", "pce", "--state-dir", str(self.state),
            f"--set=listen.ports.pce={self.grpc_port}", "--set=services.pce.fabric=osken",
            f"--set=services.pce.openflow_port={self.of_port}", f"--set=services.pce.audit_interval_s={AUDIT_S}",
            "--set=services.pce.port_up_hold_s=1", "--set=services.pce.report_to_clmc=false",
        ]  # fmt: skip
        self.pce = self.procs.start("pce", argv, cwd=ROOT, ready=lambda: port_open(self.grpc_port), timeout=60)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.stub = pce_pb2_grpc.PceServiceStub(self.channel)
        if not getattr(self, "applied", False):
            from pce.topology import load_file, to_proto

            self.stub.ApplyTopology(pce_pb2.ApplyTopologyRequest(topology=to_proto(load_file(EXAMPLE))))
            self.applied = True

    def restart(self) -> None:
        self.procs.stop(self.pce)
        self.channel.close()
        self.start_pce()
        self.wait_switches()

    def cookies(self) -> dict[str, set[str]]:
        return {br: {line.split(",")[0] for line in self.bed.dump_flows(br)} for br in self.bridges.values()}

    def switches(self) -> dict[str, pce_pb2.Switch]:
        return {s.node_id: s for s in self.stub.ListSwitches(pce_pb2.ListSwitchesRequest()).switches}


@pytest.fixture
def fabric(tmp_path: Path, procs: ProcessGroup) -> Iterator[ApiFabric]:
    reason = available()
    if reason:
        pytest.skip(reason)
    with ovs_testbed(tmp_path / "ovs") as bed:
        f = ApiFabric(bed, procs, tmp_path / "state")
        f.stub.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn=VOD, nap_id="nap-dc", owner="acme"))
        try:
            yield f
        finally:
            f.channel.close()
            procs.stop_all()


def test_sfr20_pce_restart_touches_no_flow_and_restores_registrations_and_link_states(fabric: ApiFabric) -> None:
    fabric.stub.UpdateLinkState(pce_pb2.UpdateLinkStateRequest(link_id="a-b", up=False))
    path = fabric.stub.ResolvePath(pce_pb2.ResolvePathRequest(client_nap_id="nap-edge-b2", fqdn=VOD)).path
    wait_for(lambda: all(s.flow_count == s.desired_flow_count for s in fabric.switches().values()), 20, 0.2, "synced")
    before = fabric.cookies()
    assert all(before.values())
    samples: list[dict[str, set[str]]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(fabric.cookies())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    restarted_at = time.monotonic()
    try:
        fabric.restart()
        time.sleep(AUDIT_S * 2)  # and through two audits after it
    finally:
        stop.set()
        sampler.join(timeout=10)
    assert len(samples) >= 10
    for i, s in enumerate(samples):
        assert s == before, f"sample {i}: flows changed during the restart"
    ages = [float(line.split("duration=")[1].split("s")[0]) for br in fabric.bridges.values() for line in
            fabric.bed.dump_flows(br)]  # fmt: skip
    assert min(ages) >= time.monotonic() - restarted_at - 0.5  # none re-added
    regs = fabric.stub.ListRegistrations(pce_pb2.ListRegistrationsRequest()).registrations
    assert [(r.fqdn, r.nap_id, r.owner) for r in regs] == [(VOD, "nap-dc", "acme")]
    topo = fabric.stub.GetTopology(pce_pb2.GetTopologyRequest()).topology
    assert [lk.id for lk in topo.links if lk.down] == ["a-b"]
    again = fabric.stub.ResolvePath(pce_pb2.ResolvePathRequest(client_nap_id="nap-edge-b2", fqdn=VOD)).path
    assert again.fid == path.fid
    assert fabric.deliver("nap-edge-b2", fidlib.from_bytes(path.fid), path.lid_table, "after") == {"nap-dc": 1}


def test_a_flow_deleted_by_hand_is_back_within_one_audit_period(fabric: ApiFabric) -> None:
    br = fabric.bridges["sw-edge-a"]
    before = fabric.cookies()[br]
    victim = sorted(before)[0].split("=")[1]
    fabric.bed.ofctl("del-flows", br, f"cookie={victim}/-1")
    gone_at = time.monotonic()
    assert len(fabric.cookies()[br]) == len(before) - 1
    wait_for(lambda: fabric.cookies()[br] == before, AUDIT_S * 3 + 10, 0.1, "the audit to restore the flow")
    took = time.monotonic() - gone_at
    assert took < AUDIT_S * 3 + 10
    sw = fabric.switches()["sw-edge-a"]
    assert sw.flow_count == sw.desired_flow_count == len(before) and not sw.degraded_reason


def test_a_table_that_refuses_adds_is_detected_reported_and_repaired(fabric: ApiFabric) -> None:
    br = fabric.bridges["sw-dc"]
    desired = fabric.switches()["sw-dc"].desired_flow_count
    fabric.bed.vsctl(
        "--", "--id=@ft", "create", "Flow_Table", "flow_limit=1", "overflow_policy=refuse",
        "--", "set", "Bridge", br, "flow_tables:0=@ft",
    )  # fmt: skip
    fabric.bed.ofctl("del-flows", br, "table=0")  # the audit re-adds table 0's two rules: the second is refused

    def reported() -> bool:
        sw = fabric.switches()["sw-dc"]
        return bool(sw.degraded_reason) and len(sw.errors) > 0

    wait_for(reported, AUDIT_S * 3 + 15, 0.2, "the refused add to be reported")
    sw = fabric.switches()["sw-dc"]
    held = sum(1 for _ in fabric.bed.dump_flows(br))
    assert sw.flow_count == held < desired == sw.desired_flow_count  # never claims rules the switch refused
    err = sw.errors[-1]
    assert (err.type, err.code) == (5, 1) and err.request.startswith("add cookie") and err.xid and err.transient
    fabric.bed.vsctl("clear", "Bridge", br, "flow_tables")
    wait_for(
        lambda: not fabric.switches()["sw-dc"].degraded_reason
        and sum(1 for _ in fabric.bed.dump_flows(br)) == desired,
        60, 0.3, "the retry with backoff to repair the table",
    )  # fmt: skip


def test_a_trunk_down_during_a_pce_restart_is_read_at_reconnect_and_never_routed_over(fabric: ApiFabric) -> None:
    before = fabric.stub.ResolvePath(pce_pb2.ResolvePathRequest(client_nap_id="nap-edge-a1", fqdn=VOD)).path
    assert "dc-a" in before.link_ids
    fabric.procs.stop(fabric.pce)
    fabric.channel.close()
    dc_side, _ = fabric.trunk_ifaces["dc-a"]
    fabric.bed.set_link(dc_side, up=False)  # while no PCE listens: no port-status event reaches it
    time.sleep(0.5)
    fabric.start_pce()
    fabric.wait_switches()

    def rerouted() -> bool:
        p = fabric.stub.ResolvePath(pce_pb2.ResolvePathRequest(client_nap_id="nap-edge-a1", fqdn=VOD)).path
        return "dc-a" not in p.link_ids

    wait_for(rerouted, 15, 0.2, "the PCE to learn the trunk is down from the port descriptions")
    after = fabric.stub.ResolvePath(pce_pb2.ResolvePathRequest(client_nap_id="nap-edge-a1", fqdn=VOD)).path
    assert fabric.deliver("nap-edge-a1", fidlib.from_bytes(after.fid), after.lid_table, "alt") == {"nap-dc": 1}
    topo = fabric.stub.GetTopology(pce_pb2.GetTopologyRequest()).topology
    assert next(lk for lk in topo.links if lk.id == "dc-a").down
