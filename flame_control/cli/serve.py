"""The one way a long-running FLAME process starts and serves (``flame up`` and ``flame-nap``).

Order (issue 11): private umask, checks without side effects (TLS/token files, listener safety), the state-directory
lock, then the services. A problem before the process serves is one line on stderr and exit code 2, never a
traceback (``--log-level runtime=debug`` logs the traceback of an unexpected one). Once serving, SIGINT/SIGTERM stop it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flame_control.runtime.config import ConfigError, FlameConfig
from flame_control.runtime.server import ServiceHost
from flame_control.runtime.startup import StartupError, StateLock, one_line, preflight, private_umask

log = logging.getLogger("flame.runtime")

#: Called once every service serves, with the host and the bound port per service key.
Announce = Callable[[ServiceHost, dict[str, int]], None]

#: Exceptions whose message alone says what is wrong (others are prefixed with their type).
_EXPECTED = (StartupError, ConfigError, OSError, ValueError)


@dataclass
class _Progress:
    serving: bool = False


def fail(prog: str, problem: BaseException | str) -> int:
    """Print one line ``prog: problem`` on stderr; returns exit code 2."""
    if isinstance(problem, BaseException) and not isinstance(problem, _EXPECTED):
        log.debug("start-up failed", exc_info=problem)
        problem = f"{type(problem).__name__}: {problem} (--log-level runtime=debug shows where)"
    print(f"{prog}: {one_line(str(problem))}", file=sys.stderr, flush=True)
    return 2


def run_loop(main: Coroutine[Any, Any, None], kind: str = "asyncio") -> None:
    """Run on uvloop when asked or ("auto") when installed: the NAP data plane's per-frame and per-request loop
    overhead is about halved (docs/benchmarks/nap.md); plain asyncio otherwise."""
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


async def _serve(host: ServiceHost, keys: Sequence[str], announce: Announce, progress: _Progress) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        ports = await host.start(keys)
        progress.serving = True
        announce(host, ports)
        await stop.wait()
        print("stopping...", flush=True)
    finally:
        await host.stop(drain=progress.serving)  # a start that failed was never announced: nobody to drain
    print("stopped", flush=True)


def serve(
    prog: str,
    config: FlameConfig,
    settings: dict[str, BaseModel],
    keys: Sequence[str],
    announce: Announce,
    loop_kind: str = "asyncio",
) -> int:
    """Check, lock the state of ``keys`` in the state directory, serve them until a signal; the exit code."""
    private_umask()
    try:
        warnings = preflight(config)
        lock = StateLock.acquire(Path(config.state_dir), prog, keys)
    except StartupError as exc:
        return fail(prog, exc)
    progress = _Progress()
    try:
        if lock.took_over_from is not None:
            log.info("took over the state directory of a process that is gone", extra={"fields": {
                "state_dir": config.state_dir, "pid": lock.took_over_from}})  # fmt: skip
        for warning in warnings:
            log.warning(warning)
        try:
            host = ServiceHost(config, settings)
            run_loop(_serve(host, keys, announce, progress), loop_kind)
        except Exception as exc:
            if progress.serving:
                raise
            return fail(prog, exc)
    finally:
        lock.release()
    return 0
