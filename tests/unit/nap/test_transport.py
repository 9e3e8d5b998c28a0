"""The ICN transport (nap_agent/transport.py) over a simulated channel that drops, duplicates, reorders and delays
frames, driven by a fake clock through the real frame codec (SFR-1 reliability): every byte arrives exactly once and
in order, FIN arrives, the sender finishes; multicast members with independent losses each get exact copies; a
receiver that does not read stops the sender at its window; a vanished receiver fails the stream."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from flame_control.icn import frame as fr
from nap_agent.transport import RecvStream, SendStream, TransportSettings

S = TransportSettings(segment=100, window=32, rto_s=0.05, ack_delay_s=0.005, receive_buffer=1 << 20)


class Channel:
    """Frames in flight with per-frame loss, duplication and random delay (reordering); time is simulated."""

    def __init__(self, rng: random.Random, loss: float, dup: float, jitter: float) -> None:
        self.rng, self.loss, self.dup, self.jitter = rng, loss, dup, jitter
        self.queue: list[tuple[float, int, bytes, Callable[[bytes], None]]] = []
        self.now = 0.0
        self.n = 0
        self.sent = 0

    def sender(self, deliver: Callable[[bytes], None]) -> Callable[[bytes], None]:
        def send(data: bytes) -> None:
            self.sent += 1
            copies = 0 if self.rng.random() < self.loss else (2 if self.rng.random() < self.dup else 1)
            for _ in range(copies):
                self.n += 1
                self.queue.append((self.now + 0.001 + self.rng.random() * self.jitter, self.n, data, deliver))

        return send

    def run(self, until: Callable[[], bool], ticks: list[Callable[[float], None]], limit: float = 120.0) -> None:
        while not until() and self.now < limit:
            self.now += 0.001
            due = sorted(q for q in self.queue if q[0] <= self.now)
            self.queue = [q for q in self.queue if q[0] > self.now]
            for _, _, data, deliver in due:
                deliver(data)
            for tick in ticks:
                tick(self.now)


def pair(ch: Channel, members: int = 1, payload: bytes = b"") -> tuple[SendStream, list[RecvStream]]:
    """A down-stream sender with ``members`` receivers (each on its own LID table), wired through the codec."""
    receivers: list[RecvStream] = []
    sender_box: list[SendStream] = []

    def to_sender(data: bytes) -> None:
        f = fr.decode(data)
        sender_box[0].on_ack(fr.decode_ack(f.payload), (f.reply_fid, f.reply_label), ch.now)

    ack_out = ch.sender(to_sender)

    def to_receivers(data: bytes) -> None:
        f = fr.decode(data)
        for i, r in enumerate(receivers):
            if f.fid & (1 << i) and f.label == i:
                r.on_segment(f.seq, f.payload, f.flags, ch.now)

    paths = {100 + i: (1 << i, i) for i in range(members)}
    sender = SendStream(
        ch.sender(to_receivers), S, fr.FrameType.HTTP_RESPONSE, b"c" * 8, b"r" * 8, 100, paths, lambda: (0, 0), 0.0,
        member_header=True,
    )  # fmt: skip
    sender_box.append(sender)
    for i in range(members):

        def send_ack(info: fr.AckInfo, i: int = i) -> None:
            ack_out(fr.encode(1, 0, fr.FrameType.ACK, fr.Flags.DOWN, b"c" * 8, b"r" * 8, 100, 0, 1 << i, i,
                              fr.encode_ack(info)))  # fmt: skip

        receivers.append(RecvStream(send_ack, 100 + i, S, 0.0, skip_header=True))
    return sender, receivers


def drain(r: RecvStream) -> bytes:
    out = bytearray()
    while len(r.buffer):
        out += r.buffer._take(len(r.buffer))
    return bytes(out)


def transfer(seed: int, loss: float, dup: float, jitter: float, size: int, members: int) -> None:
    async def go() -> None:
        rng = random.Random(seed)
        ch = Channel(rng, loss, dup, jitter)
        data = rng.randbytes(size)
        sender, receivers = pair(ch, members)
        sender.write(data[: size // 2])
        sender.write(data[size // 2 :], fin=True)
        got = [bytearray() for _ in receivers]

        def done() -> bool:
            for i, r in enumerate(receivers):
                got[i] += drain(r)
            return sender.finished.is_set() and all(r.complete for r in receivers)

        ch.run(done, [sender.tick, *[r.tick for r in receivers]])
        assert sender.failed is None
        for i, r in enumerate(receivers):
            got[i] += drain(r)
            assert bytes(got[i]) == data, (i, len(got[i]), len(data))
            assert r.buffer.at_eof()

    asyncio.run(go())


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    loss=st.floats(0, 0.3),
    dup=st.floats(0, 0.2),
    jitter=st.floats(0, 0.02),
    size=st.integers(0, 20_000),
)
def test_sfr1_unicast_exact_under_loss_duplication_reordering(
    seed: int, loss: float, dup: float, jitter: float, size: int
) -> None:
    transfer(seed, loss, dup, jitter, size, members=1)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), loss=st.floats(0, 0.2))
def test_f35_multicast_members_each_exact_with_independent_loss(seed: int, loss: float) -> None:
    transfer(seed, loss, 0.05, 0.01, 15_000, members=3)


def test_receiver_that_does_not_read_stops_the_sender_at_its_window() -> None:
    async def go() -> None:
        small = TransportSettings(segment=100, window=32, receive_buffer=1000)
        ch = Channel(random.Random(1), 0, 0, 0)
        acks: list[fr.AckInfo] = []
        box: list[SendStream] = []

        def to_sender(data: bytes) -> None:
            info = fr.decode_ack(fr.decode(data).payload)
            acks.append(info)
            box[0].on_ack(info, None, ch.now)

        receiver = RecvStream(
            lambda info: ch.sender(to_sender)(
                fr.encode(1, 0, fr.FrameType.ACK, 0, b"c" * 8, b"r" * 8, 1, 0, 0, 0, fr.encode_ack(info))
            ),
            7, small, 0.0, skip_header=False,
        )  # fmt: skip
        send = ch.sender(
            lambda d: receiver.on_segment(fr.decode(d).seq, fr.decode(d).payload, fr.decode(d).flags, ch.now)
        )
        sender = SendStream(send, small, fr.FrameType.HTTP_REQUEST, b"c" * 8, b"r" * 8, 7, {7: (1, 0)},
                            lambda: (0, 0), 0.0, member_header=False)  # fmt: skip
        box.append(sender)
        sender.write(bytes(10_000), fin=True)
        ch.run(lambda: False, [sender.tick, receiver.tick], limit=2.0)
        # held near the advertised window: the first burst (16 frames before any ACK) plus a few window probes
        assert len(receiver.buffer) <= 2000 and sender.next_seq < 100
        assert any(a.window == 0 for a in acks)
        got = drain(receiver)
        ch.run(lambda: receiver.complete, [sender.tick, receiver.tick], limit=20.0)
        while not receiver.buffer.at_eof():
            got += drain(receiver)
            ch.run(
                lambda: receiver.complete and not len(receiver.buffer), [sender.tick, receiver.tick], limit=ch.now + 5
            )
        assert got == bytes(10_000)

    asyncio.run(go())


def test_vanished_receiver_fails_the_stream_after_the_stall_timeout() -> None:
    async def go() -> None:
        quick = TransportSettings(segment=100, window=8, stall_timeout_s=2.0)
        sent: list[bytes] = []
        sender = SendStream(sent.append, quick, fr.FrameType.HTTP_RESPONSE, b"c" * 8, b"r" * 8, 1, {1: (1, 0)},
                            lambda: (0, 0), 0.0, member_header=True)  # fmt: skip
        sender.write(bytes(1000), fin=True)
        t = 0.0
        while sender.failed is None and t < 10:
            t += 0.01
            sender.tick(t)
        assert sender.failed is not None and 2.0 <= t < 3.0
        assert sender.finished.is_set()
        probes = len(sent)
        assert 8 < probes < 30  # backed-off probes, not a flood

    asyncio.run(go())
