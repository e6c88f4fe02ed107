"""The hub's store: SQLAlchemy Core over SQLite (WAL, the embedded default) or PostgreSQL.

One module per concern, each a small class over the same engine:

- ``objects``: sites, apps and tenants, written by operators, read with their status;
- ``placement``: the assignments placement writes, and each site's desired state;
- ``revisions``: each site's desired-state revision, what agents' long-polls watch;
- ``observed``: heartbeats, status reports and replica counts from the agents;
- ``demand``: decayed demand per app and origin site;
- ``events``: what happened, for ``describe``;
- ``feed``: what each committed transaction changed, for every hub to follow;
- ``leadership``: which hub process runs the controllers;
- ``auth_failures``: failed authentications per source address, shared by the hub replicas;
- ``audit``: the audit entry of a requested change, written in that change's transaction.

``Store`` holds one of each; ``engine`` has the shared pieces (errors, the revision counter).
"""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from edgefleet.hub.store.auth_failures import AuthFailures
from edgefleet.hub.store.demand import DemandStore
from edgefleet.hub.store.engine import (
    AppId,
    Conflict,
    NotFound,
    Outcome,
    StoreError,
    aware,
    make_engine,
    utcnow,
)
from edgefleet.hub.store.events import EventStore
from edgefleet.hub.store.feed import Change, Feed, FeedKind, FellBehind
from edgefleet.hub.store.leadership import Leadership
from edgefleet.hub.store.objects import ObjectStore, Page, Written, app_status
from edgefleet.hub.store.observed import ObservedStore, ReplicaCount
from edgefleet.hub.store.placement import PlacementStore, SiteShare
from edgefleet.hub.store.revisions import SiteRevisions


class Store:
    """Desired and observed state of the fleet. Thread-safe: each call takes its own connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        self.objects = ObjectStore(self.engine)
        """Sites, apps and tenants."""
        self.placement = PlacementStore(self.engine)
        """Assignments and desired states."""
        self.revisions = SiteRevisions(self.engine)
        """Each site's desired-state revision."""
        self.observed = ObservedStore(self.engine)
        """Heartbeats, status reports, replica counts."""
        self.demand = DemandStore(self.engine)
        """Decayed demand."""
        self.events = EventStore(self.engine)
        """Events."""
        self.feed = Feed(self.engine)
        """What each transaction changed, in commit order."""
        self.auth_failures = AuthFailures(self.engine)
        """Failed authentications per source address, shared by the hub replicas."""

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


__all__ = [
    "AppId",
    "AuthFailures",
    "Change",
    "Conflict",
    "DemandStore",
    "EventStore",
    "Feed",
    "FeedKind",
    "FellBehind",
    "Leadership",
    "NotFound",
    "ObjectStore",
    "ObservedStore",
    "Outcome",
    "Page",
    "PlacementStore",
    "ReplicaCount",
    "SiteRevisions",
    "SiteShare",
    "Store",
    "StoreError",
    "Written",
    "app_status",
    "aware",
    "utcnow",
]
