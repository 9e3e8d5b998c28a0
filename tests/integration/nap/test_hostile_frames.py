"""Hostile frames at NAP agents on the emulated fabric (issue 4 bad input): a stranger attached as a NAP floods every
NAP (all-ones FID) with garbage, truncated frames, frames with lying length fields, unknown types, ACKs/RESETs and
response frames for sessions nobody opened, and oversized member lists — while a real download is in flight. Every
frame is counted and dropped, the download stays byte-exact, and the NAPs keep serving."""

from __future__ import annotations

import asyncio
import http.client
import random
import socket
from pathlib import Path

from flame_control.icn import frame as fr
from nap_agent.agent import LocalServiceConfig
from pce.switch.emulated import attach_message
from tests.support.nap_env import VOD, emulated_edge, start_origin
from tests.support.origin import body
from tests.support.procs import process_group

ALL = (1 << 256) - 1


def hostile_frames(rng: random.Random) -> list[bytes]:
    valid = fr.encode(ALL, 0, fr.FrameType.HTTP_RESPONSE, 0, b"\1" * 8, b"\2" * 8, 77, 0, 0, 0, b"x" * 100)
    frames = [valid[:n] for n in range(0, len(valid), 7)]  # truncated at many lengths
    frames += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300))) for _ in range(200)]  # noise
    header = bytearray(valid)
    header[fr.ETH_LEN + fr.IPV6_LEN + 1] = 99  # unknown type
    frames.append(bytes(header))
    lying = bytearray(valid)
    lying[fr.ETH_LEN + 4 : fr.ETH_LEN + 6] = (60000).to_bytes(2, "big")  # IPv6 payload length lies
    frames.append(bytes(lying))
    for t in (fr.FrameType.ACK, fr.FrameType.RESET, fr.FrameType.HTTP_RESPONSE, fr.FrameType.HTTP_REQUEST):
        for flags in (0, fr.Flags.DOWN | fr.Flags.FIN):
            payload = fr.encode_ack(fr.AckInfo(rng.getrandbits(64), 5, 10, (1, 2, 3)))
            frames.append(fr.encode(ALL, 0, t, flags, b"\1" * 8, b"\2" * 8, rng.getrandbits(64), 0, ALL, 0, payload))
    members = (60000).to_bytes(2, "big") + b"\0" * 64  # member list claiming 60,000 entries
    frames.append(fr.encode(ALL, 0, fr.FrameType.HTTP_RESPONSE, 0, b"\1" * 8, b"\2" * 8, 5, 0, 0, 0, members))
    frames.append(fr.encode(ALL, 0, fr.FrameType.ACK, 0, b"\1" * 8, b"\2" * 8, 5, 0, 0, 0, b"\xff" * 20))
    return frames


def test_hostile_frames_are_counted_and_dropped_while_a_download_stays_exact(tmp_path: Path) -> None:
    async def scenario() -> None:
        with process_group(tmp_path) as group:
            port = start_origin(group, "dc")
            naps = {"nap-dc": [LocalServiceConfig(fqdn=VOD, endpoint=f"127.0.0.1:{port}")], "nap-edge-a1": []}
            async with emulated_edge(tmp_path, naps) as env:
                await env.route_to("nap-edge-a1", VOD)
                stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                stranger.setblocking(False)
                stranger.connect(("127.0.0.1", env.pce.driver.port))
                # a compromised NAP (it holds nap-edge-b2's fabric secret): the worst a local attacker can be now
                secret = env.pce.driver.secret_for("nap-edge-b2")
                stranger.send(attach_message("nap-edge-b2", secret, stranger.getsockname()))
                loop = asyncio.get_running_loop()
                assert (await loop.sock_recv(stranger, 100)).startswith(b"ATTACHED")

                def download() -> tuple[int, bytes]:
                    c = http.client.HTTPConnection("127.0.0.1", env.http("nap-edge-a1"), timeout=60)
                    c.request("GET", f"/bytes/{8 << 20}", headers={"Host": VOD})
                    r = c.getresponse()
                    return r.status, r.read()

                job = asyncio.create_task(asyncio.to_thread(download))
                rng = random.Random(7)
                frames = hostile_frames(rng)
                for _ in range(3):
                    for f in frames:
                        stranger.send(f)
                    await asyncio.sleep(0.05)
                status, data = await job
                assert status == 200 and data == body(8 << 20)
                for nap in ("nap-dc", "nap-edge-a1"):
                    c = env.agents[nap].dp.counters
                    # each kind of bad frame is counted as what it is, not only in a sum
                    assert c.frames_unknown_session > 0, (nap, c)  # ACK/RESET/responses for sessions nobody opened
                    assert c.frames_garbage > 0, (nap, c)  # noise, truncated, lying lengths, unknown types
                # and they still serve
                status, data = await asyncio.to_thread(download)
                assert status == 200 and data == body(8 << 20)
                stranger.close()

    asyncio.run(scenario())
