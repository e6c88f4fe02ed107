"""Distances and round-trip estimates, re-exported from ``edgefleet.geo`` where they live.

They moved there so that placement, a sibling layer of routing, can use them too; importing them
from here keeps working.
"""

from __future__ import annotations

from edgefleet.geo import (
    BASE_RTT_MS,
    EARTH_RADIUS_KM,
    FIBRE_KM_PER_MS,
    estimated_rtt_ms,
    great_circle_km,
)

__all__ = [
    "BASE_RTT_MS",
    "EARTH_RADIUS_KM",
    "FIBRE_KM_PER_MS",
    "estimated_rtt_ms",
    "great_circle_km",
]
