"""The NAP's frame switchboard: accepts frames addressed to this NAP (``FID & iLID == iLID``), decodes them, and hands
them to the stream they belong to — client exchanges (this NAP asked) or server exchanges (a client NAP asked us).

Client side: :meth:`DataPlane.open` starts exchange S with an up stream to the chosen server NAP; the answer arrives on
a down stream G whose sequence 0 lists the member sessions it answers (one, or several for coincidental multicast), and
is fed into the exchange's buffer. Server side: an up stream for an unknown S creates a :class:`ServerExchange` handed
to ``on_server_exchange`` (nap_agent/server_side.py), which answers with :meth:`DataPlane.respond`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flame_control.icn import frame as fr
from nap_agent.admission import Admission, Limits
from nap_agent.routes import Route, RouteTable
from nap_agent.transport import Path, RecvStream, SendStream, StreamBuffer, TransportSettings

log = logging.getLogger("flame.nap.dataplane")

#: Reset reason of a server NAP that does not (or no longer) front the requested FQDN: it saw the first frame only and
#: served nothing, so a client NAP may send a request without a body to the next server NAP (nap_agent/client_side.py).
NOT_SERVED_HERE = "no such service at this NAP"
#: How long finished sessions are remembered (to re-acknowledge late duplicates instead of treating them as new).
LINGER_S = 30.0
#: ... and at most this many of them (the oldest are forgotten first).
MAX_LINGERING = 10_000
#: Overload RESETs (refused newcomers) per second at most: a flood is not answered frame for frame.
MAX_OVERLOAD_RESETS_PER_S = 100


@dataclass
class Counters:
    """Frame and exchange counters (GetStatus, benchmarks)."""

    frames_sent: int = 0
    frames_received: int = 0
    frames_not_for_us: int = 0
    frames_garbage: int = 0
    frames_unknown_session: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    client_exchanges: int = 0
    server_exchanges: int = 0
    multicast_responses: int = 0
    resets_sent: int = 0
    #: Frames whose reply path cannot lead back to a NAP (no reply FID, or one that delivers to this NAP itself),
    #: dropped before anything was allocated for them.
    frames_invalid_path: int = 0
    #: Unverified server exchanges evicted to make room (forged or stalled first frames, issue 12 item 5).
    exchanges_evicted: int = 0
    #: New server exchanges refused because their source NAP used up its quota and had nothing to evict.
    exchanges_refused: int = 0
    #: Group members dropped for holding a shared response back (F3.5 per-member flow control).
    members_dropped: int = 0


@dataclass
class ClientExchange:
    """One request (or tunnel) this NAP sent: up stream out, answer in ``buffer``."""

    session: int
    route: Route
    up: SendStream
    buffer: StreamBuffer
    rcid: bytes
    kind: fr.FrameType
    down: RecvStream | None = None
    group: int = 0
    reset_reason: str | None = None
    started: float = 0.0

    @property
    def close_after(self) -> bool:
        return self.down is not None and self.down.close_flag


@dataclass
class ServerExchange:
    """One request (or tunnel) a client NAP sent us."""

    session: int
    kind: fr.FrameType
    cid: bytes
    rcid: bytes
    recv: RecvStream
    reply: Path
    task: asyncio.Task[None] | None = None
    #: The reply path it arrived with: the source it is accounted to (per-source quotas).
    source: Path = (0, 0)
    #: The client NAP echoed the nonce of our answer: the reply path is real (return routability), so it is never
    #: evicted to make room for newcomers.
    verified: bool = False


@dataclass
class _Linger:
    expires: float
    expected: int
    members: tuple[int, ...] = ()
    server_nap_id: str = ""
    rcid: bytes = b""
    nonce: bytes = b"\0" * 8
    #: When it last re-acknowledged a late duplicate (they are answered at most once per ACK delay).
    acked_at: float = -1.0


@dataclass
class _Group:
    stream: SendStream
    members: set[int] = field(default_factory=set)
    #: Random per answer, carried in the CID field of its frames and echoed in the client NAPs' ACKs.
    nonce: bytes = b"\0" * 8


@dataclass
class _DownGroup:
    """A down stream this client NAP receives, the local exchanges it answers and the nonce its ACKs echo."""

    stream: RecvStream
    members: list[int]
    nonce: bytes


class DataPlane:
    """Frames in, streams out; one per NAP agent."""

    def __init__(
        self,
        nap_id: str,
        send_frame: Callable[[bytes], None],
        settings: TransportSettings,
        clock: Callable[[], float] = time.monotonic,
        src_mac: bytes = b"\x00" * 6,
        limits: Limits | None = None,
    ) -> None:
        self.nap_id = nap_id
        self._send_frame = send_frame
        self.settings = settings
        self.clock = clock
        self.src_mac = src_mac
        self.limits = limits if limits is not None else Limits()
        self.routes = RouteTable()
        self.counters = Counters()
        self.exchanges: dict[int, ClientExchange] = {}
        #: Client exchanges still waiting for the first frame of their answer, by rCID (O(1) per down frame).
        self.awaiting: dict[bytes, dict[int, None]] = {}
        self.down_groups: dict[int, _DownGroup] = {}
        self.server: dict[int, ServerExchange] = {}
        #: Server exchanges per source, verified or not, started or waiting (nap_agent/admission.py).
        self.admission = Admission(self.limits)
        self._reset_second, self._resets_this_second = 0, 0
        self._stopped = False
        self.groups: dict[int, _Group] = {}
        self.member_group: dict[int, int] = {}
        self.lingering: dict[tuple[str, int], _Linger] = {}
        #: Retransmissions of streams already forgotten (live ones are counted on the streams).
        self.retransmissions_done = 0
        self.on_server_exchange: Callable[[ServerExchange], None] = lambda ex: None
        self.on_ip: Callable[[fr.Frame], None] = lambda f: None
        self._ticker: asyncio.Task[None] | None = None

    # -- plumbing -------------------------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.counters.frames_sent += 1
        self.counters.bytes_sent += len(data)
        self._send_frame(data)

    def start(self) -> None:
        """Start the timer loop (retransmissions, delayed ACKs, housekeeping)."""
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())

    async def stop(self) -> None:
        self._stopped = True
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        for ex in list(self.server.values()):
            if ex.task is not None:
                ex.task.cancel()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            self.tick(self.clock())

    def tick(self, now: float) -> None:
        for ex in list(self.exchanges.values()):
            ex.up.tick(now)
            if ex.up.failed and ex.reset_reason is None:
                self._fail_exchange(ex, f"request stream: {ex.up.failed}")
        for dg in list(self.down_groups.values()):
            dg.stream.tick(now)
        for sx in list(self.server.values()):
            sx.recv.tick(now)
        for g in list(self.groups.values()):
            g.stream.tick(now)
        lingering = self.lingering  # in expiry order (one linger time for all): expired ones are at the front
        while lingering:
            first = next(iter(lingering))
            if lingering[first].expires > now and len(lingering) <= MAX_LINGERING:
                break
            del lingering[first]

    def set_routes(self, table: RouteTable) -> None:
        """Apply a new snapshot. Streams in flight move to the new paths at once (SFR-13): up streams send on the new
        FID, and every unfinished down stream acknowledges now, carrying the new reverse FID to its server NAP."""
        self.routes = table
        for ex in self.exchanges.values():
            r = table.to_nap.get(ex.route.server_nap_id)
            member = ex.up.members.get(ex.session)
            if r is not None and member is not None and member.path != (r.fid, r.label):
                member.path = (r.fid, r.label)
        for dg in list(self.down_groups.values()):
            if not dg.stream.complete:
                dg.stream.ack()

    # -- client side ----------------------------------------------------------------------------------------------
    def open(self, route: Route, kind: fr.FrameType, cid: bytes, rcid: bytes) -> ClientExchange:
        """Start exchange S towards ``route``'s server NAP; write the request into ``exchange.up``."""
        session = random.getrandbits(64) or 1
        while session in self.exchanges:
            session = random.getrandbits(64) or 1
        now = self.clock()
        server = route.server_nap_id

        def reply() -> Path:
            r = self.routes.to_nap.get(server, route)
            return r.reverse_fid, r.reverse_label

        up = SendStream(
            self.send,
            self.settings,
            kind,
            cid,
            rcid,
            session,
            {session: (route.fid, route.label)},
            reply,
            now,
            member_header=False,
            src_mac=self.src_mac,
        )
        ex = ClientExchange(session, route, up, StreamBuffer(), rcid, kind, started=now)
        self.exchanges[session] = ex
        self.awaiting.setdefault(rcid, {})[session] = None
        self.counters.client_exchanges += 1
        return ex

    def close(self, ex: ClientExchange, abort: str | None = None) -> None:
        """Forget a finished exchange (``abort``: tell the server NAP to stop)."""
        if self.exchanges.pop(ex.session, None) is not None:
            self.retransmissions_done += ex.up.retransmissions
        self._not_awaiting(ex)
        if abort is not None:
            self._reset(ex.route.fid, ex.route.label, ex.session, ex.rcid, abort, down=False)
        if ex.group:
            entry = self.down_groups.get(ex.group)
            if entry is not None:
                entry.members[:] = [m for m in entry.members if m != ex.session]
                if not entry.members:
                    del self.down_groups[ex.group]
                    self.lingering[("down", ex.group)] = _Linger(
                        self.clock() + LINGER_S,
                        entry.stream.expected,
                        (ex.session,),
                        ex.route.server_nap_id,
                        ex.rcid,
                        entry.nonce,
                    )

    def _not_awaiting(self, ex: ClientExchange) -> None:
        waiting = self.awaiting.get(ex.rcid)
        if waiting is not None:
            waiting.pop(ex.session, None)
            if not waiting:
                del self.awaiting[ex.rcid]

    def _path_to(self, ex: ClientExchange) -> Route:
        return self.routes.to_nap.get(ex.route.server_nap_id, ex.route)

    def _fail_exchange(self, ex: ClientExchange, reason: str) -> None:
        ex.reset_reason = reason
        ex.buffer.set_error(ConnectionResetError(reason))

    def _down_ack(self, group: int, info: fr.AckInfo) -> None:
        entry = self.down_groups.get(group)
        members = entry.members if entry else [info.member]
        nonce = entry.nonce if entry else b"\0" * 8
        for member in members:
            ex = self.exchanges.get(member)
            if ex is None:
                continue
            self._down_ack_one(ex, group, fr.AckInfo(member, info.cumulative, info.window, info.missing), nonce)

    def _ack_frame(
        self,
        fid: int,
        label: int,
        flags: int,
        rcid: bytes,
        session: int,
        rfid: int,
        rlabel: int,
        payload: bytes,
        nonce: bytes = b"\0" * 8,
    ) -> bytes:
        return fr.encode(
            fid, label, fr.FrameType.ACK, flags, nonce, rcid, session, 0, rfid, rlabel, payload, self.src_mac
        )

    def _on_down(self, f: fr.Frame, now: float) -> None:
        entry = self.down_groups.get(f.session)
        if entry is not None:
            entry.stream.on_segment(f.seq, f.payload, f.flags, now)
            return
        linger = self.lingering.get(("down", f.session))
        if linger is not None:  # done here; the server missed our final ACK (re-acknowledged at a bounded rate)
            r = self.routes.to_nap.get(linger.server_nap_id)
            if r is not None and f.seq < linger.expected and now - linger.acked_at >= self.settings.ack_delay_s:
                linger.acked_at = now
                info = fr.AckInfo(linger.members[0], linger.expected, self.settings.window)
                self.send(
                    self._ack_frame(
                        r.fid,
                        r.label,
                        fr.Flags.DOWN,
                        linger.rcid,
                        f.session,
                        r.reverse_fid,
                        r.reverse_label,
                        fr.encode_ack(info),
                        linger.nonce,
                    )
                )
            return
        waiting_ids = self.awaiting.get(f.rcid)
        if not waiting_ids:
            self.counters.frames_unknown_session += 1
            return
        if f.seq != 0:
            for session in list(waiting_ids)[:8]:  # we missed sequence 0 (the member list): ask for it
                ex = self.exchanges[session]
                self._down_ack_one(ex, f.session, fr.AckInfo(ex.session, 0, self.settings.window, (0,)), f.cid)
            return
        try:
            members, _ = fr.decode_members(f.payload)
        except fr.FrameError:
            self.counters.frames_garbage += 1
            return
        mine = [m for m in members if m in waiting_ids]
        if not mine:
            self.counters.frames_unknown_session += 1
            return
        first = self.exchanges[mine[0]]
        stream = RecvStream(
            lambda info: self._down_ack(f.session, info),
            mine[0],
            self.settings,
            now,
            True,
            first.buffer,
            defer=asyncio.get_running_loop().call_soon,
            extra_buffers=[self.exchanges[m].buffer for m in mine[1:]],
        )
        for m in mine:
            ex = self.exchanges[m]
            ex.down = stream
            ex.group = f.session
            self._not_awaiting(ex)
            if ex.kind is fr.FrameType.HTTP_REQUEST and ex.up.fin:
                # a server NAP answers only after reading the whole request: the answer acknowledges it
                ex.up.on_ack(fr.AckInfo(m, ex.up.next_seq, self.settings.window), None, now)
        self.down_groups[f.session] = _DownGroup(stream, mine, f.cid)
        stream.on_segment(f.seq, f.payload, f.flags, now)

    def _down_ack_one(self, ex: ClientExchange, group: int, info: fr.AckInfo, nonce: bytes) -> None:
        r = self._path_to(ex)
        self.send(
            self._ack_frame(
                r.fid,
                r.label,
                fr.Flags.DOWN,
                ex.rcid,
                group,
                r.reverse_fid,
                r.reverse_label,
                fr.encode_ack(info),
                nonce,
            )
        )

    # -- server side ----------------------------------------------------------------------------------------------
    def _on_up(self, f: fr.Frame, now: float) -> None:
        sx = self.server.get(f.session)
        if sx is None:
            linger = self.lingering.get(("up", f.session))
            if linger is not None:  # finished: the client missed our final ACK (re-acknowledged at a bounded rate)
                if now - linger.acked_at >= self.settings.ack_delay_s:
                    linger.acked_at = now
                    info = fr.AckInfo(f.session, linger.expected, self.settings.window)
                    again = self._ack_frame(f.reply_fid, f.reply_label, 0, f.rcid, f.session, 0, 0, fr.encode_ack(info))
                    self.send(again)
                return
            if f.cid not in self.routes.by_cid or self.routes.by_cid[f.cid] not in self.routes.local_fqdns:
                self._reset(f.reply_fid, f.reply_label, f.session, f.rcid, NOT_SERVED_HERE, down=True)
                return
            source = (f.reply_fid, f.reply_label)
            victims = self.admission.make_room(source)
            if victims is None:
                self.counters.exchanges_refused += 1
                second = int(now)
                if second != self._reset_second:
                    self._reset_second, self._resets_this_second = second, 0
                self._resets_this_second += 1
                if self._resets_this_second <= MAX_OVERLOAD_RESETS_PER_S:
                    self._reset(f.reply_fid, f.reply_label, f.session, f.rcid, "server NAP overloaded", down=True)
                return
            for victim in victims:
                self._evict(victim)
            session, reply_fid, reply_label, rcid = f.session, f.reply_fid, f.reply_label, f.rcid

            def ack(info: fr.AckInfo) -> None:
                x = self.server.get(session)
                rf, rl = x.reply if x is not None else (reply_fid, reply_label)
                self.send(self._ack_frame(rf, rl, 0, rcid, session, 0, 0, fr.encode_ack(info)))

            fin_ack = "delayed" if f.type is fr.FrameType.HTTP_REQUEST else "now"
            recv = RecvStream(ack, session, self.settings, now, False, fin_ack=fin_ack)
            sx = ServerExchange(session, f.type, f.cid, f.rcid, recv, source, source=source)
            self.server[session] = sx
            self.counters.server_exchanges += 1
            if self.admission.add(session, source, now):
                self.on_server_exchange(sx)
        if f.reply_fid:
            sx.reply = (f.reply_fid, f.reply_label)
        sx.recv.on_segment(f.seq, f.payload, f.flags, now)

    def _start(self, sessions: list[int]) -> None:
        """Start exchanges the admission let through (their request frames are already buffered)."""
        if self._stopped:
            return
        for session in sessions:
            sx = self.server.get(session)
            if sx is not None:
                self.on_server_exchange(sx)

    def _evict(self, session: int) -> None:
        sx = self.server.get(session)
        if sx is None:
            self._start(self.admission.remove(session, self.clock()))
            return
        # no RESET: the reply path of an unverified exchange is unproven (mostly forged, and every answer to a forged
        # path costs the fabric); a real first-contact client NAP gets its 504 after its response timeout
        self.counters.exchanges_evicted += 1
        sx.recv.buffer.set_error(ConnectionResetError("evicted"))
        if sx.task is not None:
            sx.task.cancel()
        group = self.member_group.get(session)
        if group is not None and group in self.groups:
            self.groups[group].stream.drop_member(session)
        self.finish_server(sx, linger=False)

    def respond(self, members: dict[int, Path], kind: fr.FrameType, rcid: bytes) -> SendStream:
        """Open the down stream answering ``members`` (session -> path back); its group id is the first member. Its
        frames carry a random nonce in the CID field; a client NAP's ACK echoing it verifies that member."""
        group = next(iter(members))
        nonce = os.urandom(8)
        stream = SendStream(
            self.send,
            self.settings,
            kind,
            nonce,
            rcid,
            group,
            members,
            lambda: (0, 0),
            self.clock(),
            member_header=True,
            src_mac=self.src_mac,
        )
        self.groups[group] = _Group(stream, set(members), nonce)

        def left(member: int, reason: str) -> None:
            self.counters.members_dropped += 1
            sx = self.server.get(member)
            if sx is not None:
                self._reset(sx.reply[0], sx.reply[1], member, rcid, reason, down=True)

        stream.on_member_left = left
        for m in members:
            self.member_group[m] = group
            sx = self.server.get(m)
            if sx is not None and sx.recv.complete:
                sx.recv.settle()  # the response acknowledges the request
        if len(members) > 1:
            self.counters.multicast_responses += 1
        return stream

    def abort_response(self, stream: SendStream, reason: str) -> None:
        """A response that cannot be completed (its origin cut it): reset every member, so each client NAP closes its
        user's connection at once instead of waiting for the rest (issue 12)."""
        stream.fail(reason)
        for member, m in stream.members.items():
            if not m.done:
                self._reset(m.path[0], m.path[1], member, stream.rcid, reason, down=True)

    def finish_server(self, sx: ServerExchange, linger: bool = True) -> None:
        """Forget a server exchange (its answer is done or abandoned; ``linger``: re-acknowledge late duplicates)."""
        if self.server.pop(sx.session, None) is None:
            return  # already forgotten (evicted, then its task ended)
        self._start(self.admission.remove(sx.session, self.clock()))
        if linger:
            self.lingering[("up", sx.session)] = _Linger(self.clock() + LINGER_S, sx.recv.expected)
        group = self.member_group.pop(sx.session, None)
        if group is not None:
            g = self.groups.get(group)
            if g is not None:
                g.members.discard(sx.session)
                if not g.members:
                    del self.groups[group]
                    self.retransmissions_done += g.stream.retransmissions

    def _reset(self, fid: int, label: int, session: int, rcid: bytes, reason: str, down: bool) -> None:
        if not fid:
            return
        self.counters.resets_sent += 1
        flags = fr.Flags.DOWN if down else 0
        self.send(
            fr.encode(
                fid,
                label,
                fr.FrameType.RESET,
                flags,
                b"\0" * 8,
                rcid,
                session,
                0,
                0,
                0,
                reason.encode()[:512],
                self.src_mac,
            )
        )

    # -- frames in ------------------------------------------------------------------------------------------------
    def on_frame(self, data: bytes) -> None:
        """One frame from the fabric port."""
        self.counters.frames_received += 1
        self.counters.bytes_received += len(data)
        peek = fr.peek_fid(data)
        if peek is None:
            self.counters.frames_garbage += 1
            return
        if not self.routes.accepts(*peek):
            self.counters.frames_not_for_us += 1
            return
        try:
            f = fr.decode(data)
        except fr.FrameError:
            self.counters.frames_garbage += 1
            return
        now = self.clock()
        t = f.type
        if t in fr.UP_TYPES:
            if not f.reply_fid or self.routes.accepts(f.reply_fid, f.reply_label):
                self.counters.frames_invalid_path += 1  # no way back, or a way back to ourselves: nothing allocated
                return
            self._on_up(f, now)
        elif t in fr.DOWN_TYPES:
            self._on_down(f, now)
        elif t is fr.FrameType.ACK:
            self._on_ack(f, now)
        elif t is fr.FrameType.RESET:
            self._on_reset(f)
        elif t is fr.FrameType.IP:
            self.on_ip(f)

    def _on_ack(self, f: fr.Frame, now: float) -> None:
        try:
            info = fr.decode_ack(f.payload)
        except fr.FrameError:
            self.counters.frames_garbage += 1
            return
        if f.flags & fr.Flags.DOWN:
            g = self.groups.get(f.session)
            if g is not None and info.member in g.members:
                sx = self.server.get(info.member)
                if sx is not None and not sx.verified and f.cid == g.nonce:
                    sx.verified = True
                    self._start(self.admission.verify(info.member, now))
                g.stream.on_ack(info, (f.reply_fid, f.reply_label), now)
            else:
                self.counters.frames_unknown_session += 1
        else:
            ex = self.exchanges.get(f.session)
            if ex is not None and info.member == f.session:
                ex.up.on_ack(info, None, now)
            else:
                self.counters.frames_unknown_session += 1

    def _on_reset(self, f: fr.Frame) -> None:
        reason = f.payload.decode(errors="replace")
        if f.flags & fr.Flags.DOWN:  # from a server NAP about our exchange
            ex = self.exchanges.get(f.session)
            if ex is not None:
                ex.up.fail(reason)
                self._fail_exchange(ex, reason)
        else:  # from a client NAP: it gave up on its exchange
            sx = self.server.get(f.session)
            if sx is not None:
                sx.recv.buffer.set_error(ConnectionResetError(reason))
                if sx.task is not None:
                    sx.task.cancel()
            group = self.member_group.get(f.session)
            if group is not None and group in self.groups:
                self.groups[group].stream.drop_member(f.session)
