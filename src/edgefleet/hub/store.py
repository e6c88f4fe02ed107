"""The hub's store: SQLAlchemy Core over SQLite (WAL, the embedded default) or PostgreSQL.

Every write is one transaction. Every object write draws a new value from one global revision
counter and stores it as the object's resourceVersion, so an update that names an older version is
refused (409). Site desired-state revisions come from the same counter: one query
(``sites_changed_since``) finds every site whose desired state changed after a given revision,
which is how several hub replicas learn of each other's writes without scanning every site.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from importlib import resources
from typing import Any, TypeVar, overload

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from edgefleet.hub.demand import (
    ORIGIN_MAX,
    PRUNE_EPSILON,
    PRUNE_RETENTION,
    DemandKey,
    DemandState,
    absorb,
)
from edgefleet.hub.schema import (
    assignments,
    counters,
    demand,
    demand_reports,
    events,
    heartbeats,
    objects,
    replica_counts,
    site_reports,
    site_revisions,
)
from edgefleet.model import (
    App,
    AppAssignment,
    AppDemand,
    AppSpec,
    AppStatus,
    DemandReport,
    DemandRow,
    DesiredState,
    Event,
    LocalScaling,
    ObjectMeta,
    PlacementMode,
    ReplicaState,
    Resources,
    Site,
    SiteReplicas,
    SiteReporting,
    SiteSpec,
    SiteStatus,
    StatusReport,
    Tenant,
    TenantSpec,
    TenantStatus,
)
from edgefleet.placement.policy import effective_regions

AppId = tuple[str, str]
"""(tenant, app name)."""

Obj = TypeVar("Obj", Site, App, Tenant)


class StoreError(Exception):
    """Base of the errors the API maps to HTTP status codes."""


class NotFound(StoreError):
    """No such object (404)."""


class Conflict(StoreError):
    """The write raced another or named a stale resourceVersion (409)."""


class Outcome(StrEnum):
    """What a write did."""

    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"


def utcnow() -> datetime:
    """Now, timezone-aware."""
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


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


@dataclass(frozen=True)
class ReplicaCount:
    """Observed replicas of one app at one site."""

    running: int
    ready: int


class Store:
    """Desired and observed state of the fleet. Thread-safe: each call takes its own connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = _engine(url)

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        config = Config()
        config.set_main_option(
            "script_location", str(resources.files("edgefleet.hub") / "migrations")
        )
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    # -- objects ---------------------------------------------------------------------------------

    def _one(
        self, kind: str, tenant: str, name: str, missing: str, read: Callable[..., list[Obj]]
    ) -> Obj:
        """One object of ``kind`` read with its status by ``read``; NotFound(``missing``)."""
        with self.engine.connect() as conn:
            row = _object_row(conn, kind, tenant, name)
            if row is None:
                raise NotFound(missing)
            return read(conn, [row])[0]

    def _fleet_scoped(self, kind: str, read: Callable[..., list[Obj]]) -> list[Obj]:
        """Every fleet-scoped object of ``kind``, by name, read with its status by ``read``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(objects).where(objects.c.kind == kind).order_by(objects.c.name)
            ).all()
            return read(conn, rows)

    def sites_digest(self) -> int:
        """One number for what a dashboard shows of every site: its revision, phase, message
        and replica counts. Two small queries and no model built: a tenth of ``list_sites``'s
        time at 2,000 sites, for the change stream's poll every second."""
        with self.engine.connect() as conn:
            sites = conn.execute(
                select(objects.c.name, objects.c.resource_version, objects.c.status)
                .where(objects.c.kind == "Site")
                .order_by(objects.c.name)
            ).all()
            totals = conn.execute(
                select(
                    replica_counts.c.site,
                    func.sum(replica_counts.c.running),
                    func.sum(replica_counts.c.ready),
                )
                .group_by(replica_counts.c.site)
                .order_by(replica_counts.c.site)
            ).all()
        return hash(
            (
                tuple(
                    (r.name, r.resource_version, r.status.get("phase"), r.status.get("message"))
                    for r in sites
                ),
                tuple((site, int(running), int(ready)) for site, running, ready in totals),
            )
        )

    def get_site(self, name: str) -> Site:
        """One site with its observed status; NotFound if absent."""
        return self._one("Site", "", name, f"site {name!r} not found", self._sites)

    def list_sites(self) -> list[Site]:
        """Every site, by name."""
        return self._fleet_scoped("Site", self._sites)

    def get_app(self, tenant: str, name: str) -> App:
        """One app with its observed status; NotFound if absent."""
        missing = f"app {name!r} not found in tenant {tenant!r}"
        return self._one("App", tenant, name, missing, self._apps)

    def list_apps(self, tenant: str | None = None) -> list[App]:
        """Every app (of one tenant if given), by tenant and name."""
        query = select(objects).where(objects.c.kind == "App")
        if tenant is not None:
            query = query.where(objects.c.tenant == tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(objects.c.tenant, objects.c.name)).all()
            return self._apps(conn, rows)

    def get_tenant(self, name: str) -> Tenant:
        """One tenant's policy, with what its apps take now; NotFound if absent."""
        return self._one("Tenant", "", name, f"tenant {name!r} not found", self._tenants)

    def list_tenants(self) -> list[Tenant]:
        """Every tenant with a policy, by name."""
        return self._fleet_scoped("Tenant", self._tenants)

    def delete_tenant(self, name: str) -> set[str]:
        """Delete a tenant's policy (its apps stay, now without it); returns the sites running
        its apps, whose desired state changed."""
        with self.engine.begin() as conn:
            if _object_row(conn, "Tenant", "", name, for_update=True) is None:
                raise NotFound(f"tenant {name!r} not found")
            conn.execute(
                delete(objects).where(
                    objects.c.kind == "Tenant", objects.c.tenant == "", objects.c.name == name
                )
            )
            sites = _tenant_sites(conn, name)
            _bump_sites(conn, sites)
        return sites

    @overload
    def put(self, obj: Site, *, create_only: bool = False) -> tuple[Site, Outcome]: ...
    @overload
    def put(self, obj: App, *, create_only: bool = False) -> tuple[App, Outcome]: ...
    @overload
    def put(self, obj: Tenant, *, create_only: bool = False) -> tuple[Tenant, Outcome]: ...

    def put(
        self, obj: Site | App | Tenant, *, create_only: bool = False
    ) -> tuple[Site | App | Tenant, Outcome]:
        """Create or update from a manifest (``apply``); returns the stored object and outcome.

        A resourceVersion in the manifest must match the stored one (else Conflict); without one
        the update goes through. A write that changes nothing is not a write: no new version.
        A tenant's policy that changes gives the sites running its apps a new desired state
        (residency and offload terms travel with each assignment).
        """
        kind, tenant, name = obj.kind, obj.metadata.tenant or "", obj.metadata.name
        spec = obj.spec.model_dump(mode="json", by_alias=True)
        meta = {"labels": obj.metadata.labels, "annotations": obj.metadata.annotations}
        try:
            with self.engine.begin() as conn:
                row = _object_row(conn, kind, tenant, name, for_update=True)
                if row is None:
                    if obj.metadata.resource_version is not None:
                        raise NotFound(
                            f"{kind.lower()} {name!r} does not exist: drop "
                            "metadata.resourceVersion to create it"
                        )
                    conn.execute(
                        insert(objects).values(
                            uid=str(uuid.uuid4()),
                            kind=kind,
                            tenant=tenant,
                            name=name,
                            generation=1,
                            resource_version=_next_revision(conn),
                            meta=meta,
                            spec=spec,
                            status={},
                            created_at=utcnow(),
                        )
                    )
                    outcome = Outcome.CREATED
                else:
                    if create_only:
                        raise Conflict(f"{kind.lower()} {name!r} already exists")
                    wanted = obj.metadata.resource_version
                    if wanted is not None and wanted != str(row.resource_version):
                        raise Conflict(
                            f"{kind.lower()} {name!r} was changed since version {wanted} "
                            f"(now {row.resource_version}): get it again and reapply"
                        )
                    outcome = Outcome.UNCHANGED
                    if row.spec != spec or row.meta != meta:
                        # Compare-and-swap on the version read: SQLite has no SELECT FOR UPDATE,
                        # and this is also what makes concurrent writers safe on PostgreSQL.
                        result = conn.execute(
                            update(objects)
                            .where(
                                objects.c.uid == row.uid,
                                objects.c.resource_version == row.resource_version,
                            )
                            .values(
                                spec=spec,
                                meta=meta,
                                generation=row.generation + (row.spec != spec),
                                resource_version=_next_revision(conn),
                            )
                        )
                        if result.rowcount != 1:
                            raise Conflict(
                                f"{kind.lower()} {name!r} was changed concurrently: "
                                "get it again and reapply"
                            )
                        outcome = Outcome.CONFIGURED
                if kind == "Tenant" and (row is None or row.spec != spec):
                    _bump_sites(conn, _tenant_sites(conn, name))
        except IntegrityError as exc:
            raise Conflict(f"{kind.lower()} {name!r} was created concurrently: retry") from exc
        stored: Site | App | Tenant
        if kind == "Site":
            stored = self.get_site(name)
        elif kind == "Tenant":
            stored = self.get_tenant(name)
        else:
            stored = self.get_app(tenant, name)
        return stored, outcome

    def delete_site(self, name: str) -> set[str]:
        """Delete a site and everything observed of it; returns the sites whose state changed."""
        with self.engine.begin() as conn:
            if _object_row(conn, "Site", "", name, for_update=True) is None:
                raise NotFound(f"site {name!r} not found")
            conn.execute(delete(objects).where(objects.c.kind == "Site", objects.c.name == name))
            for table in (
                assignments,
                site_revisions,
                heartbeats,
                site_reports,
                replica_counts,
                demand_reports,
            ):
                conn.execute(delete(table).where(table.c.site == name))
            conn.execute(delete(demand).where(demand.c.origin == name))
        return {name}

    def delete_app(self, tenant: str, name: str) -> set[str]:
        """Delete an app and its assignments in one go; returns the sites that must react."""
        with self.engine.begin() as conn:
            if _object_row(conn, "App", tenant, name, for_update=True) is None:
                raise NotFound(f"app {name!r} not found in tenant {tenant!r}")
            conn.execute(
                delete(objects).where(
                    objects.c.kind == "App", objects.c.tenant == tenant, objects.c.name == name
                )
            )
            sites = set(
                conn.execute(
                    select(assignments.c.site).where(
                        assignments.c.tenant == tenant, assignments.c.app == name
                    )
                ).scalars()
            )
            conn.execute(
                delete(assignments).where(assignments.c.tenant == tenant, assignments.c.app == name)
            )
            conn.execute(
                delete(replica_counts).where(
                    replica_counts.c.tenant == tenant, replica_counts.c.app == name
                )
            )
            conn.execute(delete(demand).where(demand.c.tenant == tenant, demand.c.app == name))
            _bump_sites(conn, sites)
        return sites

    def set_site_phase(self, name: str, phase: str, message: str | None) -> None:
        """Record the health verdict of a site (status only: no new resourceVersion)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(objects)
                .where(objects.c.kind == "Site", objects.c.name == name)
                .values(status={"phase": phase, "message": message})
            )

    def set_app_placement_status(self, statuses: Mapping[AppId, tuple[int, str | None]]) -> None:
        """Record, per app, the generation placed and why it fell short (status only)."""
        if not statuses:
            return
        with self.engine.begin() as conn:
            for (tenant, name), (generation, message) in statuses.items():
                conn.execute(
                    update(objects)
                    .where(
                        objects.c.kind == "App",
                        objects.c.tenant == tenant,
                        objects.c.name == name,
                    )
                    .values(status={"observedGeneration": generation, "message": message})
                )

    # -- placement and desired state ------------------------------------------------------------

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

    def write_placement(
        self, placement: Mapping[AppId, tuple[int, Mapping[str, int | SiteShare]]]
    ) -> set[str]:
        """Replace the assignments of the given apps; returns the sites whose state changed.

        ``placement`` maps (tenant, app) to (spec generation, replicas or share per site). Apps
        not named are left alone. A site whose share is not ``placed`` loses the assignment.
        Only rows that differ are written; only those sites get a new revision.
        """
        changed: set[str] = set()
        with self.engine.begin() as conn:
            if not placement:
                return changed
            current: dict[AppId, dict[str, tuple[SiteShare, int]]] = defaultdict(dict)
            keys = list(placement)
            for row in conn.execute(
                select(assignments).where(tuple_(assignments.c.tenant, assignments.c.app).in_(keys))
            ):
                current[(row.tenant, row.app)][row.site] = (
                    SiteShare(row.replicas, row.min_replicas, row.max_replicas),
                    row.generation,
                )
            for app_id, (generation, given) in placement.items():
                tenant, app = app_id
                by_site = {
                    site: share if isinstance(share, SiteShare) else SiteShare(share)
                    for site, share in given.items()
                }
                before = current.get(app_id, {})
                for site in set(before) - {s for s, share in by_site.items() if share.placed}:
                    conn.execute(
                        delete(assignments).where(
                            assignments.c.site == site,
                            assignments.c.tenant == tenant,
                            assignments.c.app == app,
                        )
                    )
                    changed.add(site)
                for site, share in by_site.items():
                    if not share.placed or before.get(site) == (share, generation):
                        continue
                    _upsert(
                        conn,
                        assignments,
                        [
                            {
                                "site": site,
                                "tenant": tenant,
                                "app": app,
                                "replicas": share.replicas,
                                "generation": generation,
                                "min_replicas": share.min_replicas,
                                "max_replicas": share.max_replicas,
                            }
                        ],
                        keys=("site", "tenant", "app"),
                    )
                    changed.add(site)
            _bump_sites(conn, changed)
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
            policies = _tenant_specs(conn, {row.tenant for row in rows})
        apps = []
        for row in rows:
            spec = AppSpec.model_validate(row.spec)
            policy = policies.get(row.tenant)
            regions = effective_regions(policy, spec)
            apps.append(
                AppAssignment(
                    tenant=row.tenant,
                    app=row.app,
                    generation=row.generation,
                    replicas=row.replicas,
                    workload=spec.workload,
                    resources=spec.resources,
                    scaling=_local_scaling(spec, row.min_replicas, row.max_replicas),
                    selector=(
                        spec.placement.selector
                        if spec.placement.mode == PlacementMode.TRAFFIC
                        else None
                    ),
                    regions=None if regions is None else sorted(regions),
                    # Replicas a neighbour starts are outside placement: they would escape the
                    # tenant's quota.
                    may_offload=policy is None or policy.quota.unlimited,
                )
            )
        return DesiredState(site=site, revision=revision or 0, apps=apps)

    def sites_changed_since(self, revision: int) -> dict[str, int]:
        """Sites whose desired state changed after ``revision``, with their new revision."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(site_revisions).where(site_revisions.c.revision > revision)
            ).all()
        return {row.site: row.revision for row in rows}

    def site_revisions(self) -> dict[str, int]:
        """Every site's desired-state revision."""
        return self.sites_changed_since(-1)

    # -- observed state --------------------------------------------------------------------------

    def record_heartbeats(self, beats: Sequence[tuple[str, datetime, int, str | None]]) -> None:
        """Store a batch of (site, time, observed revision, problem) heartbeats in one
        transaction; ``problem`` is what the agent says keeps it from running replicas."""
        if not beats:
            return
        rows = [
            {"site": s, "at": at, "observed_revision": rev, "problem": problem}
            for s, at, rev, problem in beats
        ]
        with self.engine.begin() as conn:
            _upsert(conn, heartbeats, rows, keys=("site",))

    def last_heartbeats(self) -> dict[str, datetime]:
        """Last heartbeat time per site."""
        with self.engine.connect() as conn:
            return {
                row.site: _aware(row.at)
                for row in conn.execute(select(heartbeats.c.site, heartbeats.c.at))
            }

    def heartbeat_problems(self) -> dict[str, str]:
        """Sites whose last heartbeat said they cannot run replicas, with why."""
        with self.engine.connect() as conn:
            return {
                row.site: row.problem
                for row in conn.execute(
                    select(heartbeats.c.site, heartbeats.c.problem).where(
                        heartbeats.c.problem.is_not(None)
                    )
                )
            }

    def save_report(self, report: StatusReport) -> None:
        """Replace a site's observed replicas with the agent's report."""
        now = utcnow()
        counts: list[dict[str, Any]] = []
        for app in report.apps:
            counts.append(
                {
                    "site": report.site,
                    "tenant": app.tenant,
                    "app": app.app,
                    "running": sum(r.state != "stopped" for r in app.replicas),
                    "ready": sum(r.ready for r in app.replicas),
                }
            )
        with self.engine.begin() as conn:
            _upsert(
                conn,
                site_reports,
                [
                    {
                        "site": report.site,
                        "agent_version": report.agent_version,
                        "agent_endpoint": report.agent_endpoint,
                        "observed_revision": report.observed_revision,
                        "replicas": [a.model_dump(mode="json", by_alias=True) for a in report.apps],
                        "at": now,
                    }
                ],
                keys=("site",),
            )
            conn.execute(delete(replica_counts).where(replica_counts.c.site == report.site))
            if counts:
                conn.execute(insert(replica_counts), counts)
            _upsert(
                conn,
                heartbeats,
                [{"site": report.site, "at": now, "observed_revision": report.observed_revision}],
                keys=("site",),
            )

    def site_replicas(self, site: str) -> dict[str, list[ReplicaState]]:
        """The replicas a site last reported, per ``tenant/app``."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(site_reports.c.replicas).where(site_reports.c.site == site)
            ).scalar()
        out: dict[str, list[ReplicaState]] = {}
        for app in value or []:
            out[f"{app['tenant']}/{app['app']}"] = [
                ReplicaState.model_validate(r) for r in app.get("replicas", [])
            ]
        return out

    def agent_endpoint(self, site: str) -> str | None:
        """The local API URL the site's agent last reported."""
        with self.engine.connect() as conn:
            value: str | None = conn.execute(
                select(site_reports.c.agent_endpoint).where(site_reports.c.site == site)
            ).scalar()
        return value

    # -- demand ----------------------------------------------------------------------------------

    def record_demand(
        self, reports: Sequence[DemandReport], tau: float, *, now: datetime | None = None
    ) -> int:
        """Add the reports' counts to the decayed demand, in one transaction.

        Per site, a report whose ``seq`` is not above the newest taken is ignored (agents resend
        what they are not sure arrived), and the newest is recorded. Rows of apps that do not
        exist are ignored (an agent may still count an app just deleted). Counts are applied at
        their window's end, but not after ``now`` (see ``demand.window_end``). Returns the
        reports taken.

        Safe against a concurrent call of another hub on the same database: every row read is
        first created if missing (insert, nothing on conflict) and then read ``FOR UPDATE``, sites
        then demand rows, each in key order, so two writers wait for each other instead of losing
        counts or deadlocking. SQLite serialises writers, and the transaction's first statement
        writes, so it holds the write lock before it reads.
        """
        if not reports:
            return 0
        now = now or utcnow()
        by_site: dict[str, list[DemandReport]] = defaultdict(list)
        for report in reports:
            by_site[report.site].append(report)
        sites = sorted(by_site)
        with self.engine.begin() as conn:
            self._insert_missing(
                conn, demand_reports, [{"site": s, "seq": -1} for s in sites], keys=("site",)
            )
            newest = {
                row.site: row.seq
                for row in conn.execute(
                    select(demand_reports)
                    .where(demand_reports.c.site.in_(sites))
                    .order_by(demand_reports.c.site)
                    .with_for_update()
                )
            }
            taken: list[DemandReport] = []
            for site in sites:
                for report in sorted(by_site[site], key=lambda r: r.seq):
                    if report.seq > newest[site]:
                        taken.append(report)
                        newest[site] = report.seq
            if not taken:
                return 0
            totals: dict[str, tuple[int, float]] = {}
            for r in taken:
                count, requests = totals.get(r.site, (0, 0.0))
                totals[r.site] = (count + 1, requests + sum(row[2] for row in r.rows))
            conn.execute(
                update(demand_reports)
                .where(demand_reports.c.site == bindparam("b_site"))
                .values(
                    seq=bindparam("b_seq"),
                    reports=demand_reports.c.reports + bindparam("b_reports"),
                    requests=demand_reports.c.requests + bindparam("b_requests"),
                ),
                [
                    {
                        "b_site": site,
                        "b_seq": newest[site],
                        "b_reports": count,
                        "b_requests": requests,
                    }
                    for site, (count, requests) in sorted(totals.items())
                ],
            )
            counts: defaultdict[DemandKey, list[tuple[DemandRow, DemandReport]]]
            counts = defaultdict(list)
            for report in taken:
                for row in report.rows:
                    tenant, _, app = row[0].partition("/")
                    if len(row[1]) <= ORIGIN_MAX:  # else no site: the column could not hold it
                        counts[(tenant, app, row[1])].append((row, report))
            apps = sorted({(tenant, app) for tenant, app, _ in counts})
            existing = {
                (row.tenant, row.name)
                for row in conn.execute(
                    select(objects.c.tenant, objects.c.name).where(
                        objects.c.kind == "App",
                        tuple_(objects.c.tenant, objects.c.name).in_(apps),
                    )
                )
            }
            keys = sorted(key for key in counts if key[:2] in existing)
            if not keys:
                return len(taken)
            # Placeholders with no demand, so that every row can be locked before it is read.
            never = datetime(1970, 1, 1, tzinfo=UTC)
            self._insert_missing(
                conn,
                demand,
                [
                    {
                        "tenant": t,
                        "app": a,
                        "origin": o,
                        "requests": 0.0,
                        "concurrency": 0.0,
                        "dns": 0.0,
                        "updated_at": never,
                        "last_request": None,
                    }
                    for t, a, o in keys
                ],
                keys=("tenant", "app", "origin"),
            )
            states = {
                (row.tenant, row.app, row.origin): self._demand_state(row)
                for row in conn.execute(
                    select(demand)
                    .where(tuple_(demand.c.tenant, demand.c.app, demand.c.origin).in_(keys))
                    .order_by(demand.c.tenant, demand.c.app, demand.c.origin)
                    .with_for_update()
                )
            }
            updates = []
            for key in keys:
                state = states[key]
                for row, report in counts[key]:
                    state = absorb(row, report, state, tau, latest=now)
                updates.append(
                    {
                        "b_tenant": key[0],
                        "b_app": key[1],
                        "b_origin": key[2],
                        "requests": state.requests,
                        "concurrency": state.concurrency,
                        "dns": state.dns,
                        "updated_at": state.at,
                        "last_request": state.last_request,
                    }
                )
            conn.execute(
                update(demand)
                .where(
                    demand.c.tenant == bindparam("b_tenant"),
                    demand.c.app == bindparam("b_app"),
                    demand.c.origin == bindparam("b_origin"),
                )
                .values(
                    requests=bindparam("requests"),
                    concurrency=bindparam("concurrency"),
                    dns=bindparam("dns"),
                    updated_at=bindparam("updated_at"),
                    last_request=bindparam("last_request"),
                ),
                updates,
            )
        return len(taken)

    def demand_reporting(self, site: str) -> SiteReporting:
        """What the hub has taken of a site's demand reports (zeros before the first)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(demand_reports).where(demand_reports.c.site == site)
            ).one_or_none()
        if row is None:
            return SiteReporting(site=site)
        return SiteReporting(
            site=site, last_seq=row.seq, reports=row.reports, requests=row.requests
        )

    def demand_matrix(
        self,
        now: datetime,
        tau: float,
        tenant: str | None = None,
        app: str | None = None,
    ) -> dict[AppId, list[AppDemand]]:
        """Demand per app (of one tenant, or one app), per origin site, decayed to ``now``.

        Each app's origins come busiest first: by concurrency, then requests, then name.
        """
        query = select(demand)
        if tenant is not None:
            query = query.where(demand.c.tenant == tenant)
        if app is not None:
            query = query.where(demand.c.app == app)
        out: dict[AppId, list[AppDemand]] = defaultdict(list)
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                state = self._demand_state(row).decayed_to(now, tau)
                out[(row.tenant, row.app)].append(state.app_demand(row.origin))
        for origins in out.values():
            origins.sort(key=lambda d: (-d.concurrency, -d.requests_per_second, d.origin))
        return dict(out)

    def prune_demand(
        self,
        now: datetime,
        *,
        tau: float,
        epsilon: float = PRUNE_EPSILON,
        retention: timedelta = PRUNE_RETENTION,
    ) -> int:
        """Delete rows whose rates decayed below ``epsilon`` and whose last request is older
        than ``retention``; returns how many. A row written since it was read is kept."""
        cutoff = now - retention
        stale = []
        with self.engine.connect() as conn:
            for row in conn.execute(select(demand)):
                state = self._demand_state(row)
                if state.last_request is not None and state.last_request >= cutoff:
                    continue
                if state.decayed_to(now, tau).idle(epsilon):
                    stale.append(
                        {
                            "b_tenant": row.tenant,
                            "b_app": row.app,
                            "b_origin": row.origin,
                            "b_at": row.updated_at,
                        }
                    )
        if not stale:
            return 0
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(demand).where(
                    demand.c.tenant == bindparam("b_tenant"),
                    demand.c.app == bindparam("b_app"),
                    demand.c.origin == bindparam("b_origin"),
                    demand.c.updated_at == bindparam("b_at"),
                ),
                stale,
            )
        return max(result.rowcount, 0)

    def delete_demand(self, tenant: str, app: str) -> None:
        """Forget an app's demand (the app was deleted)."""
        with self.engine.begin() as conn:
            conn.execute(delete(demand).where(demand.c.tenant == tenant, demand.c.app == app))

    @staticmethod
    def _demand_state(row: Any) -> DemandState:
        return DemandState(
            requests=row.requests,
            concurrency=row.concurrency,
            dns=row.dns,
            at=_aware(row.updated_at),
            last_request=_aware(row.last_request) if row.last_request else None,
        )

    @staticmethod
    def _insert_missing(
        conn: Connection, table: Table, rows: list[dict[str, Any]], *, keys: tuple[str, ...]
    ) -> None:
        # Insert, nothing on conflict: waits for a concurrent insert of the same key to commit.
        insert_ = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(insert_(table).on_conflict_do_nothing(index_elements=list(keys)), rows)

    # -- events ----------------------------------------------------------------------------------

    def add_events(self, new: Iterable[Event]) -> None:
        """Append events."""
        rows = [
            {
                "time": e.time,
                "kind": e.kind,
                "tenant": e.tenant or "",
                "name": e.name,
                "reason": e.reason,
                "message": e.message,
                "type": e.type,
            }
            for e in new
        ]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(events), rows)

    def list_events(
        self,
        *,
        kind: str | None = None,
        tenant: str | None = None,
        name: str | None = None,
        limit: int = 50,
    ) -> list[Event]:
        """The newest ``limit`` events matching, oldest first."""
        query = select(events)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        if tenant is not None:
            query = query.where(events.c.tenant == tenant)
        if name is not None:
            query = query.where(events.c.name == name)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(events.c.id.desc()).limit(limit)).all()
        return [
            Event(
                time=_aware(r.time),
                kind=r.kind,
                tenant=r.tenant or None,
                name=r.name,
                reason=r.reason,
                message=r.message,
                type=r.type,
            )
            for r in reversed(rows)
        ]

    def newest_events(self) -> dict[str | None, int]:
        """The id of the newest event per tenant (None: the fleet's own, e.g. a site's)."""
        query = select(events.c.tenant, func.max(events.c.id)).group_by(events.c.tenant)
        with self.engine.connect() as conn:
            return {tenant or None: newest for tenant, newest in conn.execute(query).all()}

    def prune_events(self, keep: int = 10_000) -> None:
        """Keep only the newest ``keep`` events."""
        with self.engine.begin() as conn:
            newest = conn.execute(select(func.max(events.c.id))).scalar() or 0
            conn.execute(delete(events).where(events.c.id <= newest - keep))

    # -- composition -----------------------------------------------------------------------------

    def _sites(self, conn: Connection, rows: Sequence[Any]) -> list[Site]:
        names = [r.name for r in rows]
        beats = {
            r.site: r for r in conn.execute(select(heartbeats).where(heartbeats.c.site.in_(names)))
        }
        reports = {
            r.site: r
            for r in conn.execute(
                select(
                    site_reports.c.site,
                    site_reports.c.agent_version,
                    site_reports.c.agent_endpoint,
                ).where(site_reports.c.site.in_(names))
            )
        }
        totals = {
            r.site: r
            for r in conn.execute(
                select(
                    replica_counts.c.site,
                    func.sum(replica_counts.c.running).label("running"),
                    func.sum(replica_counts.c.ready).label("ready"),
                )
                .where(replica_counts.c.site.in_(names))
                .group_by(replica_counts.c.site)
            )
        }
        out = []
        for row in rows:
            beat, report, total = beats.get(row.name), reports.get(row.name), totals.get(row.name)
            status = SiteStatus(
                phase=row.status.get("phase", "Pending"),
                message=row.status.get("message"),
                last_heartbeat=_aware(beat.at) if beat else None,
                agent_version=report.agent_version if report else None,
                agent_endpoint=report.agent_endpoint if report else None,
                replicas=int(total.running) if total else 0,
                ready_replicas=int(total.ready) if total else 0,
            )
            out.append(
                Site(
                    metadata=_meta(row),
                    spec=SiteSpec.model_validate(row.spec),
                    status=status,
                )
            )
        return out

    def _tenants(self, conn: Connection, rows: Sequence[Any]) -> list[Tenant]:
        names = [r.name for r in rows]
        counts: dict[str, int] = defaultdict(int)
        taken: dict[str, TenantStatus] = {}
        if names:
            for r in conn.execute(
                select(objects.c.tenant, func.count().label("apps"))
                .where(objects.c.kind == "App", objects.c.tenant.in_(names))
                .group_by(objects.c.tenant)
            ):
                counts[r.tenant] = int(r.apps)
            for a in conn.execute(
                select(assignments.c.tenant, assignments.c.replicas, objects.c.spec)
                .join(
                    objects,
                    and_(
                        objects.c.kind == "App",
                        objects.c.tenant == assignments.c.tenant,
                        objects.c.name == assignments.c.app,
                    ),
                )
                .where(assignments.c.tenant.in_(names))
            ):
                per = Resources.model_validate(a.spec.get("resources", {}))
                now = taken.get(a.tenant, TenantStatus())
                taken[a.tenant] = TenantStatus(
                    replicas=now.replicas + a.replicas,
                    cpu=round(now.cpu + a.replicas * per.cpu, 6),
                    memory=now.memory + a.replicas * per.memory,
                )
        out = []
        for row in rows:
            status = taken.get(row.name, TenantStatus()).model_copy(
                update={"apps": counts.get(row.name, 0)}
            )
            out.append(
                Tenant(metadata=_meta(row), spec=TenantSpec.model_validate(row.spec), status=status)
            )
        return out

    def _apps(self, conn: Connection, rows: Sequence[Any]) -> list[App]:
        ids = [(r.tenant, r.name) for r in rows]
        desired: dict[AppId, dict[str, int]] = defaultdict(dict)
        observed: dict[AppId, dict[str, ReplicaCount]] = defaultdict(dict)
        wakeable: dict[AppId, set[str]] = defaultdict(set)
        if ids:
            for a in conn.execute(
                select(assignments).where(tuple_(assignments.c.tenant, assignments.c.app).in_(ids))
            ):
                desired[(a.tenant, a.app)][a.site] = a.replicas
                if (a.max_replicas or 0) > 0:
                    wakeable[(a.tenant, a.app)].add(a.site)
            for c in conn.execute(
                select(replica_counts).where(
                    tuple_(replica_counts.c.tenant, replica_counts.c.app).in_(ids)
                )
            ):
                observed[(c.tenant, c.app)][c.site] = ReplicaCount(c.running, c.ready)
        out = []
        for row in rows:
            app_id = (row.tenant, row.name)
            want, have = desired.get(app_id, {}), observed.get(app_id, {})
            per_site = [
                SiteReplicas(
                    site=site,
                    desired=want.get(site, 0),
                    running=have[site].running if site in have else 0,
                    ready=have[site].ready if site in have else 0,
                    wakeable=site in wakeable.get(app_id, ()),
                )
                for site in sorted(set(want) | set(have))
            ]
            status = AppStatus(
                observed_generation=row.status.get("observedGeneration"),
                message=row.status.get("message"),
                desired_replicas=sum(want.values()),
                ready_replicas=sum(s.ready for s in per_site),
                sites=per_site,
            )
            out.append(
                App(metadata=_meta(row), spec=AppSpec.model_validate(row.spec), status=status)
            )
        return out


