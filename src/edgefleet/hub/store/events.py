"""What happened to sites and apps (Created, Placed, Ready, Unreachable...), for ``describe``."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, delete, func, insert, select

from edgefleet.hub.schema import events
from edgefleet.hub.store import feed
from edgefleet.hub.store.engine import aware
from edgefleet.hub.store.feed import FeedKind
from edgefleet.model import Event


class EventStore:
    """The fleet's events, newest kept."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, new: Iterable[Event]) -> None:
        """Append events."""
        new = list(new)
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
                feed.record(conn, [(FeedKind.EVENT, e.tenant or "", "") for e in new])

    def list(
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
                time=aware(r.time),
                kind=r.kind,
                tenant=r.tenant or None,
                name=r.name,
                reason=r.reason,
                message=r.message,
                type=r.type,
            )
            for r in reversed(rows)
        ]

    def newest(self) -> dict[str | None, int]:
        """The id of the newest event per tenant (None: the fleet's own, e.g. a site's)."""
        query = select(events.c.tenant, func.max(events.c.id)).group_by(events.c.tenant)
        with self.engine.connect() as conn:
            return {tenant or None: newest for tenant, newest in conn.execute(query).all()}

    def prune(self, keep: int = 10_000) -> None:
        """Keep only the newest ``keep`` events."""
        with self.engine.begin() as conn:
            newest = conn.execute(select(func.max(events.c.id))).scalar() or 0
            conn.execute(delete(events).where(events.c.id <= newest - keep))
