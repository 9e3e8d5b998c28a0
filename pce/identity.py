"""Who may act as a NAP at the PCE (issue 12 item 6): a NAP session and registrations under a NAP are bound to the
caller's identity. Pure rules over the caller's principal and the SANs of its client certificate (thin adapter:
:func:`certificate_names` reads them from a gRPC context).

- NapSession with ``hello.nap_id = N``: with mutual TLS and a client certificate carrying SANs, a SAN must name N;
  with a token scoped to a NAP (``flame token new component NAME --nap-id N``) the scope must be N; the platform
  operator may act as any NAP (with authentication off every caller is that operator: the embedded default). Anything
  else, an unscoped component token included, is refused: it does not identify a NAP.
- A registration under NAP N (RegisterFqdn / UnregisterFqdn): from N itself (token scope or certificate SAN) or from an
  operator: the platform operator or an unscoped component (the control plane, e.g. the SFEMC placing an endpoint).
"""

from __future__ import annotations

from typing import Any

from flame_control.runtime.errors import PermissionDenied
from flame_control.runtime.service import Principal, Role

SAN_KEY = "x509_subject_alternative_name"


def certificate_names(context: Any) -> frozenset[str]:
    """SANs of the caller's client certificate (empty without mutual TLS or without SANs)."""
    try:
        auth = context.auth_context() or {}
    except (AttributeError, RuntimeError):
        return frozenset()
    return frozenset(v.decode() if isinstance(v, bytes) else str(v) for v in auth.get(SAN_KEY, ()))


def _scope(principal: Principal) -> str:
    return str(getattr(principal, "nap_id", "") or "")


def registers_on_behalf(principal: Principal) -> bool:
    """True when the caller may name another subject as a registration's owner: the platform operator and the control
    plane (an unscoped component such as the SFEMC). A NAP-scoped token owns what it registers, so a rogue NAP cannot
    attach to a provider's name by naming the provider as owner."""
    return principal.role is Role.PLATFORM_OPERATOR or (principal.role is Role.COMPONENT and not _scope(principal))


def check_nap_session(principal: Principal, names: frozenset[str], nap_id: str) -> None:
    """Raise PermissionDenied unless the caller may open the NAP session of ``nap_id``."""
    scope = _scope(principal)
    if names and nap_id not in names:
        raise PermissionDenied(f"the client certificate names {sorted(names)}, not NAP {nap_id!r}")
    if scope and scope != nap_id:
        raise PermissionDenied(f"this token acts as NAP {scope!r}, not {nap_id!r}")
    if names or scope or principal.role is Role.PLATFORM_OPERATOR:
        return
    raise PermissionDenied(
        f"a NAP session needs the NAP's identity: a component token scoped to {nap_id!r} "
        f"(flame token new component NAME --nap-id {nap_id}) or a client certificate naming it"
    )


def check_registration(principal: Principal, names: frozenset[str], nap_id: str) -> None:
    """Raise PermissionDenied unless the caller may register (or unregister) names under ``nap_id``."""
    scope = _scope(principal)
    if scope:
        if scope != nap_id:
            raise PermissionDenied(f"NAP {scope!r} may not register names under NAP {nap_id!r}")
        return
    if nap_id in names or principal.role is Role.PLATFORM_OPERATOR or principal.role is Role.COMPONENT:
        return
    raise PermissionDenied(f"only NAP {nap_id!r} or an operator may register names under it")
