"""Issue 12 item 6 against a real PCE gRPC server: a NAP session and registrations under a NAP are bound to the
caller's identity (SFR-10/11). Before, any holder of a component token could take over another NAP's session and
register names under it. Tokens: ``flame token new component NAME --nap-id N`` scopes a token to NAP N; mutual TLS: the
client certificate's SAN must name the NAP. On the emulated fabric the session's first message hands the NAP its
fabric secret (FabricAccess); a refused session gets none."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml

from flame_control.api.flame.pce.v1 import nap_session_pb2, pce_pb2, pce_pb2_grpc
from flame_control.runtime.auth import hash_token
from flame_control.runtime.config import AuthConfig, TlsConfig, TokenEntry
from flame_control.runtime.service import ServiceSpec
from flame_control.runtime.testing import channel, running_server
from flame_control.runtime.tlsgen import write_dev_pki
from pce import topology as topolib
from pce.core import PceCore
from pce.service import ACCESS, PceServicer
from pce.switch.emulated import EmulatedDriver

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "topologies" / "flame-integration.yaml"
VOD = "vod.video.flame.example"

TOKENS = AuthConfig(
    enabled=True,
    tokens=[
        TokenEntry(subject="nap-dc", role="component", sha256=hash_token("tok-dc"), nap_id="nap-dc"),
        TokenEntry(subject="nap-a1", role="component", sha256=hash_token("tok-a1"), nap_id="nap-edge-a1"),
        TokenEntry(subject="sfemc", role="component", sha256=hash_token("tok-sfemc")),
        TokenEntry(subject="ops", role="platform_operator", sha256=hash_token("tok-ops")),
        TokenEntry(subject="msp", role="media_service_provider", sha256=hash_token("tok-msp")),
    ],
)


def spec() -> tuple[ServiceSpec, PceServicer]:
    core = PceCore()
    core.apply_topology(topolib.load_file(EXAMPLE))
    servicer = PceServicer(core, driver=EmulatedDriver(topology=lambda: core.topology))
    return ServiceSpec("flame.pce.v1.PceService", servicer, pce_pb2_grpc.add_PceServiceServicer_to_server, ACCESS), (
        servicer
    )


async def open_session(stub: pce_pb2_grpc.PceServiceStub, nap_id: str) -> nap_session_pb2.NapSessionResponse:
    """Hello as ``nap_id``; the first message back (or the error)."""

    async def requests():  # type: ignore[no-untyped-def]
        yield nap_session_pb2.NapSessionRequest(hello=nap_session_pb2.Hello(nap_id=nap_id))
        await asyncio.sleep(30)

    call = stub.NapSession(requests())
    try:
        async for msg in call:
            return msg
        raise AssertionError("session ended without a message")
    finally:
        call.cancel()


async def code_of(coro) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        await asyncio.wait_for(coro, 10)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_sfr11_nap_session_and_registrations_bound_to_the_token_scope() -> None:
    async def scenario() -> None:
        s, servicer = spec()
        async with running_server(s, auth=TOKENS) as target:

            async def as_(token: str, nap: str) -> grpc.StatusCode:
                async with channel(target, token) as ch:
                    return await code_of(open_session(pce_pb2_grpc.PceServiceStub(ch), nap))

            async def register(token: str, nap: str, fqdn: str = VOD) -> grpc.StatusCode:
                async with channel(target, token) as ch:
                    req = pce_pb2.RegisterFqdnRequest(fqdn=fqdn, nap_id=nap)
                    return await code_of(pce_pb2_grpc.PceServiceStub(ch).RegisterFqdn(req))

            assert await as_("tok-a1", "nap-dc") == grpc.StatusCode.PERMISSION_DENIED  # another NAP's session
            assert await as_("tok-sfemc", "nap-dc") == grpc.StatusCode.PERMISSION_DENIED  # unscoped: not a NAP
            assert await as_("tok-dc", "nap-dc") == grpc.StatusCode.OK
            assert await as_("tok-ops", "nap-dc") == grpc.StatusCode.OK
            assert await register("tok-a1", "nap-dc") == grpc.StatusCode.PERMISSION_DENIED
            assert await register("tok-msp", "nap-dc") == grpc.StatusCode.PERMISSION_DENIED
            assert await register("tok-dc", "nap-dc") == grpc.StatusCode.OK
            live = "live.video.flame.example"
            assert await register("tok-sfemc", "nap-dc", live) == grpc.StatusCode.OK  # the control plane places them
            assert [r.nap_id for r in servicer.core.registry.matching(VOD)] == ["nap-dc"]
            # the session's first message is the NAP's own fabric secret
            async with channel(target, "tok-dc") as ch:
                first = await open_session(pce_pb2_grpc.PceServiceStub(ch), "nap-dc")
            assert first.WhichOneof("message") == "fabric_access"
            assert first.fabric_access.nap_id == "nap-dc"
            assert first.fabric_access.attach_secret == servicer.driver.secret_for("nap-dc")
            assert first.fabric_access.attach_secret != servicer.driver.secret_for("nap-edge-a1")

    asyncio.run(scenario())


def test_sfr11_with_mutual_tls_the_certificate_san_must_name_the_nap(tmp_path: Path) -> None:
    pki = write_dev_pki(tmp_path, nap_ids=["nap-dc"])
    server_tls = TlsConfig(enabled=True, cert=pki["server_cert"], key=pki["server_key"], client_ca=pki["ca"])
    nap_dc = TlsConfig(
        enabled=True, client_ca=pki["ca"], client_cert=pki["nap_cert:nap-dc"], client_key=pki["nap_key:nap-dc"]
    )

    async def scenario() -> None:
        s, _ = spec()
        async with running_server(s, tls=server_tls) as target:
            target = target.replace("127.0.0.1", "localhost")

            async def as_(nap: str) -> grpc.StatusCode:
                async with channel(target, tls=nap_dc) as ch:
                    return await code_of(open_session(pce_pb2_grpc.PceServiceStub(ch), nap))

            assert await as_("nap-edge-a1") == grpc.StatusCode.PERMISSION_DENIED
            assert await as_("nap-dc") == grpc.StatusCode.OK
            async with channel(target, tls=nap_dc) as ch:
                req = pce_pb2.RegisterFqdnRequest(fqdn=VOD, nap_id="nap-edge-a1")
                assert await code_of(pce_pb2_grpc.PceServiceStub(ch).RegisterFqdn(req)) == grpc.StatusCode.OK
                # (with auth off the caller is the operator; the certificate binds the NAP *session*)

    asyncio.run(scenario())


def test_flame_token_issues_component_tokens_scoped_to_one_nap() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flame_control.cli.main", "token", "new", "component", "edge-a1", "--nap-id",
         "nap-edge-a1"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    entry = yaml.safe_load(out.stdout.split("config entry for auth.tokens:", 1)[1])[0]
    assert entry["nap_id"] == "nap-edge-a1" and entry["role"] == "component"
    bad = subprocess.run(
        [sys.executable, "-m", "flame_control.cli.main", "token", "new", "analyst", "x", "--nap-id", "nap-dc"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0
    with pytest.raises(ValueError):
        from flame_control.runtime.auth import TokenStore

        TokenStore([TokenEntry(subject="x", role="analyst", sha256="0" * 64, nap_id="nap-dc")])
