"""The hub's control loops: placement, site health, heartbeat batching.

Each loop is level-based: it reads the whole relevant state, asks a pure function what should be,
and writes only the difference. A trigger makes it run at once; a resync period makes it run
anyway, so a missed trigger costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta

from edgefleet.hub.demand import DEFAULT_TAU
from edgefleet.hub.health import site_phase
from edgefleet.hub.store import AppId, SiteShare, Store, utcnow
from edgefleet.model import (
    WORKLOAD_TYPES,
    App,
    AppDemand,
    DriverName,
    Event,
    PlacementMode,
    Site,
    SitePhase,
    SiteSelector,
    TenantSpec,
)
from edgefleet.placement import AppKey, AppView, SiteName, SiteView, Usage, place_fleet
from edgefleet.placement.policy import effective_regions, residency_shortfall, resident_selector
from edgefleet.placement.quota import Placed, Quota, QuotaApp, cap_to_quotas
from edgefleet.placement.traffic import Demand, Share, TrafficApp, TrafficParams, place_traffic

log = logging.getLogger(__name__)


RUNS_LABEL = "runs.edgefleet.io/"
"""Prefix of the labels placement sees on a site for each workload type its driver runs."""

DRIVER_RUNS: dict[DriverName, tuple[str, ...]] = {
    DriverName.PROCESS: ("process",),
    DriverName.KUBERNETES: ("container", "function", "vm"),
    DriverName.SIMULATED: WORKLOAD_TYPES,
}
"""Workload types each driver runs."""


def runs_labels(driver: DriverName) -> dict[str, str]:
    """The labels that tell placement which workload types a site's driver runs."""
    return {RUNS_LABEL + kind: "true" for kind in DRIVER_RUNS[driver]}


def runnable_selector(selector: SiteSelector, workload_type: str) -> SiteSelector:
    """``selector``, also requiring sites whose driver runs ``workload_type``.

    Only placement sees it (sites carry the matching labels in ``site_view``); the selector
    sent to agents stays the app's own.
    """
    labels = {**selector.match_labels, RUNS_LABEL + workload_type: "true"}
    return selector.model_copy(update={"match_labels": labels})


def explicit_share(replicas: int, *, function: bool) -> SiteShare:
    """A site's share of an explicitly placed app.

    A function runs nothing until a request comes: it is placed at zero, and the site's
    activator wakes it up to its share (and puts it back to sleep when idle).
    """
    if function:
        return SiteShare(0, 0, replicas)
    return SiteShare(replicas)


def site_view(site: Site) -> SiteView:
    """What placement needs to know about a site."""
    return SiteView(
        name=SiteName(site.metadata.name),
        region=site.spec.region,
        zone=site.spec.zone,
        labels={**site.metadata.labels, **runs_labels(site.spec.driver)},
        reachable=site.status.phase != SitePhase.UNREACHABLE,
        cpu=site.spec.capacity.cpu,
        memory=site.spec.capacity.memory,
        max_replicas=site.spec.capacity.max_replicas,
        lat=site.spec.location.lat,
        lon=site.spec.location.lon,
    )


def traffic_app(app: App, demand: Sequence[AppDemand], now: datetime) -> TrafficApp:
    """What traffic placement needs to know about an app, with its demand as of ``now``."""
    scaling, policy = app.spec.scaling, app.spec.placement
    return TrafficApp(
        key=AppKey(app.key),
        cpu=app.spec.resources.cpu,
        memory=app.spec.resources.memory,
        selector=runnable_selector(policy.selector, app.spec.workload.type),
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        max_replicas_per_site=scaling.max_replicas_per_site,
        target_concurrency=scaling.target_concurrency,
        max_latency_ms=policy.max_latency_ms,
        min_sites=1 if policy.min_sites is None else policy.min_sites,
        max_sites=policy.max_sites,
        idle_timeout=scaling.idle_timeout,
        demand=tuple(
            Demand(
                origin=SiteName(d.origin),
                concurrency=d.concurrency,
                requests_per_second=d.requests_per_second,
                idle_seconds=(
                    None
                    if d.last_request is None
                    else max(0.0, (now - d.last_request).total_seconds())
                ),
            )
            for d in demand
        ),
    )


def as_share(share: SiteShare) -> Share:
    """A stored share as traffic placement takes it (a fixed one is bounded by its count)."""
    low = 0 if share.min_replicas is None else min(share.min_replicas, share.replicas)
    high = share.replicas if share.max_replicas is None else max(share.max_replicas, share.replicas)
    return Share(replicas=share.replicas, min_replicas=low, max_replicas=high)


def usage_of(
    result: Mapping[AppKey, Mapping[SiteName, int]], apps: Sequence[AppView]
) -> dict[SiteName, Usage]:
    """What explicitly placed apps take at each site: traffic apps share what is left."""
    need = {a.key: a for a in apps}
    used: dict[SiteName, Usage] = {}
    for key, by_site in result.items():
        app = need[key]
        for site, count in by_site.items():
            used[site] = used.get(site, Usage()).plus(app, count)
    return used


