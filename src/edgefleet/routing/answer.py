"""Which sites answer a question for an app: the asker's own site first, then the nearest healthy.

A pure decision. ``choose`` takes the routing table, the app, where the question comes from and
what the asking edge DNS measured itself (probe verdicts, round trips), and returns the sites to
answer with, best first, with every endpoint of the app and why it was or was not chosen (for
``edgefleet dns query``). ``locate`` maps a client address or ECS subnet to the site whose
networks contain it. The DNS servers call both on cache misses; nothing here does I/O.

The rules of ``choose``:

1. An endpoint is eligible when its site is in the table and in the app's residency (its
   regions, when it has any), the hub holds the site reachable, no local probe says it is down
   and it has a ready replica or is wakeable (placed at zero: its activator holds the request
   while a replica starts). A probe can take a site out but not
   bring back one the hub lost: a site the hub cannot reach misses placement changes, so what
   it still serves may be stale.
2. Eligible endpoints fall in four classes, in this order: ready within the app's latency bound,
   wakeable within it, ready beyond it, wakeable beyond it (an app without a bound has every
   site within; a site whose distance is unknown counts as within). So a ready site nearby is
   better than a cold start, and a cold start nearby better than a far site that breaks the
   bound. Within a class: the origin site first (local traffic stays local); then sites with
   headroom > 0 before saturated ones; within each group by distance from the origin, the
   measured round trip where there is one, else the estimate from great-circle km. Sites whose
   distance is unknown (no origin point and no measurement) come after the known ones, by
   headroom, higher first. Ties go to the site name, so the answer never depends on the order of
   the table or of the mappings.
3. The answer is the first ``limit`` eligible sites. With none it is empty, never a fallback to
   an ineligible site: fail closed, so a site that stopped serving drops out of DNS (NODATA).
4. An app not in the table gets None (NXDOMAIN).

One sort over the app's endpoints: O(n log n) per question, nothing precomputed across calls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from operator import itemgetter

from edgefleet.routing.geo import estimated_rtt_ms, great_circle_km
from edgefleet.routing.table import Endpoint, Origin, RouteTable, SitePoint

ClientAddress = str | IPv4Address | IPv6Address | IPv4Network | IPv6Network
"""A client address or ECS client subnet, parsed or as text (``192.0.2.7``, ``2001:db8::/56``)."""

SITE_REMOVED = "site removed"
"""Reason: the endpoint names a site that is not in the table (deleted since)."""
OUTSIDE_RESIDENCY = "outside the app's regions"
"""Reason: the site's region is not one the app may run in (residency)."""
UNREACHABLE = "unreachable (hub)"
"""Reason: the hub lost the site's heartbeats."""
DOWN = "down (probe)"
"""Reason: the asking site's own probe says the site is down."""
NO_READY_REPLICA = "no ready replica"
"""Reason: the site runs no ready replica of the app."""
BEYOND_LIMIT = "beyond answer limit"
"""Reason: eligible, but ``limit`` better sites fill the answer."""
DUPLICATE = "duplicate endpoint"
"""Reason: eligible, but a better-ranked endpoint of the app names the same site (a table bug)."""


@dataclass(frozen=True)
class Candidate:
    """One endpoint of the app, as ``choose`` saw it."""

    site: str
    """Site name."""
    rtt_ms: float | None
    """Round trip from the origin, measured or estimated; None when neither is possible."""
    measured: bool
    """True if ``rtt_ms`` is a measurement (the ``rtt_ms`` argument), False if estimated."""
    headroom: float
    """The endpoint's headroom: free share of the site's capacity."""
    ready: int
    """Ready replicas of the app at the site."""
    wakeable: bool
    """The site may start a replica itself (placed at zero: its activator holds requests)."""
    chosen: bool
    """Whether the site is in the answer."""
    reason: str | None
    """Why the endpoint was skipped (one of the reason constants); None when chosen."""


@dataclass(frozen=True)
class Answer:
    """The sites to answer with, and how they were picked."""

    sites: tuple[SitePoint, ...]
    """Best first, at most ``limit``; empty when no endpoint is eligible."""
    considered: tuple[Candidate, ...]
    """Every endpoint of the app once: the chosen in answer order, then the rest, best first."""
    local: bool
    """True when the origin site serves the app and so comes first."""


_SortKey = tuple[bool, int, int, bool, float, str, int, float]
"""(ineligible, class, tier, distance unknown, distance or -headroom, site, -ready, -headroom)."""


