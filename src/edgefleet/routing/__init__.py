"""Pure routing: which sites answer for an app, nearest healthy first."""

from edgefleet.routing.answer import (
    BEYOND_LIMIT,
    DOWN,
    DUPLICATE,
    NO_READY_REPLICA,
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
from edgefleet.routing.table import AppId, Endpoint, Origin, RouteTable, SitePoint

__all__ = [
    "BASE_RTT_MS",
    "BEYOND_LIMIT",
    "DOWN",
    "DUPLICATE",
    "EARTH_RADIUS_KM",
    "FIBRE_KM_PER_MS",
    "NO_READY_REPLICA",
    "SITE_REMOVED",
    "UNREACHABLE",
    "Answer",
    "AppId",
    "Candidate",
    "ClientAddress",
    "Endpoint",
    "Origin",
    "RouteTable",
    "SitePoint",
    "choose",
    "estimated_rtt_ms",
    "great_circle_km",
    "locate",
]