def app_view(app: App) -> AppView:
    """What placement needs to know about an app."""
    policy = app.spec.placement
    selector = runnable_selector(policy.selector, app.spec.workload.type)
    return AppView(
        key=AppKey(app.key),
        policy=policy.model_copy(update={"selector": selector}),
        cpu=app.spec.resources.cpu,
        memory=app.spec.resources.memory,
        min_replicas=app.spec.scaling.min_replicas,
        max_replicas=app.spec.scaling.max_replicas,
    )


def resident(app: App, tenant: TenantSpec | None) -> App | str:
    """``app`` with its selector narrowed to its effective residency (its tenant's regions and
    its own), or why no region is left for it."""
    selector = resident_selector(app.spec.placement.selector, effective_regions(tenant, app.spec))
    if selector is None:
        why = residency_shortfall(
            tenant=app.metadata.tenant or "", tenant_spec=tenant, spec=app.spec
        )
        return why or "placed nowhere: no region is left for the app"
    if selector == app.spec.placement.selector:
        return app
    placement = app.spec.placement.model_copy(update={"selector": selector})
    return app.model_copy(update={"spec": app.spec.model_copy(update={"placement": placement})})


def quotas_of(tenants: Mapping[str, TenantSpec]) -> dict[str, Quota]:
    """Each tenant's quota as placement takes it."""
    return {
        name: Quota(replicas=spec.quota.replicas, cpu=spec.quota.cpu, memory=spec.quota.memory)
        for name, spec in tenants.items()
    }


def quota_app(app: App) -> QuotaApp:
    """What quotas need to know about an app."""
    return QuotaApp(
        key=AppKey(app.key),
        tenant=app.metadata.tenant or "",
        cpu=app.spec.resources.cpu,
        memory=app.spec.resources.memory,
    )


def within_quotas(
    apps: Sequence[App],
    placed: dict[AppKey, dict[SiteName, SiteShare]],
    quotas: Mapping[str, Quota],
    messages: dict[AppKey, str],
) -> None:
    """Cut ``placed`` (in place) to the tenants' quotas, ``apps`` in priority order; each app
    cut gets its message in ``messages`` (replacing one from an earlier cut)."""
    if not quotas:
        return
    cut = cap_to_quotas(
        [quota_app(a) for a in apps],
        {
            key: {
                site: Placed(share.replicas, max(share.replicas, share.max_replicas or 0))
                for site, share in by_site.items()
            }
            for key, by_site in placed.items()
        },
        quotas,
    )
    for app in apps:
        key = AppKey(app.key)
        before = placed.get(key, {})
        placed[key] = {
            site: (
                SiteShare(share.replicas)
                if before[site].max_replicas is None
                else SiteShare(
                    share.replicas,
                    min(before[site].min_replicas or 0, share.replicas),
                    share.ceiling,
                )
            )
            for site, share in cut.placed.get(key, {}).items()
        }
        if key in cut.messages:
            messages[key] = cut.messages[key]


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
        sites = self._store.list_sites()
        apps = sorted(
            self._store.list_apps(),
            key=lambda a: (a.metadata.creation_timestamp, a.metadata.tenant, a.metadata.name),
        )
        tenants = {t.metadata.name: t.spec for t in self._store.list_tenants()}
        shares = self._store.shares()
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
            demand = self._store.demand_matrix(now, self._tau)
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
        self._pending: dict[str, tuple[datetime, int, str | None]] = {}
        self._problems: dict[str, str | None] = {}

    def beat(self, site: str, observed_revision: int, problem: str | None = None) -> None:
        """Record a heartbeat and what the agent says keeps it from running replicas (no I/O)."""
        self._pending[site] = (utcnow(), observed_revision, problem)
        self._problems[site] = problem

    def problem(self, site: str) -> str | None:
        """The problem the site's latest heartbeat to this hub reported, if any."""
        return self._problems.get(site)

    def recent(self) -> dict[str, datetime]:
        """Heartbeats received but not yet written."""
        return {site: at for site, (at, _, _) in self._pending.items()}

    def recent_problems(self) -> dict[str, str | None]:
        """Per site with a heartbeat not yet written, its problem (None: it has none now)."""
        return {site: problem for site, (_, _, problem) in self._pending.items()}

    async def flush(self) -> None:
        """Write what has been collected."""
        batch, self._pending = self._pending, {}
        beats = [(site, at, rev, problem) for site, (at, rev, problem) in batch.items()]
        try:
            await asyncio.to_thread(self._store.record_heartbeats, beats)
        except Exception:
            log.exception("heartbeat flush failed; keeping %d heartbeats", len(beats))
            for site, at, rev, problem in beats:
                self._pending.setdefault(site, (at, rev, problem))

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
                problems = self._heartbeats.recent_problems()
                if await asyncio.to_thread(self.check, recent, problems):
                    self._on_change()
            except Exception:
                log.exception("health check failed")

    def check(
        self, recent: dict[str, datetime], recent_problems: dict[str, str | None] | None = None
    ) -> bool:
        """One pass; True when some site changed phase."""
        beats = self._store.last_heartbeats()
        problems: dict[str, str | None] = dict(self._store.heartbeat_problems())
        for name, at in recent.items():
            if name not in beats or beats[name] < at:
                beats[name] = at
                if recent_problems is not None and name in recent_problems:
                    problems[name] = recent_problems[name]
        now = utcnow()
        changed = False
        for site in self._store.list_sites():
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
