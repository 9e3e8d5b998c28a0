"""HTTP-over-ICN on real Open vSwitch (markers `ovs`, `e2e`; root): the roadmap topology's three userspace bridges
programmed by the PCE through os-ken, NAP agents on raw interfaces in per-host network namespaces, clients and origin
servers inside those namespaces. SFR-1 byte-exact bodies, upload and 100 parallel requests; F3.5 coincidental
multicast counted on the server NAP's veth; SFR-13 a trunk taken down during a 50 MB download; SFR-19 HTTPS by SNI."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from flame_control.runtime.tlsgen import write_dev_pki
from tests.support.nap_ovs import TLS_PORT, ovs_edge
from tests.support.origin import body
from tests.support.ovs import available
from tests.support.procs import ProcessGroup

pytestmark = [pytest.mark.ovs, pytest.mark.e2e]
VOD = "vod.video.flame.example"


def sha(n: int) -> str:
    return hashlib.sha256(body(n)).hexdigest()


@pytest.fixture(autouse=True)
def _ovs() -> None:
    reason = available()
    if reason:
        pytest.skip(reason)


def test_sfr1_http_over_real_ovs_bodies_upload_parallel_multicast(tmp_path: Path, procs: ProcessGroup) -> None:
    async def scenario() -> None:
        naps = {"nap-dc": [(VOD, "dc")], "nap-edge-a1": [], "nap-edge-a2": [], "nap-edge-b1": []}
        async with ovs_edge(tmp_path, procs, naps) as edge:
            for nap in ("nap-edge-a1", "nap-edge-a2", "nap-edge-b1"):
                await asyncio.wait_for(_route(edge, nap), 20)
            small = await asyncio.to_thread(edge.client, "nap-edge-a1", VOD, ["/bytes/1024"])
            assert small["statuses"] == [200] and small["sha256"] == [sha(1024)]
            big = await asyncio.to_thread(edge.client, "nap-edge-a1", VOD, [f"/bytes/{50 << 20}"])
            assert big["statuses"] == [200] and big["sha256"] == [sha(50 << 20)], big
            many = await asyncio.to_thread(
                edge.client, "nap-edge-b1", VOD, [f"/bytes/{1000 + i}" for i in range(100)], 100, 100
            )
            assert many["statuses"] == [200] * 100
            assert many["sha256"] == [sha(1000 + i) for i in range(100)]
            # 10 MB upload, sha256 checked by the origin
            up = tmp_path / "up.bin"
            up.write_bytes(body(10 << 20)[::-1])
            script = (
                "import http.client,sys,json;c=http.client.HTTPConnection('127.0.0.1',8080,timeout=120);"
                f"c.request('POST','/upload',body=open('{up}','rb').read(),headers={{'Host':'{VOD}'}});"
                "print(c.getresponse().read().decode())"
            )
            out = await asyncio.to_thread(edge.bed.exec_in, "nap-edge-a2", [sys.executable, "-c", script], 120)
            assert hashlib.sha256(up.read_bytes()).hexdigest() in out.stdout, out.stderr
            # coincidental multicast (KPI F3.5): one response for ten clients at three NAPs, counted on the veth
            size = 1 << 20
            before = edge.tx_bytes_from("nap-dc")
            one = await asyncio.to_thread(edge.client, "nap-edge-a1", VOD, [f"/slow/300/{size}"])
            single = edge.tx_bytes_from("nap-dc") - before
            assert one["statuses"] == [200]

            async def ten() -> list[dict[str, object]]:
                jobs = [
                    asyncio.to_thread(edge.client, nap, VOD, [f"/slow/800/{size}"], n, n)
                    for nap, n in (("nap-edge-a1", 4), ("nap-edge-a2", 3), ("nap-edge-b1", 3))
                ]
                return list(await asyncio.gather(*jobs))

            before = edge.tx_bytes_from("nap-dc")
            results = await ten()
            together = edge.tx_bytes_from("nap-dc") - before
            assert all(r["sha256"] == [sha(size)] * len(r["sha256"]) for r in results)  # type: ignore[operator]
            assert together < 2 * single, (together, single, edge.agents["nap-dc"].dp.counters)

    asyncio.run(scenario())


async def _route(edge: object, nap: str) -> None:
    agent = edge.agents[nap]  # type: ignore[attr-defined]
    while agent.dp.routes.best(VOD) is None:
        await asyncio.sleep(0.05)


def test_sfr13_download_survives_a_trunk_failure_and_https_by_sni(tmp_path: Path, procs: ProcessGroup) -> None:
    async def scenario() -> None:
        pki = write_dev_pki(tmp_path / "pki", extra_hosts=[VOD])
        naps = {"nap-dc": [(VOD, "dc")], "nap-edge-a1": []}
        async with ovs_edge(tmp_path, procs, naps, rto_s=0.1) as edge:
            tls_port = edge.start_origin("nap-dc", "tls", (str(pki["server_cert"]), str(pki["server_key"])))
            dc = edge.agents["nap-dc"]
            svc = dc.local[VOD]
            dc.local[VOD] = svc.model_copy(update={"tls_endpoint": f"127.0.0.1:{tls_port}"})
            await asyncio.wait_for(_route(edge, "nap-edge-a1"), 20)
            https = await asyncio.to_thread(
                edge.bed.exec_in,
                "nap-edge-a1",
                ["curl", "-sS", "--cacert", str(pki["ca"]), "--resolve", f"{VOD}:{TLS_PORT}:127.0.0.1",
                 f"https://{VOD}:{TLS_PORT}/bytes/100000", "-o", str(tmp_path / "tls.bin")],
                60,
            )  # fmt: skip
            assert https.returncode == 0, https.stderr
            assert (tmp_path / "tls.bin").read_bytes() == body(100000)
            # a 50 MB download; the trunk on its path goes down in the middle (port-status at the switch)
            download = asyncio.create_task(asyncio.to_thread(edge.client, "nap-edge-a1", VOD, [f"/bytes/{50 << 20}"]))
            client = edge.agents["nap-edge-a1"]
            version = client.dp.routes.version
            await asyncio.sleep(1.0)
            assert not download.done(), "download finished before the failure; make it larger"
            edge.bed.set_link(edge.fabric.trunk_ifaces["dc-a"][0], False)
            result = await asyncio.wait_for(download, 180)
            assert result["statuses"] == [200] and result["sha256"] == [sha(50 << 20)], (
                result["lengths"],
                client.dp.counters,
            )
            assert client.dp.routes.version > version  # the PCE pushed new FIDs on the alternate path

    asyncio.run(scenario())


SWITCH_CLIENT = """
import http.client, os, sys, time
c = http.client.HTTPConnection("127.0.0.1", 8080, timeout=30)
c.request("GET", "/name", headers={"Host": sys.argv[1]}); first = c.getresponse().read().decode()
port = c.sock.getsockname()[1]
print(first, flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
c.request("GET", "/name", headers={"Host": sys.argv[1]}); second = c.getresponse().read().decode()
print(second, port == c.sock.getsockname()[1], flush=True)
"""


def test_sfr14_switch_on_a_live_connection_and_transparent_redirect(tmp_path: Path, procs: ProcessGroup) -> None:
    async def scenario() -> None:
        naps = {"nap-dc": [(VOD, "dc")], "nap-edge-a1": [], "nap-edge-a2": []}
        async with ovs_edge(tmp_path, procs, naps) as edge:
            await asyncio.wait_for(_route(edge, "nap-edge-a1"), 20)
            flag = tmp_path / "switched"
            client = edge.bed.popen_in("nap-edge-a1", [sys.executable, "-c", SWITCH_CLIENT, VOD, str(flag)])
            try:
                assert client.stdout is not None
                first = await asyncio.to_thread(client.stdout.readline)
                assert first.strip() == "dc"
                # an edge surrogate next to the client is connected: the PCE pushes the closer route
                edge_port = edge.start_origin("nap-edge-a2", "edge")
                edge.agents["nap-edge-a2"].register(VOD, f"127.0.0.1:{edge_port}")
                agent = edge.agents["nap-edge-a1"]
                async with asyncio.timeout(20):
                    while agent.dp.routes.best(VOD).server_nap_id != "nap-edge-a2":  # type: ignore[union-attr]
                        await asyncio.sleep(0.05)
                flag.write_text("go")
                second = await asyncio.to_thread(client.stdout.readline)
                assert second.split() == ["edge", "True"]  # answered by the edge surrogate on the same connection
            finally:
                client.kill()
                client.wait()
            # transparent redirect: the client thinks it talks to the service's address on port 80
            ns = edge.bed.hosts["nap-edge-a1"].netns
            for cmd in (
                ["ip", "-n", ns, "route", "add", "203.0.113.0/24", "dev", "lo", "src", "127.0.0.1"],
                ["ip", "netns", "exec", ns, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "203.0.113.10",
                 "--dport", "80", "-j", "REDIRECT", "--to-ports", "8080"],
            ):  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True)
                assert out.returncode == 0, out.stderr
            out_file = tmp_path / "redirected.bin"
            curl = await asyncio.to_thread(
                edge.bed.exec_in,
                "nap-edge-a1",
                ["curl", "-sS", "--resolve", f"{VOD}:80:203.0.113.10", f"http://{VOD}/bytes/3000", "-o", str(out_file)],
            )
            assert curl.returncode == 0, curl.stderr
            assert out_file.read_bytes() == body(3000)

    asyncio.run(scenario())
