"""The test origin over TLS (a test CA issues its certificate for the FQDN), in its own process: the far end of the
SNI tunnel tests (SFR-19). The NAP never sees these keys.

    python -m tests.support.tls_origin --cert server.pem --key server.key   # prints {"port": N}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
from pathlib import Path

from flame_control.runtime.tlsgen import write_dev_pki
from tests.support.origin import Origin
from tests.support.procs import ProcessGroup


def start_tls_origin(group: ProcessGroup, tmp: Path, fqdn: str) -> tuple[int, Path]:
    """Start a TLS origin for ``fqdn``; returns (port, CA file the client trusts)."""
    pki = write_dev_pki(tmp / "tls-origin-pki", extra_hosts=[fqdn])
    proc = group.start(
        "tls-origin",
        [
            sys.executable,
            "-m",
            "tests.support.tls_origin",
            "--cert",
            str(pki["server_cert"]),
            "--key",
            str(pki["server_key"]),
        ],
        ready=lambda: "port" in (group.workdir / "tls-origin.log").read_text(errors="replace"),
    )
    return int(json.loads(proc.output().splitlines()[0])["port"]), pki["ca"]


async def serve(cert: str, key: str) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    origin = Origin("tls")
    server = await asyncio.start_server(origin.handle, "127.0.0.1", 0, ssl=ctx)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    ns = p.parse_args(argv)
    asyncio.run(serve(ns.cert, ns.key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
