"""Placement: which sites run how many replicas of each app. Pure decisions, no I/O."""

from edgefleet.placement.explicit import (
    CPU_EPSILON,
    AppKey,
    AppPlacement,
    AppView,
    PlacementResult,
    SiteName,
    SiteView,
    Usage,
    eligible,
    place_app,
    place_fleet,
    room,
)

__all__ = [
    "CPU_EPSILON",
    "AppKey",
    "AppPlacement",
    "AppView",
    "PlacementResult",
    "SiteName",
    "SiteView",
    "Usage",
    "eligible",
    "place_app",
    "place_fleet",
    "room",
]
