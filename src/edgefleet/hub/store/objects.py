"""Sites, apps and tenants: the objects operators write, and their status as read.

A write is one transaction, a compare-and-swap on the resourceVersion read (SQLite has no
``SELECT ... FOR UPDATE``; the same swap makes concurrent writers safe on PostgreSQL). Status is
composed at read time: an app's from its assignments and the replica counts agents report, a
site's from its phase, its last heartbeat and report, a tenant's from what its apps take. The
writes operators ask for (put, delete) carry the request's audit entry in their transaction
(``edgefleet.hub.store.audit``).

Lists are read a page at a time by key (keyset paging: sites and tenants by name, apps by tenant
and name, all on the ``(kind, tenant, name)`` unique index): a page reads only its own rows and
composes status only for them, and a page's position survives writes and deletes between pages.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError

from edgefleet.hub.schema import (
    assignments,
    demand,
    demand_reports,
    heartbeats,
    objects,
    replica_counts,
    site_reports,
    site_revisions,
)
from edgefleet.hub.store import feed
from edgefleet.hub.store.audit import audited, note_outcome
from edgefleet.hub.store.engine import (
    AppId,
    Conflict,
    NotFound,
    Outcome,
    StoreError,
    aware,
    next_revision,
    utcnow,
)
from edgefleet.hub.store.feed import FeedKind
from edgefleet.hub.store.observed import ReplicaCount
from edgefleet.hub.store.revisions import bump_sites
from edgefleet.model import (
    App,
    AppSpec,
    AppStatus,
    ObjectMeta,
    Resources,
    Site,
    SiteReplicas,
    SiteSpec,
    SiteStatus,
    Tenant,
    TenantSpec,
    TenantStatus,
)

Obj = TypeVar("Obj", Site, App, Tenant)

_CHUNK = 500
"""Keys per ``IN`` list: SQLite caps the parameters of one statement."""


@dataclass(frozen=True)
class Page(Generic[Obj]):
    """Some objects of a list, in the list's order, and how many come after them."""

    items: list[Obj]
    """The objects of this page, with their status."""
    remaining: int
    """How many objects of the list come after the last of ``items`` (0: this is the last page).
    Counted when the page is read; writes may change it before the next page is."""


@dataclass(frozen=True)
class Written:
    """What one write did to one object."""

    kind: str
    """Site, App or Tenant."""
    tenant: str | None
    """The app's tenant; None for fleet-scoped objects."""
    name: str
    """The object's name."""
    outcome: Outcome
    """Created, configured or unchanged."""
    resource_version: str
    """The object's resourceVersion after the write."""
    generation: int
    """The object's generation after the write."""


