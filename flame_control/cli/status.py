"""``flame status``: the gRPC health of each control-plane service."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flame_control.cli.common import add_config_options, load_from_args
from flame_control.cli.tls_hint import tls_mismatch_hint
from flame_control.runtime.auth import client_token
from flame_control.runtime.config import FlameConfig
from flame_control.runtime.health import REASON_KEY
from flame_control.runtime.registry import CONTROL_PLANE
from flame_control.runtime.server import open_channel

#: Full proto service name by key (the health service name each server reports).
SERVICE_NAMES = {
    "orchestrator": "flame.orchestrator.v1.OrchestratorService",
    "sfemc": "flame.sfemc.v1.SfemcService",
    "pce": "flame.pce.v1.PceService",
    "clmc": "flame.clmc.v1.ClmcService",
    "nap": "flame.nap.v1.NapAgentService",
}


def register(sub: Any) -> None:
    """Add the ``status`` subcommand."""
    p = sub.add_parser("status", help="show the health of each service")
    add_config_options(p)
    p.add_argument("--services", default=",".join(CONTROL_PLANE), help="which services to check")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per check")
    p.set_defaults(func=run)


async def check(config: FlameConfig, key: str, timeout: float) -> str:
    """SERVING / NOT_SERVING (why) / UNREACHABLE (code, and a hint when TLS does not match) for one service."""
    target = config.peer_target(key)
    async with open_channel(config, target, client_token(config.auth)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        call = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAMES[key]), timeout=timeout)
        try:
            reply = await call
        except grpc.aio.AioRpcError as err:
            hint = ""
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                hint = await asyncio.to_thread(tls_mismatch_hint, target, config.tls.enabled, timeout)
            return f"UNREACHABLE ({err.code().name}{': ' + hint if hint else ''})"
        state = str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            reason = dict(await call.trailing_metadata() or ()).get(REASON_KEY, "")
            state += f" ({reason})" if reason else ""
        return state


async def _all(config: FlameConfig, keys: list[str], timeout: float) -> dict[str, str]:
    results = await asyncio.gather(*(check(config, k, timeout) for k in keys))
    return dict(zip(keys, results, strict=True))


def run(args: argparse.Namespace) -> int:
    """Print one line per service; exit 0 only when all are SERVING."""
    config, _ = load_from_args(args)
    keys = [k.strip() for k in args.services.split(",") if k.strip()]
    results = asyncio.run(_all(config, keys, args.timeout))
    for key, state in results.items():
        print(f"{key:<13} {config.peer_target(key):<22} {state}")
    return 0 if all(s == "SERVING" for s in results.values()) else 1
