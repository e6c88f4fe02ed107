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
