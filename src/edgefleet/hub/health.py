"""Site health verdicts: a pure function of heartbeat times."""

from __future__ import annotations

from datetime import datetime, timedelta

from edgefleet.model import SitePhase

PENDING_FACTOR = 10
"""A declared site may stay silent for this many heartbeat graces before it counts as away."""


def site_phase(
    *,
    last_heartbeat: datetime | None,
    now: datetime,
    grace: timedelta,
    created: datetime | None = None,
    problem: str | None = None,
) -> tuple[SitePhase, str | None]:
    """The phase of a site and why, from its last heartbeat.

    A site nobody has heard from is Pending while it may still be booting (``PENDING_FACTOR``
    graces from its creation), then Unreachable, so it stops holding a share of new replicas
    that nobody runs. One heard from within ``grace`` is Ready; one silent for longer is
    Unreachable. Unreachable is a verdict about the link to the hub, not about the site: its
    replicas are kept (see placement). A site whose agent beats on time but says it cannot run
    replicas (``problem``: its cluster's API does not answer) is Unreachable too, with the
    agent's words: what it runs can neither be changed nor vouched for.
    """
    if last_heartbeat is None:
        if created is not None and now - created > grace * PENDING_FACTOR:
            waited = (now - created).total_seconds()
            return (
                SitePhase.UNREACHABLE,
                f"no agent has reported in the {waited:.0f}s since creation",
            )
        return SitePhase.PENDING, "no agent has reported yet"
    silent = now - last_heartbeat
    if silent > grace:
        return SitePhase.UNREACHABLE, f"no heartbeat for {silent.total_seconds():.0f}s"
    if problem:
        return SitePhase.UNREACHABLE, f"the agent reports: {problem}"
    return SitePhase.READY, None


HEARTBEAT_CEILING = 7.0
"""Longest heartbeat interval the hub asks for, whatever the fleet's size: with ``GRACE_BEATS``
of them, a dead site is told apart within 30 s at any size (the Kubernetes node lease is renewed
every 10 s and lost after 40)."""

GRACE_BEATS = 4.0
"""Heartbeat intervals a site may stay silent before it is Unreachable: three lost beats, or a
hub or a site busy for a few seconds (an app rolling out at thousands of sites), never flip a
site."""


def heartbeat_interval(sites: int, *, rate: float, ceiling: float = HEARTBEAT_CEILING) -> float:
    """Seconds between each agent's heartbeats so that ``sites`` agents send the hub about
    ``rate`` heartbeats a second, at most ``ceiling``. Agents beat at this interval or their own,
    whichever is longer; a small fleet asks for less than any agent's own, so it changes nothing.

    At 1,000 heartbeats a second: 2 s up to 2,000 sites (agents' own interval), 7 s from 7,000
    sites on (1,430 a second at 10,000).
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0 heartbeats a second, not {rate}")
    return min(ceiling, max(0.0, sites / rate))


def heartbeat_grace(interval: float, configured: float) -> float:
    """Seconds without a heartbeat before a site is Unreachable: the configured grace, or more
    when the heartbeat ``interval`` asks for it (``GRACE_BEATS`` intervals). At 7 s intervals:
    28 s, so a dead site is told apart within 30 s at any fleet size."""
    return max(configured, GRACE_BEATS * interval)
