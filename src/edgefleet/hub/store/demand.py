"""Demand as the hub keeps it: decayed rates per (app, origin site), and what each site sent.

The estimator is ``edgefleet.hub.demand`` (pure); this is where its state lives between reports.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, delete, select, tuple_, update

from edgefleet.hub.demand import (
    ORIGIN_MAX,
    PRUNE_EPSILON,
    PRUNE_RETENTION,
    DemandKey,
    DemandState,
    absorb,
)
from edgefleet.hub.schema import demand, demand_reports, objects
from edgefleet.hub.store import feed
from edgefleet.hub.store.engine import AppId, aware, insert_missing, utcnow
from edgefleet.hub.store.feed import FeedKind
from edgefleet.model import AppDemand, DemandReport, DemandRow, SiteReporting


class DemandStore:
    """Decayed demand per app and origin, and the reports taken from each site."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
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
            insert_missing(
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
            insert_missing(
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
            feed.record(conn, [(FeedKind.DEMAND, t, a) for t, a, _ in keys])
        return len(taken)

    def reporting(self, site: str) -> SiteReporting:
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

    def matrix(
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

    def prune(
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

    def forget(self, tenant: str, app: str) -> None:
        """Forget an app's demand (the app was deleted)."""
        with self.engine.begin() as conn:
            conn.execute(delete(demand).where(demand.c.tenant == tenant, demand.c.app == app))

    @staticmethod
    def _demand_state(row: Any) -> DemandState:
        return DemandState(
            requests=row.requests,
            concurrency=row.concurrency,
            dns=row.dns,
            at=aware(row.updated_at),
            last_request=aware(row.last_request) if row.last_request else None,
        )
