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


DETECT_WITHIN = 30.0
"""Seconds within which the hub tells a dead site apart at any fleet size (with a configured
grace of at most 6 s, the hub keeping up): the grace plus ``PASS_SLACK``. The Kubernetes node
lease is renewed every 10 s and lost after 40."""

HEARTBEAT_CEILING = 7.0
"""Longest heartbeat interval the hub asks for, whatever the fleet's size: with ``GRACE_BEATS``
of them (21 s) a dead site is told apart within ``DETECT_WITHIN``; 10,000 sites send 1,430
heartbeats a second."""

GRACE_BEATS = 3.0
"""Heartbeat intervals a site may stay silent before it is Unreachable: two lost beats, or a
site busy for a few seconds, never flip a site (silence a busy hub caused is forgiven apart:
``edgefleet.hub.health_monitor``)."""

PASS_SLACK = 2.0
"""Seconds between a deadline passing and the phase being written and read back (a monitor
pass, a feed poll)."""


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
    21 s, so a dead site is told apart within ``DETECT_WITHIN`` at any fleet size."""
    return max(configured, GRACE_BEATS * interval)
