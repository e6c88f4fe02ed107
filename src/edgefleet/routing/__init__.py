"""Pure routing: which sites answer for an app, nearest healthy first."""

from edgefleet.routing.access import allows
from edgefleet.routing.answer import (
    BEYOND_LIMIT,
    DOWN,
    DUPLICATE,
    NO_READY_REPLICA,
    OUTSIDE_RESIDENCY,
    SITE_REMOVED,
    UNREACHABLE,
    Answer,
    Candidate,
    ClientAddress,
    choose,
    locate,
)
from edgefleet.routing.geo import (
    BASE_RTT_MS,
    EARTH_RADIUS_KM,
    FIBRE_KM_PER_MS,
    estimated_rtt_ms,
    great_circle_km,
)
from edgefleet.routing.table import (
    AccessRule,
    AppAccess,
    AppId,
    Endpoint,
    Origin,
    RouteTable,
    SitePoint,
)

__all__ = [
    "BASE_RTT_MS",
    "BEYOND_LIMIT",
    "DOWN",
    "DUPLICATE",
    "EARTH_RADIUS_KM",
    "FIBRE_KM_PER_MS",
    "NO_READY_REPLICA",
    "OUTSIDE_RESIDENCY",
    "SITE_REMOVED",
    "UNREACHABLE",
    "AccessRule",
    "Answer",
    "AppAccess",
    "AppId",
    "Candidate",
    "ClientAddress",
    "Endpoint",
    "Origin",
    "RouteTable",
    "SitePoint",
    "allows",
    "choose",
    "estimated_rtt_ms",
    "great_circle_km",
    "locate",
]
