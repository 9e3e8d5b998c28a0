"""IP-over-ICN (SFR-2) with real TUN devices in network namespaces (root): two NAP agents on the emulated fabric own
10.1.0.0/24 and 10.2.0.0/24 (registered through their NAP sessions as prefix names); ping and a 5 MB TCP stream go
between the namespaces through TUN -> ICN frames -> TUN. Packets for unknown prefixes and non-IPv4 packets are
dropped and counted."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from flame_control.icn import frame as fr
from nap_agent.ip_over_icn import prefix_name
from tests.conftest import require_root
from tests.support.nap_env import emulated_edge
from tests.support.procs import ProcessGroup

SERVER = """
import hashlib, socket, sys
s = socket.create_server(("10.2.0.1", 5000)); print("ready", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while d := c.recv(65536):
    h.update(d); n += len(d)
c.sendall(f"{n} {h.hexdigest()}".encode()); c.close()
"""
CLIENT = """
import socket, sys
data = bytes(range(256)) * (5 * 4096)
c = socket.create_connection(("10.2.0.1", 5000), timeout=60); c.sendall(data); c.shutdown(socket.SHUT_WR)
print(c.recv(200).decode())
"""


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


def test_sfr2_ping_and_tcp_between_namespaces_over_icn(tmp_path: Path) -> None:
    require_root("TUN devices and network namespaces")
    tag = secrets.token_hex(2)
    ns = {"a": f"fip{tag}a", "b": f"fip{tag}b"}
    for name in ns.values():
        sh("ip", "netns", "add", name)

    async def scenario() -> None:
        naps = {"nap-edge-a1": [], "nap-edge-b1": []}
        per_nap = {
            "nap-edge-a1": {"netns": ns["a"], "tun_name": "ftun0", "ip_prefixes": ["10.1.0.0/24"]},
            "nap-edge-b1": {"netns": ns["b"], "tun_name": "ftun0", "ip_prefixes": ["10.2.0.0/24"]},
        }
        async with emulated_edge(tmp_path, naps, per_nap=per_nap) as env:
            for side, (addr, other) in {
                "a": ("10.1.0.1/24", "10.2.0.0/24"),
                "b": ("10.2.0.1/24", "10.1.0.0/24"),
            }.items():
                for cmd in (
                    ["ip", "-n", ns[side], "addr", "add", addr, "dev", "ftun0"],
                    ["ip", "-n", ns[side], "link", "set", "ftun0", "up"],
                    ["ip", "-n", ns[side], "link", "set", "lo", "up"],
                    ["ip", "-n", ns[side], "route", "add", other, "dev", "ftun0"],
                    ["ip", "-n", ns[side], "route", "add", "10.9.0.0/24", "dev", "ftun0"],
                ):
                    out = sh(*cmd)
                    assert out.returncode == 0, out.stderr
            await env.route_to("nap-edge-a1", prefix_name("10.2.0.0/24"))
            await env.route_to("nap-edge-b1", prefix_name("10.1.0.0/24"))
            ping = await asyncio.to_thread(sh, "ip", "netns", "exec", ns["a"], "ping", "-c", "3", "-W", "2", "10.2.0.1")
            assert ping.returncode == 0, ping.stdout + ping.stderr
            server = subprocess.Popen(
                ["ip", "netns", "exec", ns["b"], sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True
            )
            try:
                assert server.stdout is not None and server.stdout.readline().strip() == "ready"
                client = await asyncio.to_thread(sh, "ip", "netns", "exec", ns["a"], sys.executable, "-c", CLIENT)
                data = bytes(range(256)) * (5 * 4096)
                assert client.stdout.split() == [str(len(data)), hashlib.sha256(data).hexdigest()], client.stderr
            finally:
                server.kill()
                server.wait()
            a = env.agents["nap-edge-a1"]
            assert a.ip is not None and a.ip.counters.packets_out > 100
            # a prefix nobody owns: dropped and counted at the NAP (ping fails)
            await asyncio.to_thread(sh, "ip", "netns", "exec", ns["a"], "ping", "-c", "1", "-W", "1", "10.9.0.7")
            assert a.ip.counters.no_route >= 1
            # garbage IP frames from the fabric: not delivered
            before = a.ip.counters.packets_in
            a.ip.from_fabric(fr.Frame(0, 0, fr.FrameType.IP, fr.Flags.NONE, b"", b"", 0, 0, 0, 0, b"\x60garbage"))
            assert a.ip.counters.packets_in == before and a.ip.counters.not_ipv4 >= 1

    try:
        asyncio.run(scenario())
    finally:
        for name in ns.values():
            sh("ip", "netns", "del", name)


@pytest.mark.ovs
@pytest.mark.e2e
def test_sfr2_ip_over_icn_on_real_ovs(tmp_path: Path, procs: ProcessGroup) -> None:
    """The same over real OVS (markers ovs, e2e): TUNs in the NAP hosts' namespaces, frames on raw interfaces."""
    from tests.support.nap_ovs import ovs_edge
    from tests.support.ovs import available

    reason = available()
    if reason:
        pytest.skip(reason)

    async def scenario() -> None:
        per_nap = {
            "nap-edge-a1": {"tun_name": "ftun0", "ip_prefixes": ["10.1.0.0/24"]},
            "nap-dc": {"tun_name": "ftun0", "ip_prefixes": ["10.2.0.0/24"]},
        }
        async with ovs_edge(tmp_path, procs, {"nap-edge-a1": [], "nap-dc": []}, per_nap=per_nap) as edge:
            ns = {"a": edge.bed.hosts["nap-edge-a1"].netns, "b": edge.bed.hosts["nap-dc"].netns}
            for side, (addr, other) in {
                "a": ("10.1.0.1/24", "10.2.0.0/24"),
                "b": ("10.2.0.1/24", "10.1.0.0/24"),
            }.items():
                for cmd in (
                    ["ip", "-n", ns[side], "addr", "add", addr, "dev", "ftun0"],
                    ["ip", "-n", ns[side], "link", "set", "ftun0", "up"],
                    ["ip", "-n", ns[side], "route", "add", other, "dev", "ftun0"],
                ):
                    out = sh(*cmd)
                    assert out.returncode == 0, out.stderr
            agent = edge.agents["nap-edge-a1"]
            async with asyncio.timeout(20):
                while agent.ip is None or not agent.ip.table.entries:
                    await asyncio.sleep(0.05)
            ping = await asyncio.to_thread(sh, "ip", "netns", "exec", ns["a"], "ping", "-c", "3", "-W", "2", "10.2.0.1")
            assert ping.returncode == 0, ping.stdout + ping.stderr
            server = subprocess.Popen(
                ["ip", "netns", "exec", ns["b"], sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True
            )
            try:
                assert server.stdout is not None and server.stdout.readline().strip() == "ready"
                client = await asyncio.to_thread(sh, "ip", "netns", "exec", ns["a"], sys.executable, "-c", CLIENT)
                data = bytes(range(256)) * (5 * 4096)
                assert client.stdout.split() == [str(len(data)), hashlib.sha256(data).hexdigest()], client.stderr
            finally:
                server.kill()
                server.wait()

    asyncio.run(scenario())
