"""Authentication: TLS / mutual TLS credentials and bearer tokens mapped to stakeholder roles.

Tokens are configured by their SHA-256 only (``flame token new ROLE SUBJECT`` prints a token and the entry to paste),
so neither the config file nor the logs hold a usable secret. A caller sends ``authorization: Bearer <token>``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from flame_control.runtime.config import AuthConfig, TlsConfig, TokenEntry
from flame_control.runtime.errors import Unauthenticated
from flame_control.runtime.service import ANONYMOUS_OPERATOR, Principal, Role

#: Methods anyone may call without a token: health probes and schema discovery.
PUBLIC_METHOD_PREFIXES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token, as stored in the config."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random bearer token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class AuthenticatedPrincipal(Principal):
    """A principal plus the media services it owns (its viewpoint as a media service provider)."""

    media_services: frozenset[str] = frozenset()
    #: The NAP a component token is scoped to ("" = none).
    nap_id: str = ""


class TokenStore:
    """Maps presented tokens to principals by constant-time comparison of digests."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self._by_digest: dict[str, AuthenticatedPrincipal] = {}
        for e in entries:
            try:
                role = Role(e.role)
            except ValueError:
                raise ValueError(
                    f"token for {e.subject!r}: unknown role {e.role!r} (one of {', '.join(r.value for r in Role)})"
                ) from None
            if e.nap_id and role is not Role.COMPONENT:
                raise ValueError(f"token for {e.subject!r}: nap_id scopes component tokens only (role {e.role!r})")
            self._by_digest[e.sha256.lower()] = AuthenticatedPrincipal(
                e.subject, role, frozenset(e.media_services), e.nap_id
            )

    @classmethod
    def from_config(cls, auth: AuthConfig) -> TokenStore:
        """Entries from the config plus ``tokens_file`` if set."""
        entries = list(auth.tokens)
        if auth.tokens_file is not None:
            raw = yaml.safe_load(Path(auth.tokens_file).read_text()) or []
            entries += [TokenEntry.model_validate(item) for item in raw]
        return cls(entries)

    def lookup(self, token: str) -> AuthenticatedPrincipal | None:
        """The principal of a token, or None."""
        digest = hash_token(token)
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None


def bearer_from_metadata(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The bearer token in invocation metadata, if any."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    return None


class Authenticator:
    """Resolves the caller of an RPC; with auth disabled every caller is the anonymous platform operator."""

    def __init__(self, auth: AuthConfig) -> None:
        self.enabled = auth.enabled
        self.store = TokenStore.from_config(auth) if auth.enabled else TokenStore([])

    def principal(self, metadata: Sequence[tuple[str, Any]] | None) -> Principal:
        """The principal for invocation metadata; raises Unauthenticated when a token is required and missing/bad."""
        return self.principal_for_token(bearer_from_metadata(metadata))

    def principal_for_token(self, token: str | None) -> Principal:
        """The principal for a presented bearer token (None = none presented); same rules as for RPCs, for the
        non-gRPC surfaces of a service (e.g. the CLMC dashboard)."""
        if not self.enabled:
            return ANONYMOUS_OPERATOR
        if token is None:
            raise Unauthenticated("missing bearer token (send 'authorization: Bearer <token>')")
        principal = self.store.lookup(token)
        if principal is None:
            raise Unauthenticated("unknown bearer token")
        return principal


# The process-wide authenticator, set by the server bootstrap (services read the caller through it).
_current: Authenticator | None = None


def install(authenticator: Authenticator) -> None:
    """Make ``authenticator`` the one used by :func:`principal_from_context`."""
    global _current
    _current = authenticator


def install_or_clear(authenticator: Authenticator | None) -> None:
    """Restore a value returned by :func:`current` (None: no authenticator, auth off)."""
    global _current
    _current = authenticator


def current() -> Authenticator | None:
    """The process-wide authenticator (None before the server bootstrap installed one: auth is off)."""
    return _current


def principal_from_context(context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
    """The caller of the current RPC (already authenticated by the interceptor)."""
    if _current is None:
        return ANONYMOUS_OPERATOR
    return _current.principal(list(context.invocation_metadata() or ()))


def _read(path: Path | None) -> bytes | None:
    return Path(path).read_bytes() if path is not None else None


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials | None:
    """TLS server credentials (mutual TLS when ``client_ca`` is set), or None for plaintext."""
    if not tls.enabled:
        return None
    if tls.cert is None or tls.key is None:
        raise ValueError("tls.enabled needs tls.cert and tls.key")
    client_ca = _read(tls.client_ca)
    return grpc.ssl_server_credentials(
        [(Path(tls.key).read_bytes(), Path(tls.cert).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


class _TokenAuth(grpc.AuthMetadataPlugin):
    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback((("authorization", f"Bearer {self._token}"),), None)


def channel_credentials(tls: TlsConfig, token: str | None) -> grpc.ChannelCredentials | None:
    """Credentials for a channel to a peer: TLS (+ client cert) and the bearer token; None for plaintext."""
    if not tls.enabled:
        return None
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(tls.server_ca or tls.client_ca),
        private_key=_read(tls.client_key),
        certificate_chain=_read(tls.client_cert),
    )
    if token:
        creds = grpc.composite_channel_credentials(creds, grpc.metadata_call_credentials(_TokenAuth(token)))
    return creds


def client_token(auth: AuthConfig) -> str | None:
    """The token this process presents to peers, read from ``auth.client_token_file``."""
    if auth.client_token_file is None:
        return None
    return Path(auth.client_token_file).read_text().strip()
