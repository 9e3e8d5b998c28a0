"""Validation of what a NAP sends on its NapSession stream (issue 13, item 7): every malformed message, FQDN or enum is
refused with INVALID_ARGUMENT and field violations naming it, never INTERNAL and never a silent OK.

Field paths name the message by its position in the stream (``messages[3].ack``); the Hello is ``hello``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from flame_control.api.flame.pce.v1 import nap_session_pb2
from flame_control.runtime.errors import DomainError, FieldViolation, InvalidArgument, Violations
from pce.registry import fqdn_problem, normalise_fqdn
from pce.topology import Node

_LATER_KINDS = ("ack", "nack", "path_request", "registration")


async def decoded(
    requests: AsyncIterator[nap_session_pb2.NapSessionRequest],
) -> AsyncIterator[nap_session_pb2.NapSessionRequest]:
    """The stream's messages; bytes that are no NapSessionRequest end it with INVALID_ARGUMENT naming the message
    (gRPC's own deserializer raises DecodeError inside the iterator, which would otherwise answer INTERNAL)."""
    i = 0
    try:
        async for msg in requests:
            yield msg
            i += 1
    except DecodeError as exc:
        where = "hello" if i == 0 else f"messages[{i}]"
        raise InvalidArgument([FieldViolation(where, f"not a flame.pce.v1.NapSessionRequest: {exc}")]) from exc


@dataclass(frozen=True)
class CheckedHello:
    """A valid Hello: the NAP, the FQDNs it wants routes for (None: every FQDN) and its local FQDNs (normalised)."""

    nap_id: str
    interested: tuple[str, ...] | None
    local_fqdns: tuple[str, ...]
    last_applied_version: int


def check_hello(first: nap_session_pb2.NapSessionRequest | None, nodes: Mapping[str, Node]) -> CheckedHello:
    """The session's first message: a Hello naming a NAP of the topology, with valid FQDNs (all problems at once)."""
    if first is None or not first.HasField("hello"):
        got = "nothing" if first is None else (first.WhichOneof("message") or "an empty message")
        raise InvalidArgument([FieldViolation("hello", f"the first message of a session must be a Hello, got {got}")])
    hello = first.hello
    v = Violations()
    node = nodes.get(hello.nap_id)
    v.check(node is not None and node.kind == "nap", "hello.nap_id", f"{hello.nap_id!r} is not a NAP of the topology")
    for name, values in (("interested_fqdns", hello.interested_fqdns), ("local_fqdns", hello.local_fqdns)):
        for i, fqdn in enumerate(values):
            problem = fqdn_problem(fqdn)
            if problem:
                v.add(f"hello.{name}[{i}]", problem)
    v.raise_if_any()
    interested = tuple(normalise_fqdn(f) for f in hello.interested_fqdns) or None
    local = tuple(normalise_fqdn(f) for f in hello.local_fqdns)
    return CheckedHello(hello.nap_id, interested, local, hello.last_applied_version)


def check_message(msg: nap_session_pb2.NapSessionRequest, index: int) -> str:
    """The kind of a message after the Hello; INVALID_ARGUMENT for a second Hello or a message with nothing set."""
    kind = msg.WhichOneof("message")
    if kind == "hello":
        raise InvalidArgument([FieldViolation(f"messages[{index}].hello", "a session has one Hello (its first)")])
    if kind not in _LATER_KINDS:
        raise InvalidArgument([FieldViolation(f"messages[{index}]", f"must set one of {', '.join(_LATER_KINDS)}")])
    return kind


async def numbered(
    requests: AsyncIterator[nap_session_pb2.NapSessionRequest],
) -> AsyncIterator[tuple[int, nap_session_pb2.NapSessionRequest]]:
    """The messages after the Hello with their stream positions (messages[0] is the Hello)."""
    i = 1
    async for msg in requests:
        yield i, msg
        i += 1


async def outcome(reader: asyncio.Task[None]) -> DomainError | None:
    """The domain error the request reader ended with (bad input), or None when the NAP closed its side."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait([reader], timeout=1.0)
    if reader.done() and not reader.cancelled() and isinstance(reader.exception(), DomainError):
        return reader.exception()  # type: ignore[return-value]
    return None
