"""``flame certs init DIR``: a private CA plus server and client certificates for TLS / mTLS on localhost."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flame_control.runtime.tlsgen import write_dev_pki


def register(sub: Any) -> None:
    """Add the ``certs`` subcommand."""
    p = sub.add_parser("certs", help="make a development CA and certificates for mTLS")
    csub = p.add_subparsers(dest="certs_command", required=True)
    init = csub.add_parser("init", help="write ca.pem, server.pem/key, client.pem/key into DIR")
    init.add_argument("dir", type=Path)
    init.add_argument("--host", action="append", default=[], help="extra DNS name / IP for the server certificate")
    init.set_defaults(func=run_init)


def run_init(args: argparse.Namespace) -> int:
    """Write the PKI files and print the config snippet that uses them."""
    paths = write_dev_pki(args.dir, extra_hosts=args.host)
    print(f"wrote {', '.join(sorted(p.name for p in paths.values()))} to {args.dir}")
    print("config for mutual TLS:")
    print(f"tls:\n  enabled: true\n  cert: {paths['server_cert']}\n  key: {paths['server_key']}")
    print(f"  client_ca: {paths['ca']}\n  client_cert: {paths['client_cert']}\n  client_key: {paths['client_key']}")
    return 0
