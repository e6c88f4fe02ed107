"""The change feed: what each committed transaction changed, in commit order.

A write appends one row per thing it changed (a site, an app, a tenant's policy, an app's
placement, a site's reported replicas, a token, a signing key, an app's demand) in its own
transaction, stamped with a revision from the global counter. Revisions are handed out in commit
order (the counter's row stays locked until the writer commits), so a reader that asks for
"everything after revision R" and remembers the highest revision it saw never misses a write.
Every hub process follows the feed: that is how several hubs on one PostgreSQL keep the same
picture of the fleet without any of them scanning it.

Rows are pruned after a while; a reader that falls behind the pruning (a hub stopped for long)
is told so and reloads everything.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from edgefleet.hub.schema import counters, feed
from edgefleet.hub.store.engine import next_revision


class FeedKind(StrEnum):
    """What a feed row names."""

    SITE = "Site"
    """A site's spec or phase (tenant '', name: the site)."""
    APP = "App"
    """An app's spec or status (its tenant and name)."""
    TENANT = "Tenant"
    """A tenant's policy (tenant '', name: the tenant)."""
    PLACEMENT = "Placement"
    """An app's assignments (its tenant and name)."""
    REPLICAS = "Replicas"
    """The replicas a site reported (tenant '', name: the site)."""
    TOKEN = "Token"
    """A token or site credential made or revoked (tenant '', name: its id)."""
    KEY = "Key"
    """A signing key made (tenant '', name: its id)."""
    DEMAND = "Demand"
    """An app's demand (its tenant and name)."""
    EVENT = "Event"
    """Events were recorded (tenant: theirs, '' for the fleet's own; name '')."""


@dataclass(frozen=True)
class Change:
    """One feed row."""

    revision: int
    """Revision of the transaction that made it."""
    kind: FeedKind
    """What changed."""
    tenant: str
    """The tenant of an app (or its placement or demand); '' otherwise."""
    name: str
    """The name of what changed."""


def record(
    conn: Connection,
    changes: Iterable[tuple[FeedKind, str, str]],
    *,
    revision: int | None = None,
) -> int | None:
    """Append ``changes`` (kind, tenant, name) in the transaction of ``conn``, stamped with
    ``revision`` (a new one from the counter when None); returns the revision, None if there
    was nothing to append."""
    rows = sorted(set(changes))
    if not rows:
        return None
    stamp = next_revision(conn) if revision is None else revision
    conn.execute(
        insert(feed),
        [
            {"revision": stamp, "kind": kind.value, "tenant": tenant, "name": name}
            for kind, tenant, name in rows
        ],
    )
    return stamp


class FellBehind(Exception):
    """The feed was pruned past the reader's revision: it must reload everything."""


class Feed:
    """Reading and pruning the change feed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def head(self) -> int:
        """The newest revision handed out (a reader starting from a full load starts here)."""
        with self.engine.connect() as conn:
            value: int = conn.execute(
                select(counters.c.value).where(counters.c.name == "revision")
            ).scalar_one()
        return value

    def since(self, revision: int, *, limit: int = 50_000) -> list[Change]:
        """The changes after ``revision``, oldest first (at most ``limit`` revisions' worth, whole
        revisions only); ``FellBehind`` when rows after it were pruned."""
        with self.engine.connect() as conn:
            pruned = conn.execute(
                select(counters.c.value).where(counters.c.name == "feed_pruned")
            ).scalar_one()
            if revision < pruned:
                raise FellBehind(
                    f"the feed was pruned up to revision {pruned}; this reader is at {revision}"
                )
            rows = conn.execute(
                select(feed.c.revision, feed.c.kind, feed.c.tenant, feed.c.name)
                .where(feed.c.revision > revision)
                .order_by(feed.c.revision, feed.c.id)
                .limit(limit + 1)
            ).all()
            if len(rows) > limit:
                # Never cut a revision in half: drop the last one's rows, the next read takes
                # them; a single revision bigger than the limit is read whole.
                last = rows[-1].revision
                rows = [r for r in rows if r.revision != last] or conn.execute(
                    select(feed.c.revision, feed.c.kind, feed.c.tenant, feed.c.name)
                    .where(feed.c.revision == last)
                    .order_by(feed.c.id)
                ).all()
        return [Change(r.revision, FeedKind(r.kind), r.tenant, r.name) for r in rows]

    def prune(self, *, keep: int = 200_000) -> int:
        """Delete all but the newest ``keep`` rows; returns how many went."""
        with self.engine.begin() as conn:
            newest = conn.execute(select(func.max(feed.c.id))).scalar()
            if newest is None or newest <= keep:
                return 0
            cut = newest - keep
            highest = conn.execute(
                select(func.max(feed.c.revision)).where(feed.c.id <= cut)
            ).scalar()
            result = conn.execute(delete(feed).where(feed.c.id <= cut))
            if highest is not None:
                conn.execute(
                    update(counters)
                    .where(counters.c.name == "feed_pruned", counters.c.value < highest)
                    .values(value=highest)
                )
        return max(result.rowcount, 0)
