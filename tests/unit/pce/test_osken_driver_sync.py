"""The os-ken driver's diff (`OskenDriver._sync`) against a fake datapath that records every message it is sent, built
with os-ken's real OpenFlow 1.3 parser: deletes (by cookie) first, then adds (table order, higher priority first),
then exactly one barrier; an unchanged desired set sends only the barrier; a repeat changes nothing."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

pytest.importorskip("os_ken")
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from pce.switch.osken_driver import OskenDriver, _Switch
from pce.switch.pipeline import FlowRule, SwitchConfig, flows_for

DPID = 0x2A


class FakeDatapath:
    """What the driver touches on an os-ken Datapath; barriers are answered at once."""

    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser

    def __init__(self, driver: OskenDriver) -> None:
        self.id = DPID
        self.driver = driver
        self.sent: list[Any] = []
        self._xids = itertools.count(1)

    def set_xid(self, msg: Any) -> None:
        msg.set_xid(next(self._xids))

    def send_msg(self, msg: Any) -> None:
        self.sent.append(msg)
        if isinstance(msg, ofproto_v1_3_parser.OFPBarrierRequest):
            self.driver.on_barrier(self.id, msg.xid)


def kinds(sent: list[Any]) -> list[str]:
    out = []
    for m in sent:
        if isinstance(m, ofproto_v1_3_parser.OFPBarrierRequest):
            out.append("barrier")
        elif m.command == ofproto_v1_3.OFPFC_DELETE:
            out.append("delete")
        elif m.command == ofproto_v1_3.OFPFC_ADD:
            out.append("add")
        else:
            out.append(f"other:{m.command}")
    return out


def driver_with(installed: list[FlowRule]) -> tuple[OskenDriver, FakeDatapath, _Switch]:
    driver = OskenDriver(barrier_timeout_s=1.0)
    dp = FakeDatapath(driver)
    sw = _Switch(dp, installed={r.cookie for r in installed})
    sw.synced.set()
    driver.switches[DPID] = sw
    return driver, dp, sw


OLD = flows_for(SwitchConfig(DPID, {1: 1 << 3, 2: 1 << 9, 3: 1 << 200}))
NEW = flows_for(SwitchConfig(DPID, {1: 1 << 3, 2: 1 << 10, 4: 1 << 77}))


def test_sync_sends_deletes_first_then_adds_then_one_barrier() -> None:
    driver, dp, sw = driver_with(OLD)
    keep = {r.cookie for r in OLD} & {r.cookie for r in NEW}
    gone = sorted({r.cookie for r in OLD} - keep)
    added = [r for r in NEW if r.cookie not in keep]
    assert gone and added and keep  # the case really mixes kept, removed and new rules
    sent_count = driver.apply({DPID: NEW})
    assert sent_count == {DPID: len(gone) + len(added)}
    assert kinds(dp.sent) == ["delete"] * len(gone) + ["add"] * len(added) + ["barrier"]
    deletes = dp.sent[: len(gone)]
    assert [m.cookie for m in deletes] == gone  # by cookie, every table, exact cookie mask
    assert all(m.cookie_mask == 0xFFFF_FFFF_FFFF_FFFF and m.table_id == ofproto_v1_3.OFPTT_ALL for m in deletes)
    adds = dp.sent[len(gone) : -1]
    assert {m.cookie for m in adds} == {r.cookie for r in added}
    order = [(m.table_id, -m.priority) for m in adds]
    assert order == sorted(order)  # table by table, most specific first
    assert sw.installed == {r.cookie for r in NEW}
    assert driver.flow_mods_sent == len(gone) + len(added)


def test_unchanged_desired_set_sends_only_the_barrier_and_a_repeat_is_idempotent() -> None:
    driver, dp, sw = driver_with(NEW)
    assert driver.apply({DPID: NEW}) == {DPID: 0}
    assert kinds(dp.sent) == ["barrier"]
    driver, dp, sw = driver_with(OLD)
    driver.apply({DPID: NEW})
    dp.sent.clear()
    assert driver.apply({DPID: NEW}) == {DPID: 0}  # replaying the same set changes nothing
    assert kinds(dp.sent) == ["barrier"]
    assert sw.installed == {r.cookie for r in NEW}


def test_apply_then_revert_restores_the_original_rules() -> None:
    driver, dp, sw = driver_with(OLD)
    driver.apply({DPID: NEW})
    dp.sent.clear()
    driver.apply({DPID: OLD})
    assert sw.installed == {r.cookie for r in OLD}
    k = kinds(dp.sent)
    assert k == sorted(k, key=["delete", "add", "barrier"].index) and k.count("barrier") == 1


def test_a_barrier_that_never_returns_marks_the_switch_unconfirmed_without_failing_the_apply() -> None:
    """Issue 13 item 6: the PCE's state already changed, so the apply reports the switch unconfirmed (degraded,
    retried by the audit) instead of raising after the fact."""
    driver, dp, sw = driver_with(OLD)
    driver.barrier_timeout_s = 0.05
    dp.driver = OskenDriver()  # replies go to another driver: this one never sees its barrier answered
    assert driver.apply({DPID: NEW}) == {DPID: -1}
    assert driver.unconfirmed() == [DPID]
    assert "barrier" in driver.status()[DPID]["degraded"]
    assert sw.installed == {r.cookie for r in OLD}  # not claimed as installed without the barrier
    assert sw.retry_at > 0  # the audit thread retries with backoff


class RefusingDatapath(FakeDatapath):
    """A switch whose table holds ``room`` rules: further adds are answered with OFPET_FLOW_MOD_FAILED/TABLE_FULL
    (what OVS sends with flow_limit and overflow_policy=refuse), correlated by the add's xid."""

    def __init__(self, driver: OskenDriver, room: int) -> None:
        super().__init__(driver)
        self.room = room

    def send_msg(self, msg: Any) -> None:
        self.sent.append(msg)
        if isinstance(msg, ofproto_v1_3_parser.OFPFlowMod) and msg.command == ofproto_v1_3.OFPFC_ADD:
            if self.room == 0:
                self.driver.on_error(
                    self.id, msg.xid, ofproto_v1_3.OFPET_FLOW_MOD_FAILED, ofproto_v1_3.OFPFMFC_TABLE_FULL
                )
                return
            self.room -= 1
        if isinstance(msg, ofproto_v1_3_parser.OFPBarrierRequest):
            self.driver.on_barrier(self.id, msg.xid)


