"""A forged-frame flooder for the emulated fabric (issue 12 item 5): one local process that attaches as a NAP (with the
NAP's fabric secret when given: a compromised NAP, the worst case; without it the fabric must drop everything) and sends
forged frames at a server NAP as fast as it can for a while.

    python -m tests.support.flood --fabric 127.0.0.1:P --nap nap-edge-b2 [--secret HEX] --fid HEX --label 0 \
        --avoid HEX --fqdn vod.video.flame.example --seconds 5

Mix (from a pool of pre-built frames, new session ids throughout): one-frame requests whose head never completes (they
would hold a server exchange for the request timeout), complete GETs with forged reply paths (origin work whose answer
goes nowhere), and duplicated out-of-order frames of a few sessions. Prints {"sent": N, "attached": bool} as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import random
import socket
import sys
import threading
import time
from dataclasses import dataclass

from flame_control.icn import cid as cidlib
from flame_control.icn import frame as fr
from pce.switch.emulated import attach_message


def forged_frames(fid: int, label: int, avoid: int, fqdn: str, count: int, rng: random.Random) -> list[bytes]:
    """``count`` forged up frames to ``fid`` whose reply FIDs never contain ``avoid`` (the target's iLID)."""
    cid = cidlib.http_cid(fqdn)
    mask = ((1 << 256) - 1) & ~avoid
    frames = []
    for i in range(count):
        session = rng.getrandbits(64) or 1
        reply = rng.getrandbits(256) & mask
        kind = i % 10
        if kind < 6:  # head that never completes
            payload, flags, seq = b"GET /bytes/100 HTTP/1.1\r\nHost: " + fqdn.encode(), fr.Flags.NONE, 0
        elif kind < 9:  # complete request, answer to nowhere
            payload, flags, seq = f"GET /bytes/100 HTTP/1.1\r\nHost: {fqdn}\r\n\r\n".encode(), fr.Flags.FIN, 0
        else:  # out of order (sent many times: duplicates)
            payload, flags, seq = b"x" * 512, fr.Flags.NONE, 7
            session = 1000 + i % 16
        rcid = cidlib.response_cid(fqdn, "GET", f"/f{i}")
        kind_ = fr.FrameType.HTTP_REQUEST
        frames.append(fr.encode(fid, label, kind_, flags, cid, rcid, session, seq, reply, 0, payload))
    return frames


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--fabric", required=True)
    p.add_argument("--nap", required=True)
    p.add_argument("--secret", default="")
    p.add_argument("--fid", required=True)
    p.add_argument("--label", type=int, default=0)
    p.add_argument("--avoid", default="0")
    p.add_argument("--fqdn", required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--pool", type=int, default=50_000)
    a = p.parse_args()
    host, _, port = a.fabric.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.connect((host, int(port)))
    secret = bytes.fromhex(a.secret) if a.secret else b""
    sock.send(attach_message(a.nap, secret, sock.getsockname()))
    sock.settimeout(2.0)
    try:
        attached = sock.recv(200).startswith(b"ATTACHED")
    except OSError:
        attached = False
    sock.setblocking(False)
    frames = forged_frames(int(a.fid, 16), a.label, int(a.avoid, 16), a.fqdn, a.pool, random.Random(5))
    sent = 0
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        for f in frames[sent % len(frames) : sent % len(frames) + 256]:
            try:
                sock.send(f)
                sent += 1
            except BlockingIOError:
                time.sleep(0.0005)
            except OSError:
                pass
    print(json.dumps({"sent": sent, "attached": attached}), flush=True)


@dataclass
class FloodResult:
    """Legitimate requests during a flood, and what the flooder sent."""

    ok: int
    total: int
    sent: int
    attached: bool
    #: Median seconds of the users' successful requests.
    median_s: float = 0.0

    @property
    def success_ratio(self) -> float:
        return self.ok / self.total if self.total else 0.0


def legit_users(port: int, fqdn: str, size: int, until: float, users: int) -> tuple[int, int, float]:
    """``users`` threads fetching ``size`` bytes one request after another until ``until``: (ok, total, median
    seconds of the successful ones)."""
    from tests.support.origin import body

    expected = body(size)
    counts = [0, 0]
    durations: list[float] = []
    lock = threading.Lock()

    def user(i: int) -> None:
        n = 0
        while time.monotonic() < until:
            n += 1
            good = False
            t0 = time.monotonic()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            try:
                c.request("GET", f"/bytes/{size}?u={i}&n={n}", headers={"Host": fqdn})
                r = c.getresponse()
                good = r.status == 200 and r.read() == expected
            except (OSError, http.client.HTTPException):
                pass
            finally:
                c.close()
            with lock:
                counts[0] += good
                counts[1] += 1
                if good:
                    durations.append(time.monotonic() - t0)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    durations.sort()
    return counts[0], counts[1], durations[len(durations) // 2] if durations else 0.0


async def flood_while_fetching(
    fabric_port: int,
    as_nap: str,
    secret: bytes,
    target: tuple[int, int],
    avoid: int,
    client_http_port: int,
    fqdn: str,
    seconds: float = 6.0,
    users: int = 4,
    size: int = 2000,
) -> FloodResult:
    """Run the flooder process (attached as ``as_nap`` with ``secret``; b"" = without it) at ``target`` (FID, LID
    table) while ``users`` real users fetch through the NAP at ``client_http_port``."""
    argv = [sys.executable, "-m", "tests.support.flood", "--fabric", f"127.0.0.1:{fabric_port}", "--nap", as_nap,
            "--fid", f"{target[0]:x}", "--label", str(target[1]), "--avoid", f"{avoid:x}", "--fqdn", fqdn,
            "--seconds", str(seconds)]  # fmt: skip
    if secret:
        argv += ["--secret", secret.hex()]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    await asyncio.sleep(1.0)  # the flooder builds its frames and starts
    until = time.monotonic() + seconds - 1.5
    ok, total, median_s = await asyncio.to_thread(legit_users, client_http_port, fqdn, size, until, users)
    out, _ = await proc.communicate()
    report = json.loads(out.decode().strip().splitlines()[-1])
    return FloodResult(ok, total, int(report["sent"]), bool(report["attached"]), median_s)


if __name__ == "__main__":
    main()
