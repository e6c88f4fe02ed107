"""The placement controller: keeps the assignments equal to what placement computes.

It works from the hub's picture of the fleet (``edgefleet.hub.fleet``), not from the store, and
remembers what it decided: ``Placer`` holds the explicit and the traffic planners
(``edgefleet.placement.incremental.ExplicitPlanner``, ``TrafficPlanner``), which redo only the
apps a change can affect. A site that changed is looked at again by the apps that can see it;
an app that changed is placed again, and the apps after it only where it moved the room they
read. Only the apps whose placement differs from what is stored are written.

Level-based all the same: a pass runs on every change the feed brings, and at least every
``resync`` seconds for traffic apps (demand decays with time); every ``full_every`` seconds,
and whenever this hub takes the lead, a full pass places everything again from what the store
holds, so nothing a missed change left behind lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from edgefleet.hub.demand import DEFAULT_TAU
from edgefleet.hub.fleet import FleetChanges, FleetState
from edgefleet.hub.lanes import Lane
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
from edgefleet.model import App, AppDemand, Event, PlacementMode, Site, TenantSpec
from edgefleet.placement import AppKey, AppView, SiteName, SiteView, Usage
from edgefleet.placement.incremental import ExplicitPlanner
from edgefleet.placement.traffic import TrafficApp, TrafficParams, TrafficPlanner

log = logging.getLogger(__name__)


def _describe(by_site: Mapping[str, int]) -> str:
    return ", ".join(f"{site}={n}" for site, n in sorted(by_site.items())) or "no replicas"


def priority(apps: Collection[App]) -> list[App]:
    """Apps in placement order: oldest first (each takes capacity from those after it)."""
    return sorted(
        apps, key=lambda a: (a.metadata.creation_timestamp, a.metadata.tenant, a.metadata.name)
    )


@dataclass(frozen=True)
class Decision:
    """What one pass wants written."""

    placement: dict[AppId, tuple[int, dict[str, SiteShare]]] = field(default_factory=dict)
    """Apps whose assignments change: (generation, share per site)."""
    statuses: dict[AppId, tuple[int, str | None]] = field(default_factory=dict)
    """Apps whose status changes: (generation placed, why it fell short)."""
    events: list[Event] = field(default_factory=list)
    """What to tell: Placed, PlacementShortfall."""


class Placer:
    """Placement of the whole fleet that remembers its last pass (pure: no I/O, no clock)."""

    def __init__(self, params: TrafficParams | None = None) -> None:
        self._params = params
        self._explicit = ExplicitPlanner()
        self._traffic = TrafficPlanner(params)
        self._views: dict[SiteName, SiteView] = {}
        self._traffic_keys: list[AppKey] | None = None
        self._explicit_use: dict[SiteName, Usage] | None = None
        self._counts: dict[AppKey, tuple[dict[SiteName, int], bool, dict[SiteName, SiteShare]]] = {}
        self.started = False
        self.full_passes = 0
        self.passes = 0

    def place(
        self,
        *,
        apps: Sequence[App],
        sites: Mapping[str, Site],
        changed_sites: Collection[str] | None,
        tenants: Mapping[str, TenantSpec],
        current: Mapping[AppId, Mapping[str, SiteShare]],
        demand: Mapping[AppId, Sequence[AppDemand]],
        now: datetime,
    ) -> tuple[dict[AppKey, dict[SiteName, SiteShare]], dict[AppKey, str]]:
        """Where every app of ``apps`` (in priority order) runs, and why those short fell short.

        ``changed_sites`` names the sites that changed since the last pass; None (or no pass
        yet) places everything again from ``current``, the stored assignments.
        """
        self.passes += 1
        full = changed_sites is None or not self.started
        removed: list[SiteName] = []
        changed: list[SiteView] = []
        if full:
            self._views = {SiteName(name): site_view(site) for name, site in sites.items()}
        else:
            assert changed_sites is not None
            for name in changed_sites:
                site = sites.get(name)
                if site is None:
                    if self._views.pop(SiteName(name), None) is not None:
                        removed.append(SiteName(name))
                    continue
                view = site_view(site)
                if self._views.get(SiteName(name)) != view:
                    self._views[SiteName(name)] = view
                    changed.append(view)
        # Residency: each app is placed only in its effective regions; one with none is not.
        shortfalls: dict[AppKey, str] = {}
        placeable: list[App] = []
        for app in apps:
            narrowed = resident(app, tenants.get(app.metadata.tenant or ""))
            if isinstance(narrowed, str):
                shortfalls[AppKey(app.key)] = narrowed
            else:
                placeable.append(narrowed)
        explicit = [a for a in placeable if a.spec.placement.mode != PlacementMode.TRAFFIC]
        traffic = [a for a in placeable if a.spec.placement.mode == PlacementMode.TRAFFIC]
        explicit_views = [app_view(a) for a in explicit]
        if full:
            self.full_passes += 1
            result = self._explicit.full(
                explicit_views,
                list(self._views.values()),
                {
                    AppKey(f"{t}/{n}"): {SiteName(s): share.replicas for s, share in by.items()}
                    for (t, n), by in current.items()
                },
            )
        else:
            result = self._explicit.update(explicit_views, sites=changed, removed=removed)
        functions = {AppKey(a.key) for a in explicit if a.spec.workload.type == "function"}
        placed: dict[AppKey, dict[SiteName, SiteShare]] = {}
        counts_now: dict[AppKey, tuple[dict[SiteName, int], bool, dict[SiteName, SiteShare]]] = {}
        for key, counts in result.replicas.items():
            function = key in functions
            cached = self._counts.get(key)
            if cached is not None and cached[0] == counts and cached[1] == function:
                shares = cached[2]
            else:
                shares = {site: explicit_share(n, function=function) for site, n in counts.items()}
            counts_now[key] = (dict(counts), function, shares)
            placed[key] = dict(shares)
        self._counts = counts_now
        shortfalls.update(result.shortfalls)
        quotas = quotas_of(tenants)
        limited = [a for a in placeable if (a.metadata.tenant or "") in quotas]
        quota_messages: dict[AppKey, str] = {}
        # Quotas: explicit apps first, so traffic apps take capacity only from what they keep.
        within_quotas([a for a in explicit if a in limited], placed, quotas, quota_messages)
        if traffic:
            self._place_traffic(
                traffic,
                explicit_views,
                placed,
                shortfalls,
                current,
                demand,
                now,
                full=full or bool(changed or removed),
            )
            within_quotas(limited, placed, quotas, quota_messages)
        else:
            self._traffic_keys = None
        for key, message in quota_messages.items():
            shortfalls[key] = f"{shortfalls[key]}; {message}" if key in shortfalls else message
        self.started = True
        return placed, shortfalls

    def _place_traffic(
        self,
        traffic: Sequence[App],
        explicit_views: Sequence[AppView],
        placed: dict[AppKey, dict[SiteName, SiteShare]],
        shortfalls: dict[AppKey, str],
        current: Mapping[AppId, Mapping[str, SiteShare]],
        demand: Mapping[AppId, Sequence[AppDemand]],
        now: datetime,
        *,
        full: bool,
    ) -> None:
        apps: list[TrafficApp] = [
            traffic_app(a, demand.get((a.metadata.tenant or "", a.metadata.name), []), now)
            for a in traffic
        ]
        keys = [a.key for a in apps]
        used = usage_of(
            {
                key: {
                    site: share.replicas or (share.max_replicas or 0)
                    for site, share in by_site.items()
                }
                for key, by_site in placed.items()
            },
            explicit_views,
        )
        if full or self._traffic_keys != keys or used != self._explicit_use:
            followed = self._traffic.full(
                apps,
                list(self._views.values()),
                {
                    key: {
                        SiteName(site): as_share(share)
                        for site, share in current.get(_app_id(key), {}).items()
                    }
                    for key in keys
                },
                used=used,
            )
        else:
            followed = self._traffic.update(apps)
        self._traffic_keys = keys
        self._explicit_use = used
        for key, by_site in followed.shares.items():
            placed[key] = {
                site: SiteShare(s.replicas, s.min_replicas, s.max_replicas)
                for site, s in by_site.items()
            }
        shortfalls.update(followed.shortfalls)


def _app_id(key: AppKey) -> AppId:
    tenant, _, name = key.partition("/")
    return tenant, name


def decide(
    apps: Sequence[App],
    placed: Mapping[AppKey, Mapping[SiteName, SiteShare]],
    shortfalls: Mapping[AppKey, str],
    current: Mapping[AppId, Mapping[str, SiteShare]],
    now: datetime,
) -> Decision:
    """What to write for a pass: the apps whose assignments or status differ from what is
    stored, and the events that say so."""
    decision = Decision()
    for app in apps:
        tenant, name = app.metadata.tenant or "", app.metadata.name
        key = AppKey(app.key)
        generation = app.metadata.generation or 1
        shares_here = {str(s): share for s, share in placed.get(key, {}).items()}
        before = current.get((tenant, name), {})
        if shares_here != before or app.status.observed_generation != generation:
            decision.placement[(tenant, name)] = (generation, shares_here)
        shortfall = shortfalls.get(key)
        if (app.status.observed_generation, app.status.message) != (generation, shortfall):
            decision.statuses[(tenant, name)] = (generation, shortfall)
            if shortfall:
                decision.events.append(
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
        counts = {s: share.replicas for s, share in shares_here.items() if share.replicas > 0}
        had = {s: share.replicas for s, share in before.items() if share.replicas > 0}
        if had != counts:
            decision.events.append(
                Event(
                    time=now,
                    kind="App",
                    tenant=tenant,
                    name=name,
                    reason="Placed",
                    message=_placed_message(counts, had),
                )
            )
    return decision


_LISTED = 20
"""Sites a Placed event names; an app at thousands of sites gets counts instead."""


def _placed_message(counts: Mapping[str, int], had: Mapping[str, int]) -> str:
    if len(counts) <= _LISTED and len(had) <= _LISTED:
        return f"replicas: {_describe(counts)} (was {_describe(had)})"
    added = len(counts.keys() - had.keys())
    gone = len(had.keys() - counts.keys())
    return (
        f"replicas: {sum(counts.values())} at {len(counts)} sites (was {sum(had.values())} at "
        f"{len(had)}; {added} sites added, {gone} left)"
    )


class PlacementController:
    """Keeps the assignments equal to what placement computes from apps, sites and health."""

    def __init__(
        self,
        store: Store,
        fleet: FleetState,
        *,
        on_written: Callable[[], Awaitable[None]],
        resync: float = 10.0,
        full_every: float = 300.0,
        demand_tau: float = DEFAULT_TAU,
        params: TrafficParams | None = None,
    ) -> None:
        self._store = store
        self._fleet = fleet
        self._on_written = on_written
        self._lane = Lane("placement")
        self._resync = resync
        self._full_every = full_every
        self._tau = demand_tau
        self._placer = Placer(params)
        self._dirty = asyncio.Event()
        self._changed_sites: set[str] = set()
        self._full = True
        self._last_full = 0.0
        self.passes = 0
        self.is_leader: Callable[[], bool] = lambda: True

    @property
    def placer(self) -> Placer:
        """The pure placement and its memory."""
        return self._placer

    def follow(self, changes: FleetChanges) -> None:
        """Take note of an update of the fleet's picture (a ``FeedFollower`` listener)."""
        if changes.reloaded:
            self._full = True
        self._changed_sites |= changes.sites
        if changes.reloaded or changes.sites or changes.apps or changes.tenants or changes.demand:
            self._dirty.set()

    def trigger(self, *, full: bool = False) -> None:
        """Ask for a placement pass soon (a full one when ``full``: this hub took the lead)."""
        self._full |= full
        self._dirty.set()

    async def run(self) -> None:
        """Loop forever: a pass on every change, and at least every ``resync`` seconds."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self._resync)
            self._dirty.clear()
            if not self.is_leader():
                self._full = True  # whoever led meanwhile wrote what we do not remember
                continue
            if time.monotonic() - self._last_full > self._full_every:
                self._full = True
            try:
                await self.reconcile_async()
            except Exception:
                # A failed pass (database away) is retried on the next change or resync.
                log.exception("placement pass failed")
                self._full = True

    async def reconcile_async(self) -> set[str]:
        """One pass: inputs taken on the event loop, placement and writes in a thread; once it
        wrote, ``on_written`` brings its writes into the hub's picture before the next pass
        reads it (else that pass would place, write and announce the same again)."""
        full, self._full = self._full, False
        changed_sites, self._changed_sites = self._changed_sites, set()
        fleet = self._fleet
        apps = priority(list(fleet.apps.values()))
        sites = dict(fleet.sites)
        tenants = dict(fleet.tenants)
        current = dict(fleet.shares)
        try:
            wrote, changed = await self._lane.run(
                self._pass,
                apps=apps,
                sites=sites,
                tenants=tenants,
                current=current,
                changed_sites=None if full else changed_sites,
            )
        except BaseException:
            self._full = True
            raise
        if wrote:
            await self._on_written()
        return changed

    def _pass(
        self,
        *,
        apps: Sequence[App],
        sites: Mapping[str, Site],
        tenants: Mapping[str, TenantSpec],
        current: Mapping[AppId, Mapping[str, SiteShare]],
        changed_sites: Collection[str] | None,
    ) -> tuple[bool, set[str]]:
        """Place, and write what differs; whether anything was written, and the sites whose
        assignments changed."""
        self.passes += 1
        started = time.monotonic()
        now = utcnow()
        if changed_sites is None:
            self._last_full = started
        traffic = any(a.spec.placement.mode == PlacementMode.TRAFFIC for a in apps)
        demand = self._store.demand.matrix(now, self._tau) if traffic else {}
        placed, shortfalls = self._placer.place(
            apps=apps,
            sites=sites,
            changed_sites=changed_sites,
            tenants=tenants,
            current=current,
            demand=demand,
            now=now,
        )
        decision = decide(apps, placed, shortfalls, current, now)
        written = self._store.placement.write(decision.placement)
        self._store.objects.set_app_placement_status(decision.statuses)
        self._store.events.add(decision.events)
        elapsed = time.monotonic() - started
        if elapsed > 1.0 or changed_sites is None:
            log.info(
                "placement pass (%s) over %d apps and %d sites: %d apps written in %.2fs",
                "full" if changed_sites is None else "incremental",
                len(apps),
                len(sites),
                len(decision.placement),
                elapsed,
            )
        wrote = bool(decision.placement or decision.statuses or decision.events)
        return wrote, written

    def reconcile(self) -> set[str]:
        """One full pass, blocking (for tests and tools)."""
        fleet = self._fleet
        self._full = False
        _, written = self._pass(
            apps=priority(list(fleet.apps.values())),
            sites=dict(fleet.sites),
            tenants=dict(fleet.tenants),
            current=dict(fleet.shares),
            changed_sites=None,
        )
        return written
