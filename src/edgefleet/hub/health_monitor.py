"""The site health monitor: turns heartbeats into site phases (``edgefleet.hub.health``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from edgefleet.hub.health import site_phase
from edgefleet.hub.heartbeats import HeartbeatBuffer
from edgefleet.hub.store import Store, utcnow
from edgefleet.model import Event, SitePhase

log = logging.getLogger(__name__)


class HealthMonitor:
    """Turns heartbeats into site phases; a phase change triggers placement."""

    def __init__(
        self,
        store: Store,
        heartbeats: HeartbeatBuffer,
        *,
        grace: float,
        on_change: Callable[[], None],
        period: float = 1.0,
    ) -> None:
        self._store = store
        self._heartbeats = heartbeats
        self._grace = timedelta(seconds=grace)
        self._on_change = on_change
        self._period = period
        self.is_leader: Callable[[], bool] = lambda: True

    async def run(self) -> None:
        """Check every period."""
        while True:
            await asyncio.sleep(self._period)
            if not self.is_leader():
                continue
            try:
                recent = self._heartbeats.recent()
                problems = self._heartbeats.recent_problems()
                if await asyncio.to_thread(self.check, recent, problems):
                    self._on_change()
            except Exception:
                log.exception("health check failed")

    def check(
        self, recent: dict[str, datetime], recent_problems: dict[str, str | None] | None = None
    ) -> bool:
        """One pass; True when some site changed phase."""
        beats = self._store.observed.last_heartbeats()
        problems: dict[str, str | None] = dict(self._store.observed.heartbeat_problems())
        for name, at in recent.items():
            if name not in beats or beats[name] < at:
                beats[name] = at
                if recent_problems is not None and name in recent_problems:
                    problems[name] = recent_problems[name]
        now = utcnow()
        changed = False
        for site in self._store.objects.list_sites():
            name = site.metadata.name
            phase, message = site_phase(
                last_heartbeat=beats.get(name),
                now=now,
                grace=self._grace,
                created=site.metadata.creation_timestamp,
                problem=problems.get(name),
            )
            if phase == site.status.phase:
                continue
            self._store.objects.set_site_phase(name, phase.value, message)
            self._store.events.add(
                [
                    Event(
                        time=now,
                        kind="Site",
                        name=name,
                        reason=phase.value,
                        message=f"{site.status.phase.value} -> {phase.value}"
                        + (f": {message}" if message else ""),
                        type="Warning" if phase == SitePhase.UNREACHABLE else "Normal",
                    )
                ]
            )
            log.info("site %s: %s -> %s", name, site.status.phase.value, phase.value)
            changed = True
        return changed
