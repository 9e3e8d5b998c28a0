"""Stakeholder viewpoints (CLMC-27, CLMC-28, CLMC-29), enforced on every query path of the CLMC core.

A viewpoint turns a caller into (a) the measurements it may read, (b) a forced ``flame_sfc`` filter for media service
providers (the media services a token owns are listed in its ``media_services`` entry of the auth config), and
(c) whether it may see personal data (the data-subject tag). Queries are narrowed, never merely post-filtered, so
aggregates cannot leak other tenants' data; personal tags are stripped from results and may not be filtered or
grouped on by roles without access to personal data.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from clmc.model import SUBJECT_TAG
from clmc.storage.base import Selection, StoredPoint, TagFilter
from flame_control.runtime.errors import PermissionDenied
from flame_control.runtime.service import Principal, Role

#: Measurements an infrastructure provider may read (its own infrastructure).
INFRASTRUCTURE_PREFIXES = ("nap_", "pce_", "switch_", "host_")
SFC_TAG = "flame_sfc"


@dataclass(frozen=True)
class Viewpoint:
    """What one caller may see."""

    role: Role
    #: None = every media service; otherwise only points whose flame_sfc is one of these.
    media_services: frozenset[str] | None
    personal_data: bool
    infrastructure_only: bool

    def may_read_measurement(self, measurement: str | None) -> bool:
        """False when the whole measurement is outside the viewpoint."""
        if not self.infrastructure_only:
            return True
        return measurement is not None and measurement.startswith(INFRASTRUCTURE_PREFIXES)

    def narrow(self, measurement: str | None, tags: Mapping[str, str], group_by: Sequence[str] = ()) -> Selection:
        """A selection narrowed to this viewpoint (raises PermissionDenied when asking outside it)."""
        if self.role is Role.COMPONENT:
            raise PermissionDenied("components publish data and read KPIs; they do not query measurements")
        if not self.may_read_measurement(measurement):
            raise PermissionDenied(f"role {self.role.value} may only read infrastructure measurements")
        if not self.personal_data and (SUBJECT_TAG in tags or SUBJECT_TAG in group_by):
            raise PermissionDenied(f"role {self.role.value} may not filter or group by personal data ({SUBJECT_TAG})")
        tag_filter: dict[str, frozenset[str]] = {k: frozenset({v}) for k, v in tags.items()}
        if self.media_services is not None:
            wanted = tags.get(SFC_TAG)
            if wanted is not None and wanted not in self.media_services:
                raise PermissionDenied(f"media service {wanted!r} is not yours")
            tag_filter[SFC_TAG] = frozenset({wanted}) if wanted else self.media_services
        return Selection(measurement, tag_filter)

    def redact(self, points: list[StoredPoint]) -> list[StoredPoint]:
        """Points with personal tags removed when the viewpoint excludes personal data."""
        if self.personal_data:
            return points
        return [
            StoredPoint(p.measurement, {k: v for k, v in p.tags.items() if k != SUBJECT_TAG}, p.time_ns, p.fields)
            if SUBJECT_TAG in p.tags
            else p
            for p in points
        ]

    def may_see_service(self, media_service: str) -> bool:
        """True when KPIs and events of ``media_service`` are visible."""
        return self.media_services is None or media_service in self.media_services

    def may_see_kpi(self, media_service: str, measurement: str) -> bool:
        """True when a KPI (and its events) is visible: its media service and its measurement are within the
        viewpoint (an infrastructure provider sees the KPIs on infrastructure measurements)."""
        return self.may_see_service(media_service) and self.may_read_measurement(measurement)

    def may_define_infrastructure_kpi(self, measurement: str) -> bool:
        """True when this caller may define a KPI on an infrastructure measurement scoped by any tag (no forced
        media-service scope): roles that see every media service's infrastructure (platform operator,
        infrastructure provider)."""
        return (
            self.role in (Role.PLATFORM_OPERATOR, Role.INFRASTRUCTURE_PROVIDER)
            and self.media_services is None
            and measurement.startswith(INFRASTRUCTURE_PREFIXES)
        )

    def check_service(self, media_service: str) -> None:
        """Raise PermissionDenied unless ``media_service`` is within the viewpoint."""
        if not self.may_see_service(media_service):
            raise PermissionDenied(f"media service {media_service!r} is not yours")


def viewpoint_of(principal: Principal) -> Viewpoint:
    """The viewpoint of a caller. Media service providers see only the media services of their token entry."""
    role = principal.role
    owned: Collection[str] = getattr(principal, "media_services", frozenset())
    if role is Role.MEDIA_SERVICE_PROVIDER:
        return Viewpoint(role, frozenset(owned), personal_data=False, infrastructure_only=False)
    if role is Role.INFRASTRUCTURE_PROVIDER:
        return Viewpoint(role, None, personal_data=False, infrastructure_only=True)
    if role is Role.ANALYST:
        return Viewpoint(role, None, personal_data=False, infrastructure_only=False)
    if role is Role.COMPONENT:
        return Viewpoint(role, None, personal_data=False, infrastructure_only=False)
    return Viewpoint(role, None, personal_data=True, infrastructure_only=False)


def with_time(sel: Selection, start_ns: int | None, end_ns: int | None) -> Selection:
    """The selection with a time range."""
    return Selection(sel.measurement, sel.tags, start_ns, end_ns)


__all__ = ["TagFilter", "Viewpoint", "viewpoint_of", "with_time"]
