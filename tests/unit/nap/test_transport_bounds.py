"""Issue 12 items 4 and 5 at the transport core (nap_agent/transport.py), driven by a simulated clock: one stalled
member of a coincidental-multicast group (F3.5) leaves it and the others finish at their own pace; ACKs without
progress no longer keep a stream alive forever; a receive buffer holds no more than its configured bound whatever the
sender does; duplicated out-of-order frames cost O(1) and their ACKs are rate limited (SFR-1 transport)."""

from __future__ import annotations

import asyncio
import time

from flame_control.icn import frame as fr
from nap_agent.transport import RecvStream, SendStream, StreamBuffer, TransportSettings

QUICK = TransportSettings(segment=100, window=16, rto_s=0.05, member_stall_s=1.0, progress_timeout_s=5.0,
                          receive_buffer=2000)  # fmt: skip


class Wire:
    """Down frames to receivers by member bit (FID bit i = member i), ACKs back to the sender, one tick of 1 ms."""

    def __init__(self, members: int, settings: TransportSettings = QUICK) -> None:
        self.now = 0.0
        self.queue: list[tuple[bytes, bool]] = []
        self.receivers: list[RecvStream] = []
        self.left: list[tuple[int, str]] = []
        paths = {100 + i: (1 << i, 0) for i in range(members)}
        self.sender = SendStream(
            lambda d: self.queue.append((d, True)), settings, fr.FrameType.HTTP_RESPONSE, b"c" * 8, b"r" * 8, 100,
            paths, lambda: (0, 0), 0.0, member_header=True,
        )  # fmt: skip
        self.sender.on_member_left = lambda m, why: self.left.append((m, why))
        for i in range(members):

            def ack(info: fr.AckInfo) -> None:
                self.queue.append((fr.encode_ack(info), False))

            self.receivers.append(RecvStream(ack, 100 + i, settings, 0.0, skip_header=True))

    def step(self) -> None:
        self.now += 0.001
        queue, self.queue = self.queue, []
        for data, down in queue:
            if down:
                f = fr.decode(data)
                for i, r in enumerate(self.receivers):
                    if f.fid & (1 << i):
                        r.on_segment(f.seq, f.payload, f.flags, self.now)
            else:
                self.sender.on_ack(fr.decode_ack(data), None, self.now)
        self.sender.tick(self.now)
        for r in self.receivers:
            r.tick(self.now)


def read_all(b: StreamBuffer) -> int:
    n = len(b)
    if n:
        b._take(n)
    return n


def test_f35_a_stalled_member_leaves_the_group_and_the_others_finish() -> None:
    """Before: the window was the minimum over members, so a member that stopped reading froze everyone for good."""

    async def go() -> None:
        w = Wire(3)
        size = 200_000
        w.sender.write(bytes(size), fin=True)
        got = [0, 0, 0]
        while not w.sender.finished.is_set() and w.now < 30:
            w.step()
            got[0] += read_all(w.receivers[0].buffer)
            got[1] += read_all(w.receivers[1].buffer)  # member 2 never reads
        assert w.sender.failed is None
        assert got[0] == size and got[1] == size
        assert [m for m, _ in w.left] == [102]
        assert w.now < 10  # the stall bound (1 s) plus the transfer, not the 15 s stall timeout

    asyncio.run(go())


def test_f35_members_that_all_stall_keep_back_pressure_and_nobody_is_dropped() -> None:
    async def go() -> None:
        w = Wire(2)
        w.sender.write(bytes(100_000), fin=True)
        for _ in range(2500):  # 2.5 s: nobody reads, nobody is dropped (a slow group is not a stalled member)
            w.step()
        assert not w.left and w.sender.failed is None

    asyncio.run(go())


def test_sfr1_acks_without_progress_fail_the_stream_after_the_progress_bound() -> None:
    """Before: a receiver that kept acknowledging with a closed window kept a stream (and its buffers) forever."""

    async def go() -> None:
        w = Wire(1)
        w.sender.write(bytes(100_000), fin=True)
        while w.sender.failed is None and w.now < 30:
            w.step()  # the receiver never reads, but its ACKs (window 0 probes answered) keep coming
        assert w.sender.failed is not None and "progress" in w.sender.failed
        assert 5.0 <= w.now < 8.0

    asyncio.run(go())


def test_sfr1_receive_buffer_holds_at_most_its_bound_whatever_the_sender_sends() -> None:
    """Before: in-order frames beyond the advertised window were appended to the buffer without limit."""

    async def go() -> None:
        settings = TransportSettings(segment=100, window=16, receive_buffer=2000)
        r = RecvStream(lambda info: None, 1, settings, 0.0, skip_header=False)
        for seq in range(500):  # a sender ignoring the window: 50 kB at a receiver that reads nothing
            r.on_segment(seq, b"x" * 100, fr.Flags.NONE, 0.0)
        assert len(r.buffer) <= settings.receive_buffer
        for seq in range(1000, 5000):  # and far ahead, out of order
            r.on_segment(seq, b"x" * 100, fr.Flags.NONE, 0.0)
        assert len(r.buffer) + r.held_out_of_order() <= settings.receive_buffer

    asyncio.run(go())


def test_sfr1_fanned_out_local_members_are_bounded_and_a_stalled_one_is_detached() -> None:
    """Before: a second member at the same client NAP that did not read buffered the whole shared response."""

    async def go() -> None:
        settings = TransportSettings(segment=100, window=16, receive_buffer=2000, member_stall_s=1.0)
        acks: list[fr.AckInfo] = []
        slow = StreamBuffer()
        r = RecvStream(acks.append, 1, settings, 0.0, skip_header=False, extra_buffers=[slow])
        now, seq, fast_got = 0.0, 0, 0
        while now < 5:
            now += 0.001
            window = acks[-1].window if acks else 16
            if seq < r.expected + min(window, 16):
                r.on_segment(seq, b"x" * 100, fr.Flags.NONE, now)
                seq += 1
            fast_got += read_all(r.buffer)
            assert len(slow) <= settings.receive_buffer
            r.tick(now)
        assert slow.error is not None  # detached: its user's connection is closed
        assert fast_got > 100_000  # the reading member went on

    asyncio.run(go())


def test_sfr1_duplicated_out_of_order_frames_cost_o1_and_their_acks_are_rate_limited() -> None:
    """Before: every duplicate rebuilt the NACK list over the whole window (~140x a normal frame) and sent an ACK."""

    async def go() -> None:
        settings = TransportSettings(segment=100, window=4096, receive_buffer=1 << 30)
        acks: list[fr.AckInfo] = []
        r = RecvStream(acks.append, 1, settings, 0.0, skip_header=False)
        for seq in range(1, 4001):  # sequence 0 lost: 4,000 frames held out of order
            r.on_segment(seq, b"x", fr.Flags.NONE, 0.0)
        assert r.missing() == (0,)
        before = len(acks)
        n = 20_000
        t0 = time.perf_counter()
        for i in range(n):
            r.on_segment(4000, b"x", fr.Flags.NONE, 1.0 + i * 1e-6)  # 20,000 duplicates within 20 ms
        dup_cost = time.perf_counter() - t0
        assert len(acks) - before <= 10
        fresh = RecvStream(lambda info: None, 1, settings, 0.0, skip_header=False)
        t0 = time.perf_counter()
        for seq in range(n):
            fresh.on_segment(seq, b"x", fr.Flags.NONE, 0.0)
        normal_cost = time.perf_counter() - t0
        assert dup_cost < 10 * normal_cost, (dup_cost, normal_cost)

    asyncio.run(go())
