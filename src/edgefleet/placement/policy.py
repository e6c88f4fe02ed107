"""Effective fleet policy of an app: where it may run, who may reach it, what it needs.

Pure functions over the model. A tenant's policy (``Tenant.spec``) and the app's own
(``App.spec.policy``) combine:

- residency: the regions both allow. An empty list at either level does not constrain; so the
  effective residency is None (anywhere), or a set of regions, which is empty when the two
  levels have none in common (nowhere).
- access: every rule must let the client in (the tenant's and the app's); an open rule is left
  out.
- quota: an app's minimum need is what it runs however quiet it is: explicit placement its
  replicas (clamped to its scaling bounds), or ``replicasPerSite`` times its eligible sites;
  traffic placement its ``scaling.minReplicas``. Each times its resources per replica.

``apply_refusal`` is what the hub checks when an app is applied: its residency must name a
region it can run in, and its minimum need plus what the tenant's other apps need must stay
within the tenant's quota. Placement (``edgefleet.placement.quota``) caps what runs anyway: a
quota lowered later, or applies that raced each other, cannot take the tenant past it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgefleet.model import AccessRule, App, AppSpec, PlacementMode, SiteSelector, TenantSpec
from edgefleet.placement.explicit import CPU_EPSILON

_MEMORY_UNITS = (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024))


@dataclass(frozen=True)
class Need:
    """What an app takes at least, wherever it runs."""

    replicas: int
    """Replicas."""
    cpu: float
    """Cores: replicas times cores per replica."""
    memory: int
    """Bytes: replicas times bytes per replica."""

    def plus(self, other: Need) -> Need:
        """Both needs together."""
        return Need(
            replicas=self.replicas + other.replicas,
            cpu=self.cpu + other.cpu,
            memory=self.memory + other.memory,
        )


NO_NEED = Need(replicas=0, cpu=0.0, memory=0)
"""Nothing."""


def effective_regions(tenant: TenantSpec | None, spec: AppSpec) -> frozenset[str] | None:
    """The regions the app may run in: None for anywhere, else the set (maybe empty: nowhere)."""
    levels = [
        regions
        for regions in (
            tenant.regions if tenant is not None else [],
            spec.policy.regions if spec.policy is not None else [],
        )
        if regions
    ]
    if not levels:
        return None
    allowed = frozenset(levels[0])
    for regions in levels[1:]:
        allowed &= frozenset(regions)
    return allowed


def resident_selector(
    selector: SiteSelector, regions: frozenset[str] | None
) -> SiteSelector | None:
    """``selector`` narrowed to the residency ``regions``; None when no region is left.

    The selector's own regions keep their order; without any, the residency's are used, sorted.
    """
    if regions is None:
        return selector
    if selector.regions:
        kept = [region for region in selector.regions if region in regions]
    else:
        kept = sorted(regions)
    if not kept:
        return None
    return selector.model_copy(update={"regions": kept})


def residency_shortfall(
    *, tenant: str, tenant_spec: TenantSpec | None, spec: AppSpec
) -> str | None:
    """Why the app can run in no region, or None when some region is left."""
    tenant_regions = tenant_spec.regions if tenant_spec is not None else []
    app_regions = spec.policy.regions if spec.policy is not None else []
    allowed = effective_regions(tenant_spec, spec)
    if allowed is not None and not allowed:
        return (
            f"placed nowhere: tenant {tenant}'s regions ({_listing(tenant_regions)}) and "
            f"spec.policy.regions ({_listing(app_regions)}) have no region in common"
        )
    if resident_selector(spec.placement.selector, allowed) is None:
        return (
            f"placed nowhere: spec.placement.selector.regions "
            f"({_listing(spec.placement.selector.regions)}) are outside the app's residency "
            f"({_listing(sorted(allowed or ()))})"
        )
    return None


def access_rules(
    *, tenant: str, tenant_spec: TenantSpec | None, app: str, spec: AppSpec
) -> list[tuple[str, AccessRule]]:
    """The rules a client must pass to reach the app, each with whose it is; open ones left out.

    Whose: ``tenant acme`` or ``app shop.acme`` (the app as its DNS name says it).
    """
    rules: list[tuple[str, AccessRule]] = []
    if tenant_spec is not None and not tenant_spec.access.open:
        rules.append((f"tenant {tenant}", tenant_spec.access))
    if spec.policy is not None and not spec.policy.access.open:
        rules.append((f"app {app}.{tenant}", spec.policy.access))
    return rules


def minimum_need(spec: AppSpec, *, eligible_sites: int) -> Need:
    """What the app runs however quiet it is (see the module); ``eligible_sites`` counts the
    reachable sites it may run at, for ``replicasPerSite``."""
    scaling, placement = spec.scaling, spec.placement
    if placement.mode == PlacementMode.TRAFFIC:
        replicas = scaling.min_replicas
    elif placement.replicas_per_site is not None:
        replicas = min(placement.replicas_per_site * eligible_sites, scaling.max_replicas)
    else:
        asked = placement.replicas if placement.replicas is not None else 1
        replicas = min(max(asked, scaling.min_replicas), scaling.max_replicas)
    return Need(
        replicas=replicas,
        cpu=replicas * spec.resources.cpu,
        memory=replicas * spec.resources.memory,
    )


def apply_refusal(
    app: App,
    *,
    tenant_spec: TenantSpec | None,
    need: Need,
    others: Sequence[Need],
) -> str | None:
    """Why the hub refuses to store ``app``, or None when it may.

    ``need`` is the app's minimum need, ``others`` the minimum needs of the tenant's other apps
    (the app's own earlier version left out). Residency first, then the quota by replicas, cpu
    and memory: the message names the field and the figures.
    """
    tenant = app.metadata.tenant or ""
    spec = app.spec
    if tenant_spec is not None and tenant_spec.regions and spec.policy is not None:
        outside = [r for r in spec.policy.regions if r not in tenant_spec.regions]
        if outside:
            return (
                f"spec.policy.regions: {_listing(outside)} "
                f"{'is' if len(outside) == 1 else 'are'} outside tenant {tenant}'s regions "
                f"({_listing(tenant_spec.regions)}): name only those, or change the Tenant"
            )
    shortfall = residency_shortfall(tenant=tenant, tenant_spec=tenant_spec, spec=spec)
    if shortfall is not None:
        return shortfall.replace("placed nowhere: ", "", 1) + ": no site could run the app"
    if tenant_spec is None:
        return None
    used = NO_NEED
    for other in others:
        used = used.plus(other)
    return quota_refusal(
        tenant=tenant,
        quota_replicas=tenant_spec.quota.replicas,
        quota_cpu=tenant_spec.quota.cpu,
        quota_memory=tenant_spec.quota.memory,
        used=used,
        need=need,
        per_replica_cpu=spec.resources.cpu,
        per_replica_memory=spec.resources.memory,
    )


def quota_refusal(
    *,
    tenant: str,
    quota_replicas: int | None,
    quota_cpu: float | None,
    quota_memory: int | None,
    used: Need,
    need: Need,
    per_replica_cpu: float,
    per_replica_memory: int,
) -> str | None:
    """Why ``need`` on top of ``used`` breaks the tenant's quota (the first limit broken, in
    the order replicas, cpu, memory), or None when it fits."""
    hint = "ask for fewer replicas or raise the tenant's quota"
    if quota_replicas is not None and used.replicas + need.replicas > quota_replicas:
        return (
            f"tenant {tenant}'s quota is {quota_replicas} replicas; its apps need "
            f"{used.replicas} and this one asks {need.replicas} more: {hint}"
        )
    if quota_cpu is not None and used.cpu + need.cpu > quota_cpu + CPU_EPSILON:
        return (
            f"tenant {tenant}'s quota is {format_cpu(quota_cpu)} cpu; its apps need "
            f"{format_cpu(used.cpu)} and this one asks {format_cpu(need.cpu)} more "
            f"({_replicas(need.replicas)} x {format_cpu(per_replica_cpu)}): {hint}"
        )
    if quota_memory is not None and used.memory + need.memory > quota_memory:
        return (
            f"tenant {tenant}'s quota is {format_memory(quota_memory)} of memory; its apps "
            f"need {format_memory(used.memory)} and this one asks {format_memory(need.memory)} "
            f"more ({_replicas(need.replicas)} x {format_memory(per_replica_memory)}): {hint}"
        )
    return None


def format_cpu(cores: float) -> str:
    """Cores as a person writes them: ``8``, ``7.5``, ``0.3`` (no float noise)."""
    return f"{round(cores, 3):g}"


def format_memory(amount: int) -> str:
    """Bytes in the largest binary unit that keeps it short: ``16Gi``, ``1.5Gi``, ``512Mi``."""
    for unit, size in _MEMORY_UNITS:
        if amount >= size:
            return f"{round(amount / size, 2):g}{unit}"
    return str(amount)


def _replicas(count: int) -> str:
    return f"{count} replica" if count == 1 else f"{count} replicas"


def _listing(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none"
