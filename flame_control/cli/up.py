"""``flame up``: run orchestrator, SFEMC, PCE and CLMC in one process until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
from typing import Any

from flame_control.cli.common import add_config_options, load_from_args
from flame_control.cli.serve import fail, serve
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
    """Validate a --services list (ValueError naming the unknown ones)."""
    keys = [k.strip() for k in spec.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SERVICE_MODULES]
    if unknown or not keys:
        raise ValueError(f"unknown service(s) {unknown or spec!r}; known: {', '.join(SERVICE_MODULES)}")
    return keys


def announce(host: ServiceHost, ports: dict[str, int]) -> None:
    """Where each service listens, once all of them serve."""
    listen = host.config.listen.host
    print("FLAME control plane is up (Ctrl-C to stop):", flush=True)
    for key, port in ports.items():
        print(f"  {key:<13} {host.running[key].spec.name:<40} {listen}:{port}", flush=True)
    print(f"  state in {host.config.state_dir}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the selected services until a signal arrives."""
    try:
        keys = parse_services(args.services)
    except ValueError as exc:
        return fail("flame up", exc)
    config, settings = load_from_args(args, keys, prog="flame up")
    return serve("flame up", config, settings, keys, announce)
