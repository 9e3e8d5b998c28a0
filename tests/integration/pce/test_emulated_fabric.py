"""The emulated fabric driver over real UDP sockets on loopback: NAPs attach, frames are forwarded by the same tables
the PCE programs into OVS (unicast, multicast, equality with the pure tables), link failure reroutes, garbage is
dropped. Also SFR-10 (registrations from configuration) through the service's build()."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from pathlib import Path

from flame_control.icn import fid as fidlib
from flame_control.runtime.service import ServiceContext
from pce.core import PceCore
from pce.registry import Registration
from pce.service import PceServicer, Settings, build
from pce.switch.emulated import EmulatedDriver, attach_message
from pce.topology import load_file
from tests.support.frames import build as build_frame
from tests.support.frames import parse

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "topologies" / "flame-integration.yaml"
VOD = "vod.video.flame.example"


class Naps:
    """One real UDP socket per NAP, attached to the fabric."""

    def __init__(self, port: int, names: list[str]) -> None:
        self.port = port
        self.socks: dict[str, socket.socket] = {}
        for name in names:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            self.socks[name] = s

    async def attach(self, driver: EmulatedDriver) -> dict[str, bytes]:
        """Each socket attaches with its NAP's fabric secret (what the PCE hands out over the NAP session)."""
        loop = asyncio.get_running_loop()
        replies = {}
        for name, s in self.socks.items():
            s.sendto(attach_message(name, driver.secret_for(name), s.getsockname()), ("127.0.0.1", self.port))
            replies[name] = await asyncio.wait_for(loop.sock_recv(s, 2048), 2)
        return replies

    async def send_and_collect(self, source: str, fid: int, label: int = 0, marker: str = "m") -> dict[str, int]:
        self.socks[source].sendto(build_frame(fid, label, marker.encode(), b"\x02" * 6), ("127.0.0.1", self.port))
        await asyncio.sleep(0.1)
        got: dict[str, int] = {}
        for name, s in self.socks.items():
            while True:
                try:
                    data = s.recv(65535)
                except BlockingIOError:
                    break
                frame = parse(data)
                if frame is not None and frame["marker"] == marker:
                    got[name] = got.get(name, 0) + 1
        return got

    def close(self) -> None:
        for s in self.socks.values():
            s.close()


async def fabric_for(core: PceCore) -> tuple[EmulatedDriver, Naps]:
    driver = EmulatedDriver(topology=lambda: core.topology)
    port = await driver.listen()
    driver.apply({core.topology.nodes[n].dpid: r for n, r in core.switch_rules().items()})
    naps = Naps(port, core.topology.naps())
    replies = await naps.attach(driver)
    assert all(r.startswith(f"ATTACHED {n} ".encode()) for n, r in replies.items())
    return driver, naps


def example_core() -> PceCore:
    core = PceCore()
    core.apply_topology(load_file(EXAMPLE))
    core.register(Registration(VOD, "nap-dc", "alice"))
    return core


def test_unicast_and_multicast_frames_cross_the_emulated_fabric_over_udp() -> None:
    async def scenario() -> None:
        core = example_core()
        driver, naps = await fabric_for(core)
        route = core.resolve("nap-edge-a2", VOD)[0]
        assert await naps.send_and_collect("nap-edge-a2", route.fid, route.table, "u") == {"nap-dc": 1}
        _, fid, ok, table = core.multicast("nap-dc", ["nap-edge-a1", "nap-edge-b1", "nap-edge-b2"])
        assert ok
        got = await naps.send_and_collect("nap-dc", fid, table, "mc")
        assert got == {"nap-edge-a1": 1, "nap-edge-b1": 1, "nap-edge-b2": 1}
        naps.close()
        driver.close()

    asyncio.run(scenario())


def test_emulated_driver_forwards_exactly_like_the_pure_tables() -> None:
    async def scenario() -> None:
        core = example_core()
        driver, naps = await fabric_for(core)
        table = core.plan.tables[0]
        ids = list(table.lids.values()) + list(table.ilids.values())
        rng = random.Random(3)
        for i in range(25):
            source = rng.choice(core.topology.naps())
            fid = fidlib.combine(rng.sample(ids, rng.randint(1, 10)))
            expected = core.fabric().send(source, fid)
            got = await naps.send_and_collect(source, fid, 0, f"r{i}")
            assert set(got) == expected.accepted | expected.rejected
        naps.close()
        driver.close()

    asyncio.run(scenario())


