"""Demand on the wire: what an agent counted per app and origin site in one time window."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, field_validator

from edgefleet.model.objects import _Base

DemandRow = tuple[str, str, int, float, int]
"""``(tenant/app, origin site, requests, busy seconds, DNS queries)`` for one window.

Busy seconds are the summed durations of the requests: divided by the window they are the
average number of requests in flight (Little's law), the load placement sizes replicas for.
"""


class DemandReport(_Base):
    """One agent's counts for one window, sent as rows to stay small at thousands of sites."""

    site: str = Field(description="Reporting site.")
    seq: int = Field(ge=0, description="Per-agent sequence number; a resent report is ignored.")
    window_start: datetime = Field(description="Start of the counting window.")
    window_seconds: float = Field(gt=0, le=3600, description="Length of the window.")
    rows: list[DemandRow] = Field(default_factory=list, description="Counts per app and origin.")

    @field_validator("rows")
    @classmethod
    def _sane(cls, rows: list[DemandRow]) -> list[DemandRow]:
        for index, (key, origin, requests, busy, queries) in enumerate(rows):
            if key.count("/") != 1 or not origin:
                raise ValueError(f"row {index}: app must be 'tenant/app' and origin a site name")
            if requests < 0 or queries < 0 or not 0 <= busy < float("inf"):
                raise ValueError(f"row {index}: counts must be finite and not negative")
        return rows


class AppDemand(_Base):
    """The hub's decayed demand for one app from one origin site."""

    origin: str = Field(description="Site the clients are nearest to.")
    requests_per_second: float = Field(description="Decayed request rate.")
    concurrency: float = Field(description="Decayed average requests in flight.")
    dns_per_second: float = Field(description="Decayed DNS query rate.")
    last_request: datetime | None = Field(default=None, description="Last window with requests.")


class FleetDemand(AppDemand):
    """One app's decayed demand from one origin site, in the fleet-wide list."""

    tenant: str = Field(description="Tenant of the app.")
    app: str = Field(description="App name.")


class SiteReporting(_Base):
    """What the hub has taken of one site's demand reports, since the site first reported.

    Comparing ``requests`` with what clients got from the site tells whether any report was
    lost (an agent restart, a hub crash, a cut from the hub).
    """

    site: str = Field(description="The reporting site.")
    last_seq: int = Field(default=-1, description="Newest report sequence number taken.")
    reports: int = Field(default=0, description="Reports taken (resends not counted).")
    requests: float = Field(default=0.0, description="Requests those reports counted, all apps.")
