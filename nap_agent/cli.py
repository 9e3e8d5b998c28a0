"""``flame-nap``: run a NAP agent on an edge node (its local admin service on 127.0.0.1:50060 by default).

flame-nap [--config FILE] [--set services.nap.nap_id=nap-edge-a1 ...] [--log-level ...]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from flame_control.cli.common import add_config_options, load_from_args
from flame_control.runtime.server import ServiceHost


async def _serve(host: ServiceHost) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        ports = await host.start(["nap"])
        print(
            f"NAP agent {host.settings['nap'].nap_id} admin service on {host.config.listen.host}:{ports['nap']}",
            flush=True,
        )
        await stop.wait()
    finally:
        await host.stop()
    print("stopped", flush=True)


def run_loop(main: Coroutine[Any, Any, None], kind: str) -> None:
    """Run on uvloop when asked or ("auto") when installed: the data plane's per-frame and per-request loop overhead
    is about halved (docs/benchmarks/nap.md); plain asyncio otherwise."""
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flame-nap`` console script."""
    parser = argparse.ArgumentParser(prog="flame-nap", description="FLAME NAP agent")
    add_config_options(parser)
    args = parser.parse_args(argv)
    config, settings = load_from_args(args, ["nap"])
    try:
        nap_settings: Any = settings["nap"]
        run_loop(_serve(ServiceHost(config, settings)), nap_settings.event_loop)
    except OSError as exc:
        print(f"flame-nap: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
