"""Fleet policy at apply: the hub refuses an app its tenant's residency or quota cannot take.

The decision is pure (``edgefleet.placement.policy.apply_refusal``); this is the shell that reads
the tenant and its other apps from the store (a policy just written holds at once), and, only for
an app of ``replicasPerSite``, counts the sites it may run at in the hub's picture of the fleet
(``edgefleet.hub.fleet``), never reading every site. A tenant without a Tenant object has no
policy. Two applies racing each other may both pass; placement caps what
runs at the quota anyway (``edgefleet.placement.quota``), so the check is the clear early
answer, not the guard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastapi import HTTPException, status

from edgefleet.hub.runtime import Hub
from edgefleet.hub.views import runnable_selector, site_view
from edgefleet.model import App, AppSpec, PlacementMode, Site, Tenant, TenantSpec
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
    apps: Sequence[App], tenant: TenantSpec | None, sites: Callable[[], Sequence[SiteView]]
) -> list[Need]:
    """The minimum need of each app (``minimum_need``); ``sites`` is asked only for an app of
    ``replicasPerSite``, whose need depends on how many sites may run it."""
    return [
        minimum_need(
            app.spec,
            eligible_sites=(
                eligible_sites(app.spec, tenant, sites())
                if app.spec.placement.mode != PlacementMode.TRAFFIC
                and app.spec.placement.replicas_per_site is not None
                else 0
            ),
        )
        for app in apps
    ]


class ApplyCheck:
    """The apply check of apps against the fleet as it stands when each is applied: the
    store's tenants, sites and apps, each read once and only when a check needs them, with the
    objects applied before in the same request (``applied``) in their place. An apply of many
    objects checks each app exactly as its own PUT, applied in the same order, would be."""

    def __init__(self, hub: Hub) -> None:
        self._fleet = hub.fleet
        self._objects = hub.store.objects
        self._tenants: dict[str, TenantSpec | None] = {}
        self._sites: dict[str, Site] | None = None
        self._views: list[SiteView] | None = None
        self._apps: dict[str, dict[str, App]] = {}
        self._new_sites: dict[str, Site] = {}
        self._new_apps: dict[str, dict[str, App]] = {}

    def _tenant(self, name: str) -> TenantSpec | None:
        # From the store: a policy just written at this hub must hold for the next apply.
        if name not in self._tenants:
            found = self._objects.bare_tenants([name])
            self._tenants[name] = found[0].spec if found else None
        return self._tenants[name]

    def _site_views(self) -> list[SiteView]:
        if self._views is None:
            if self._sites is None:
                self._sites = dict(self._fleet.sites)
            sites = dict(self._sites)
            for name, site in self._new_sites.items():
                # A site applied again keeps the health the hub last saw of it.
                stored = self._sites.get(name)
                sites[name] = (
                    site if stored is None else site.model_copy(update={"status": stored.status})
                )
            self._views = [site_view(s) for s in sites.values()]
        return self._views

    def _tenant_apps(self, tenant: str) -> dict[str, App]:
        if tenant not in self._apps:
            self._apps[tenant] = {a.metadata.name: a for a in self._objects.bare_apps_of(tenant)}
        return {**self._apps[tenant], **self._new_apps.get(tenant, {})}

    def refusal(self, app: App) -> str | None:
        """Why the hub refuses ``app`` (its tenant's residency or quota), or None."""
        tenant_name = app.metadata.tenant or ""
        tenant = self._tenant(tenant_name)
        if tenant is None and app.spec.policy is None:
            return None

        def views() -> list[SiteView]:
            return self._site_views() if tenant is not None else []

        others = [
            other
            for name, other in (
                self._tenant_apps(tenant_name) if tenant is not None else {}
            ).items()
            if name != app.metadata.name
        ]
        (need,) = tenant_needs([app], tenant, views)
        return apply_refusal(
            app, tenant_spec=tenant, need=need, others=tenant_needs(others, tenant, views)
        )

    def applied(self, obj: Site | App | Tenant) -> None:
        """Count ``obj`` as stored for the checks that follow."""
        if isinstance(obj, Tenant):
            self._tenants[obj.metadata.name] = obj.spec
        elif isinstance(obj, Site):
            self._new_sites[obj.metadata.name] = obj
            self._views = None
        else:
            self._new_apps.setdefault(obj.metadata.tenant or "", {})[obj.metadata.name] = obj


def check_apply(hub: Hub, app: App) -> None:
    """Refuse (422, saying why) an app its tenant's policy cannot take; see the module."""
    refusal = ApplyCheck(hub).refusal(app)
    if refusal is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, refusal)
