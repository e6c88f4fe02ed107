"""What the edge and central zones share: a routing table and the targets it names."""

from __future__ import annotations

from collections.abc import Mapping

import dns.name

from edgefleet.dns.zone import Lookup, Target, target_for
from edgefleet.routing.answer import choose
from edgefleet.routing.table import Origin, RouteTable, SitePoint

ZONE = dns.name.from_text("edge.internal.")
"""The fleet's zone."""


def target(point: SitePoint) -> Target:
    """Where a client goes for a site."""
    return Target(point.name, point.ip, point.ipv6, point.ingress_port)


class RoutedZone:
    """A fleet zone answering from a routing table; subclasses say who asks and what is down."""

    origin = ZONE

    def __init__(self, *, name: str, address: str, max_answers: int = 2) -> None:
        self._name = name
        self._address = address
        self._max_answers = max_answers
        self.table = RouteTable(version="")
        self._tenants: frozenset[str] = frozenset()

    def _take(self, table: RouteTable) -> None:
        self.table = table
        self._tenants = frozenset(tenant for tenant, _ in table.apps)

    def _lookup(
        self,
        tenant: str,
        app: str,
        origin: Origin,
        *,
        scope_prefix: int,
        health: Mapping[str, bool] | None = None,
        rtt_ms: Mapping[str, float] | None = None,
    ) -> Lookup | None:
        answer = choose(
            self.table, tenant, app, origin, health=health, rtt_ms=rtt_ms, limit=self._max_answers
        )
        if answer is None:
            return None
        return Lookup(targets=tuple(target(s) for s in answer.sites), scope_prefix=scope_prefix)

    def has_tenant(self, tenant: str) -> bool:
        """True if some app of the tenant exists."""
        return tenant in self._tenants

    def site_address(self, site: str) -> Target | None:
        """Address of a site, for SRV targets."""
        point = self.table.sites.get(site)
        return None if point is None else target(point)

    def nameserver(self) -> Target:
        """This server."""
        return target_for(self._name, self._address)
