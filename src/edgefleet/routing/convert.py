"""From the wire model of the routing table to the frozen values the pure functions take."""

from __future__ import annotations

from ipaddress import ip_network

from edgefleet.model import RoutingTable
from edgefleet.routing.table import AccessRule, AppAccess, Endpoint, RouteTable, SitePoint


def route_table(wire: RoutingTable) -> RouteTable:
    """The routing functions' view of a routing table."""
    sites = {
        s.name: SitePoint(
            name=s.name,
            region=s.region,
            zone=s.zone,
            lat=s.lat,
            lon=s.lon,
            ip=s.ip,
            ipv6=s.ipv6,
            ingress_port=s.ingress_port,
            dns_port=s.dns_port,
            networks=tuple(ip_network(n) for n in s.networks),
            reachable=s.reachable,
        )
        for s in wire.sites
    }
    apps = {
        (a.tenant, a.app): tuple(
            Endpoint(site=e.site, ready=e.ready, headroom=e.headroom, wakeable=e.wakeable)
            for e in a.endpoints
        )
        for a in wire.apps
    }
    bounds = {(a.tenant, a.app): a.max_latency_ms for a in wire.apps if a.max_latency_ms}
    residency = {
        (a.tenant, a.app): frozenset(a.regions) for a in wire.apps if a.regions is not None
    }
    access = {
        (a.tenant, a.app): AppAccess(
            app=f"{a.app}.{a.tenant}",
            rules=tuple(
                AccessRule(
                    who=rule.who,
                    networks=tuple(ip_network(n) for n in rule.networks),
                    regions=frozenset(rule.regions),
                )
                for rule in a.access
            ),
        )
        for a in wire.apps
        if a.access
    }
    return RouteTable(
        version=wire.version,
        sites=sites,
        apps=apps,
        latency_bounds=bounds,
        residency=residency,
        access=access,
    )
