"""What a service package hands the runtime: its servicer, how to register it, who may call what, and hooks.

Every service package exposes ``<package>/service.py`` with a pydantic ``Settings`` model (``extra="forbid"``) and
``build(ctx: ServiceContext) -> ServiceSpec``. The runtime (``flame_control.runtime.server``) does the rest: TLS,
tokens, health, reflection, error mapping, idempotency, logging, graceful shutdown.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc


class Role(enum.StrEnum):
    """Stakeholder roles (mirror of ``flame.common.v1.StakeholderRole``); a bearer token maps to one."""

    PLATFORM_OPERATOR = "platform_operator"
    INFRASTRUCTURE_PROVIDER = "infrastructure_provider"
    MEDIA_SERVICE_PROVIDER = "media_service_provider"
    ANALYST = "analyst"
    COMPONENT = "component"


ALL_ROLES: frozenset[Role] = frozenset(Role)
#: Roles that may change platform state by default (a service narrows or widens this per RPC).
OPERATORS: frozenset[Role] = frozenset({Role.PLATFORM_OPERATOR, Role.COMPONENT})


@dataclass(frozen=True)
class Principal:
    """Who is calling: a subject name (token name or certificate CN) and its role."""

    subject: str
    role: Role


#: Used when token authentication is off: every caller acts as the platform operator.
ANONYMOUS_OPERATOR = Principal("anonymous", Role.PLATFORM_OPERATOR)


@dataclass(frozen=True)
class AccessRules:
    """Per-RPC role rules: ``methods`` maps a method name (e.g. ``"DeployMediaService"``) to the roles allowed;
    methods not listed fall back to ``default``. The platform operator is always allowed."""

    default: frozenset[Role] = OPERATORS
    methods: Mapping[str, frozenset[Role]] = field(default_factory=dict)

    def allowed(self, method: str, role: Role) -> bool:
        """True when ``role`` may call ``method``."""
        if role is Role.PLATFORM_OPERATOR:
            return True
        return role in self.methods.get(method, self.default)


@dataclass(frozen=True)
class ServiceSpec:
    """One gRPC service as the runtime serves it."""

    #: Full proto service name, e.g. ``flame.pce.v1.PceService`` (used for health and reflection).
    name: str
    #: The servicer instance (async methods, subclass of the generated ``XServiceServicer``).
    servicer: object
    #: The generated ``add_XServiceServicer_to_server`` function.
    register: Callable[[Any, grpc.aio.Server], None]
    #: Who may call which RPC.
    access: AccessRules = field(default_factory=AccessRules)
    #: Started after the server listens (background loops, reconcilers); awaited.
    on_start: Callable[[], Awaitable[None]] | None = None
    #: Called on shutdown after the server stopped accepting calls; awaited.
    on_stop: Callable[[], Awaitable[None]] | None = None
    #: Readiness beyond "the server listens": returns None when ready, else why not (health NOT_SERVING with that
    #: reason, e.g. the NAP agent while its PCE session is down). Polled by the runtime; must be cheap.
    health: Callable[[], str | None] | None = None
    #: Component metrics read from existing state at scrape time (``flame_control.runtime.metrics``); runs on the
    #: service's event loop.
    metrics: Callable[[], Iterable[Any]] | None = None


@dataclass
class ServiceContext:
    """What the runtime gives a service's ``build``: its validated settings, a state directory, and its peers."""

    #: Short key of this service: ``orchestrator``, ``sfemc``, ``pce``, ``clmc`` or ``nap``.
    key: str
    #: The service's own validated ``Settings`` instance.
    settings: Any
    #: Directory for durable state of this service (created by the runtime).
    state_dir: Path
    #: Opens a channel to a peer service by key (``"pce"``, ``"clmc"``...), with the configured TLS and token.
    channel_to: Callable[[str], grpc.aio.Channel]
    #: Opens a channel to an explicit ``host:port`` (e.g. one of several PCE replicas) with the same TLS and token;
    #: None outside the runtime (tests may pass their own).
    channel_for: Callable[[str], grpc.aio.Channel] | None = None
