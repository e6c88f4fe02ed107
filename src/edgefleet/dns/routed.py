"""What the edge and central zones share: a routing table, the targets it names, and the apps'
access rules (``edgefleet.routing.access``), which both enforce by answering REFUSED."""

from __future__ import annotations

from collections.abc import Mapping

import dns.name

from edgefleet.dns.zone import Client, Lookup, Refused, Target, target_for
from edgefleet.routing.access import allows, distinct_networks, holding
from edgefleet.routing.answer import choose
from edgefleet.routing.table import Network, Origin, RouteTable, SitePoint

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
        self._access_networks: tuple[Network, ...] = ()

    def _take(self, table: RouteTable) -> None:
        self.table = table
        self._tenants = frozenset(tenant for tenant, _ in table.apps)
        self._access_networks = distinct_networks(table.access.values())

    def access_key(self, client: Client) -> frozenset[int]:
        """What every access decision of this table can tell of the client's address: which of
        the networks the apps' rules name hold it (part of the responders' cache key)."""
        if not self._access_networks:
            return frozenset()
        return holding(self._access_networks, client.subnet or client.source)

    def check_access(self, tenant: str, app: str, client: Client, region: str | None) -> None:
        """Raise ``Refused`` when ``client``, in ``region``, may not reach the app."""
        access = self.table.access.get((tenant, app))
        if access is None:
            return
        reason = allows(access, client.subnet or client.source, region)
        if reason is not None:
            # Judged on the whole subnet: the refusal holds for it, not for wider ones.
            scope = client.subnet.prefixlen if client.subnet is not None else 0
            raise Refused(reason, scope_prefix=scope)

    def access_scope(self, tenant: str, app: str, client: Client, scope_prefix: int) -> int:
        """The ECS scope of an answer for an app with access rules: the client's whole subnet
        (another client of a wider scope may be judged otherwise), else ``scope_prefix``."""
        if client.subnet is not None and (tenant, app) in self.table.access:
            return max(scope_prefix, client.subnet.prefixlen)
        return scope_prefix

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