_LEADER_LOCK = 0x6564676566  # "edgef": the advisory lock the controller leader holds


class Leadership:
    """Which hub process runs the controllers.

    On PostgreSQL, several hub processes may share one database; the leader is the one holding a
    session advisory lock on a connection of its own. If that connection dies, the server drops
    the lock and another hub takes over. A SQLite file serves one hub, which always leads.
    """

    def __init__(self, store: Store) -> None:
        self._engine = store.engine
        self._conn: Connection | None = None

    def try_acquire(self) -> bool:
        """Take or keep the lead; False if another hub holds it or the database is away."""
        if self._engine.dialect.name != "postgresql":
            return True
        try:
            if self._conn is not None:
                self._conn.execute(select(1))  # still ours if the session still lives
                return True
            conn = self._engine.connect()
            held = conn.execute(select(func.pg_try_advisory_lock(_LEADER_LOCK))).scalar()
            conn.commit()
            if held:
                self._conn = conn
                return True
            conn.close()
            return False
        except Exception:
            self.release()
            return False

    def release(self) -> None:
        """Give up the lead (closing the session frees the lock)."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
            self._conn = None


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


def _engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        # psycopg 3 is the driver we ship for; the plain scheme is what operators write.
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _object_row(
    conn: Connection, kind: str, tenant: str, name: str, *, for_update: bool = False
) -> Any:
    query = select(objects).where(
        objects.c.kind == kind, objects.c.tenant == tenant, objects.c.name == name
    )
    if for_update:
        query = query.with_for_update()
    return conn.execute(query).first()


def _meta(row: Any) -> ObjectMeta:
    return ObjectMeta(
        name=row.name,
        tenant=row.tenant or None,
        labels=row.meta.get("labels", {}),
        annotations=row.meta.get("annotations", {}),
        uid=row.uid,
        resource_version=str(row.resource_version),
        generation=row.generation,
        creation_timestamp=_aware(row.created_at),
    )


def _next_revision(conn: Connection) -> int:
    value: int = conn.execute(
        update(counters)
        .where(counters.c.name == "revision")
        .values(value=counters.c.value + 1)
        .returning(counters.c.value)
    ).scalar_one()
    return value


def _tenant_sites(conn: Connection, tenant: str) -> set[str]:
    """Sites running (or placed with) apps of ``tenant``."""
    return set(
        conn.execute(select(assignments.c.site).where(assignments.c.tenant == tenant)).scalars()
    )


def _tenant_specs(conn: Connection, tenants: Iterable[str]) -> dict[str, TenantSpec]:
    """The policies of those of ``tenants`` that have one."""
    names = sorted(set(tenants))
    if not names:
        return {}
    rows = conn.execute(
        select(objects.c.name, objects.c.spec).where(
            objects.c.kind == "Tenant", objects.c.tenant == "", objects.c.name.in_(names)
        )
    )
    return {row.name: TenantSpec.model_validate(row.spec) for row in rows}


def _bump_sites(conn: Connection, sites: set[str]) -> None:
    if not sites:
        return
    revision = _next_revision(conn)
    _upsert(
        conn,
        site_revisions,
        [{"site": s, "revision": revision} for s in sorted(sites)],
        keys=("site",),
    )


def _upsert(
    conn: Connection, table: Table, rows: list[dict[str, Any]], *, keys: tuple[str, ...]
) -> None:
    insert_ = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert_(table)
    columns = [c for c in rows[0] if c not in keys]
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys), set_={c: stmt.excluded[c] for c in columns}
    )
    conn.execute(stmt, rows)


__all__ = [
    "AppId",
    "Conflict",
    "Leadership",
    "NotFound",
    "Outcome",
    "Store",
    "StoreError",
    "utcnow",
]
