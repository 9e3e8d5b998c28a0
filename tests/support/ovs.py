"""A private Open vSwitch instance (userspace datapath) and NAP hosts in network namespaces, for tests and benchmarks.

Everything is created under a random per-run prefix and removed by :meth:`OvsTestbed.close` (namespaces, veths,
bridges, ovsdb-server and ovs-vswitchd by pidfile), also after failures. Needs root; see ../shared/TESTBED.md.
Interface names stay within Linux's 15 characters.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flame_control.demo.ovs import run_tool as _run

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


def available() -> str | None:
    """None when OVS can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veths, ovs-vswitchd)"
    for tool in ("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ip", "ethtool"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install openvswitch-switch iproute2 ethtool)"
    if not SCHEMA.exists():
        return f"{SCHEMA} missing"
    return None


@dataclass
class Host:
    """A NAP host: a namespace with one veth end (``inner``) whose peer (``outer``) is a bridge port."""

    name: str
    netns: str
    inner: str
    outer: str
    bridge: str
    ofport: int
    mac: str = ""


@dataclass
class OvsTestbed:
    """One private OVS instance with bridges, inter-bridge links and hosts."""

    workdir: Path
    prefix: str = field(default_factory=lambda: "f" + secrets.token_hex(2))
    bridges: list[str] = field(default_factory=list)
    hosts: dict[str, Host] = field(default_factory=dict)
    veths: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        """ovsdb-server + ovs-vswitchd with all state in ``workdir``."""
        run = self.workdir / "ovs"
        run.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "OVS_RUNDIR": str(run),
            "OVS_LOGDIR": str(run),
            "OVS_DBDIR": str(run),
            "OVS_SYSCONFDIR": str(run),
        }
        db = run / "conf.db"
        _run("ovsdb-tool", "create", str(db), str(SCHEMA), env=self.env)
        _run(
            "ovsdb-server", str(db), f"--remote=punix:{run}/db.sock", f"--pidfile={run}/ovsdb-server.pid",
            f"--log-file={run}/ovsdb-server.log", "--detach", env=self.env,
        )  # fmt: skip
        _run("ovs-vsctl", "--no-wait", "init", env=self.env)
        _run(
            "ovs-vswitchd", f"unix:{run}/db.sock", f"--pidfile={run}/ovs-vswitchd.pid",
            f"--log-file={run}/ovs-vswitchd.log", "--detach", env=self.env,
        )  # fmt: skip

    def vsctl(self, *args: str) -> str:
        """ovs-vsctl against this instance."""
        return _run("ovs-vsctl", "--timeout=10", *args, env=self.env)

    def ofctl(self, *args: str) -> str:
        """ovs-ofctl -O OpenFlow13 against this instance."""
        return _run("ovs-ofctl", "-O", "OpenFlow13", *args, env=self.env)

    def add_bridge(self, name: str, dpid: int, controller_port: int | None = None) -> str:
        """A userspace (netdev) bridge speaking OpenFlow 1.3 with fail_mode=secure; returns its name."""
        br = f"{self.prefix}{name}"[:15]
        self.vsctl(
            "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev", "protocols=OpenFlow13",
            "fail_mode=secure", f"other-config:datapath-id={dpid:016x}",
        )  # fmt: skip
        if controller_port is not None:
            self.vsctl("set-controller", br, f"tcp:127.0.0.1:{controller_port}")
            self.vsctl("set", "controller", br, "max_backoff=1000", "inactivity_probe=0")
        self.bridges.append(br)
        return br

    def set_controller(self, bridge: str, port: int) -> None:
        """Point a bridge at a controller on 127.0.0.1:port."""
        self.vsctl("set-controller", bridge, f"tcp:127.0.0.1:{port}")
        self.vsctl("set", "controller", bridge, "max_backoff=1000", "inactivity_probe=0")

    def _veth(self, a: str, b: str) -> None:
        _run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        self.veths.append(a)
        for dev in (a, b):
            _run("ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off", check=False)

    def link_bridges(self, a: str, port_a: int, b: str, port_b: int) -> tuple[str, str]:
        """A veth pair between two bridges on the given OpenFlow ports; returns the interface names."""
        ia, ib = f"{a}p{port_a}"[:15], f"{b}p{port_b}"[:15]
        self._veth(ia, ib)
        for br, iface, port in ((a, ia, port_a), (b, ib, port_b)):
            _run("ip", "link", "set", iface, "up")
            self.vsctl("add-port", br, iface, "--", "set", "interface", iface, f"ofport_request={port}")
        return ia, ib

    def add_host(self, name: str, bridge: str, ofport: int) -> Host:
        """A namespace attached to ``bridge`` on ``ofport`` (offloads off on both veth ends)."""
        netns = f"{self.prefix}-{name}"
        outer, inner = f"{self.prefix}o{len(self.hosts)}"[:15], f"{self.prefix}i{len(self.hosts)}"[:15]
        _run("ip", "netns", "add", netns)
        self._veth(outer, inner)
        _run("ip", "link", "set", inner, "netns", netns)
        _run(
            "ip",
            "netns",
            "exec",
            netns,
            "ethtool",
            "-K",
            inner,
            "tx",
            "off",
            "rx",
            "off",
            "tso",
            "off",
            "gso",
            "off",
            check=False,
        )
        _run("ip", "netns", "exec", netns, "ip", "link", "set", inner, "up")
        _run("ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up")
        _run("ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False)
        _run("ip", "link", "set", outer, "up")
        self.vsctl("add-port", bridge, outer, "--", "set", "interface", outer, f"ofport_request={ofport}")
        mac = _run("ip", "netns", "exec", netns, "cat", f"/sys/class/net/{inner}/address").strip()
        host = Host(name, netns, inner, outer, bridge, ofport, mac)
        self.hosts[name] = host
        return host

    def set_link(self, iface: str, up: bool) -> None:
        """Take a bridge-side interface down or up (the switch reports a port-status change)."""
        _run("ip", "link", "set", iface, "up" if up else "down")

    def dump_flows(self, bridge: str) -> list[str]:
        """Flow lines of a bridge."""
        return [line.strip() for line in self.ofctl("dump-flows", bridge).splitlines() if "cookie=" in line]

    def exec_in(self, host: str, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command inside a host's namespace."""
        return subprocess.run(
            ["ip", "netns", "exec", self.hosts[host].netns, *argv], capture_output=True, text=True, timeout=timeout
        )

    def popen_in(self, host: str, argv: Sequence[str]) -> subprocess.Popen[str]:
        """Start a command inside a host's namespace (caller stops it)."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.hosts[host].netns, *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip

    def close(self) -> None:
        """Remove everything this testbed created."""
        for br in self.bridges:
            with contextlib.suppress(Exception):
                self.vsctl("--if-exists", "del-br", br)
        for host in self.hosts.values():
            _run("ip", "netns", "del", host.netns, check=False)
        for veth in self.veths:
            _run("ip", "link", "del", veth, check=False)
        run = Path(self.env.get("OVS_RUNDIR", self.workdir / "ovs"))
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            pidfile = run / f"{daemon}.pid"
            if pidfile.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    pid = int(pidfile.read_text().strip())
                    os.kill(pid, signal.SIGTERM)
                    for _ in range(50):
                        try:
                            os.kill(pid, 0)
                        except ProcessLookupError:
                            break
                        time.sleep(0.05)
                    else:
                        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def ovs_testbed(workdir: Path | None = None) -> Iterator[OvsTestbed]:
    """A started testbed, closed afterwards."""
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="flame-ovs-")
        workdir = Path(tmp.name)
    bed = OvsTestbed(workdir)
    try:
        bed.start()
        yield bed
    finally:
        bed.close()
        if tmp is not None:
            tmp.cleanup()
