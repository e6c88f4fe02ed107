"""Fleet policy at apply: the hub refuses an app its tenant's residency or quota cannot take.

The decision is pure (``edgefleet.placement.policy.apply_refusal``); this is the shell that reads
the tenant, its other apps and the sites it needs. A tenant without a Tenant object has no
policy. Two applies racing each other may both pass; placement caps what runs at the quota
anyway (``edgefleet.placement.quota``), so the check is the clear early answer, not the guard.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import HTTPException, status

from edgefleet.hub.runtime import Hub
from edgefleet.hub.store import NotFound
from edgefleet.hub.views import runnable_selector, site_view
from edgefleet.model import App, AppSpec, PlacementMode, Site, TenantSpec
from edgefleet.placement import SiteView, eligible
from edgefleet.placement.policy import (
    Need,
    apply_refusal,
    effective_regions,
    minimum_need,
    resident_selector,
)


def eligible_sites(spec: AppSpec, tenant: TenantSpec | None, sites: Sequence[SiteView]) -> int:
    """How many reachable sites may run an app: its selector, its workload type, residency."""
    selector = resident_selector(spec.placement.selector, effective_regions(tenant, spec))
    if selector is None:
        return 0
    selector = runnable_selector(selector, spec.workload.type)
    return sum(1 for site in sites if site.reachable and eligible(selector, site))


def tenant_needs(
    apps: Sequence[App], tenant: TenantSpec | None, sites: Sequence[SiteView]
) -> list[Need]:
    """The minimum need of each app (``minimum_need``)."""
    return [
        minimum_need(
            app.spec,
            eligible_sites=(
                eligible_sites(app.spec, tenant, sites)
                if app.spec.placement.mode != PlacementMode.TRAFFIC
                and app.spec.placement.replicas_per_site is not None
                else 0
            ),
        )
        for app in apps
    ]


def check_apply(hub: Hub, app: App) -> None:
    """Refuse (422, saying why) an app its tenant's policy cannot take; see the module."""
    tenant_name = app.metadata.tenant or ""
    try:
        tenant: TenantSpec | None = hub.store.objects.get_tenant(tenant_name).spec
    except NotFound:
        tenant = None
    if tenant is None and app.spec.policy is None:
        return
    sites: list[Site] = hub.store.objects.list_sites() if tenant is not None else []
    views = [site_view(s) for s in sites]
    others = [
        other
        for other in (hub.store.objects.list_apps(tenant_name) if tenant is not None else [])
        if other.metadata.name != app.metadata.name
    ]
    (need,) = tenant_needs([app], tenant, views)
    refusal = apply_refusal(
        app, tenant_spec=tenant, need=need, others=tenant_needs(others, tenant, views)
    )
    if refusal is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, refusal)
