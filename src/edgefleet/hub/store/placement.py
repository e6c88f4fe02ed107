"""Placement's output: replicas per (site, app), and each site's desired state built from it.

Only rows that differ are written, and only the sites touched get a new desired-state revision,
so an agent is woken only when its own share changed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, bindparam, delete, func, select, tuple_

from edgefleet.hub.schema import assignments, objects, site_revisions
from edgefleet.hub.store import feed
from edgefleet.hub.store.engine import AppId, upsert
from edgefleet.hub.store.feed import FeedKind
from edgefleet.hub.store.objects import tenant_specs
from edgefleet.hub.store.revisions import bump_sites
from edgefleet.model import (
    AppAssignment,
    AppSpec,
    DesiredState,
    LocalScaling,
    PlacementMode,
    TenantSpec,
)
from edgefleet.placement.policy import effective_regions


@dataclass(frozen=True)
class SiteShare:
    """An app's share at one site: replicas, and the bounds the site may scale within itself.

    ``min_replicas``/``max_replicas`` None: exactly ``replicas`` (explicit placement). With
    ``replicas`` 0 and ``max_replicas`` > 0 the app stays placed at zero, for the activator.
    """

    replicas: int
    min_replicas: int | None = None
    max_replicas: int | None = None

    @property
    def placed(self) -> bool:
        """Whether the site keeps an assignment for the app."""
        return self.replicas > 0 or (self.max_replicas or 0) > 0


class PlacementStore:
    """Assignments and the desired state of each site."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def assignments(self) -> dict[AppId, dict[str, int]]:
        """The current placement: replicas per site for every app."""
        return {
            app_id: {site: share.replicas for site, share in by_site.items()}
            for app_id, by_site in self.shares().items()
        }

    def shares(self) -> dict[AppId, dict[str, SiteShare]]:
        """The current placement with each site's local scaling bounds."""
        out: dict[AppId, dict[str, SiteShare]] = defaultdict(dict)
        with self.engine.connect() as conn:
            for row in conn.execute(select(assignments)):
                out[(row.tenant, row.app)][row.site] = SiteShare(
                    row.replicas, row.min_replicas, row.max_replicas
                )
        return dict(out)

    def generations(self, apps: Collection[AppId] | None = None) -> dict[AppId, int]:
        """The app generation each app (all, or ``apps``) was last placed from."""
        query = select(
            assignments.c.tenant, assignments.c.app, func.max(assignments.c.generation)
        ).group_by(assignments.c.tenant, assignments.c.app)
        out: dict[AppId, int] = {}
        with self.engine.connect() as conn:
            if apps is None:
                rows = list(conn.execute(query))
            else:
                wanted = sorted(set(apps))
                rows = []
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start : start + 500]
                    rows.extend(
                        conn.execute(
                            query.where(tuple_(assignments.c.tenant, assignments.c.app).in_(chunk))
                        )
                    )
        for tenant, app, generation in rows:
            out[(tenant, app)] = int(generation)
        return out

    def shares_of(self, apps: Collection[AppId]) -> dict[AppId, dict[str, SiteShare]]:
        """The placement of ``apps`` (those with none are missing)."""
        out: dict[AppId, dict[str, SiteShare]] = defaultdict(dict)
        wanted = sorted(set(apps))
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                for row in conn.execute(
                    select(assignments).where(
                        tuple_(assignments.c.tenant, assignments.c.app).in_(chunk)
                    )
                ):
                    out[(row.tenant, row.app)][row.site] = SiteShare(
                        row.replicas, row.min_replicas, row.max_replicas
                    )
        return dict(out)

    def write(
        self, placement: Mapping[AppId, tuple[int, Mapping[str, int | SiteShare]]]
    ) -> set[str]:
        """Replace the assignments of the given apps; returns the sites whose state changed.

        ``placement`` maps (tenant, app) to (spec generation, replicas or share per site). Apps
        not named are left alone. A site whose share is not ``placed`` loses the assignment.
        Only rows that differ are written; only those sites get a new revision.
        """
        changed: set[str] = set()
        if not placement:
            return changed
        with self.engine.begin() as conn:
            current: dict[AppId, dict[str, tuple[SiteShare, int]]] = defaultdict(dict)
            keys = list(placement)
            for row in conn.execute(
                select(assignments).where(tuple_(assignments.c.tenant, assignments.c.app).in_(keys))
            ):
                current[(row.tenant, row.app)][row.site] = (
                    SiteShare(row.replicas, row.min_replicas, row.max_replicas),
                    row.generation,
                )
            gone: list[dict[str, str]] = []
            rows: list[dict[str, Any]] = []
            apps: set[AppId] = set()
            for app_id, (generation, given) in placement.items():
                tenant, app = app_id
                by_site = {
                    site: share if isinstance(share, SiteShare) else SiteShare(share)
                    for site, share in given.items()
                }
                before = current.get(app_id, {})
                for site in sorted(set(before) - {s for s, sh in by_site.items() if sh.placed}):
                    gone.append({"b_site": site, "b_tenant": tenant, "b_app": app})
                    changed.add(site)
                    apps.add(app_id)
                for site, share in by_site.items():
                    if not share.placed or before.get(site) == (share, generation):
                        continue
                    rows.append(
                        {
                            "site": site,
                            "tenant": tenant,
                            "app": app,
                            "replicas": share.replicas,
                            "generation": generation,
                            "min_replicas": share.min_replicas,
                            "max_replicas": share.max_replicas,
                        }
                    )
                    changed.add(site)
                    apps.add(app_id)
            if gone:
                conn.execute(
                    delete(assignments).where(
                        assignments.c.site == bindparam("b_site"),
                        assignments.c.tenant == bindparam("b_tenant"),
                        assignments.c.app == bindparam("b_app"),
                    ),
                    gone,
                )
            upsert(conn, assignments, rows, keys=("site", "tenant", "app"))
            revision = bump_sites(conn, changed)
            feed.record(conn, [(FeedKind.PLACEMENT, t, a) for t, a in apps], revision=revision)
        return changed

    def desired_state(self, site: str) -> DesiredState:
        """What the agent of ``site`` must run, with the revision to watch from."""
        with self.engine.connect() as conn:
            revision = conn.execute(
                select(site_revisions.c.revision).where(site_revisions.c.site == site)
            ).scalar()
            rows = conn.execute(
                select(assignments, objects.c.spec)
                .join(
                    objects,
                    and_(
                        objects.c.kind == "App",
                        objects.c.tenant == assignments.c.tenant,
                        objects.c.name == assignments.c.app,
                    ),
                )
                .where(assignments.c.site == site)
                .order_by(assignments.c.tenant, assignments.c.app)
            ).all()
            policies = tenant_specs(conn, {row.tenant for row in rows})
        apps = [
            assignment_of(
                row.tenant,
                row.app,
                generation=row.generation,
                share=SiteShare(row.replicas, row.min_replicas, row.max_replicas),
                spec=AppSpec.model_validate(row.spec),
                policy=policies.get(row.tenant),
            )
            for row in rows
        ]
        return DesiredState(site=site, revision=revision or 0, apps=apps)


