"""The ``flame`` command: run the control plane and talk to it.

flame --version
flame up [--config FILE] [--set K=V ...] [--services pce,clmc] [--log-level pce=debug,...]
flame demo [--quick] [--services N] [--fabric ovs] [--json FILE] [--report FILE] [--follow]
flame status [--config FILE] [--timeout S]
flame bench AREA [--quick] [--json FILE]
flame validate TEMPLATE
flame token new ROLE SUBJECT | flame token hash TOKEN
flame certs init DIR
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``flame`` (subcommands register themselves here)."""
    from flame_control.cli import bench, certs, demo, status, token, up, validate
    from flame_control.cli.common import add_version_option

    parser = argparse.ArgumentParser(prog="flame", description="FLAME control plane")
    add_version_option(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (up, demo, status, bench, validate, token, certs):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flame`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
