"""``flame token``: make bearer tokens for stakeholder roles without ever storing the token itself."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from flame_control.runtime.auth import hash_token, new_token
from flame_control.runtime.service import Role


def register(sub: Any) -> None:
    """Add the ``token`` subcommand."""
    p = sub.add_parser("token", help="create or hash bearer tokens")
    tsub = p.add_subparsers(dest="token_command", required=True)
    new = tsub.add_parser("new", help="print a new token and the config entry holding only its hash")
    new.add_argument("role", choices=[r.value for r in Role])
    new.add_argument("subject")
    new.add_argument("--media-service", action="append", default=[], help="flame_sfc this subject owns")
    new.add_argument("--nap-id", default="", help="component tokens: the one NAP this token may act as (a NAP agent)")
    new.set_defaults(func=run_new)
    h = tsub.add_parser("hash", help="print the SHA-256 of a token read from stdin")
    h.set_defaults(func=run_hash)


def run_new(args: argparse.Namespace) -> int:
    """Print a token (give it to the subject) and the auth.tokens entry (put it in the config)."""
    if args.nap_id and args.role != Role.COMPONENT.value:
        print("--nap-id scopes component tokens only", file=sys.stderr)
        return 2
    token = new_token()
    entry: dict[str, object] = {"subject": args.subject, "role": args.role, "sha256": hash_token(token)}
    if args.media_service:
        entry["media_services"] = args.media_service
    if args.nap_id:
        entry["nap_id"] = args.nap_id
    print(f"token (hand it to {args.subject}; it is not stored anywhere): {token}")
    print("config entry for auth.tokens:")
    print(yaml.safe_dump([entry], sort_keys=False).rstrip())
    return 0


def run_hash(args: argparse.Namespace) -> int:
    """Hash a token read from stdin (so it does not land in shell history)."""
    print(hash_token(sys.stdin.readline().strip()))
    return 0
