"""Issue 13 items 1 and 5 without I/O beyond a temp file: switch port states move links with a hold-down (a down at
once, an up only after it stayed up; a flapping port keeps its link out), an operator's down survives its ports coming
up, and the persister writes only what changed, in a layout a newer PCE would refuse rather than misread."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pce import persist
from pce import topology as topolib
from pce.core import PceCore
from pce.registry import Registration
from pce.service import PceServicer
from pce.store.file_store import FileStore

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "topologies" / "flame-integration.yaml"
HOLD = 2.0  # generous: the checks below run well inside it even on a loaded machine
DC = 1  # dpid of sw-dc; trunk dc-a is its port 3, dc-b port 4


def servicer() -> PceServicer:
    core = PceCore()
    core.apply_topology(topolib.load_file(EXAMPLE))
    s = PceServicer(core)
    s.port_up_hold_s = HOLD
    return s


def down(s: PceServicer, link: str) -> bool:
    return s.core.topology.links[link].down


def test_sfr13_port_down_applies_at_once_up_only_after_the_hold_down_and_flaps_stay_down() -> None:
    async def scenario() -> None:
        s = servicer()
        s.port_event(DC, 3, False)
        await asyncio.sleep(0.05)
        assert down(s, "dc-a")
        s.port_event(DC, 3, True)
        await asyncio.sleep(0.1)
        assert down(s, "dc-a")  # not yet: held down
        loop = asyncio.get_running_loop()
        for _ in range(3):  # flapping: every down restarts the hold
            s.port_event(DC, 3, False)
            await asyncio.sleep(0.05)
            s.port_event(DC, 3, True)
            last_up = loop.time()
            await asyncio.sleep(0.1)
            assert down(s, "dc-a")
        while down(s, "dc-a") and loop.time() - last_up < HOLD + 10:
            await asyncio.sleep(0.05)
        assert not down(s, "dc-a")  # stable up for the hold-down: back in routes
        assert loop.time() - last_up >= HOLD

    asyncio.run(scenario())


def test_an_operators_link_down_survives_its_ports_coming_up() -> None:
    async def scenario() -> None:
        s = servicer()
        s.core.set_link_state("dc-b", False)
        s.core.admin_down.add("dc-b")
        s.port_event(DC, 4, True)
        await asyncio.sleep(HOLD + 0.5)
        assert down(s, "dc-b")
        await s.port_status(DC, 4, True)  # even applied directly
        assert down(s, "dc-b")

    asyncio.run(scenario())


def test_sfr20_persister_writes_only_changes_and_restores_admin_and_switch_downs(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s.db")
    core = PceCore()
    core.apply_topology(topolib.load_file(EXAMPLE))
    core.register(Registration("vod.video.flame.example", "nap-dc", "acme", "", "rpc", 5.0))
    p = persist.Persister(store)
    assert p.sync(core) > 0
    assert p.sync(core) == 0  # nothing changed: nothing written
    core.set_link_state("dc-a", False)  # from a switch port
    core.set_link_state("a-b", False)
    core.admin_down.add("a-b")  # from an operator
    assert p.sync(core, ("links",)) == 3  # two link keys and the version
    store.close()
    restored = persist.load(FileStore(tmp_path / "s.db"))
    assert restored.lids_restored and restored.core.plan == core.plan
    assert {lk.id for lk in restored.core.topology.links.values() if lk.down} == {"dc-a", "a-b"}
    assert restored.core.admin_down == {"a-b"} and restored.core.version == core.version
    assert restored.core.registry.registrations == core.registry.registrations


def test_sfr20_a_store_with_an_unknown_layout_is_refused_not_misread(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s.db")
    store.apply({"format": b'{"v":1,"layout":99}'})
    with pytest.raises(persist.StateFormatError):
        persist.load(store)
    store.close()


def test_a_failing_store_never_turns_an_applied_change_into_an_error_and_catches_up(tmp_path: Path) -> None:
    from flame_control.api.flame.pce.v1 import pce_pb2

    async def scenario() -> None:
        store = FileStore(tmp_path / "s.db")
        core = PceCore()
        core.apply_topology(topolib.load_file(EXAMPLE))
        p = persist.Persister(store)
        p.sync(core)
        s = PceServicer(core, persister=p)
        store.close()  # every write now fails
        reply = await s.UpdateLinkState(pce_pb2.UpdateLinkStateRequest(link_id="dc-a", up=False), None)
        assert reply.version == core.version and down(s, "dc-a")  # applied, answered with its version
        assert "links" in s.unpersisted
        p.store = FileStore(tmp_path / "s.db")  # the store is back
        await s.RegisterFqdn(pce_pb2.RegisterFqdnRequest(fqdn="vod.video.flame.example", nap_id="nap-dc"), None)
        assert s.unpersisted == set()
        p.store.close()
        restored = persist.load(FileStore(tmp_path / "s.db"))
        assert restored.core.topology.links["dc-a"].down and restored.core.registry.registrations

    asyncio.run(scenario())
