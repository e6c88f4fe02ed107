"""The hub's picture of the fleet, kept in memory and brought up to date from the change feed.

Placement, the routing table, site health and the agents' watches all need the sites, apps,
tenants, assignments and reported replicas. Reading them from the store on every event costs in
proportion to the fleet; so every hub process loads them once and then reads only what the feed
says changed (``edgefleet.hub.store.feed``): a site's write costs one row read, whatever the
size of the fleet. The same feed carries the writes of every hub sharing the database, so all
hubs hold the same picture, each at most one poll behind.

``FleetState`` is the picture (plain dicts, changed only on the event loop); ``FleetChanges``
says what one update touched, for the parts that follow it; ``FeedFollower`` polls the feed,
reads what changed off the loop, applies it on the loop and tells its listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from edgefleet.hub.lanes import Lane
from edgefleet.hub.store import (
    AppId,
    Change,
    FeedKind,
    FellBehind,
    ReplicaCount,
    SiteShare,
    Store,
)
from edgefleet.model import App, Site, SiteStatus, TenantSpec

log = logging.getLogger(__name__)


@dataclass
class FleetChanges:
    """What one update of the picture touched."""

    sites: set[str] = field(default_factory=set)
    """Sites created, deleted, or whose spec, labels or phase changed."""
    apps: set[AppId] = field(default_factory=set)
    """Apps created, deleted, or whose spec or status changed."""
    tenants: set[str] = field(default_factory=set)
    """Tenants whose policy was made, changed or deleted."""
    placements: set[AppId] = field(default_factory=set)
    """Apps whose assignments changed."""
    replicas: set[str] = field(default_factory=set)
    """Sites whose reported replicas changed."""
    tokens: set[str] = field(default_factory=set)
    """Tokens and site credentials made or revoked (ids)."""
    keys: bool = False
    """A signing key was made."""
    demand: set[AppId] = field(default_factory=set)
    """Apps whose demand was written."""
    events: set[str] = field(default_factory=set)
    """Tenants with new events ('': the fleet's own)."""
    replica_apps: set[AppId] = field(default_factory=set)
    """Apps reported (before or after) at the sites of ``replicas``: their status changed."""
    reloaded: bool = False
    """Everything was read again (first load, or the feed was pruned past this hub)."""

    def __bool__(self) -> bool:
        return bool(
            self.reloaded
            or self.sites
            or self.apps
            or self.tenants
            or self.placements
            or self.replicas
            or self.tokens
            or self.keys
            or self.demand
            or self.events
        )

    @classmethod
    def of(cls, changes: Iterable[Change]) -> FleetChanges:
        """The changes the feed rows name."""
        out = cls()
        for change in changes:
            key = (change.tenant, change.name)
            if change.kind == FeedKind.SITE:
                out.sites.add(change.name)
            elif change.kind == FeedKind.APP:
                out.apps.add(key)
            elif change.kind == FeedKind.TENANT:
                out.tenants.add(change.name)
            elif change.kind == FeedKind.PLACEMENT:
                out.placements.add(key)
            elif change.kind == FeedKind.REPLICAS:
                out.replicas.add(change.name)
            elif change.kind == FeedKind.TOKEN:
                out.tokens.add(change.name)
            elif change.kind == FeedKind.KEY:
                out.keys = True
            elif change.kind == FeedKind.DEMAND:
                out.demand.add(key)
            elif change.kind == FeedKind.EVENT:
                out.events.add(change.tenant)
        return out


@dataclass
class Snapshot:
    """What the store holds of the things some changes name, read off the event loop."""

    changes: FleetChanges
    revision: int
    sites: dict[str, Site | None]
    """Each site named: its current state, None if it is gone."""
    apps: dict[AppId, App | None]
    tenants: dict[str, TenantSpec | None]
    shares: dict[AppId, dict[str, SiteShare]]
    """Each app named by a placement change: its assignments (empty: none)."""
    generations: dict[AppId, int]
    """Each of those apps: the generation it was placed from."""
    replicas: dict[str, dict[AppId, ReplicaCount]]
    """Each site named by a replicas change: what it reported (empty: nothing)."""


@dataclass
class FleetState:
    """Sites, apps, tenants, assignments and reported replicas, as of ``revision``."""

    sites: dict[str, Site] = field(default_factory=dict)
    """Every site: spec, metadata, phase and message."""
    apps: dict[AppId, App] = field(default_factory=dict)
    """Every app: spec, metadata, observed generation and message."""
    tenants: dict[str, TenantSpec] = field(default_factory=dict)
    """Every tenant's policy."""
    shares: dict[AppId, dict[str, SiteShare]] = field(default_factory=dict)
    """Every app's assignments, by site."""
    generations: dict[AppId, int] = field(default_factory=dict)
    """The generation each app's assignments were placed from."""
    site_apps: dict[str, set[AppId]] = field(default_factory=dict)
    """The apps with an assignment at each site (the index of ``shares`` by site)."""
    replicas: dict[str, dict[AppId, ReplicaCount]] = field(default_factory=dict)
    """What each site's agent last reported running, by app."""
    observed: dict[AppId, dict[str, ReplicaCount]] = field(default_factory=dict)
    """The same reports by app, then site."""
    revision: int = -1
    """The feed revision this picture includes everything up to."""
    loaded: bool = False
    """Whether a full load happened."""

    def app_sites(self, key: AppId) -> tuple[dict[str, int], set[str], dict[str, ReplicaCount]]:
        """Copies of what this picture holds of one app at its sites, for a reader off the
        loop: the replicas placement asks of each site, the sites that may start replicas
        themselves, and what each site's agent reported."""
        shares = self.shares.get(key, {})
        return (
            {site: share.replicas for site, share in shares.items()},
            {site for site, share in shares.items() if (share.max_replicas or 0) > 0},
            dict(self.observed.get(key, {})),
        )

    def apps_at(self, site: str) -> set[AppId]:
        """Apps placed or reported at ``site``."""
        return self.site_apps.get(site, set()) | set(self.replicas.get(site, {}))

    def _place(self, key: AppId, by_site: dict[str, SiteShare]) -> None:
        for site in self.shares.pop(key, {}):
            apps = self.site_apps.get(site)
            if apps is not None:
                apps.discard(key)
                if not apps:
                    del self.site_apps[site]
        if by_site:
            self.shares[key] = dict(by_site)
            for site in by_site:
                self.site_apps.setdefault(site, set()).add(key)

    def _report(self, site: str, counts: dict[AppId, ReplicaCount]) -> None:
        for key in self.replicas.pop(site, {}):
            by_site = self.observed.get(key)
            if by_site is not None:
                by_site.pop(site, None)
                if not by_site:
                    del self.observed[key]
        if counts:
            self.replicas[site] = dict(counts)
            for key, count in counts.items():
                self.observed.setdefault(key, {})[site] = count

    def site_totals(self, site: str) -> ReplicaCount:
        """Running and ready replicas at ``site``, all apps."""
        counts = self.replicas.get(site, {}).values()
        return ReplicaCount(sum(c.running for c in counts), sum(c.ready for c in counts))

    # -- reading the store (off the loop) --------------------------------------------------------

    @staticmethod
    def read_all(store: Store) -> Snapshot:
        """Everything, for a full load (blocking)."""
        revision = store.feed.head()
        sites = store.objects.bare_sites()
        apps = store.objects.bare_apps()
        tenants = store.objects.bare_tenants()
        shares = store.placement.shares()
        generations = store.placement.generations()
        replicas = store.observed.replica_counts()
        changes = FleetChanges(reloaded=True)
        return Snapshot(
            changes=changes,
            revision=revision,
            sites={s.metadata.name: s for s in sites},
            apps={(a.metadata.tenant or "", a.metadata.name): a for a in apps},
            tenants={t.metadata.name: t.spec for t in tenants},
            shares=shares,
            generations=generations,
            replicas=replicas,
        )

    def read_changes(self, store: Store, changes: FleetChanges, revision: int) -> Snapshot:
        """The current state of what ``changes`` name (blocking). A site whose spec did not
        change (a new phase: thousands at once when a region's link fails) is not read and
        validated again, only its status."""
        sites: dict[str, Site | None] = dict.fromkeys(changes.sites)
        versions = store.objects.site_versions(changes.sites) if changes.sites else {}
        respec = []
        for name, (version, status) in versions.items():
            known = self.sites.get(name)
            if known is not None and known.metadata.resource_version == version:
                sites[name] = known.model_copy(
                    update={
                        "status": SiteStatus(
                            phase=status.get("phase", "Pending"), message=status.get("message")
                        )
                    }
                )
            else:
                respec.append(name)
        if respec:
            sites.update({s.metadata.name: s for s in store.objects.bare_sites(respec)})
        apps: dict[AppId, App | None] = dict.fromkeys(changes.apps)
        apps.update(
            {
                (a.metadata.tenant or "", a.metadata.name): a
                for a in store.objects.bare_apps(changes.apps)
            }
        )
        tenants: dict[str, TenantSpec | None] = dict.fromkeys(changes.tenants)
        tenants.update(
            {t.metadata.name: t.spec for t in store.objects.bare_tenants(changes.tenants)}
        )
        shares: dict[AppId, dict[str, SiteShare]] = {key: {} for key in changes.placements} | (
            store.placement.shares_of(changes.placements) if changes.placements else {}
        )
        replicas: dict[str, dict[AppId, ReplicaCount]] = {site: {} for site in changes.replicas} | (
            store.observed.replica_counts(changes.replicas) if changes.replicas else {}
        )
        generations = store.placement.generations(changes.placements) if changes.placements else {}
        return Snapshot(changes, revision, sites, apps, tenants, shares, generations, replicas)

    # -- applying (on the loop) -------------------------------------------------------------------

    def apply(self, snapshot: Snapshot) -> FleetChanges:
        """Take ``snapshot`` into the picture; returns what it changed."""
        if snapshot.changes.reloaded:
            self.sites = {n: one for n, one in snapshot.sites.items() if one is not None}
            self.apps = {k: a for k, a in snapshot.apps.items() if a is not None}
            self.tenants = {n: t for n, t in snapshot.tenants.items() if t is not None}
            self.shares, self.site_apps = {}, {}
            for key, by_site in snapshot.shares.items():
                self._place(key, by_site)
            self.generations = dict(snapshot.generations)
            self.replicas, self.observed = {}, {}
            for reporter, counts in snapshot.replicas.items():
                self._report(reporter, counts)
            self.loaded = True
        else:
            for name, site in snapshot.sites.items():
                if site is None:
                    self.sites.pop(name, None)
                else:
                    self.sites[name] = site
            for key, app in snapshot.apps.items():
                if app is None:
                    self.apps.pop(key, None)
                else:
                    self.apps[key] = app
            for name, tenant in snapshot.tenants.items():
                if tenant is None:
                    self.tenants.pop(name, None)
                else:
                    self.tenants[name] = tenant
            for key, by_site in snapshot.shares.items():
                self._place(key, by_site)
                if key in snapshot.generations:
                    self.generations[key] = snapshot.generations[key]
                elif not by_site:
                    self.generations.pop(key, None)
            for reporter, counts in snapshot.replicas.items():
                snapshot.changes.replica_apps |= set(self.replicas.get(reporter, {})) | set(counts)
                self._report(reporter, counts)
        self.revision = max(self.revision, snapshot.revision)
        return snapshot.changes


Listener = Callable[[FleetChanges], None]
"""Told, on the event loop, of each update of the picture."""


class FeedFollower:
    """Keeps a ``FleetState`` up to date: polls the feed every ``interval`` seconds, and at once
    when poked (after this hub's own writes)."""

    def __init__(self, store: Store, state: FleetState, *, interval: float = 0.25) -> None:
        self._store = store
        self._lane = Lane("feed")
        self.state = state
        self._interval = interval
        self._poke = asyncio.Event()
        self._lock = asyncio.Lock()
        self._listeners: list[Listener] = []
        self._catching: list[tuple[int, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.polls = 0
        """Polls made (for tests and metrics)."""
        self.applied = 0
        """Feed rows taken in."""

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` with each update, in the order listeners were added."""
        self._listeners.append(listener)

    def poke(self) -> None:
        """Read the feed now: this hub just wrote something (from any thread: routes that
        write run in FastAPI's thread pool)."""
        loop = self._loop
        if loop is None:
            self._poke.set()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._poke.set()
        else:
            loop.call_soon_threadsafe(self._poke.set)

    async def load(self) -> None:
        """Read everything (the first time, or when the feed was pruned past this hub)."""
        async with self._lock:
            snapshot = await self._lane.run(FleetState.read_all, self._store)
            self._tell(self.state.apply(snapshot))

    async def poll(self) -> FleetChanges:
        """Take in what the feed says changed since the picture's revision."""
        async with self._lock:
            self.polls += 1
            started = time.monotonic()
            try:
                rows = await self._lane.run(self._store.feed.since, self.state.revision)
            except FellBehind as exc:
                log.warning("%s: reading the whole fleet again", exc)
                snapshot = await self._lane.run(FleetState.read_all, self._store)
                changes = self.state.apply(snapshot)
                self._tell(changes)
                return changes
            if not rows:
                return FleetChanges()
            changes = FleetChanges.of(rows)
            snapshot = await self._lane.run(
                self.state.read_changes, self._store, changes, rows[-1].revision
            )
            changes = self.state.apply(snapshot)
            self.applied += len(rows)
            self._tell(changes)
            elapsed = time.monotonic() - started
            if elapsed > 1.0:
                log.info("took in %d feed rows in %.1fs", len(rows), elapsed)
            return changes

    def _tell(self, changes: FleetChanges) -> None:
        for listener in self._listeners:
            try:
                listener(changes)
            except Exception:
                log.exception("a follower of the fleet's changes failed")
        if self._catching:
            waiting = []
            for revision, future in self._catching:
                if self.state.revision >= revision:
                    if not future.done():
                        future.set_result(None)
                elif not future.done():
                    waiting.append((revision, future))
            self._catching = waiting

    async def caught_up(self, revision: int, timeout: float) -> bool:
        """Wait until the picture includes everything up to ``revision`` (polling now); False
        after ``timeout`` seconds."""
        if self.state.revision >= revision:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._catching.append((revision, future))
        self.poke()
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Poll forever."""
        self._loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self._interval)
            self._poke.clear()
            try:
                await self.poll()
            except Exception:
                log.exception("reading the change feed failed")
                await asyncio.sleep(self._interval)
