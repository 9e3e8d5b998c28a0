"""Media-service attribution of infrastructure points (CLMC-12, CLMC-29): points that name an ``fqdn`` but no
``flame_sfc`` (the NAP's ``nap_http``, which knows FQDNs, not media services) get the ``flame_sfc`` of the media
service that serves that FQDN, learned from the SFEMC's endpoint config events (they carry ``fqdn`` and
``flame_sfc``). So a media service's KPIs (scoped to its ``flame_sfc``) see the demand on its FQDNs, and its
provider's viewpoint includes them; points of FQDNs no service claimed stay unattributed (operator viewpoint only).

Pure mapping + ``apply``; the servicer persists what it learns in the CLMC state file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from clmc.storage.base import SeriesData, canonical_tags

FQDN_TAG = "fqdn"
SFC_TAG = "flame_sfc"


@dataclass
class FqdnAttribution:
    """FQDN -> media service (flame_sfc)."""

    services: dict[str, str] = field(default_factory=dict)

    def learn(self, events: Iterable[SeriesData]) -> dict[str, str]:
        """Take FQDN ownership from endpoint config events; returns the new or changed entries."""
        changed: dict[str, str] = {}
        for e in events:
            tags: Mapping[str, str] = dict(e.tags)
            fqdn, sfc = tags.get(FQDN_TAG), tags.get(SFC_TAG)
            if tags.get("subject_kind") != "endpoint" or not fqdn or not sfc:
                continue
            if self.services.get(fqdn) != sfc:
                self.services[fqdn] = sfc
                changed[fqdn] = sfc
        return changed

    def apply(self, batch: Sequence[SeriesData]) -> list[SeriesData]:
        """Add flame_sfc to points naming an attributed FQDN and no media service."""
        if not self.services:
            return list(batch)
        out = []
        for s in batch:
            tags = dict(s.tags)
            sfc = self.services.get(tags.get(FQDN_TAG, ""))
            if sfc and SFC_TAG not in tags:
                tags[SFC_TAG] = sfc
                s = SeriesData(s.measurement, canonical_tags(tags), s.times_ns, s.fields)
            out.append(s)
        return out
