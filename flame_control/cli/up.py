"""``flame up``: run orchestrator, SFEMC, PCE and CLMC in one process until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from flame_control.cli.common import add_config_options, load_from_args
from flame_control.runtime.registry import CONTROL_PLANE, SERVICE_MODULES
from flame_control.runtime.server import ServiceHost


def register(sub: Any) -> None:
    """Add the ``up`` subcommand."""
    p = sub.add_parser("up", help="start the control plane (embedded default) and serve until Ctrl-C")
    add_config_options(p)
    p.add_argument(
        "--services",
        default=",".join(CONTROL_PLANE),
        help=f"comma-separated subset to run in this process (default {','.join(CONTROL_PLANE)})",
    )
    p.set_defaults(func=run)


def parse_services(spec: str) -> list[str]:
    """Validate a --services list."""
    keys = [k.strip() for k in spec.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SERVICE_MODULES]
    if unknown or not keys:
        raise SystemExit(f"flame up: unknown service(s) {unknown or spec!r}; known: {', '.join(SERVICE_MODULES)}")
    return keys


async def _serve(host: ServiceHost, keys: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        ports = await host.start(keys)
        listen = host.config.listen.host
        print("FLAME control plane is up (Ctrl-C to stop):", flush=True)
        for key in keys:
            spec = host.running[key].spec
            print(f"  {key:<13} {spec.name:<40} {listen}:{ports[key]}", flush=True)
        print(f"  state in {host.config.state_dir}", flush=True)
        await stop.wait()
        print("stopping...", flush=True)
    finally:
        await host.stop()
    print("stopped", flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the selected services until a signal arrives."""
    keys = parse_services(args.services)
    config, settings = load_from_args(args, keys)
    host = ServiceHost(config, settings)
    try:
        asyncio.run(_serve(host, keys))
    except OSError as exc:
        print(f"flame up: {exc}", file=sys.stderr)
        return 1
    return 0
