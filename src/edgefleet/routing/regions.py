"""The client networks of each region: every network of its sites, merged.

A site's share of the routing table holds the records of a few dozen sites, so its ingress
cannot place every client by the site whose networks hold it. An app's access rule that names
regions needs no more than this: whether the client is in one of those regions' networks. The
hub keeps every region's networks here and puts those of the regions the rules name in every
share (``hub/site_routes.py``).

Kept up to date one site at a time: a site that came, went or changed its region or networks
marks its regions, whose merged networks are computed again when next asked (one region's
sites, not the fleet). Pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from edgefleet.routing.table import Network, SitePoint


class RegionNetworks:
    """Every region's client networks (see the module)."""

    def __init__(self) -> None:
        self._sites: dict[str, tuple[str, tuple[Network, ...]]] = {}
        """Each site's region and networks."""
        self._members: dict[str, set[str]] = {}
        """Each region's sites that have networks."""
        self._merged: dict[str, tuple[Network, ...]] = {}
        """Merged networks of regions not changed since they were last asked for."""

    def update(self, sites: Mapping[str, SitePoint], names: Iterable[str]) -> set[str]:
        """Take the records of ``names`` from ``sites`` (a name missing there went); returns
        the regions whose networks may have changed."""
        changed: set[str] = set()
        for name in names:
            point = sites.get(name)
            now = (point.region, point.networks) if point is not None and point.networks else None
            before = self._sites.get(name)
            if before == now:
                continue
            if before is not None:
                self._members[before[0]].discard(name)
                if not self._members[before[0]]:
                    del self._members[before[0]]
                changed.add(before[0])
            if now is None:
                self._sites.pop(name, None)
            else:
                self._sites[name] = now
                self._members.setdefault(now[0], set()).add(name)
                changed.add(now[0])
        for region in changed:
            self._merged.pop(region, None)
        return changed

    def networks(self, region: str) -> tuple[Network, ...]:
        """The region's networks, merged (IPv4 first, then IPv6, each in address order); empty
        for a region no site with networks is in."""
        merged = self._merged.get(region)
        if merged is None:
            found = [n for site in self._members.get(region, ()) for n in self._sites[site][1]]
            v4 = ipaddress.collapse_addresses(n for n in found if n.version == 4)
            v6 = ipaddress.collapse_addresses(n for n in found if n.version == 6)
            merged = (*v4, *v6)
            self._merged[region] = merged
        return merged
