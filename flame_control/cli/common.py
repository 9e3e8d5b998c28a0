"""Options every long-running ``flame`` command shares: config file, --set overrides, log levels."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

from flame_control.runtime.config import ConfigError, FlameConfig, load_config
from flame_control.runtime.logs import parse_levels, setup_logging
from flame_control.runtime.startup import one_line


def version() -> str:
    """The installed distribution's version (``flame --version``, ``flame-nap --version``)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("flame-control")
    except PackageNotFoundError:
        return "unknown (flame-control is not installed; running from a source tree)"


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """--version: print ``PROG VERSION`` and exit 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """--config, --set, --state-dir, --log-level."""
    parser.add_argument("--config", type=Path, help="YAML config file (see docs/operator-guide.md)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--state-dir", type=Path, help="directory for durable state (default .flame)")
    parser.add_argument(
        "--log-level", default="", metavar="SPEC", help="'info', or per component: 'info,pce=debug,runtime=warning'"
    )


def load_from_args(
    args: argparse.Namespace, keys: Iterable[str] = (), prog: str = "flame"
) -> tuple[FlameConfig, dict[str, BaseModel]]:
    """Load config + settings for ``keys`` from parsed options; on error print it on one line and exit 2."""
    sets = list(args.set)
    if getattr(args, "state_dir", None):
        sets.append(f"state_dir={args.state_dir}")
    try:
        config, settings = load_config(args.config, sets, service_keys=keys)
        levels = parse_levels(args.log_level) if args.log_level else {}
    except (ConfigError, ValueError) as exc:
        print(f"{prog}: {one_line(str(exc))}", file=sys.stderr)
        raise SystemExit(2) from exc
    default = levels.pop("", None) or config.logging.level
    setup_logging(default, {**config.logging.levels, **levels}, config.logging.json_format)
    return config, settings
