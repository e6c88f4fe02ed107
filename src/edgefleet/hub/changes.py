"""What changed in the fleet, told to the dashboards that watch it (``GET /api/v1/stream``).

A dashboard shows sites, apps, events and demand, and must follow them without reloading. The
hub does not push the objects themselves: it tells each watcher *which kind* of data changed, and
the watcher reads it again through the ordinary API, with its own token and its own tenants'
filter. So the stream carries no data a watcher could not read anyway, and needs no second
authorization model.

The news comes from the change feed the hub follows anyway (``edgefleet.hub.fleet``): nothing is
read from the store for dashboards, however many watch and however big the fleet. ``News`` says
what one update touched, by tenant; ``kinds`` (pure) says what a watcher of some tenants is told
of it. Demand also changes by decaying, with no write to say so: while anyone watches, every
``demand_every`` seconds the tenants with demand are told of it once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from edgefleet.hub.fleet import FleetChanges

log = logging.getLogger(__name__)

KINDS = ("sites", "apps", "events", "demand")
"""What a watcher is told about, in this order."""


@dataclass(frozen=True)
class News:
    """What one update of the fleet touched, by tenant."""

    sites: bool = False
    """A site's spec, phase or replicas changed (everyone's news)."""
    apps: frozenset[str] = frozenset()
    """Tenants whose apps' specs or statuses changed."""
    events: frozenset[str | None] = frozenset()
    """Tenants with new events (None: the fleet's own, e.g. a site's)."""
    demand: frozenset[str] = frozenset()
    """Tenants whose demand changed."""

    @classmethod
    def of(cls, changes: FleetChanges) -> News:
        """The news in an update of the fleet's picture."""
        return cls(
            sites=bool(changes.sites or changes.replicas or changes.reloaded),
            apps=frozenset(
                tenant for tenant, _ in changes.apps | changes.placements | changes.replica_apps
            ),
            events=frozenset(tenant or None for tenant in changes.events),
            demand=frozenset(tenant for tenant, _ in changes.demand),
        )


def kinds(news: News, tenants: frozenset[str] | None) -> frozenset[str]:
    """The kinds a watcher who sees ``tenants`` (None: all, and the fleet's events) is told of."""
    out = set()
    if news.sites:
        out.add("sites")
    if news.apps and (tenants is None or news.apps & tenants):
        out.add("apps")
    if news.demand and (tenants is None or news.demand & tenants):
        out.add("demand")
    # Fleet events (a site's) are an operator's; a tenant's people see their own only.
    own_events = {t for t in news.events if t is not None}
    if (tenants is None and news.events) or (tenants is not None and own_events & tenants):
        out.add("events")
    return frozenset(out)


class Watcher:
    """One dashboard's connection: the kinds changed since it last asked."""

    def __init__(self, tenants: frozenset[str] | None) -> None:
        self.tenants = tenants
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self.closed = False

    def tell(self, kinds: Iterable[str]) -> None:
        """Add ``kinds`` to what the watcher is told next."""
        self._pending.update(kinds)
        if self._pending:
            self._wake.set()

    def close(self) -> None:
        """End the watch (the hub is stopping)."""
        self.closed = True
        self._wake.set()

    async def next(self, timeout: float) -> list[str] | None:
        """The kinds changed, in ``KINDS`` order; [] after ``timeout`` s of nothing; None once
        closed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        if self.closed:
            return None
        self._wake.clear()
        out = [k for k in KINDS if k in self._pending]
        self._pending.clear()
        return out


@dataclass
class Changes:
    """Tells each dashboard watching what it may see changed (see the module)."""

    demand_every: float = 10.0
    """Seconds between reminders that demand decayed, while anyone watches."""
    _watchers: set[Watcher] = field(default_factory=set)
    _with_demand: set[str] = field(default_factory=set)
    _task: asyncio.Task[None] | None = None
    _closed: bool = False

    @property
    def watchers(self) -> int:
        """How many dashboards watch now."""
        return len(self._watchers)

    def watch(self, tenants: frozenset[str] | None) -> Watcher:
        """A new watcher of ``tenants`` (None: everything). It is told of every kind at once:
        something may change between its first reads and its first news."""
        watcher = Watcher(tenants)
        if self._closed:
            watcher.close()
            return watcher
        self._watchers.add(watcher)
        watcher.tell(KINDS)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._remind())
        return watcher

    def forget(self, watcher: Watcher) -> None:
        """The watcher went away."""
        self._watchers.discard(watcher)

    def close(self) -> None:
        """End every watch now (the hub is stopping) and refuse new ones."""
        self._closed = True
        for watcher in self._watchers:
            watcher.close()
        self._watchers.clear()
        if self._task is not None:
            self._task.cancel()

    def follow(self, changes: FleetChanges) -> None:
        """Tell the watchers of an update of the fleet (a ``FeedFollower`` listener)."""
        news = News.of(changes)
        self._with_demand |= news.demand
        self.tell(news)

    def tell(self, news: News) -> None:
        """Tell each watcher what ``news`` holds for it."""
        for watcher in list(self._watchers):
            watcher.tell(kinds(news, watcher.tenants))

    async def _remind(self) -> None:
        while self._watchers:
            await asyncio.sleep(self.demand_every)
            if self._with_demand:
                self.tell(News(demand=frozenset(self._with_demand)))
