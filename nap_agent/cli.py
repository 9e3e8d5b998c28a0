"""``flame-nap``: run a NAP agent on an edge node (its local admin service on 127.0.0.1:50060 by default).

flame-nap [--config FILE] [--set services.nap.nap_id=nap-edge-a1 ...] [--log-level ...] [--version]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from flame_control.cli.common import add_config_options, add_version_option, load_from_args
from flame_control.cli.serve import serve
from flame_control.runtime.server import ServiceHost


def announce(host: ServiceHost, ports: dict[str, int]) -> None:
    """The admin address, once the agent serves."""
    nap: Any = host.settings["nap"]
    print(f"NAP agent {nap.nap_id} admin service on {host.config.listen.host}:{ports['nap']}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flame-nap`` console script."""
    parser = argparse.ArgumentParser(prog="flame-nap", description="FLAME NAP agent")
    add_version_option(parser)
    add_config_options(parser)
    args = parser.parse_args(argv)
    config, settings = load_from_args(args, ["nap"], prog="flame-nap")
    nap_settings: Any = settings["nap"]
    return serve("flame-nap", config, settings, ["nap"], announce, nap_settings.event_loop)


if __name__ == "__main__":
    sys.exit(main())