class ObjectStore:
    """Sites, apps and tenants. Thread-safe: each call takes its own connection."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _one(
        self, kind: str, tenant: str, name: str, missing: str, read: Callable[..., list[Obj]]
    ) -> Obj:
        """One object of ``kind`` read with its status by ``read``; NotFound(``missing``)."""
        with self.engine.connect() as conn:
            row = object_row(conn, kind, tenant, name)
            if row is None:
                raise NotFound(missing)
            return read(conn, [row])[0]

    def _page(
        self,
        kind: str,
        read: Callable[..., list[Obj]],
        *,
        where: Sequence[ColumnElement[bool]],
        key: Sequence[Any],
        after: Sequence[str] | None,
        limit: int | None,
    ) -> Page[Obj]:
        """The objects of ``kind`` matching ``where`` whose ``key`` columns come after
        ``after``, in key order, at most ``limit`` of them, read with their status by ``read``."""
        match = [objects.c.kind == kind, *where]
        query = select(objects).where(*match, *_after(key, after)).order_by(*key)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            remaining = 0
            if limit is not None and len(rows) == limit:
                last = [getattr(rows[-1], column.name) for column in key]
                remaining = conn.execute(
                    select(func.count()).select_from(objects).where(*match, *_after(key, last))
                ).scalar_one()
            return Page(read(conn, rows), remaining)

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

    # -- bare objects: spec, metadata and the status the hub itself writes ---------------------

    def bare_sites(self, names: Collection[str] | None = None) -> list[Site]:
        """Sites (all, or those of ``names`` that exist) with only their phase and message as
        status: what the hub keeps in memory (``edgefleet.hub.fleet``), without the observed
        parts that agents' reports change every second."""
        return [
            Site(
                metadata=meta_of(row),
                spec=SiteSpec.model_validate(row.spec),
                status=SiteStatus(
                    phase=row.status.get("phase", "Pending"), message=row.status.get("message")
                ),
            )
            for row in self._rows("Site", None if names is None else [("", n) for n in names])
        ]

    def site_versions(self, names: Collection[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Of each of ``names`` that exists: its resourceVersion and status (phase, message),
        without its spec: what tells a phase change from a new spec."""
        wanted = sorted(set(names))
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), _CHUNK):
                for row in conn.execute(
                    select(objects.c.name, objects.c.resource_version, objects.c.status).where(
                        objects.c.kind == "Site",
                        objects.c.tenant == "",
                        objects.c.name.in_(wanted[start : start + _CHUNK]),
                    )
                ):
                    out[row.name] = (str(row.resource_version), row.status)
        return out

    def bare_apps(self, keys: Collection[AppId] | None = None) -> list[App]:
        """Apps (all, or those of ``keys`` that exist) with only the status placement writes
        (observed generation and message)."""
        return [_bare_app(row) for row in self._rows("App", keys)]

    def bare_apps_of(self, tenant: str) -> list[App]:
        """The apps of one tenant, as ``bare_apps`` gives them."""
        query = select(objects).where(objects.c.kind == "App", objects.c.tenant == tenant)
        with self.engine.connect() as conn:
            rows = list(conn.execute(query.order_by(objects.c.name)))
        return [_bare_app(row) for row in rows]

    def bare_tenants(self, names: Collection[str] | None = None) -> list[Tenant]:
        """Tenants' policies (all, or those of ``names`` that exist), without usage."""
        return [
            Tenant(metadata=meta_of(row), spec=TenantSpec.model_validate(row.spec))
            for row in self._rows("Tenant", None if names is None else [("", n) for n in names])
        ]

    def _rows(self, kind: str, keys: Collection[tuple[str, str]] | None) -> list[Any]:
        """Rows of ``kind``, all or those whose (tenant, name) is in ``keys``, by key."""
        query = select(objects).where(objects.c.kind == kind)
        with self.engine.connect() as conn:
            if keys is None:
                return list(conn.execute(query.order_by(objects.c.tenant, objects.c.name)))
            wanted = sorted(set(keys))
            out: list[Any] = []
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                out.extend(
                    conn.execute(query.where(tuple_(objects.c.tenant, objects.c.name).in_(chunk)))
                )
            return sorted(out, key=lambda r: (r.tenant, r.name))

    def get_site(self, name: str) -> Site:
        """One site with its observed status; NotFound if absent."""
        return self._one("Site", "", name, f"site {name!r} not found", self._sites)

    def list_sites(self) -> list[Site]:
        """Every site, by name."""
        return self.page_sites().items

    def page_sites(self, *, after: str | None = None, limit: int | None = None) -> Page[Site]:
        """Sites by name: those after ``after``, at most ``limit`` (None: all of them)."""
        return self._page(
            "Site",
            self._sites,
            where=[objects.c.tenant == ""],
            key=[objects.c.name],
            after=None if after is None else [after],
            limit=limit,
        )

    def get_app(self, tenant: str, name: str) -> App:
        """One app with its observed status; NotFound if absent."""
        missing = f"app {name!r} not found in tenant {tenant!r}"
        return self._one("App", tenant, name, missing, self._apps)

    def list_apps(self, tenant: str | None = None) -> list[App]:
        """Every app (of one tenant if given), by tenant and name."""
        return self.page_apps(tenants=None if tenant is None else [tenant]).items

    def page_apps(
        self,
        *,
        tenants: Collection[str] | None = None,
        after: AppId | None = None,
        limit: int | None = None,
    ) -> Page[App]:
        """Apps by tenant and name: of ``tenants`` (None: of every tenant), those after the
        (tenant, name) ``after``, at most ``limit`` (None: all of them)."""
        return self._page(
            "App",
            self._apps,
            where=[] if tenants is None else [objects.c.tenant.in_(sorted(set(tenants)))],
            key=[objects.c.tenant, objects.c.name],
            after=after,
            limit=limit,
        )

    def get_tenant(self, name: str) -> Tenant:
        """One tenant's policy, with what its apps take now; NotFound if absent."""
        return self._one("Tenant", "", name, f"tenant {name!r} not found", self._tenants)

    def list_tenants(self) -> list[Tenant]:
        """Every tenant with a policy, by name."""
        return self.page_tenants().items

    def page_tenants(
        self,
        *,
        names: Collection[str] | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> Page[Tenant]:
        """Tenants with a policy by name: of ``names`` (None: every one), those after
        ``after``, at most ``limit`` (None: all of them)."""
        where = [objects.c.tenant == ""]
        if names is not None:
            where.append(objects.c.name.in_(sorted(set(names))))
        return self._page(
            "Tenant",
            self._tenants,
            where=where,
            key=[objects.c.name],
            after=None if after is None else [after],
            limit=limit,
        )

    def delete_tenant(self, name: str) -> set[str]:
        """Delete a tenant's policy (its apps stay, now without it); returns the sites running
        its apps, whose desired state changed."""
        with audited(self.engine) as conn:
            if object_row(conn, "Tenant", "", name, for_update=True) is None:
                raise NotFound(f"tenant {name!r} not found")
            conn.execute(
                delete(objects).where(
                    objects.c.kind == "Tenant", objects.c.tenant == "", objects.c.name == name
                )
            )
            sites = tenant_sites(conn, name)
            bump_sites(conn, sites)
            feed.record(conn, [(FeedKind.TENANT, "", name)])
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
        with audited(self.engine) as conn:
            written = self._put(conn, obj, create_only=create_only)
            note_outcome(written.outcome)
        stored: Site | App | Tenant
        if written.kind == "Site":
            stored = self.get_site(written.name)
        elif written.kind == "Tenant":
            stored = self.get_tenant(written.name)
        else:
            stored = self.get_app(written.tenant or "", written.name)
        return stored, written.outcome

    def put_many(
        self, objs: Sequence[Site | App | Tenant], *, create_only: bool = False
    ) -> list[Written]:
        """Create or update every object of ``objs``, in order, in one transaction: all of them
        or none. Each is written exactly as ``put`` writes it alone. A refusal (Conflict,
        NotFound) carries the index of the object refused in its ``item``."""
        written = []
        with audited(self.engine) as conn:
            for index, obj in enumerate(objs):
                try:
                    written.append(self._put(conn, obj, create_only=create_only))
                except StoreError as exc:
                    exc.item = index
                    raise
        return written

    def _put(self, conn: Connection, obj: Site | App | Tenant, *, create_only: bool) -> Written:
        """Write one object inside the caller's transaction (see ``put``)."""
        kind, tenant, name = obj.kind, obj.metadata.tenant or "", obj.metadata.name
        spec = obj.spec.model_dump(mode="json", by_alias=True)
        meta = {"labels": obj.metadata.labels, "annotations": obj.metadata.annotations}
        row = object_row(conn, kind, tenant, name, for_update=True)
        if row is None:
            if obj.metadata.resource_version is not None:
                raise NotFound(
                    f"{kind.lower()} {name!r} does not exist: drop "
                    "metadata.resourceVersion to create it"
                )
            version, generation = next_revision(conn), 1
            try:
                # A duplicate (a concurrent create) aborts the transaction on PostgreSQL: the
                # whole write, or apply of many, is refused and may be retried.
                conn.execute(
                    _INSERT,
                    {
                        "uid": str(uuid.uuid4()),
                        "kind": kind,
                        "tenant": tenant,
                        "name": name,
                        "generation": generation,
                        "resource_version": version,
                        "meta": meta,
                        "spec": spec,
                        "status": {},
                        "created_at": utcnow(),
                    },
                )
            except IntegrityError as exc:
                raise Conflict(f"{kind.lower()} {name!r} was created concurrently: retry") from exc
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
            version, generation = row.resource_version, row.generation
            outcome = Outcome.UNCHANGED
            if row.spec != spec or row.meta != meta:
                version, generation = next_revision(conn), generation + (row.spec != spec)
                # Compare-and-swap on the version read: SQLite has no SELECT FOR UPDATE, and
                # this is also what makes concurrent writers safe on PostgreSQL.
                result = conn.execute(
                    update(objects)
                    .where(
                        objects.c.uid == row.uid,
                        objects.c.resource_version == row.resource_version,
                    )
                    .values(spec=spec, meta=meta, generation=generation, resource_version=version)
                )
                if result.rowcount != 1:
                    raise Conflict(
                        f"{kind.lower()} {name!r} was changed concurrently: "
                        "get it again and reapply"
                    )
                outcome = Outcome.CONFIGURED
        if outcome != Outcome.UNCHANGED:
            feed.record(conn, [(FeedKind(kind), tenant, name)], revision=version)
        if kind == "Tenant" and (row is None or row.spec != spec):
            bump_sites(conn, tenant_sites(conn, name), revision=version)
        return Written(
            kind=kind,
            tenant=tenant or None,
            name=name,
            outcome=outcome,
            resource_version=str(version),
            generation=generation,
        )

    def delete_site(self, name: str) -> set[str]:
        """Delete a site and everything observed of it; returns the sites whose state changed."""
        with audited(self.engine) as conn:
            if object_row(conn, "Site", "", name, for_update=True) is None:
                raise NotFound(f"site {name!r} not found")
            conn.execute(delete(objects).where(objects.c.kind == "Site", objects.c.name == name))
            placed = conn.execute(
                select(assignments.c.tenant, assignments.c.app).where(assignments.c.site == name)
            ).all()
            feed.record(
                conn,
                [
                    (FeedKind.SITE, "", name),
                    (FeedKind.REPLICAS, "", name),
                    *((FeedKind.PLACEMENT, t, a) for t, a in placed),
                ],
            )
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
        with audited(self.engine) as conn:
            if object_row(conn, "App", tenant, name, for_update=True) is None:
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
            bump_sites(conn, sites)
            feed.record(
                conn,
                [
                    (FeedKind.APP, tenant, name),
                    (FeedKind.PLACEMENT, tenant, name),
                    *((FeedKind.REPLICAS, "", site) for site in sites),
                ],
            )
        return sites

    def set_site_phase(self, name: str, phase: str, message: str | None) -> None:
        """Record the health verdict of a site (status only: no new resourceVersion)."""
        self.set_site_phases({name: (phase, message)})

    def set_site_phases(self, phases: Mapping[str, tuple[str, str | None]]) -> None:
        """Record the health verdicts of sites, (phase, message) each, in one transaction."""
        if not phases:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(objects)
                .where(objects.c.kind == "Site", objects.c.name == bindparam("b_name"))
                .values(status=bindparam("b_status")),
                [
                    {"b_name": name, "b_status": {"phase": phase, "message": message}}
                    for name, (phase, message) in sorted(phases.items())
                ],
            )
            feed.record(conn, [(FeedKind.SITE, "", name) for name in phases])

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
            feed.record(conn, [(FeedKind.APP, tenant, name) for tenant, name in statuses])

    # -- composition of status -------------------------------------------------------------

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
                last_heartbeat=aware(beat.at) if beat else None,
                agent_version=report.agent_version if report else None,
                agent_endpoint=report.agent_endpoint if report else None,
                replicas=int(total.running) if total else 0,
                ready_replicas=int(total.ready) if total else 0,
            )
            out.append(
                Site(
                    metadata=meta_of(row),
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
                Tenant(
                    metadata=meta_of(row), spec=TenantSpec.model_validate(row.spec), status=status
                )
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
            status = app_status(
                desired.get(app_id, {}),
                wakeable.get(app_id, set()),
                observed.get(app_id, {}),
                observed_generation=row.status.get("observedGeneration"),
                message=row.status.get("message"),
            )
            out.append(
                App(metadata=meta_of(row), spec=AppSpec.model_validate(row.spec), status=status)
            )
        return out


def _bare_app(row: Any) -> App:
    """An app as its row holds it, with only the status placement writes."""
    return App(
        metadata=meta_of(row),
        spec=AppSpec.model_validate(row.spec),
        status=AppStatus(
            observed_generation=row.status.get("observedGeneration"),
            message=row.status.get("message"),
        ),
    )


def app_status(
    desired: Mapping[str, int],
    wakeable: Collection[str],
    observed: Mapping[str, ReplicaCount],
    *,
    observed_generation: int | None,
    message: str | None,
) -> AppStatus:
    """An app's status: per site the replicas placement asks for (``desired``), whether the
    site may start some itself (``wakeable``) and what its agent reported (``observed``), in
    site order; the generation placed and placement's message as the app's row holds them.
    Built without validation (every value is the store's or the hub's own): at 10,000 sites, a
    fraction of the time."""
    per_site = []
    ready = 0
    for site in sorted(desired.keys() | observed.keys()):
        have = observed.get(site)
        count = have.ready if have is not None else 0
        ready += count
        per_site.append(
            SiteReplicas.model_construct(
                site=site,
                desired=desired.get(site, 0),
                running=have.running if have is not None else 0,
                ready=count,
                wakeable=site in wakeable,
            )
        )
    return AppStatus.model_construct(
        observed_generation=observed_generation,
        message=message,
        desired_replicas=sum(desired.values()),
        ready_replicas=ready,
        sites=per_site,
    )


def _after(key: Sequence[Any], after: Sequence[str] | None) -> list[ColumnElement[bool]]:
    """The condition that a row's ``key`` columns come after the values ``after`` (none when
    None). A row value comparison: one range scan of the (kind, tenant, name) index on both
    engines, in the same order as ORDER BY on the same columns."""
    if after is None:
        return []
    if len(after) != len(key):
        raise ValueError(f"the key has {len(key)} values, not {len(after)}")
    if len(key) == 1:
        return [key[0] > after[0]]
    return [tuple_(*key) > tuple_(*after)]


# Built once: a statement built per call costs more to build than to run on SQLite, and an
# apply of many objects runs these once per object.
_ROW = select(objects).where(
    objects.c.kind == bindparam("kind"),
    objects.c.tenant == bindparam("tenant"),
    objects.c.name == bindparam("name"),
)
_ROW_FOR_UPDATE = _ROW.with_for_update()
_INSERT = insert(objects)


def object_row(
    conn: Connection, kind: str, tenant: str, name: str, *, for_update: bool = False
) -> Any:
    """The row of one object, or None; ``for_update`` locks it until commit (PostgreSQL)."""
    query = _ROW_FOR_UPDATE if for_update else _ROW
    return conn.execute(query, {"kind": kind, "tenant": tenant, "name": name}).first()


def meta_of(row: Any) -> ObjectMeta:
    return ObjectMeta(
        name=row.name,
        tenant=row.tenant or None,
        labels=row.meta.get("labels", {}),
        annotations=row.meta.get("annotations", {}),
        uid=row.uid,
        resource_version=str(row.resource_version),
        generation=row.generation,
        creation_timestamp=aware(row.created_at),
    )


def tenant_sites(conn: Connection, tenant: str) -> set[str]:
    """Sites running (or placed with) apps of ``tenant``."""
    return set(
        conn.execute(select(assignments.c.site).where(assignments.c.tenant == tenant)).scalars()
    )


def tenant_specs(conn: Connection, tenants: Iterable[str]) -> dict[str, TenantSpec]:
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