def test_openflow_errors_are_correlated_by_xid_degrade_the_switch_and_are_reported() -> None:
    driver = OskenDriver(barrier_timeout_s=1.0)
    dp = RefusingDatapath(driver, room=2)
    sw = _Switch(dp)
    sw.synced.set()
    driver.switches[DPID] = sw
    reported: list[Any] = []
    driver.set_error_handler(lambda dpid, err: reported.append((dpid, err)))
    driver.apply({DPID: NEW})
    adds = [m for m in dp.sent if isinstance(m, ofproto_v1_3_parser.OFPFlowMod)]
    refused = adds[2:]
    assert len(reported) == len(refused) > 0
    for (dpid, err), msg in zip(reported, refused, strict=True):
        assert dpid == DPID and err.xid == msg.xid and f"{msg.cookie:#x}" in err.request and err.transient
    status = driver.status()[DPID]
    assert status["held"] == 2 and status["degraded"] and len(status["errors"]) == len(refused)
    assert sw.installed == {m.cookie for m in adds[:2]}  # refused rules are not counted as held


def test_a_switch_without_desired_rules_is_never_wiped() -> None:
    driver, dp, sw = driver_with(OLD)
    driver.apply({DPID + 1: NEW})  # the topology does not (yet) know this switch
    assert kinds(dp.sent) == []
    assert sw.installed == {r.cookie for r in OLD}


def test_rules_for_tables_the_switch_lacks_are_not_sent_and_the_switch_is_degraded() -> None:
    driver, dp, sw = driver_with([])
    sw.n_tables = 2  # from the switch's features reply
    driver.apply({DPID: NEW})
    sent_tables = {m.table_id for m in dp.sent if isinstance(m, ofproto_v1_3_parser.OFPFlowMod)}
    assert sent_tables == {0, 1}
    assert "needs table 2" in driver.status()[DPID]["degraded"]
    assert sw.installed == {r.cookie for r in NEW if r.table_id < 2}
