"""Failed authentications per source address, shared by the hub replicas.

Each source's bucket is one row holding when its failures are all forgiven
(``edgefleet.identity.failures``). A hub adds the failures it saw with one upsert per batch,
which moves that time forward in SQL exactly as ``FailureBudget.forgiven_at`` does in Python, so
concurrent hubs add up rather than overwrite each other. Times are seconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Engine, case, delete, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from edgefleet.hub.schema import auth_failures
from edgefleet.identity.failures import FailureBudget


class AuthFailures:
    """The shared buckets of failed authentications."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, failures: Mapping[str, int], *, now: float, budget: FailureBudget) -> None:
        """Add ``failures`` (per source) seen at ``now`` to the shared buckets, in one
        statement."""
        if not failures:
            return
        rows = [
            {"source": source, "forgiven_at": budget.forgiven_at(None, now, n), "failed_at": now}
            for source, n in sorted(failures.items())
        ]
        insert_ = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert_(auth_failures)
        before, new = auth_failures.c.forgiven_at, stmt.excluded
        # ``new.forgiven_at`` is what the failures give a source with none before: now plus
        # their share, or the cap. Added to a time still ahead, the sum is capped again.
        later = before + (new.forgiven_at - new.failed_at)
        cap = new.failed_at + literal(budget.burst / budget.rate)
        moved = case(
            (before > new.failed_at, case((later > cap, cap), else_=later)),
            else_=new.forgiven_at,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["source"], set_={"forgiven_at": moved, "failed_at": new.failed_at}
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, rows)

    def refused(self, *, now: float, budget: FailureBudget, limit: int) -> dict[str, float]:
        """The sources over their limit at ``now`` (at most ``limit``), with when their
        failures are forgiven: a range of the index on the last failure."""
        query = (
            select(auth_failures.c.source, auth_failures.c.forgiven_at)
            .where(
                auth_failures.c.failed_at >= budget.recent(now),
                auth_failures.c.forgiven_at > budget.refused_beyond(now),
            )
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return {row.source: row.forgiven_at for row in conn.execute(query)}

    def prune(self, *, now: float, budget: FailureBudget) -> int:
        """Forget the sources forgiven everything; returns how many."""
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(auth_failures).where(auth_failures.c.failed_at < budget.forgotten(now))
            )
        return result.rowcount
