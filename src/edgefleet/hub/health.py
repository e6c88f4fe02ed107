"""Site health verdicts: a pure function of heartbeat times."""

from __future__ import annotations

from datetime import datetime, timedelta

from edgefleet.model import SitePhase


def site_phase(
    *, last_heartbeat: datetime | None, now: datetime, grace: timedelta
) -> tuple[SitePhase, str | None]:
    """The phase of a site and why, from its last heartbeat.

    A site nobody has heard from is Pending (it may still be booting); one heard from within
    ``grace`` is Ready; one silent for longer is Unreachable. Unreachable is a verdict about the
    link to the hub, not about the site: its replicas are kept (see placement).
    """
    if last_heartbeat is None:
        return SitePhase.PENDING, "no agent has reported yet"
    silent = now - last_heartbeat
    if silent > grace:
        return SitePhase.UNREACHABLE, f"no heartbeat for {silent.total_seconds():.0f}s"
    return SitePhase.READY, None
