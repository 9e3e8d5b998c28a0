"""``flame demo``: the roadmap's integration scenario end to end (see docs/demo.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flame_control.demo import scenario as sc
from flame_control.runtime.startup import make_private, private_umask

if TYPE_CHECKING:
    from flame_control.demo.docker import DemoVim


def register(sub: Any) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="run the integration scenario (Figure 25 topology, vod service, a KPI-driven edge surrogate) end to end",
        description="Bring up NAP agents and the control plane, deploy the vod media service, raise demand at edge A "
        "until its KPI connects the edge surrogate, lower it again, measure the Table 24 KPIs, clean up.",
    )
    p.add_argument("--fabric", choices=("emulated", "ovs"), default="emulated", help="data plane (ovs needs root)")
    p.add_argument(
        "--vim",
        choices=("auto", "docker", "process"),
        default="auto",
        help="where endpoints run: docker (root: a private dockerd, busybox media image), process, or auto (with "
        "--fabric ovs: docker when root with dockerd, busybox-static and the docker SDK, else process; emulated "
        "fabric: process)",
    )
    p.add_argument("--services", type=int, default=5, metavar="N", help="media services side by side (default 5)")
    p.add_argument("--quick", action="store_true", help="shorter phases (about 40 s in all)")
    p.add_argument("--duration", type=float, metavar="X", help="stretch (X > 1) or shrink the hold phases by X")
    p.add_argument("--follow", action="store_true", help="keep the players running after the scenario until Ctrl-C")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the machine-readable summary here")
    p.add_argument("--report", type=Path, metavar="FILE", help="write the Table 24 KPI report (Markdown) here")
    p.add_argument("--state-dir", type=Path, help="keep state and logs here (default: a temp dir, removed on success)")
    p.add_argument("--kill-nap", default="", metavar="NAP", help="SIGKILL this NAP agent during the run")
    p.add_argument("--at", dest="kill_at", type=float, default=10.0, metavar="S", help="when (s after traffic starts)")
    p.add_argument(
        "--no-link-latency", action="store_true", help="emulated fabric at loopback speed (ignore link latencies)"
    )
    p.add_argument("--screenshot", type=Path, metavar="PNG", help="screenshot the CLMC dashboard during the surge")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 when every check passed."""
    from flame_control.demo.fabrics import Backend, EmulatedBackend
    from flame_control.demo.runner import Options, run_demo
    from flame_control.demo.view import make_view

    if args.kill_nap and args.kill_nap not in sc.ALL_NAPS:
        print(f"flame demo: --kill-nap must be one of {', '.join(sc.ALL_NAPS)}", file=sys.stderr)
        return 2
    if args.services < 1:
        print("flame demo: --services must be at least 1", file=sys.stderr)
        return 2
    vim = _vim(args)
    if vim is None:
        return 2
    backend: Backend
    if args.fabric == "ovs":
        from flame_control.demo.ovs import OvsBackend, unavailable

        reason = unavailable()
        if reason:
            print(f"flame demo --fabric ovs: {reason}", file=sys.stderr)
            return 2
        backend = OvsBackend()
    else:
        backend = EmulatedBackend(link_latency=not args.no_link_latency)
    opts = Options(
        fabric=args.fabric,
        services=args.services,
        quick=args.quick,
        duration=args.duration,
        follow=args.follow,
        state_dir=args.state_dir,
        kill_nap=args.kill_nap,
        kill_at=args.kill_at,
        link_latency=not args.no_link_latency,
        screenshot=args.screenshot,
        vim=vim,
    )
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    private_umask()  # logs, stores and keys of the demo and of every child it starts: 0600 files, 0700 directories
    if args.state_dir is not None:
        make_private(args.state_dir)
    summary = asyncio.run(run_demo(opts, backend, make_view()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if args.report:
        from flame_control.demo.report import render

        argv = " ".join(sys.argv[1:]) if sys.argv[1:2] == ["demo"] else "demo"
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(render(summary, f"flame {argv}"))
    v = summary.get("vim", {})
    print(f"  VIM: {v.get('kind')}" + (f" ({v['note']})" if v.get("note") else ""))
    if summary.get("interrupted"):
        return 130
    return 0 if summary["ok"] else 1


def _vim(args: argparse.Namespace) -> DemoVim | None:
    """The VIM ``--vim`` asks for (auto: on OVS docker when it can run here, else process; on the emulated fabric
    process); None after an error message."""
    from flame_control.demo.docker import DockerVimSetup, ProcessVimSetup, unavailable

    if args.vim == "process":
        return ProcessVimSetup("--vim process")
    if args.vim == "auto" and args.fabric != "ovs":
        return ProcessVimSetup("auto: the emulated fabric runs the process VIM (--vim docker for containers)")
    reason = unavailable()
    if args.vim == "docker":
        if reason:
            print(f"flame demo --vim docker: {reason}", file=sys.stderr)
            return None
        return DockerVimSetup(sc.service_names(max(1, args.services)), "--vim docker: private dockerd")
    if reason:
        return ProcessVimSetup(f"auto: docker VIM unavailable ({reason})")
    return DockerVimSetup(sc.service_names(max(1, args.services)), "auto: root, dockerd, busybox-static, docker SDK")
