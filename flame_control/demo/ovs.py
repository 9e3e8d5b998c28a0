"""``flame demo --fabric ovs`` (root): the Figure 25 topology on Open vSwitch userspace bridges programmed by the PCE
through os-ken, NAP agents on raw interfaces.

What is made (all under a random prefix, removed by :meth:`OvsBackend.close`, also after failures; daemons stopped by
the PIDs in their pidfiles): a private ovsdb-server + ovs-vswitchd (state under the demo's state dir), one bridge per
catalogue switch (``datapath_type=netdev``, OpenFlow 1.3, ``fail_mode=secure``, datapath id = the catalogue's dpid),
a veth pair per switch-switch link on the catalogue's ports, and a veth pair per NAP. The access NAPs (nap-edge-a2,
nap-edge-b2, nap-dc-2) have their end inside their own network namespace: users (the players' sockets) and the
multicast origin sit there, and the NAP agent's data plane enters it (``services.nap.netns``) while its PCE session
stays on host loopback. The NAPs in front of compute sites (nap-dc, nap-edge-a1, nap-edge-b1) keep their end in the
host namespace, because the process VIM runs the SF endpoints there (on 127.0.0.1), where those NAPs reach them.
Offloads are off on every veth end (TESTBED.md: TCP through a userspace bridge needs it); IPv6 is off on NAP ends so
the kernel leaves the ICN frames (ethertype 0x86DD) alone. When ``tc netem`` works here, the switch-switch links get
their catalogue latency (egress delay on both ends), as the emulated fabric does.

Sockets in a namespace: setns(2) is per thread and a socket keeps the namespace it was created in, so a socket is
made inside a short ``entered()`` block (as nap_agent/netns.py does for the NAP's data plane).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flame_control.demo import scenario as sc
from flame_control.demo.procs import ProcessGroup, free_port, wait_gone
from nap_agent.netns import entered, tcp_socket

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
TOOLS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ip", "ethtool")
#: NAPs whose users live in their own namespace.
NAMESPACED = frozenset(sc.ACCESS_NAPS)


def socket_in(netns: str) -> socket.socket:
    """A non-blocking TCP socket in ``netns`` (for a player attached at a NAP in that namespace)."""
    return tcp_socket(netns)


def port_open_in(netns: str, port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port inside ``netns``."""
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(0.2)
        sock.connect(("127.0.0.1", port))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def unavailable() -> str | None:
    """Why --fabric ovs cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veths, ovs-vswitchd)"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install openvswitch-switch iproute2 ethtool)"
    if not SCHEMA.exists():
        return f"{SCHEMA} missing (apt-get install openvswitch-switch)"
    try:
        import os_ken  # noqa: F401
    except ImportError:
        return "os-ken not installed (a runtime dependency of flame-control: reinstall it)"
    return None


def run_tool(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Wiring:
    """Switches (name -> dpid), switch-switch links (a, port a, b, port b, latency s) and NAP ports."""

    switches: dict[str, int]
    trunks: list[tuple[str, int, str, int, float]]
    naps: dict[str, tuple[str, int]]


def wiring(catalogue: str) -> Wiring:
    """The Figure 25 wiring from the infrastructure catalogue (TOSCA node templates)."""
    nodes = yaml.safe_load(catalogue)["topology_template"]["node_templates"]
    switches = {n: int(t["properties"]["dpid"]) for n, t in nodes.items() if t["type"] == "flame.nodes.Switch"}
    trunks, naps = [], {}
    for t in nodes.values():
        if t["type"] != "flame.nodes.Link":
            continue
        p = t["properties"]
        a, b = (p["a_node"], int(p["a_port"])), (p["b_node"], int(p["b_port"]))
        if a[0] in switches and b[0] in switches:
            trunks.append((a[0], a[1], b[0], b[1], float(p.get("latency_ms", 0)) / 1000))
        elif a[0] in switches:
            naps[b[0]] = a
        else:
            naps[a[0]] = b
    return Wiring(switches, trunks, naps)


@dataclass
class OvsBackend:
    """Open vSwitch bridges + veths + namespaces for the demo."""

    kind: str = "ovs"
    link_latency: bool = False
    prefix: str = field(default_factory=lambda: "fd" + secrets.token_hex(2))
    of_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    rundir: Path | None = None
    bridges: dict[str, str] = field(default_factory=dict)
    namespaces: dict[str, str] = field(default_factory=dict)
    #: NAP -> its interface (inside its namespace, or in ours).
    nap_ifaces: dict[str, str] = field(default_factory=dict)
    #: Every veth made (one end of each pair; deleting it deletes the pair).
    veths: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # -- Backend --------------------------------------------------------------------------------------------------
    def prepare(self, group: ProcessGroup, workdir: Path) -> None:
        wires = wiring(sc.packaged("flame-integration.yaml"))
        self._start_ovs(workdir / "ovs")
        for name, dpid in wires.switches.items():
            br = f"{self.prefix}{name.removeprefix('sw-').replace('edge-', '')}"[:15]
            self.vsctl(
                "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev", "protocols=OpenFlow13",
                "fail_mode=secure", f"other-config:datapath-id={dpid:016x}",
            )  # fmt: skip
            self.bridges[name] = br
        netem = shutil.which("tc") is not None
        for i, (a, pa, b, pb, latency) in enumerate(wires.trunks):
            ia, ib = f"{self.prefix}t{i}a", f"{self.prefix}t{i}b"
            self._veth(ia, ib)
            for sw, iface, port in ((a, ia, pa), (b, ib, pb)):
                run_tool("ip", "link", "set", iface, "up")
                self.vsctl(
                    "add-port", self.bridges[sw], iface, "--", "set", "interface", iface, f"ofport_request={port}"
                )
                if netem and latency > 0:
                    delay = f"{latency * 1000:g}ms"
                    if subprocess.run(["tc", "qdisc", "add", "dev", iface, "root", "netem", "delay", delay],
                                      capture_output=True).returncode != 0:  # fmt: skip
                        netem = False
        self.link_latency = netem
        if not netem:
            self.notes.append("tc netem unavailable: switch-switch link latency not emulated on OVS")
        for k, (nap, (sw, port)) in enumerate(sorted(wires.naps.items())):
            outer, inner = f"{self.prefix}o{k}", f"{self.prefix}i{k}"
            self._veth(outer, inner)
            run_tool("ip", "link", "set", outer, "up")
            self.vsctl("add-port", self.bridges[sw], outer, "--", "set", "interface", outer, f"ofport_request={port}")
            if nap in NAMESPACED:
                ns = f"{self.prefix}-{nap}"
                run_tool("ip", "netns", "add", ns)
                self.namespaces[nap] = ns
                run_tool("ip", "link", "set", inner, "netns", ns)
                run_tool("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False)
                run_tool("ip", "-n", ns, "link", "set", "lo", "up")
                run_tool("ip", "netns", "exec", ns, "ethtool", "-K", inner, "tx", "off", "rx", "off", "tso", "off",
                     "gso", "off", check=False)  # fmt: skip
                run_tool("ip", "-n", ns, "link", "set", inner, "up")
            else:
                run_tool("sysctl", "-qw", f"net.ipv6.conf.{inner}.disable_ipv6=1", check=False)
                run_tool("ip", "link", "set", inner, "up")
            self.nap_ifaces[nap] = inner

    def pce_settings(self) -> dict[str, Any]:
        return {"fabric": "osken", "openflow_host": "127.0.0.1", "openflow_port": self.of_port}

    def nap_settings(self, nap_id: str) -> dict[str, Any]:
        return {"transport": "raw", "interface": self.nap_ifaces[nap_id], "netns": self.namespaces.get(nap_id, "")}

    def netns_of(self, nap_id: str) -> str:
        return self.namespaces.get(nap_id, "")

    def argv_in(self, nap_id: str, argv: list[str]) -> list[str]:
        ns = self.namespaces.get(nap_id)
        return ["ip", "netns", "exec", ns, *argv] if ns else argv

    def control_plane_started(self) -> None:
        for br in self.bridges.values():
            self.vsctl("set-controller", br, f"tcp:127.0.0.1:{self.of_port}")
            self.vsctl("set", "controller", br, "max_backoff=1000", "inactivity_probe=0")

    def describe(self) -> dict[str, Any]:
        return {
            "daemons": self._daemon_pids(),
            "bridges": sorted(self.bridges.values()),
            "namespaces": sorted(self.namespaces.values()),
            "interfaces": sorted(self.veths),
            "openflow_port": self.of_port,
            "link_latency_netem": self.link_latency,
            "notes": self.notes,
        }

    def close(self) -> None:
        """Remove bridges, namespaces and veths; stop ovs-vswitchd and ovsdb-server by their pidfiles."""
        for br in self.bridges.values():
            with contextlib.suppress(Exception):
                self.vsctl("--if-exists", "del-br", br)
        for ns in self.namespaces.values():
            run_tool("ip", "netns", "del", ns, check=False)
        for veth in self.veths:
            run_tool("ip", "link", "del", veth, check=False)
        if self.rundir is not None:
            for daemon in ("ovs-vswitchd", "ovsdb-server"):
                pidfile = self.rundir / f"{daemon}.pid"
                with contextlib.suppress(OSError, ValueError, ProcessLookupError):
                    pid = int(pidfile.read_text().strip())
                    os.kill(pid, signal.SIGTERM)
                    if not wait_gone(pid, 3.0):
                        os.kill(pid, signal.SIGKILL)
                        wait_gone(pid, 2.0)

    # -- helpers --------------------------------------------------------------------------------------------------
    def _daemon_pids(self) -> dict[str, int]:
        pids = {}
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            with contextlib.suppress(OSError, ValueError):
                if self.rundir is not None:
                    pids[daemon] = int((self.rundir / f"{daemon}.pid").read_text().strip())
        return pids

    def vsctl(self, *args: str) -> str:
        return run_tool("ovs-vsctl", "--timeout=10", *args, env=self.env)

    def _veth(self, a: str, b: str) -> None:
        run_tool("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        self.veths.append(a)
        for dev in (a, b):
            run_tool(
                "ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off", check=False
            )

    def _start_ovs(self, run: Path) -> None:
        """A private ovsdb-server + ovs-vswitchd with all state in ``run`` (no systemd, no /etc)."""
        run.mkdir(parents=True, exist_ok=True)
        self.rundir = run
        self.env = {**os.environ, "OVS_RUNDIR": str(run), "OVS_LOGDIR": str(run), "OVS_DBDIR": str(run),
                    "OVS_SYSCONFDIR": str(run)}  # fmt: skip
        db = run / "conf.db"
        db.unlink(missing_ok=True)
        run_tool("ovsdb-tool", "create", str(db), str(SCHEMA), env=self.env)
        run_tool(
            "ovsdb-server", str(db), f"--remote=punix:{run}/db.sock", f"--pidfile={run}/ovsdb-server.pid",
            f"--log-file={run}/ovsdb-server.log", "--detach", env=self.env,
        )  # fmt: skip
        run_tool("ovs-vsctl", "--no-wait", "init", env=self.env)
        run_tool(
            "ovs-vswitchd", f"unix:{run}/db.sock", f"--pidfile={run}/ovs-vswitchd.pid",
            f"--log-file={run}/ovs-vswitchd.log", "--detach", env=self.env,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not (run / "ovs-vswitchd.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
