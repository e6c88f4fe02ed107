"""From the wire model of the routing table to the frozen values the pure functions take.

One converter per piece (a site, an app's endpoints, its access rules), so that a table kept up
to date one site or one app at a time converts only what changed.
"""

from __future__ import annotations

from ipaddress import ip_network

from edgefleet.model import AppRoutes, RouteSite, RoutingTable
from edgefleet.routing.table import AccessRule, AppAccess, AppId, Endpoint, RouteTable, SitePoint


def site_point(site: RouteSite) -> SitePoint:
    """A site of the wire table as routing sees it."""
    return SitePoint(
        name=site.name,
        region=site.region,
        zone=site.zone,
        lat=site.lat,
        lon=site.lon,
        ip=site.ip,
        ipv6=site.ipv6,
        ingress_port=site.ingress_port,
        dns_port=site.dns_port,
        networks=tuple(ip_network(n) for n in site.networks),
        reachable=site.reachable,
    )


def endpoints(app: AppRoutes) -> tuple[Endpoint, ...]:
    """An app's endpoints as routing sees them."""
    return tuple(
        Endpoint(site=e.site, ready=e.ready, headroom=e.headroom, wakeable=e.wakeable)
        for e in app.endpoints
    )


def app_access(app: AppRoutes) -> AppAccess | None:
    """An app's access rules as routing sees them; None when it has none (open)."""
    if not app.access:
        return None
    return AppAccess(
        app=f"{app.app}.{app.tenant}",
        rules=tuple(
            AccessRule(
                who=rule.who,
                networks=tuple(ip_network(n) for n in rule.networks),
                regions=frozenset(rule.regions),
            )
            for rule in app.access
        ),
    )


def route_table(wire: RoutingTable) -> RouteTable:
    """The routing functions' view of a routing table."""
    sites = {s.name: site_point(s) for s in wire.sites}
    apps: dict[AppId, tuple[Endpoint, ...]] = {}
    bounds: dict[AppId, float] = {}
    residency: dict[AppId, frozenset[str]] = {}
    access: dict[AppId, AppAccess] = {}
    for a in wire.apps:
        key = (a.tenant, a.app)
        apps[key] = endpoints(a)
        if a.max_latency_ms:
            bounds[key] = a.max_latency_ms
        if a.regions is not None:
            residency[key] = frozenset(a.regions)
        rules = app_access(a)
        if rules is not None:
            access[key] = rules
    return RouteTable(
        version=wire.version,
        sites=sites,
        apps=apps,
        latency_bounds=bounds,
        residency=residency,
        access=access,
        region_networks={r.name: tuple(ip_network(n) for n in r.networks) for r in wire.regions},
    )