def test_sfr13_port_down_on_an_emulated_switch_reroutes_frames() -> None:
    async def scenario() -> None:
        core = example_core()
        driver = EmulatedDriver(topology=lambda: core.topology)
        servicer = PceServicer(core, driver=driver)
        await servicer.start_driver()
        naps = Naps(driver.port, core.topology.naps())
        await naps.attach(driver)
        old = core.resolve("nap-edge-a1", VOD)[0]
        assert "dc-a" in old.links
        driver.set_port_state(1, 3, up=False)  # sw-dc port 3 = link dc-a
        for _ in range(50):
            await asyncio.sleep(0.02)
            if core.topology.links["dc-a"].down:
                break
        await asyncio.sleep(0.05)
        new = core.resolve("nap-edge-a1", VOD)[0]
        assert "dc-a" not in new.links
        assert await naps.send_and_collect("nap-edge-a1", new.fid, new.table, "new") == {"nap-dc": 1}
        assert await naps.send_and_collect("nap-edge-a1", old.fid, old.table, "old") == {}
        naps.close()
        await servicer.stop_driver()

    asyncio.run(scenario())


def test_garbage_unattached_senders_and_unknown_naps_are_refused() -> None:
    async def scenario() -> None:
        core = example_core()
        driver, naps = await fabric_for(core)
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind(("127.0.0.1", 0))
        stranger.setblocking(False)
        route = core.resolve("nap-edge-a1", VOD)[0]
        stranger.sendto(build_frame(route.fid, 0, b"s", b"\x02" * 6), ("127.0.0.1", driver.port))
        naps.socks["nap-edge-a1"].sendto(b"\x00" * 10, ("127.0.0.1", driver.port))
        naps.socks["nap-edge-a1"].sendto(b"\xff" * 3000, ("127.0.0.1", driver.port))
        stranger.sendto(b"ATTACH sw-dc", ("127.0.0.1", driver.port))
        await asyncio.sleep(0.1)
        assert stranger.recv(2048).startswith(b"ERROR")
        assert driver.counters.dropped == 3 and driver.counters.forwarded == 0
        assert await naps.send_and_collect("nap-edge-a1", route.fid, 0, "ok") == {"nap-dc": 1}
        stranger.close()
        naps.close()
        driver.close()

    asyncio.run(scenario())


def test_attach_needs_the_naps_secret_and_a_copied_proof_is_worthless() -> None:
    """Issue 12 item 6: before, any local process could send ``ATTACH <nap>`` and receive that NAP's traffic."""

    async def scenario() -> None:
        core = example_core()
        driver, naps = await fabric_for(core)
        loop = asyncio.get_running_loop()
        thief = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        thief.bind(("127.0.0.1", 0))
        thief.setblocking(False)
        fabric = ("127.0.0.1", driver.port)
        victim = naps.socks["nap-dc"]
        attempts = [
            b"ATTACH nap-dc",  # the old protocol: no proof
            attach_message("nap-dc", b"guessed" * 4, thief.getsockname()),  # a wrong secret
            attach_message("nap-dc", driver.secret_for("nap-dc"), victim.getsockname()),  # the victim's, copied
        ]
        for msg in attempts:
            thief.sendto(msg, fabric)
            reply = await asyncio.wait_for(loop.sock_recv(thief, 2048), 2)
            assert reply.startswith(b"ERROR"), (msg, reply)
            await asyncio.sleep(1.05)  # refusals are rate limited per address
        assert driver.naps["nap-dc"] == victim.getsockname()  # the victim stays attached
        route = core.resolve("nap-edge-a1", VOD)[0]
        assert await naps.send_and_collect("nap-edge-a1", route.fid, route.table, "ok") == {"nap-dc": 1}
        with contextlib.suppress(BlockingIOError):
            while True:
                assert thief.recv(65535).startswith(b"ERROR")  # no frame reached the thief
        thief.close()
        naps.close()
        driver.close()

    asyncio.run(scenario())


def test_sfr10_registrations_from_configuration(tmp_path: Path) -> None:
    settings = Settings(
        topology_file=EXAMPLE,
        fabric="none",
        registrations=[{"fqdn": "Live.Video.Flame.Example", "nap_id": "nap-dc-2", "owner": "ops"}],
    )
    spec = build(ServiceContext("pce", settings, tmp_path, channel_to=lambda key: None))  # type: ignore[arg-type,return-value]
    core = spec.servicer.core  # type: ignore[attr-defined]
    (reg,) = core.registry.matching("live.video.flame.example")
    assert (reg.nap_id, reg.owner, reg.source) == ("nap-dc-2", "ops", "config")
