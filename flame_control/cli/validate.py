"""``flame validate TEMPLATE [--catalogue FILE]``: check a media-service template without deploying anything (ORCH-2,
ORCH-7); with a catalogue, placement and capacity are checked too."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the ``validate`` subcommand."""
    p = sub.add_parser("validate", help="validate a TOSCA media-service template (dry run)")
    p.add_argument("template", type=Path)
    p.add_argument("--catalogue", type=Path, default=None, help="infrastructure catalogue (TOSCA) to place against")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Delegate to the orchestrator's validator; exit 0 when valid, 1 with problems listed, 2 on usage errors."""
    try:
        orchestrator_cli = importlib.import_module("flame_control.orchestrator.cli")
    except ModuleNotFoundError:
        print("flame validate: the orchestrator's validator is not built yet")
        return 2
    code: int = orchestrator_cli.validate_command(args.template, getattr(args, "catalogue", None))
    return code