def choose(
    table: RouteTable,
    tenant: str,
    app: str,
    origin: Origin,
    *,
    health: Mapping[str, bool] | None = None,
    rtt_ms: Mapping[str, float] | None = None,
    limit: int = 2,
) -> Answer | None:
    """The sites answering for ``tenant``/``app`` to a question from ``origin``; see the module.

    ``health`` holds the asking site's probe verdicts (False: down; a site missing is judged by
    the hub alone). ``rtt_ms`` holds round trips the asking site measured to other sites; one that
    is not a finite number >= 0 is ignored and the estimate used instead. ``limit`` (>= 1, else
    ``ValueError``) caps the answer. None when the app is not in the table.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    endpoints = table.apps.get((tenant, app))
    if endpoints is None:
        return None
    here = _origin_point(table, origin)
    bound = table.latency_bounds.get((tenant, app))
    verdicts: Mapping[str, bool] = {} if health is None else health
    residency = table.residency.get((tenant, app))
    measurements: Mapping[str, float] = {} if rtt_ms is None else rtt_ms

    # Plain tuples, not objects: this loop runs for every endpoint on every cache miss.
    ranked: list[tuple[_SortKey, Endpoint, SitePoint | None, float | None, bool, str | None]] = []
    for endpoint in endpoints:
        point = table.sites.get(endpoint.site)
        reason = _skip_reason(endpoint, point, verdicts, residency)
        rtt, measured = _distance(endpoint.site, point, here, measurements)
        # NaN sorts unpredictably; a NaN headroom counts as saturated and as 0 in the order.
        headroom = 0.0 if math.isnan(endpoint.headroom) else endpoint.headroom
        # Classes: ready within the bound, wakeable within, ready beyond, wakeable beyond.
        beyond = bound is not None and rtt is not None and rtt > bound
        cold = endpoint.ready <= 0
        grade = 2 * beyond + cold
        # Tiers: the origin site, then sites with headroom, then saturated sites.
        if endpoint.site == origin.site:
            tier = 0
        elif headroom > 0:
            tier = 1
        else:
            tier = 2
        key = (
            reason is not None,
            grade,
            tier,
            rtt is None,
            -headroom if rtt is None else rtt,
            endpoint.site,
            # Only duplicate endpoints of one site get this far; they too must sort the same
            # whatever their order in the table.
            -endpoint.ready,
            -headroom,
        )
        ranked.append((key, endpoint, point, rtt, measured, reason))
    ranked.sort(key=itemgetter(0))

    sites: list[SitePoint] = []
    chosen: list[Candidate] = []
    rest: list[Candidate] = []
    seen: set[str] = set()
    for _, endpoint, point, rtt, measured, reason in ranked:
        if reason is None and point is not None:
            if endpoint.site in seen:
                reason = DUPLICATE
            elif len(sites) >= limit:
                reason = BEYOND_LIMIT
            else:
                sites.append(point)
            seen.add(endpoint.site)
        candidate = Candidate(
            site=endpoint.site,
            rtt_ms=rtt,
            measured=measured,
            headroom=endpoint.headroom,
            ready=endpoint.ready,
            wakeable=endpoint.wakeable,
            chosen=reason is None,
            reason=reason,
        )
        (chosen if reason is None else rest).append(candidate)
    return Answer(
        sites=tuple(sites),
        considered=(*chosen, *rest),
        local=bool(sites) and sites[0].name == origin.site,
    )


def locate(table: RouteTable, address: ClientAddress) -> tuple[Origin, int]:
    """The site whose ``networks`` contain ``address``, by longest prefix, and that prefix length.

    ``address`` is a client address or an ECS client subnet, parsed or as text (a ``/`` makes it
    a subnet; host bits are ignored); unparsable text raises ``ValueError``. An IPv4-mapped IPv6
    address (``::ffff:192.0.2.7``, from a dual-stack socket) counts as the IPv4 address.

    A subnet matches a site network only if the network contains the whole subnet: resolvers
    cache the answer for every client in the subnet, so it must hold for all of them. A site
    network narrower than the subnet does not match.

    Equal prefixes go to the first site name. No match: ``(Origin(), 0)``.
    """
    version, value, length = _as_prefix(address)
    best_site: str | None = None
    best_length = -1
    for name, point in table.sites.items():
        for network in point.networks:
            if network.version != version or network.prefixlen > length:
                continue
            if value & int(network.netmask) != int(network.network_address):
                continue
            if network.prefixlen > best_length or (
                network.prefixlen == best_length and best_site is not None and name < best_site
            ):
                best_site, best_length = name, network.prefixlen
    if best_site is None:
        return Origin(), 0
    return Origin(site=best_site), best_length


def _origin_point(table: RouteTable, origin: Origin) -> tuple[float, float] | None:
    """Where distances are measured from: the origin site's location, else the origin's point."""
    if origin.site is not None:
        point = table.sites.get(origin.site)
        if point is not None:
            return point.lat, point.lon
    if origin.lat is not None and origin.lon is not None:
        return origin.lat, origin.lon
    return None


def _skip_reason(
    endpoint: Endpoint,
    point: SitePoint | None,
    health: Mapping[str, bool],
    residency: frozenset[str] | None,
) -> str | None:
    """Why ``endpoint`` cannot be in an answer, the most basic reason first; None if it can."""
    if point is None:
        return SITE_REMOVED
    if residency is not None and point.region not in residency:
        return OUTSIDE_RESIDENCY
    if not point.reachable:
        return UNREACHABLE
    if not health.get(endpoint.site, True):
        return DOWN
    if endpoint.ready <= 0 and not endpoint.wakeable:
        return NO_READY_REPLICA
    return None


def _distance(
    site: str,
    point: SitePoint | None,
    here: tuple[float, float] | None,
    rtt_ms: Mapping[str, float],
) -> tuple[float | None, bool]:
    """Round trip to ``site`` and whether it was measured; None when it cannot be told."""
    measured = rtt_ms.get(site)
    if measured is not None and math.isfinite(measured) and measured >= 0:
        return measured, True
    if here is None or point is None:
        return None, False
    km = great_circle_km(here[0], here[1], point.lat, point.lon)
    if math.isnan(km):  # a NaN coordinate: unknown, rather than a key that breaks the sort
        return None, False
    return estimated_rtt_ms(km), False


def _as_prefix(address: ClientAddress) -> tuple[int, int, int]:
    """``address`` as (IP version, integer value of its first address, prefix length)."""
    parsed: IPv4Address | IPv6Address | IPv4Network | IPv6Network
    if isinstance(address, str):
        parsed = ip_network(address, strict=False) if "/" in address else ip_address(address)
    else:
        parsed = address
    if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    if isinstance(parsed, IPv4Network | IPv6Network):
        return parsed.version, int(parsed.network_address), parsed.prefixlen
    return parsed.version, int(parsed), parsed.max_prefixlen
