"""Domain errors and their one mapping to gRPC status with ``google.rpc`` details.

Cores raise these; the runtime's interceptor turns them into a status (never a stack trace on the wire). Build field
violations with :class:`Violations` so every problem of a request is reported at once, not just the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2


@dataclass(frozen=True)
class FieldViolation:
    """One problem with one field of a request; ``field`` is a dotted path such as ``topology.links[3].weight``."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a core may raise on purpose. Subclasses fix the gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[any_pb2.Any]:
        """``google.rpc`` detail messages to attach to the status."""
        return []

    def to_status(self) -> status_pb2.Status:
        """The rich ``google.rpc.Status`` for this error."""
        status = status_pb2.Status(code=_RPC_CODES[self.code], message=self.message)
        status.details.extend(self.details())
        return status


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


class InvalidArgument(DomainError):
    """The request itself is wrong (INVALID_ARGUMENT with a ``BadRequest`` listing every field violation)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Iterable[FieldViolation], message: str | None = None) -> None:
        self.violations = list(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations[:5])
        if len(self.violations) > 5:
            summary += f"; and {len(self.violations) - 5} more"
        super().__init__(message or f"invalid request: {summary}")

    def details(self) -> list[any_pb2.Any]:
        bad = error_details_pb2.BadRequest()
        for v in self.violations:
            bad.field_violations.add(field=v.field, description=v.description)
        return [_pack(bad)]


class NotFound(DomainError):
    """A named resource does not exist (NOT_FOUND with ``ResourceInfo``)."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, resource_type: str, name: str, message: str | None = None) -> None:
        self.resource_type = resource_type
        self.name = name
        super().__init__(message or f"{resource_type} {name!r} not found")

    def details(self) -> list[any_pb2.Any]:
        return [_pack(error_details_pb2.ResourceInfo(resource_type=self.resource_type, resource_name=self.name))]


class AlreadyExists(NotFound):
    """A resource with that name exists already (ALREADY_EXISTS with ``ResourceInfo``)."""

    code = grpc.StatusCode.ALREADY_EXISTS

    def __init__(self, resource_type: str, name: str, message: str | None = None) -> None:
        super().__init__(resource_type, name, message or f"{resource_type} {name!r} already exists")


@dataclass(frozen=True)
class PreconditionViolation:
    """One failed precondition: ``type`` is a short machine-readable category (e.g. ``CAPACITY``, ``STATE``)."""

    type: str
    subject: str
    description: str


class FailedPrecondition(DomainError):
    """The request is well formed but the system is not in a state to do it (FAILED_PRECONDITION)."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, violations: Iterable[PreconditionViolation], message: str | None = None) -> None:
        self.violations = list(violations)
        super().__init__(message or "; ".join(f"{v.subject}: {v.description}" for v in self.violations))

    def details(self) -> list[any_pb2.Any]:
        pf = error_details_pb2.PreconditionFailure()
        for v in self.violations:
            pf.violations.add(type=v.type, subject=v.subject, description=v.description)
        return [_pack(pf)]


class PermissionDenied(DomainError):
    """The caller is authenticated but its role may not do this (PERMISSION_DENIED)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    """No or unknown credentials (UNAUTHENTICATED)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(DomainError):
    """A backend this RPC needs is down; the client may retry (UNAVAILABLE)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(DomainError):
    """An operation did not finish within its configured time (DEADLINE_EXCEEDED)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Aborted(DomainError):
    """A concurrency conflict, e.g. a request_id reused with a different request (ABORTED)."""

    code = grpc.StatusCode.ABORTED


class ResourceExhausted(DomainError):
    """A size or rate limit was hit (RESOURCE_EXHAUSTED)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unimplemented(DomainError):
    """The RPC or option is not built yet (UNIMPLEMENTED); docs say so."""

    code = grpc.StatusCode.UNIMPLEMENTED


_RPC_CODES: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.UNKNOWN: code_pb2.UNKNOWN,
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: code_pb2.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED: code_pb2.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED: code_pb2.UNIMPLEMENTED,
}


@dataclass
class Violations:
    """Collects field violations while validating a request; ``raise_if_any()`` raises one InvalidArgument for all.

    >>> v = Violations()
    >>> v.check(False, "name", "must not be empty")
    >>> v.raise_if_any()
    Traceback (most recent call last):
    ...
    flame_control.runtime.errors.InvalidArgument: invalid request: name: must not be empty
    """

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        """Record a violation unconditionally."""
        self.items.append(FieldViolation(field_path, description))

    def check(self, ok: bool, field_path: str, description: str) -> None:
        """Record a violation when ``ok`` is false."""
        if not ok:
            self.add(field_path, description)

    def extend(self, other: Iterable[FieldViolation], prefix: str = "") -> None:
        """Merge violations found by a nested validator, prefixing their paths."""
        for v in other:
            self.items.append(FieldViolation(f"{prefix}{v.field}" if prefix else v.field, v.description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        """Raise InvalidArgument listing every violation recorded so far."""
        if self.items:
            raise InvalidArgument(self.items)
