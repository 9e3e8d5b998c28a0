"""The user-visible issue-12 defects of the NAP's HTTP proxy on real Open vSwitch (markers ``ovs``, ``e2e``; root):
the roadmap topology programmed by the PCE through os-ken, NAP agents on raw interfaces, clients (curl, a websockets
client, http.client) inside the client NAP's namespace, Python's ``http.server`` and a websockets server as origins
inside the server NAP's namespace. The same cases on the emulated fabric: test_http_proxy_safety.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.support.nap_ovs import ovs_edge
from tests.support.origin import body
from tests.support.ovs import available
from tests.support.procs import ProcessGroup

pytestmark = [pytest.mark.ovs, pytest.mark.e2e]
VOD = "vod.video.flame.example"
WS = "ws.flame.example"
CLIENT = "nap-edge-a1"


@pytest.fixture(autouse=True)
def _ovs() -> None:
    reason = available()
    if reason:
        pytest.skip(reason)
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (scripts/install.sh --test installs it)")


def test_issue12_user_visible_defects_on_real_ovs(tmp_path: Path, procs: ProcessGroup) -> None:
    async def scenario() -> None:
        naps = {"nap-dc": [(VOD, "stdlib-dc"), (WS, "websocket-dc")], CLIENT: []}
        async with ovs_edge(tmp_path, procs, naps) as edge:
            async with asyncio.timeout(30):
                while not all(edge.agents[CLIENT].dp.routes.best(f) for f in (VOD, WS)):
                    await asyncio.sleep(0.1)

            def check(*args: str) -> dict[str, object]:
                out = edge.bed.exec_in(CLIENT, [sys.executable, "-m", "tests.support.proxy_checks", *args], 120)
                assert out.returncode == 0, out.stderr
                return json.loads(out.stdout)  # type: ignore[no-any-return]

            # Expect: 100-continue through two NAPs (curl adds it over 1 MB): the 100 arrives, the upload completes
            up = tmp_path / "up.bin"
            up.write_bytes(body(3 << 20)[::-1])
            argv = ["curl", "-sS", "-v", "--max-time", "60", "-H", f"Host: {VOD}", "--data-binary", f"@{up}"]
            out = await asyncio.to_thread(edge.bed.exec_in, CLIENT, [*argv, "http://127.0.0.1:8080/upload"], 90)
            assert b"HTTP/1.1 100 Continue" in out.stderr.encode(), out.stderr
            assert json.loads(out.stdout)["sha256"] == hashlib.sha256(up.read_bytes()).hexdigest()
            # a real WebSocket client and server talk through both NAPs
            assert (await asyncio.to_thread(check, "websocket", "--host", WS))["echoed"] == [True, True]
            # Alice, Bob, Carol and Dave at the same moment: each gets their own response
            answers = (await asyncio.to_thread(check, "users", "--host", VOD))["answers"]
            assert answers == [[u, 200, f"user={u}"] for u in ("alice", "bob", "carol", "dave")]
            # request smuggling refused; a truncated upstream response closes the user's connection at once
            smuggle = (
                f"POST /upload HTTP/1.1\r\nHost: {VOD}\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"
            )
            answer = await asyncio.to_thread(check, "raw", "--hex", smuggle.encode().hex())
            assert str(answer["head"]).startswith("HTTP/1.1 400")
            cut = f"GET /cut-length HTTP/1.1\r\nHost: {VOD}\r\n\r\n"
            answer = await asyncio.to_thread(check, "raw", "--hex", cut.encode().hex())
            assert float(answer["seconds"]) < 10, answer  # type: ignore[arg-type]
            # and plain requests still get their own bytes afterwards
            result = await asyncio.to_thread(edge.client, CLIENT, VOD, ["/bytes/5000", "/bytes/70000"], 2)
            assert result["statuses"] == [200, 200]
            assert result["sha256"] == [hashlib.sha256(body(n)).hexdigest() for n in (5000, 70000)]

    asyncio.run(scenario())
