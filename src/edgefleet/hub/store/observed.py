"""What agents report: heartbeats, and the replicas each site runs.

Written apart from the objects, in small batches, so that the telemetry of thousands of sites
never bumps an object's resourceVersion nor rewrites its spec.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from edgefleet.hub.schema import heartbeats, replica_counts, site_reports
from edgefleet.hub.store import feed
from edgefleet.hub.store.engine import aware, upsert, utcnow
from edgefleet.hub.store.feed import FeedKind
from edgefleet.model import ReplicaState, StatusReport


@dataclass(frozen=True)
class ReplicaCount:
    """Observed replicas of one app at one site."""

    running: int
    ready: int


class ObservedStore:
    """Heartbeats, status reports and replica counts."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
            upsert(conn, heartbeats, rows, keys=("site",))

    def last_heartbeats(self) -> dict[str, datetime]:
        """Last heartbeat time per site."""
        with self.engine.connect() as conn:
            return {
                row.site: aware(row.at)
                for row in conn.execute(select(heartbeats.c.site, heartbeats.c.at))
            }

    def beats_of(self, sites: Collection[str]) -> dict[str, tuple[datetime, str | None]]:
        """The last heartbeat written of each of ``sites`` that has one: (time, problem)."""
        wanted = sorted(set(sites))
        out: dict[str, tuple[datetime, str | None]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                for row in conn.execute(
                    select(heartbeats.c.site, heartbeats.c.at, heartbeats.c.problem).where(
                        heartbeats.c.site.in_(wanted[start : start + 500])
                    )
                ):
                    out[row.site] = (aware(row.at), row.problem)
        return out

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
        self.save_reports([report])

    def save_reports(self, reports: Sequence[StatusReport]) -> None:
        """Replace the observed replicas of each reporting site (the last report of a site
        counts), in one transaction."""
        latest = {report.site: report for report in reports}
        if not latest:
            return
        now = utcnow()
        counts: list[dict[str, Any]] = []
        for report in latest.values():
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
        sites = sorted(latest)
        with self.engine.begin() as conn:
            upsert(
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
                    for report in (latest[site] for site in sites)
                ],
                keys=("site",),
            )
            feed.record(conn, [(FeedKind.REPLICAS, "", site) for site in sites])
            for start in range(0, len(sites), 500):
                conn.execute(
                    delete(replica_counts).where(
                        replica_counts.c.site.in_(sites[start : start + 500])
                    )
                )
            if counts:
                conn.execute(insert(replica_counts), counts)
            upsert(
                conn,
                heartbeats,
                [
                    {"site": site, "at": now, "observed_revision": latest[site].observed_revision}
                    for site in sites
                ],
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

    def replica_counts(
        self, sites: Collection[str] | None = None
    ) -> dict[str, dict[tuple[str, str], ReplicaCount]]:
        """What agents reported running, per site (all, or ``sites``) and (tenant, app)."""
        out: dict[str, dict[tuple[str, str], ReplicaCount]] = {}
        query = select(replica_counts)
        with self.engine.connect() as conn:
            if sites is None:
                rows = list(conn.execute(query))
            else:
                wanted = sorted(set(sites))
                rows = []
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start : start + 500]
                    rows.extend(conn.execute(query.where(replica_counts.c.site.in_(chunk))))
        for row in rows:
            out.setdefault(row.site, {})[(row.tenant, row.app)] = ReplicaCount(
                row.running, row.ready
            )
        return out
