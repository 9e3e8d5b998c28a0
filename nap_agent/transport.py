"""Reliable byte streams over ICN frames (ARCHITECTURE section 5): fragmentation to the fabric MTU, sequence numbers,
cumulative ACKs with NACK lists, retransmission on NACK and on timeout, a sliding window with the receiver's advertised
window (flow control), FIN and RESET, and multicast senders (one stream, several members: coincidental multicast).

No sockets and no clock of its own: frames leave through an ``out`` callable and time comes from ``tick(now)``, so the
whole state machine is driven deterministically in unit tests (loss, duplication, reordering).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from flame_control.icn.frame import AckInfo, Flags, FrameType, decode_members, encode, encode_members

#: (fid, lid table) of a path.
Path = tuple[int, int]


@dataclass
class TransportSettings:
    """Tunables (from the NAP agent's config)."""

    #: Payload bytes per frame (from the fabric MTU).
    segment: int = 1392
    #: Frames in flight per stream (upper bound; the receiver's window can lower it).
    window: int = 256
    #: First retransmission timeout and its ceiling (doubles without progress).
    rto_s: float = 0.05
    rto_max_s: float = 1.0
    #: A stream that makes no progress for this long is reset.
    stall_timeout_s: float = 15.0
    #: A receiver acknowledges at least every this many frames (and at once on a gap or FIN).
    ack_every: int = 16
    #: ... and at the latest after this delay.
    ack_delay_s: float = 0.005
    #: Receive buffer (bytes not yet consumed) that the advertised window protects.
    receive_buffer: int = 8 << 20
    #: Congestion window a stream starts with (frames).
    initial_cwnd: int = 16


@dataclass
class _Member:
    path: Path
    cumulative: int = 0
    done: bool = False
    last_progress: float = 0.0
    rto: float = 0.05
    last_probe: float = 0.0
    window: int = 1 << 30
    last_heard: float = 0.0
    retransmitted: dict[int, float] = field(default_factory=dict)


class SendStream:
    """One outgoing stream to one member (unicast) or several (multicast: one frame per LID table reaches them all)."""

    def __init__(
        self,
        out: Callable[[bytes], None],
        settings: TransportSettings,
        ftype: FrameType,
        cid: bytes,
        rcid: bytes,
        session: int,
        members: dict[int, Path],
        reply: Callable[[], Path],
        now: float,
        member_header: bool,
        src_mac: bytes = b"\x00" * 6,
    ) -> None:
        self.out, self.s, self.type, self.cid, self.rcid, self.session = out, settings, ftype, cid, rcid, session
        self.reply = reply
        self.src_mac = src_mac
        self.members = {
            m: _Member(p, last_progress=now, last_heard=now, rto=settings.rto_s) for m, p in members.items()
        }
        self._header = encode_members(list(members)) if member_header else b""
        self.segments: deque[bytes] = deque()
        self.first = 0  # sequence number of segments[0]
        self.next_seq = 0
        self.fin = False
        self.close_flag = False
        self.pending = bytearray()
        self.failed: str | None = None
        self.retransmissions = 0
        self.bytes_sent = 0
        self.finished = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        # AIMD congestion window (frames): slow start to ssthresh, then +1 per window; halved at most once per RTO
        # when the receiver reports a gap, back to the initial window after a timeout
        self.cwnd = float(min(settings.initial_cwnd, settings.window))
        self.ssthresh = float(settings.window)
        self._last_cut = -1.0

    # -- writer side --------------------------------------------------------------------------------------------------
    def write(self, data: bytes, fin: bool = False, close: bool = False, flush: bool = False) -> None:
        """Queue bytes, cutting full segments; ``flush`` also sends a partial one (tunnels), ``fin`` ends the stream
        after them (``close``: the receiver closes its client connection afterwards)."""
        if self.fin:
            raise RuntimeError("stream already finished")
        pending = self.pending
        pending += data
        room = self._seg_room()
        cut = 0
        while len(pending) - cut >= room:
            self.segments.append(bytes(pending[cut : cut + room]))
            cut += room
            self.pump()  # the first frames leave while the rest of a large write is still being cut
            room = self._seg_room()
        if cut:
            del pending[:cut]
        if fin:
            if self.pending or self.next_seq > self._last():
                self.segments.append(bytes(self.pending))
                self.pending.clear()
            self.fin = True
            self.close_flag = close
        elif flush and self.pending:
            self.segments.append(bytes(self.pending))
            self.pending.clear()
        self.pump()

    def _seg_room(self) -> int:
        seq = self.first + len(self.segments)
        return self.s.segment - (len(self._header) if seq == 0 else 0)

    async def drain(self) -> None:
        """Wait until the unacknowledged backlog is below twice the window (back-pressure for the producer)."""
        while self.failed is None and self._backlog() > 2 * self.s.window:
            self._room.clear()
            await self._room.wait()
        if self.failed is not None:
            raise ConnectionResetError(self.failed)

    def _backlog(self) -> int:
        return self.first + len(self.segments) - self._base()

    # -- frames -------------------------------------------------------------------------------------------------------
    def _last(self) -> int:
        return self.first + len(self.segments) - 1

    def _frame(self, seq: int, fid: int, label: int) -> bytes:
        payload = self.segments[seq - self.first]
        if seq == 0 and self._header:
            payload = self._header + payload
        flags = Flags.NONE
        if self.fin and seq == self._last():
            flags |= Flags.FIN
            if self.close_flag:
                flags |= Flags.CLOSE
        rfid, rlabel = self.reply()
        return encode(
            fid, label, self.type, flags, self.cid, self.rcid, self.session, seq, rfid, rlabel, payload, self.src_mac
        )

    def _send(self, seq: int, members: list[_Member]) -> None:
        by_label: dict[int, int] = {}
        for m in members:
            by_label[m.path[1]] = by_label.get(m.path[1], 0) | m.path[0]
        for label, fid in by_label.items():
            frame = self._frame(seq, fid, label)
            self.bytes_sent += len(frame)
            self.out(frame)

    def _base(self) -> int:
        live = [m.cumulative for m in self.members.values() if not m.done]
        return min(live) if live else self.first + len(self.segments)

    def pump(self) -> None:
        """Send new segments the window allows."""
        if self.failed is not None:
            return
        live = [m for m in self.members.values() if not m.done]
        if not live:
            return
        limit = min(self.s.window, max(int(self.cwnd), 1), min(m.window for m in live))
        end = self.first + len(self.segments)
        while self.next_seq < end and self.next_seq < self._base() + limit:  # window 0: only tick() probes
            self._send(self.next_seq, live)
            self.next_seq += 1

    def on_ack(self, info: AckInfo, reply: Path | None, now: float) -> None:
        """An ACK from one member (``reply``: the path back to it, refreshed from the ACK's reply FID)."""
        m = self.members.get(info.member)
        if m is None or m.done or self.failed is not None:
            return
        if reply is not None and reply[0]:
            m.path = reply
        m.last_heard = now
        if info.cumulative > m.cumulative:
            acked = min(info.cumulative, self.next_seq) - m.cumulative
            self.cwnd = min(
                float(self.s.window), self.cwnd + (acked if self.cwnd < self.ssthresh else acked / self.cwnd)
            )
            m.cumulative = min(info.cumulative, self.next_seq)
            m.last_progress = now
            m.rto = self.s.rto_s
            for seq in [s for s in m.retransmitted if s < m.cumulative]:
                del m.retransmitted[seq]
        m.window = info.window
        if info.missing and now - self._last_cut >= self.s.rto_s:
            self._last_cut = now
            self.ssthresh = max(self.cwnd / 2, 4.0)
            self.cwnd = self.ssthresh
        for seq in info.missing:
            if m.cumulative <= seq < self.next_seq and now - m.retransmitted.get(seq, -1.0) >= self.s.rto_s:
                # loss on the shared part of a multicast tree hits every member: one retransmission to all members
                # still missing it (a member that had it out of order drops a duplicate)
                targets = [
                    x
                    for x in self.members.values()
                    if not x.done and x.cumulative <= seq and now - x.retransmitted.get(seq, -1.0) >= self.s.rto_s
                ]
                for x in targets:
                    x.retransmitted[seq] = now
                self.retransmissions += 1
                self._send(seq, targets)
        if self.fin and m.cumulative > self._last():
            m.done = True
        self._release()
        self.pump()

    def _release(self) -> None:
        base = self._base()
        while self.first < base and self.segments and self.first < self.next_seq:
            self.segments.popleft()
            self.first += 1
        if self._backlog() <= 2 * self.s.window:
            self._room.set()
        if all(m.done for m in self.members.values()):
            self.finished.set()

    def tick(self, now: float) -> None:
        """Timers: probe members that made no progress for their RTO (or closed their window); fail the stream when a
        member has not been heard from for the stall timeout."""
        if self.failed is not None or self.finished.is_set():
            return
        end = self.first + len(self.segments)
        for m in self.members.values():
            waiting = m.cumulative < self.next_seq
            if m.done or not (waiting or (m.window == 0 and self.next_seq < end)):
                continue
            if now - m.last_heard > self.s.stall_timeout_s:
                self.fail("no answer from the receiver")
                return
            if now - max(m.last_progress, m.last_probe) >= m.rto:
                m.last_probe = now
                self.ssthresh = max(self.cwnd / 2, 4.0)
                self.cwnd = float(min(self.s.initial_cwnd, self.s.window))
                m.rto = min(m.rto * 2, self.s.rto_max_s)
                self.retransmissions += 1
                # tail-loss probe: resend the newest segment, so a receiver that lost a burst sees the gap and
                # NACKs all of it at once (the oldest one when that is all that is missing)
                self._send(max(m.cumulative, self.next_seq - 1) if waiting else self.next_seq, [m])

    def fail(self, reason: str) -> None:
        """Give up (reported to the producer through :meth:`drain` and :attr:`failed`)."""
        if self.failed is None:
            self.failed = reason
            self._room.set()
            self.finished.set()

    def drop_member(self, member: int) -> None:
        """A member reset its side: stop sending to it."""
        m = self.members.get(member)
        if m is not None:
            m.done = True
            self._release()
            self.pump()


class StreamBuffer:
    """Received bytes for a consumer, with the asyncio.StreamReader methods the HTTP code uses."""

    def __init__(self, on_consumed: Callable[[], None] = lambda: None) -> None:
        self._buf = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._event = asyncio.Event()
        self.on_consumed = on_consumed

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data
        self._event.set()

    def feed_eof(self) -> None:
        self._eof = True
        self._event.set()

    def set_error(self, exc: BaseException) -> None:
        self._error = exc
        self._event.set()

    def at_eof(self) -> bool:
        return self._eof and not self._buf

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._event.clear()
        await self._event.wait()
        if self._error is not None:
            raise self._error

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self.on_consumed()
        return data

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all buffered when -1); b"" at EOF."""
        while not self._buf and not self._eof:
            await self._wait()
        return self._take(len(self._buf) if n < 0 else n)

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._eof:
                raise asyncio.IncompleteReadError(bytes(self._buf), n)
            await self._wait()
        return self._take(n)

    async def readuntil(self, separator: bytes = b"\n", limit: int = 1 << 16) -> bytes:
        start = 0
        while True:
            i = self._buf.find(separator, start)
            if i >= 0:
                if i + len(separator) > limit:
                    raise asyncio.LimitOverrunError("separator beyond the limit", i)
                return self._take(i + len(separator))
            if len(self._buf) > limit:
                raise asyncio.LimitOverrunError("separator not found within the limit", len(self._buf))
            if self._eof:
                raise asyncio.IncompleteReadError(bytes(self._buf), None)
            start = max(0, len(self._buf) - len(separator) + 1)
            await self._wait()

    async def readline(self) -> bytes:
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial


class RecvStream:
    """One incoming stream: reorders, deduplicates, acknowledges (cumulative + NACK list) and feeds a buffer."""

    def __init__(
        self,
        send_ack: Callable[[AckInfo], None],
        member: int,
        settings: TransportSettings,
        now: float,
        skip_header: bool,
        buffer: StreamBuffer | None = None,
        fin_ack: str = "now",
        defer: Callable[[Callable[[], None]], object] = lambda f: f(),
    ) -> None:
        self.send_ack, self.member, self.s = send_ack, member, settings
        #: When the last frame arrives: "now" (acknowledge at once, through ``defer`` so the consumer runs first) or
        #: "delayed" (after ack_delay: a server NAP whose response starts sooner acknowledges implicitly).
        self.fin_ack = fin_ack
        self.defer = defer
        self.expected = 0
        self.out_of_order: dict[int, tuple[bytes, Flags]] = {}
        self.fin_seq: int | None = None
        self.close_flag = False
        self.unacked = 0
        self.last_ack = now
        self.last_frame = now
        self.skip_header = skip_header
        self.buffer = buffer if buffer is not None else StreamBuffer()
        self.buffer.on_consumed = self._consumed
        self.bytes_received = 0
        self.duplicates = 0
        self._advertised = self._window()

    def _window(self) -> int:
        free = self.s.receive_buffer - len(self.buffer) - len(self.out_of_order) * self.s.segment
        return max(0, free // self.s.segment)

    def _consumed(self) -> None:
        if self._advertised < self.s.window // 2 and self._window() >= self.s.window // 2:
            self.ack()

    @property
    def complete(self) -> bool:
        return self.fin_seq is not None and self.expected > self.fin_seq

    def on_segment(self, seq: int, payload: bytes, flags: Flags, now: float) -> None:
        """A data frame of this stream arrived."""
        self.last_frame = now
        if seq < self.expected or seq in self.out_of_order:
            self.duplicates += 1
            self.ack()  # the sender missed our ACK: tell it again
            return
        if seq > self.expected + self.s.receive_buffer // max(self.s.segment, 1) + self.s.window:
            return  # far outside any window the sender may use: garbage or a stale stream
        if flags & Flags.FIN:
            self.fin_seq = seq
            self.close_flag = bool(flags & Flags.CLOSE)
        gap = seq > self.expected
        self.out_of_order[seq] = (payload, flags)
        while self.expected in self.out_of_order:
            data, _ = self.out_of_order.pop(self.expected)
            if self.expected == 0 and self.skip_header:
                _, data = decode_members(data)
            self.expected += 1
            self.bytes_received += len(data)
            if data:
                self.buffer.feed(data)
        self.unacked += 1
        if self.complete:
            self.buffer.feed_eof()
        if self.complete:
            if self.fin_ack == "now":
                self.defer(self.ack)
        elif gap or self.unacked >= self.s.ack_every:
            self.ack()

    def missing(self) -> tuple[int, ...]:
        if not self.out_of_order:
            return ()
        top = max(self.out_of_order)
        return tuple(s for s in range(self.expected, top) if s not in self.out_of_order)[:256]

    def settle(self) -> None:
        """The sender learnt another way that everything arrived (e.g. the response started): no ACK is owed."""
        self.unacked = 0

    def ack(self) -> None:
        self.unacked = 0
        self.last_ack = self.last_frame
        self._advertised = self._window()
        self.send_ack(AckInfo(self.member, self.expected, self._advertised, self.missing()))

    def tick(self, now: float) -> None:
        """Delayed ACK; while the stream is unfinished and quiet, acknowledge every few RTOs anyway (re-requesting gaps,
        and telling a sender whose frames are lost on a failed path where we are: it retransmits from there)."""
        due = self.unacked and now - self.last_ack >= self.s.ack_delay_s
        quiet = not self.complete and now - max(self.last_ack, self.last_frame) >= self.s.rto_s * 4
        if due or quiet:
            self.ack()
            self.last_ack = now
