"""The routing table as the pure routing functions see it: plain frozen values.

The hub builds it from sites, placement and reported replicas; agents keep a copy on disk; the
DNS servers and (later) the ingress ask ``choose`` for answers over it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

AppId = tuple[str, str]
"""(tenant, app)."""

Network = IPv4Network | IPv6Network
"""A client network."""


@dataclass(frozen=True)
class AccessRule:
    """One rule: a client passes when its address is in ``networks`` or its region in
    ``regions``."""

    who: str
    """Whose rule it is, for messages: ``tenant acme``, ``app shop.acme``."""
    networks: tuple[Network, ...] = ()
    """Allowed client networks."""
    regions: frozenset[str] = frozenset()
    """Allowed client regions."""

    def describe(self) -> str:
        """``networks 10.0.0.0/8, regions eu-west`` (the parts the rule has)."""
        parts = []
        if self.networks:
            parts.append("networks " + ", ".join(str(n) for n in self.networks))
        if self.regions:
            parts.append("regions " + ", ".join(sorted(self.regions)))
        return ", ".join(parts) or "every client"


@dataclass(frozen=True)
class AppAccess:
    """Every rule a client must pass to reach one app."""

    app: str
    """The app as its DNS name says it: ``shop.acme``."""
    rules: tuple[AccessRule, ...] = ()
    """All must let the client in; none: everyone may reach the app."""

    @property
    def networks(self) -> tuple[Network, ...]:
        """Every network the rules name (what the decision can depend on, of an address)."""
        return tuple(network for rule in self.rules for network in rule.networks)


@dataclass(frozen=True)
class SitePoint:
    """A site as routing needs it."""

    name: str
    """Site name."""
    region: str
    """Region."""
    zone: str
    """Zone."""
    lat: float
    """Latitude, degrees."""
    lon: float
    """Longitude, degrees."""
    ip: str
    """IPv4 address of the site's ingress and DNS."""
    ingress_port: int
    """Ingress HTTP port."""
    dns_port: int
    """Edge DNS port."""
    ipv6: str | None = None
    """IPv6 address, if any."""
    networks: tuple[IPv4Network | IPv6Network, ...] = ()
    """Client networks this site serves (maps a client address or ECS subnet to the site)."""
    reachable: bool = True
    """The hub's verdict: False once the site missed its heartbeats."""


@dataclass(frozen=True)
class Endpoint:
    """One site serving one app."""

    site: str
    """Site name (a key of ``RouteTable.sites``)."""
    ready: int
    """Ready replicas of the app at the site."""
    headroom: float = 1.0
    """Free share of the site's capacity for more load, 0 (saturated) to 1 (idle)."""
    wakeable: bool = False
    """The site may start a replica itself: its activator serves a request even at zero ready."""


@dataclass(frozen=True)
class RouteTable:
    """Every app's serving sites, and every site's location and addresses."""

    version: str
    """Changes whenever any answer may change (content hash); caches key on it."""
    sites: Mapping[str, SitePoint] = field(default_factory=dict)
    """All sites by name."""
    apps: Mapping[AppId, tuple[Endpoint, ...]] = field(default_factory=dict)
    """Sites serving each app. An app present with no endpoint exists but has no server."""
    latency_bounds: Mapping[AppId, float] = field(default_factory=dict)
    """Round-trip ms bound of apps that have one (traffic placement's ``maxLatencyMs``)."""
    residency: Mapping[AppId, frozenset[str]] = field(default_factory=dict)
    """Regions of apps that may run only there: no answer, spill-over or offload outside them.
    An app missing here may run anywhere."""
    access: Mapping[AppId, AppAccess] = field(default_factory=dict)
    """Who may reach apps that have access rules (``edgefleet.routing.access``); an app
    missing here lets everyone in."""
    region_networks: Mapping[str, tuple[Network, ...]] = field(default_factory=dict)
    """In a site's share: the client networks of each region an access rule names, for a client
    none of the share's sites holds (the whole table has every site's networks instead)."""


@dataclass(frozen=True)
class Origin:
    """Where a question comes from: a site (edge DNS, or a located client), or a bare point."""

    site: str | None = None
    """The asking site, or the site whose networks contain the client."""
    lat: float | None = None
    """Latitude of the asker, if known without a site."""
    lon: float | None = None
    """Longitude of the asker, if known without a site."""
