"""The hub's control loops: placement, site health, heartbeat batching.

Each loop is level-based: it reads the whole relevant state, asks a pure function what should be,
and writes only the difference. A trigger makes it run at once; a resync period makes it run
anyway, so a missed trigger costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from edgefleet.hub.health import site_phase
from edgefleet.hub.store import AppId, Store, utcnow
from edgefleet.model import App, Event, Site, SitePhase
from edgefleet.placement import AppKey, AppView, SiteName, SiteView, place_fleet

log = logging.getLogger(__name__)


def site_view(site: Site) -> SiteView:
    """What placement needs to know about a site."""
    return SiteView(
        name=SiteName(site.metadata.name),
        region=site.spec.region,
        zone=site.spec.zone,
        labels=site.metadata.labels,
        reachable=site.status.phase != SitePhase.UNREACHABLE,
        cpu=site.spec.capacity.cpu,
        memory=site.spec.capacity.memory,
        max_replicas=site.spec.capacity.max_replicas,
    )


def app_view(app: App) -> AppView:
    """What placement needs to know about an app."""
    return AppView(
        key=AppKey(app.key),
        policy=app.spec.placement,
        cpu=app.spec.resources.cpu,
        memory=app.spec.resources.memory,
        min_replicas=app.spec.scaling.min_replicas,
        max_replicas=app.spec.scaling.max_replicas,
    )


def _describe(by_site: dict[str, int]) -> str:
    return ", ".join(f"{site}={n}" for site, n in sorted(by_site.items())) or "no replicas"


class PlacementController:
    """Keeps the assignments equal to what placement computes from apps, sites and health."""

    def __init__(
        self,
        store: Store,
        *,
        on_written: Callable[[], Awaitable[None]],
        resync: float = 10.0,
    ) -> None:
        self._store = store
        self._on_written = on_written
        self._resync = resync
        self._dirty = asyncio.Event()
        self.passes = 0
        self.is_leader: Callable[[], bool] = lambda: True

    def trigger(self) -> None:
        """Ask for a placement pass soon."""
        self._dirty.set()

    async def run(self) -> None:
        """Loop forever: a pass on every trigger, and at least every ``resync`` seconds."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self._resync)
            self._dirty.clear()
            if not self.is_leader():
                continue
            try:
                changed = await asyncio.to_thread(self.reconcile)
            except Exception:
                # A failed pass (database away) is retried on the next trigger or resync.
                log.exception("placement pass failed")
                continue
            if changed:
                await self._on_written()

    def reconcile(self) -> set[str]:
        """One placement pass; returns the sites whose desired state changed."""
        self.passes += 1
        sites = self._store.list_sites()
        apps = sorted(
            self._store.list_apps(),
            key=lambda a: (a.metadata.creation_timestamp, a.metadata.tenant, a.metadata.name),
        )
        current = self._store.assignments()
        result = place_fleet(
            [app_view(a) for a in apps],
            [site_view(s) for s in sites],
            {
                AppKey(f"{t}/{n}"): {SiteName(s): r for s, r in by_site.items()}
                for (t, n), by_site in current.items()
            },
        )
        placement: dict[AppId, tuple[int, dict[str, int]]] = {}
        statuses: dict[AppId, tuple[int, str | None]] = {}
        new_events: list[Event] = []
        now = utcnow()
        for app in apps:
            tenant, name = app.metadata.tenant or "", app.metadata.name
            generation = app.metadata.generation or 1
            by_site = {str(s): n for s, n in result.replicas.get(AppKey(app.key), {}).items()}
            placement[(tenant, name)] = (generation, by_site)
            shortfall = result.shortfalls.get(AppKey(app.key))
            if (app.status.observed_generation, app.status.message) != (generation, shortfall):
                statuses[(tenant, name)] = (generation, shortfall)
                if shortfall:
                    new_events.append(
                        Event(
                            time=now,
                            kind="App",
                            tenant=tenant,
                            name=name,
                            reason="PlacementShortfall",
                            message=shortfall,
                            type="Warning",
                        )
                    )
            before = {s: n for s, n in current.get((tenant, name), {}).items() if n > 0}
            if before != {s: n for s, n in by_site.items() if n > 0}:
                new_events.append(
                    Event(
                        time=now,
                        kind="App",
                        tenant=tenant,
                        name=name,
                        reason="Placed",
                        message=f"replicas: {_describe(by_site)} (was {_describe(before)})",
                    )
                )
        changed = self._store.write_placement(placement)
        self._store.set_app_placement_status(statuses)
        self._store.add_events(new_events)
        return changed


class HeartbeatBuffer:
    """Collects heartbeats in memory and writes them in one small transaction per period.

    Ten thousand agents beating every few seconds would otherwise be thousands of transactions a
    second; batched, they are one upsert per second.
    """

    def __init__(self, store: Store, *, period: float = 1.0) -> None:
        self._store = store
        self._period = period
        self._pending: dict[str, tuple[datetime, int]] = {}

    def beat(self, site: str, observed_revision: int) -> None:
        """Record a heartbeat (no I/O)."""
        self._pending[site] = (utcnow(), observed_revision)

    def recent(self) -> dict[str, datetime]:
        """Heartbeats received but not yet written."""
        return {site: at for site, (at, _) in self._pending.items()}

    async def flush(self) -> None:
        """Write what has been collected."""
        batch, self._pending = self._pending, {}
        beats = [(site, at, rev) for site, (at, rev) in batch.items()]
        try:
            await asyncio.to_thread(self._store.record_heartbeats, beats)
        except Exception:
            log.exception("heartbeat flush failed; keeping %d heartbeats", len(beats))
            for site, at, rev in beats:
                self._pending.setdefault(site, (at, rev))

    async def run(self) -> None:
        """Flush every period."""
        while True:
            await asyncio.sleep(self._period)
            await self.flush()


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
                if await asyncio.to_thread(self.check, recent):
                    self._on_change()
            except Exception:
                log.exception("health check failed")

    def check(self, recent: dict[str, datetime]) -> bool:
        """One pass; True when some site changed phase."""
        beats = self._store.last_heartbeats()
        for name, at in recent.items():
            if name not in beats or beats[name] < at:
                beats[name] = at
        now = utcnow()
        changed = False
        for site in self._store.list_sites():
            name = site.metadata.name
            phase, message = site_phase(
                last_heartbeat=beats.get(name),
                now=now,
                grace=self._grace,
                created=site.metadata.creation_timestamp,
            )
            if phase == site.status.phase:
                continue
            self._store.set_site_phase(name, phase.value, message)
            self._store.add_events(
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
