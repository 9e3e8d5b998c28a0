"""NAP agents report to a real CLMC (gRPC, embedded store; CLMC-5 NAP lifecycle events with geolocation, CLMC-8):
nap_http per FQDN (requests, mean latency, bytes, NAP errors) and nap_fabric counters, tagged with the NAP's location
— the data the SFEMC's policies and the F3.2 service latency KPI read. A CLMC that is down loses nothing the NAP
counted: points are kept and published when it is back."""

from __future__ import annotations

import asyncio
import http.client
from pathlib import Path

from flame_control.api.flame.clmc.v1 import clmc_pb2, clmc_pb2_grpc
from flame_control.runtime.testing import channel, running_server
from nap_agent.agent import LocalServiceConfig
from tests.integration.clmc.helpers import clmc_spec
from tests.support.nap_env import VOD, emulated_edge, start_origin
from tests.support.origin import body
from tests.support.procs import free_port, process_group


def test_clmc8_nap_http_and_fabric_points_reach_the_clmc(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            origin = start_origin(group, "dc")
            async with running_server(clmc_spec(clmc_dir(tmp_path))) as clmc:
                naps = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{origin}")], "nap-edge-a1": []}
                async with emulated_edge(
                    tmp_path, naps, clmc_endpoint=clmc, report_interval_s=0.2, latitude=51.45, longitude=-2.598
                ) as env:
                    await env.route_to("nap-edge-a1", VOD)

                    def get(n: int, host: str = VOD) -> int:
                        c = http.client.HTTPConnection("127.0.0.1", env.http("nap-edge-a1"), timeout=30)
                        for _ in range(n):
                            c.request("GET", "/bytes/2000", headers={"Host": host})
                            r = c.getresponse()
                            assert r.read() == body(2000) or r.status == 502
                        return 0

                    await asyncio.to_thread(get, 20)
                    await asyncio.to_thread(get, 1, "nobody.flame.example")
                    async with channel(clmc) as ch:
                        stub = clmc_pb2_grpc.ClmcServiceStub(ch)
                        async with asyncio.timeout(10):
                            while True:
                                reply = await stub.Query(
                                    clmc_pb2.QueryRequest(
                                        measurement="nap_http", tags={"flame_location": "nap-edge-a1"}
                                    )
                                )
                                by_fqdn: dict[str, int] = {}
                                for p in reply.points:
                                    fqdn = p.tags["fqdn"]
                                    by_fqdn[fqdn] = by_fqdn.get(fqdn, 0) + p.fields["requests"].int_value
                                if by_fqdn.get(VOD) == 20 and by_fqdn.get("nobody.flame.example") == 1:
                                    break
                                await asyncio.sleep(0.2)
                        vod = [p for p in reply.points if p.tags["fqdn"] == VOD]
                        assert all(p.fields["latency_ms"].double_value > 0 for p in vod)
                        assert sum(p.fields["bytes_out"].int_value for p in vod) > 20 * 2000
                        errors = [p.fields["errors"].int_value for p in reply.points if p.tags["fqdn"] != VOD]
                        assert errors == [1]
                        fabric = await stub.Query(
                            clmc_pb2.QueryRequest(measurement="nap_fabric", tags={"flame_location": "nap-dc"})
                        )
                        assert sum(p.fields["frames_received"].int_value for p in fabric.points) >= 20
                        events = await stub.Query(
                            clmc_pb2.QueryRequest(measurement="config_event", tags={"flame_location": "nap-dc"})
                        )
                        started = [p for p in events.points if p.tags.get("event") == "started"]
                        assert started and started[0].fields["latitude"].double_value == 51.45  # CLMC-5 geolocation

    asyncio.run(scenario())


def test_clmc_down_keeps_points_until_it_is_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            origin = start_origin(group, "dc")
            port = free_port()
            target = f"127.0.0.1:{port}"
            naps = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{origin}")], "nap-edge-a1": []}
            async with emulated_edge(tmp_path, naps, clmc_endpoint=target, report_interval_s=0.2) as env:
                await env.route_to("nap-edge-a1", VOD)

                def get() -> None:
                    c = http.client.HTTPConnection("127.0.0.1", env.http("nap-edge-a1"), timeout=30)
                    for _ in range(7):
                        c.request("GET", "/bytes/10", headers={"Host": VOD})
                        c.getresponse().read()

                await asyncio.to_thread(get)
                reporter = env.agents["nap-edge-a1"].reporter
                assert reporter is not None
                async with asyncio.timeout(10):
                    while reporter.failures < 2:
                        await asyncio.sleep(0.1)
                assert reporter.pending and reporter.dropped == 0
                # the CLMC comes up on that address: everything counted arrives
                from flame_control.runtime.config import FlameConfig
                from flame_control.runtime.server import ServiceHost

                host = ServiceHost(FlameConfig(shutdown_grace_s=1.0, shutdown_drain_s=0), settings={})
                await host.start_spec("clmc", clmc_spec(clmc_dir(tmp_path)), port)
                try:
                    async with asyncio.timeout(15):
                        while reporter.pending:
                            await asyncio.sleep(0.1)
                    async with channel(target) as ch:
                        stub = clmc_pb2_grpc.ClmcServiceStub(ch)
                        reply = await stub.Query(clmc_pb2.QueryRequest(measurement="nap_http"))
                        assert sum(p.fields["requests"].int_value for p in reply.points) == 7
                finally:
                    await host.stop()

    asyncio.run(scenario())


def clmc_dir(tmp_path: Path) -> Path:
    path = tmp_path / "clmc"
    path.mkdir(exist_ok=True)
    return path