def assignment_of(
    tenant: str,
    app: str,
    *,
    generation: int,
    share: SiteShare,
    spec: AppSpec,
    policy: TenantSpec | None,
) -> AppAssignment:
    """What a site's agent must run of one app: its share, the app's workload and resources,
    the bounds it scales within, and what it may offload where (residency, quota)."""
    regions = effective_regions(policy, spec)
    return AppAssignment(
        tenant=tenant,
        app=app,
        generation=generation,
        replicas=share.replicas,
        workload=spec.workload,
        resources=spec.resources,
        scaling=_local_scaling(spec, share.min_replicas, share.max_replicas),
        selector=spec.placement.selector if spec.placement.mode == PlacementMode.TRAFFIC else None,
        regions=None if regions is None else sorted(regions),
        # Replicas a neighbour starts are outside placement: they would escape the tenant's quota.
        may_offload=policy is None or policy.quota.unlimited,
    )


def _local_scaling(
    spec: AppSpec, min_replicas: int | None, max_replicas: int | None
) -> LocalScaling | None:
    if min_replicas is None or max_replicas is None:
        return None
    scaling = spec.scaling
    return LocalScaling(
        min_replicas=min_replicas,
        max_replicas=max(min_replicas, max_replicas),
        target_concurrency=scaling.target_concurrency,
        stable_window=scaling.stable_window,
        panic_window=scaling.panic_window,
        panic_threshold=scaling.panic_threshold,
        idle_timeout=scaling.idle_timeout,
    )
