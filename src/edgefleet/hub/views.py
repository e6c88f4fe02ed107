"""What the pure placement sees of the hub's objects: sites, apps, tenants' quotas.

Conversions from the API's models to placement's frozen views, and the few rules that sit between
the two: which workload types a site's driver runs, how an explicit function is placed at zero,
how residency narrows an app's selector, how quotas cut what was placed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from edgefleet.hub.store import SiteShare
from edgefleet.model import (
    WORKLOAD_TYPES,
    App,
    AppDemand,
    DriverName,
    Site,
    SitePhase,
    SiteSelector,
    TenantSpec,
)
from edgefleet.placement import AppKey, AppView, SiteName, SiteView, Usage
from edgefleet.placement.policy import effective_regions, residency_shortfall, resident_selector
from edgefleet.placement.quota import Placed, Quota, QuotaApp, cap_to_quotas
from edgefleet.placement.traffic import Demand, Share, TrafficApp

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
