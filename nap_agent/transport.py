"""Reliable byte streams over ICN frames (ARCHITECTURE section 5): fragmentation to the fabric MTU, sequence numbers,
cumulative ACKs with NACK lists, retransmission on NACK and on timeout, a sliding window with the receiver's advertised
window (flow control), FIN and RESET, and multicast senders (one stream, several members: coincidental multicast).

No sockets and no clock of its own: frames leave through an ``out`` callable and time comes from ``tick(now)``, so the
whole state machine is driven deterministically in unit tests (loss, duplication, reordering).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from flame_control.icn.frame import AckInfo, Flags, FrameType, decode_members, encode, encode_members
from nap_agent.stream_buffer import StreamBuffer

__all__ = ["Path", "RecvStream", "SendStream", "StreamBuffer", "TransportSettings"]

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
    #: A member of a multicast group (coincidental multicast, F3.5) that alone holds the group's window back for this
    #: long leaves the group (it is reset: its user's connection closes) so the others go on at their own pace; the
    #: same bound detaches a local member at a client NAP whose buffer stays full while another reads.
    member_stall_s: float = 5.0
    #: A stream with data waiting for a receiver that makes no progress for this long fails, even while the receiver
    #: keeps acknowledging (a closed window answered to every probe): nginx's ``send_timeout``.
    progress_timeout_s: float = 60.0


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
    #: Since when this member alone holds the group's window back (None: it does not).
    blocking_since: float | None = None


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
        #: Called with (member, reason) when a member is dropped for stalling (the data plane resets it).
        self.on_member_left: Callable[[int, str], None] = lambda member, reason: None

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
        self._drop_stalled_members(now, end)
        for member, m in list(self.members.items()):
            waiting = m.cumulative < self.next_seq
            if m.done or not (waiting or (m.window == 0 and self.next_seq < end)):
                if not m.done:
                    m.last_progress = now  # idle: nothing owed, its progress clock restarts
                continue
            if now - m.last_heard > self.s.stall_timeout_s:
                self.fail("no answer from the receiver")
                return
            if now - m.last_progress > self.s.progress_timeout_s:
                if self._live() > 1:
                    self._leave(member, m, "no progress within the progress timeout")
                    continue
                self.fail(f"no progress for {self.s.progress_timeout_s:g} s (receiver not reading)")
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

    def _live(self) -> int:
        return sum(1 for m in self.members.values() if not m.done)

    def _drop_stalled_members(self, now: float, end: int) -> None:
        """Per-member flow control of a multicast stream: a member whose own window (what it acknowledged plus what
        it advertises) is what stops the sender, while another member could take more, is holding the group back;
        after ``member_stall_s`` of that it leaves. When every member holds back, that is back-pressure: nobody
        leaves."""
        live = [(k, m) for k, m in self.members.items() if not m.done]
        if len(live) < 2 or self.next_seq >= end:  # nothing unsent: nobody holds anything back
            for _, m in live:
                m.blocking_since = None
            return
        reach = {k: m.cumulative + min(self.s.window, m.window) for k, m in live}
        blockers = [(k, m) for k, m in live if reach[k] <= self.next_seq]
        if not blockers or len(blockers) == len(live):
            for _, m in live:
                m.blocking_since = None
            return
        for k, m in live:
            if reach[k] > self.next_seq:
                m.blocking_since = None
            elif m.blocking_since is None:
                m.blocking_since = now
            elif now - m.blocking_since >= self.s.member_stall_s:
                self._leave(k, m, "fell behind the shared response")

    def _leave(self, member: int, m: _Member, reason: str) -> None:
        m.done = True
        m.blocking_since = None
        self.on_member_left(member, reason)
        self._release()
        self.pump()

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


class RecvStream:
    """One incoming stream: reorders, deduplicates, acknowledges (cumulative + NACK list) and feeds a buffer (and the
    buffers of further local members of a coincidental-multicast answer, ``extra_buffers``).

    Bounded: the bytes held (the fullest buffer plus out-of-order segments) never exceed ``receive_buffer`` whatever
    the sender does (frames beyond it are dropped uncounted; an honest sender never sends them). A duplicate costs
    O(1): the NACK list is kept incrementally, and ACKs owed for duplicates and gaps go out at most once per
    ``ack_delay_s``. A local member whose buffer stays full for ``member_stall_s`` while another member reads is
    detached (its buffer fails: its user's connection closes) so the others go on."""

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
        extra_buffers: list[StreamBuffer] | None = None,
    ) -> None:
        self.send_ack, self.member, self.s = send_ack, member, settings
        #: When the last frame arrives: "now" (acknowledge at once, through ``defer`` so the consumer runs first) or
        #: "delayed" (after ack_delay: a server NAP whose response starts sooner acknowledges implicitly).
        self.fin_ack = fin_ack
        self.defer = defer
        self.expected = 0
        self.out_of_order: dict[int, tuple[bytes, Flags]] = {}
        self._ooo_bytes = 0
        #: Sequence numbers missing below the highest one received, in order (an ordered dict used as a set).
        self._gaps: dict[int, None] = {}
        self._top = -1
        self.fin_seq: int | None = None
        self.close_flag = False
        self.unacked = 0
        self.last_ack = now
        self.last_frame = now
        self._acked_at = -1.0
        self.skip_header = skip_header
        self.buffer = buffer if buffer is not None else StreamBuffer()
        #: Every local member's buffer (the first is :attr:`buffer`); detached ones are removed.
        self.buffers = [self.buffer, *(extra_buffers or ())]
        self._full_since: dict[int, float] = {}
        for b in self.buffers:
            b.on_consumed = self._consumed
        self.bytes_received = 0
        self.duplicates = 0
        self.dropped_over_bound = 0
        self._advertised = self._window()

    def held_out_of_order(self) -> int:
        """Payload bytes held out of order."""
        return self._ooo_bytes

    def _held(self) -> int:
        return max((len(b) for b in self.buffers), default=0) + self._ooo_bytes

    def _window(self) -> int:
        return max(0, (self.s.receive_buffer - self._held()) // self.s.segment)

    def _consumed(self) -> None:
        if self._advertised < self.s.window // 2 and self._window() >= self.s.window // 2:
            self.ack()

    @property
    def complete(self) -> bool:
        return self.fin_seq is not None and self.expected > self.fin_seq

    def _feed(self, data: bytes) -> None:
        for b in self.buffers:
            b.feed(data)

    def on_segment(self, seq: int, payload: bytes, flags: Flags, now: float) -> None:
        """A data frame of this stream arrived."""
        self.last_frame = now
        if seq < self.expected or seq in self.out_of_order:
            self.duplicates += 1
            self._ack_soon(now)  # the sender may have missed our ACK: tell it again, at a bounded rate
            return
        if seq >= self.expected + max(self.s.receive_buffer // max(self.s.segment, 1), 1) + self.s.window:
            return  # far outside any window the sender may use: garbage or a stale stream
        if self._held() + len(payload) > self.s.receive_buffer:
            self.dropped_over_bound += 1  # beyond what we advertised: an honest sender retransmits it later
            return
        if flags & Flags.FIN:
            self.fin_seq = seq
            self.close_flag = bool(flags & Flags.CLOSE)
        gap = seq > self.expected
        if seq > self._top:
            for s in range(self._top + 1, seq):
                if s >= self.expected:
                    self._gaps[s] = None
            self._top = seq
        else:
            self._gaps.pop(seq, None)
        self.out_of_order[seq] = (payload, flags)
        self._ooo_bytes += len(payload)
        while self.expected in self.out_of_order:
            data, _ = self.out_of_order.pop(self.expected)
            self._ooo_bytes -= len(data)
            if self.expected == 0 and self.skip_header:
                _, data = decode_members(data)
            self.expected += 1
            self.bytes_received += len(data)
            if data:
                self._feed(data)
        self.unacked += 1
        if self.complete:
            for b in self.buffers:
                b.feed_eof()
            if self.fin_ack == "now":
                self.defer(self.ack)
        elif gap:
            self._ack_soon(now)
        elif self.unacked >= self.s.ack_every:
            self.ack()

    def _ack_soon(self, now: float) -> None:
        """An ACK is owed at once (gap, duplicate): sent now unless one left within ``ack_delay_s``, else by tick."""
        if now - self._acked_at >= self.s.ack_delay_s:
            self._acked_at = now
            self.ack()
        else:
            self.unacked = max(self.unacked, 1)

    def missing(self) -> tuple[int, ...]:
        return tuple(itertools.islice(self._gaps, 256))

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
        if len(self.buffers) > 1:
            self._detach_stalled(now)
        due = self.unacked and now - self.last_ack >= self.s.ack_delay_s
        quiet = not self.complete and now - max(self.last_ack, self.last_frame) >= self.s.rto_s * 4
        if due or quiet:
            self._acked_at = now
            self.ack()
            self.last_ack = now

    def _detach_stalled(self, now: float) -> None:
        """Local members of one answer: a full buffer while another member has room holds everyone back."""
        full_at = self.s.receive_buffer - self._ooo_bytes - self.s.segment
        full = [b for b in self.buffers if len(b) >= full_at]
        if not full or len(full) == len(self.buffers):
            self._full_since.clear()
            return
        for b in self.buffers:
            if b not in full:
                self._full_since.pop(id(b), None)
        for b in full:
            since = self._full_since.setdefault(id(b), now)
            if now - since >= self.s.member_stall_s:
                self._full_since.pop(id(b), None)
                self.buffers.remove(b)
                b._buf.clear()  # nobody will read it: the memory goes now
                b.set_error(ConnectionResetError("fell behind the shared response"))
                if self._advertised < self.s.window // 2:
                    self.ack()  # room again: tell the sender
