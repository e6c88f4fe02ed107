"""Distances on the Earth, and the round trip a client can expect over them.

Shared by routing and placement (sibling layers that may not import each other). Fleet DNS
orders sites by measured round trips where an edge DNS has probed them, and falls back
to these estimates from the sites' coordinates everywhere else. ``choose`` compares the two
kinds in one order, and ``edgefleet dns query`` shows them side by side, so the estimates must be
in the same unit as the measurements and roughly as large: milliseconds of round trip. Traffic
placement checks an app's latency bound against the same estimates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), km: the sphere haversine distances are measured on."""

FIBRE_KM_PER_MS = 100.0
"""Great-circle km a packet covers one way per ms. Light in fibre does about 200 km/ms, but real
paths are longer than the great circle (cable routes, hops), so 100 km/ms is the usual planning
figure."""

BASE_RTT_MS = 1.0
"""Round-trip ms added to any non-zero distance: access links, switching and the first hop,
which cost the same at 5 km as at 5000 km."""


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees (haversine formula)."""
    phi1 = math.radians(lat1)
    phi2 = math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(lon2 - lon1) / 2
    h = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    # Rounding can push h a hair above 1 for antipodal points, where asin would fail.
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, h)))


def estimated_rtt_ms(km: float) -> float:
    """Round trip in ms over ``km``: ``BASE_RTT_MS + 2 * km / FIBRE_KM_PER_MS``.

    That is 1 ms plus 2 ms per 100 km; 0 km gives 0.0 (the site itself). A negative or NaN
    distance is a bug in the caller: ``ValueError``.
    """
    if not km >= 0:  # also catches NaN
        raise ValueError(f"distance must be a number of km >= 0, not {km}")
    if km == 0:
        return 0.0
    return BASE_RTT_MS + 2 * km / FIBRE_KM_PER_MS


def nearest(
    lat: float, lon: float, points: Iterable[tuple[str, float, float]], count: int
) -> list[tuple[str, float]]:
    """The ``count`` named points (name, lat, lon) nearest to (``lat``, ``lon``), nearest
    first with their great-circle km; names break ties, so the order is the same everywhere."""
    ranked = sorted(
        ((great_circle_km(lat, lon, plat, plon), name) for name, plat, plon in points),
    )
    return [(name, km) for km, name in ranked[:count]]
