"""The placement controller: keeps the assignments equal to what placement computes.

Level-based: it reads the whole relevant state, asks the pure placement what should be, and writes
only the difference. A trigger makes it run at once; a resync period makes it run anyway, so a
missed trigger costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from edgefleet.hub.demand import DEFAULT_TAU
from edgefleet.hub.store import AppId, SiteShare, Store, utcnow
from edgefleet.hub.views import (
    app_view,
    as_share,
    explicit_share,
    quotas_of,
    resident,
    site_view,
    traffic_app,
    usage_of,
    within_quotas,
)
from edgefleet.model import App, Event, PlacementMode
from edgefleet.placement import AppKey, SiteName, place_fleet
from edgefleet.placement.traffic import TrafficParams, place_traffic

log = logging.getLogger(__name__)


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
        demand_tau: float = DEFAULT_TAU,
        params: TrafficParams | None = None,
    ) -> None:
        self._store = store
        self._on_written = on_written
        self._resync = resync
        self._tau = demand_tau
        self._params = params
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
        sites = self._store.objects.list_sites()
        apps = sorted(
            self._store.objects.list_apps(),
            key=lambda a: (a.metadata.creation_timestamp, a.metadata.tenant, a.metadata.name),
        )
        tenants = {t.metadata.name: t.spec for t in self._store.objects.list_tenants()}
        shares = self._store.placement.shares()
        current = {
            AppKey(f"{t}/{n}"): {SiteName(s): share for s, share in by_site.items()}
            for (t, n), by_site in shares.items()
        }
        views = [site_view(s) for s in sites]
        # Residency: each app is placed only in its effective regions; one with none is not.
        shortfalls: dict[AppKey, str] = {}
        placeable: list[App] = []
        for app in apps:
            narrowed = resident(app, tenants.get(app.metadata.tenant or ""))
            if isinstance(narrowed, str):
                shortfalls[AppKey(app.key)] = narrowed
            else:
                placeable.append(narrowed)
        quotas = quotas_of(tenants)
        explicit = [a for a in placeable if a.spec.placement.mode != PlacementMode.TRAFFIC]
        traffic = [a for a in placeable if a.spec.placement.mode == PlacementMode.TRAFFIC]
        explicit_views = [app_view(a) for a in explicit]
        result = place_fleet(
            explicit_views,
            views,
            {
                key: {site: share.replicas for site, share in by_site.items()}
                for key, by_site in current.items()
            },
        )
        now = utcnow()
        functions = {AppKey(a.key) for a in explicit if a.spec.workload.type == "function"}
        placed: dict[AppKey, dict[SiteName, SiteShare]] = {
            key: {site: explicit_share(n, function=key in functions) for site, n in by_site.items()}
            for key, by_site in result.replicas.items()
        }
        shortfalls.update(result.shortfalls)
        # Quotas: explicit apps first, so traffic apps take capacity only from what they keep.
        quota_messages: dict[AppKey, str] = {}
        within_quotas(explicit, placed, quotas, quota_messages)
        if traffic:
            demand = self._store.demand.matrix(now, self._tau)
            followed = place_traffic(
                [
                    traffic_app(a, demand.get((a.metadata.tenant or "", a.metadata.name), []), now)
                    for a in traffic
                ],
                views,
                {
                    AppKey(a.key): {
                        site: as_share(share)
                        for site, share in current.get(AppKey(a.key), {}).items()
                    }
                    for a in traffic
                },
                used=usage_of(
                    {
                        key: {
                            site: share.replicas or (share.max_replicas or 0)
                            for site, share in by_site.items()
                        }
                        for key, by_site in placed.items()
                    },
                    explicit_views,
                ),
                params=self._params,
            )
            for key, by_site in followed.shares.items():
                placed[key] = {
                    site: SiteShare(s.replicas, s.min_replicas, s.max_replicas)
                    for site, s in by_site.items()
                }
            shortfalls.update(followed.shortfalls)
            within_quotas(placeable, placed, quotas, quota_messages)
        for key, message in quota_messages.items():
            shortfalls[key] = f"{shortfalls[key]}; {message}" if key in shortfalls else message
        placement: dict[AppId, tuple[int, dict[str, SiteShare]]] = {}
        statuses: dict[AppId, tuple[int, str | None]] = {}
        new_events: list[Event] = []
        for app in apps:
            tenant, name = app.metadata.tenant or "", app.metadata.name
            generation = app.metadata.generation or 1
            shares_here = {str(s): share for s, share in placed.get(AppKey(app.key), {}).items()}
            placement[(tenant, name)] = (generation, shares_here)
            counts = {s: share.replicas for s, share in shares_here.items()}
            shortfall = shortfalls.get(AppKey(app.key))
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
            before = {
                str(s): share.replicas
                for s, share in current.get(AppKey(app.key), {}).items()
                if share.replicas > 0
            }
            if before != {s: n for s, n in counts.items() if n > 0}:
                new_events.append(
                    Event(
                        time=now,
                        kind="App",
                        tenant=tenant,
                        name=name,
                        reason="Placed",
                        message=f"replicas: {_describe(counts)} (was {_describe(before)})",
                    )
                )
        changed = self._store.placement.write(placement)
        self._store.objects.set_app_placement_status(statuses)
        self._store.events.add(new_events)
        return changed
