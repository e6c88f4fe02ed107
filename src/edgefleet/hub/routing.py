"""The hub's routing table: every app's serving sites, kept up to date one change at a time.

``build_routing_table`` is the definition, pure: the whole table from sites, apps and tenants.
``RoutingState`` keeps the same table as the fleet changes without building it again: it follows
the hub's picture of the fleet (``edgefleet.hub.fleet``), and for each update recomputes only the
sites and apps it touched. It publishes the table in the frozen form the DNS answers from
(``RouteTable``: a new snapshot per batch of changes, sharing every unchanged entry), tells its
listeners what moved (``RoutingChanges``: the central DNS, each site's share of the table), and
builds the wire form of the whole table only when someone asks for it.

``PeerVerdicts`` collects what agents' probes say of their neighbours, for the central DNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from edgefleet.hub.fleet import FleetChanges, FleetState
from edgefleet.hub.store import AppId, ReplicaCount, SiteShare
from edgefleet.model import (
    App,
    AppRoutes,
    PublicKey,
    RouteAccess,
    RouteEndpoint,
    RouteSite,
    RoutingTable,
    Site,
    SitePhase,
    SiteReplicas,
    Tenant,
    TenantSpec,
)
from edgefleet.placement.policy import access_rules, effective_regions
from edgefleet.routing.convert import app_access, site_point
from edgefleet.routing.table import AppAccess, Endpoint, RouteTable, SitePoint

log = logging.getLogger(__name__)


# -- the table's parts (pure) ---------------------------------------------------------------------


def route_site(site: Site) -> RouteSite:
    """A site as every DNS and ingress of the fleet needs it."""
    return RouteSite(
        name=site.metadata.name,
        region=site.spec.region,
        zone=site.spec.zone,
        lat=site.spec.location.lat,
        lon=site.spec.location.lon,
        ip=site.spec.addresses.ip,
        ipv6=site.spec.addresses.ipv6,
        ingress_port=site.spec.addresses.ingress_port,
        dns_port=site.spec.addresses.dns_port,
        networks=list(site.spec.networks),
        reachable=site.status.phase != SitePhase.UNREACHABLE,
    )


def headroom(site: Site, running: int) -> float:
    """The share of a site's replica slots still free, the same for every app there."""
    slots = site.spec.capacity.max_replicas
    return round(max(0.0, 1.0 - running / slots), 3) if slots else 0.0


def app_routes(
    app: App,
    per_site: Iterable[SiteReplicas],
    *,
    headroom: Mapping[str, float],
    policy: TenantSpec | None,
) -> AppRoutes:
    """One app's routes: an endpoint per site where it has desired or ready replicas, or is
    placed at zero (wakeable), with its effective residency and access rules (its tenant's
    policy and its own; ``edgefleet.placement.policy``)."""
    tenant = app.metadata.tenant or ""
    regions = effective_regions(policy, app.spec)
    rules = access_rules(tenant=tenant, tenant_spec=policy, app=app.metadata.name, spec=app.spec)
    return AppRoutes(
        tenant=tenant,
        app=app.metadata.name,
        max_latency_ms=app.spec.placement.max_latency_ms,
        endpoints=[
            RouteEndpoint(
                site=p.site,
                ready=p.ready,
                headroom=headroom.get(p.site, 0.0),
                wakeable=p.wakeable,
            )
            for p in sorted(per_site, key=lambda p: p.site)
            if p.desired or p.ready or p.wakeable
        ],
        regions=None if regions is None else sorted(regions),
        access=[
            RouteAccess(who=who, networks=list(rule.networks), regions=list(rule.regions))
            for who, rule in rules
        ],
    )


def per_site_replicas(
    shares: Mapping[str, SiteShare], observed: Mapping[str, ReplicaCount]
) -> list[SiteReplicas]:
    """An app's desired and observed replicas per site, as its status lists them."""
    return [
        SiteReplicas(
            site=site,
            desired=shares[site].replicas if site in shares else 0,
            running=observed[site].running if site in observed else 0,
            ready=observed[site].ready if site in observed else 0,
            wakeable=site in shares and (shares[site].max_replicas or 0) > 0,
        )
        for site in sorted(set(shares) | set(observed))
    ]


def assemble(
    route_sites: Iterable[RouteSite],
    routes: Iterable[AppRoutes],
    *,
    signing_keys: Sequence[PublicKey] = (),
    revoked_credentials: Sequence[str] = (),
) -> RoutingTable:
    """The wire table of these parts, in name order, versioned by a hash of its content."""
    content = RoutingTable(
        version="",
        sites=sorted(route_sites, key=lambda s: s.name),
        apps=sorted(routes, key=lambda a: (a.tenant, a.app)),
        signing_keys=list(signing_keys),
        revoked_credentials=list(revoked_credentials),
    )
    digest = hashlib.sha256(
        json.dumps(content.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()[:16]
    return content.model_copy(update={"version": digest})


def build_routing_table(
    sites: Sequence[Site],
    apps: Sequence[App],
    *,
    signing_keys: Sequence[PublicKey] = (),
    revoked_credentials: Sequence[str] = (),
    tenants: Sequence[Tenant] = (),
) -> RoutingTable:
    """The routing table for these sites and apps (with their composed status); its version is
    a hash of its content.

    An endpoint is a site where the app has desired or ready replicas, or is placed at zero
    (wakeable). Headroom is the share of the site's replica slots still free, the same for every
    app there. Each app carries its effective residency and access rules.
    """
    policies = {t.metadata.name: t.spec for t in tenants}
    room = {s.metadata.name: headroom(s, s.status.replicas) for s in sites}
    return assemble(
        (route_site(s) for s in sites),
        (
            app_routes(
                app,
                app.status.sites,
                headroom=room,
                policy=policies.get(app.metadata.tenant or ""),
            )
            for app in apps
        ),
        signing_keys=signing_keys,
        revoked_credentials=revoked_credentials,
    )


# -- kept up to date (the shell) ------------------------------------------------------------------


@dataclass
class RoutingChanges:
    """What one publication of the table changed."""

    sites: set[str] = field(default_factory=set)
    """Sites whose record changed (address, location, networks, reachability), or that came
    or went."""
    apps: set[AppId] = field(default_factory=set)
    """Apps whose routes changed in any way, or that came or went."""
    endpoints: dict[AppId, set[str]] = field(default_factory=dict)
    """Per app of ``apps``, the sites whose endpoint changed, came or went (every site of the app
    when its residency, access or latency bound changed: see ``meta``)."""
    meta: set[AppId] = field(default_factory=set)
    """Apps whose residency, access rules or latency bound changed, or that came or went."""
    identity: bool = False
    """The signing keys or revoked credentials changed."""
    everything: bool = False
    """The whole table was rebuilt."""

    def __bool__(self) -> bool:
        return bool(self.sites or self.apps or self.identity or self.everything)


RoutingListener = Callable[[RouteTable, RoutingChanges], None]


@dataclass(frozen=True)
class _Meta:
    """An app's rules as the table carries them."""

    max_latency_ms: float | None
    regions: tuple[str, ...] | None
    access: tuple[RouteAccess, ...]


class RoutingState:
    """The current routing table of this hub, and the agents and servers following it."""

    def __init__(
        self,
        fleet: FleetState,
        *,
        identity: Callable[[], tuple[list[PublicKey], list[str]]] | None = None,
        settle: float = 0.05,
    ) -> None:
        self._fleet = fleet
        self.identity = identity
        """Reads the hub's public keys and the revoked site credentials, which sites check
        peers with (``Hub.routing_identity``; blocking)."""
        self._settle = settle
        self._epoch = uuid.uuid4().hex[:6]
        self._count = 0
        self._route_sites: dict[str, RouteSite] = {}
        self._points: dict[str, SitePoint] = {}
        self._headroom: dict[str, float] = {}
        self._routes: dict[AppId, AppRoutes] = {}
        """Wire form of each app's routes, built when asked (``app_route``)."""
        self._eps: dict[AppId, dict[str, RouteEndpoint]] = {}
        """Each app's endpoints by site."""
        self._meta: dict[AppId, _Meta] = {}
        self._endpoints: dict[AppId, tuple[Endpoint, ...]] = {}
        self._places: dict[AppId, dict[str, int]] = {}
        """Per app, each site's place in its sorted ``_endpoints``."""
        self._bounds: dict[AppId, float] = {}
        self._residency: dict[AppId, frozenset[str]] = {}
        self._access: dict[AppId, AppAccess] = {}
        self._site_apps: dict[str, set[AppId]] = {}
        """Apps with an endpoint at each site (to redo when the site's headroom changes)."""
        self.signing_keys: list[PublicKey] = []
        self.revoked: list[str] = []
        self.table = RouteTable(version="")
        """The newest table, as the DNS answers from it."""
        self._wire: RoutingTable | None = None
        self._pending = FleetChanges()
        self._identity_dirty = True
        self._dirty = asyncio.Event()
        self._changed = asyncio.Event()
        self._listeners: list[RoutingListener] = []
        self._events: list[asyncio.Event] = []
        self._closed = False
        self.publications = 0
        """Tables published (for tests and metrics)."""

    @property
    def version(self) -> str:
        """The version of the newest table (changes with every publication)."""
        return self.table.version

    # -- following the fleet ---------------------------------------------------------------------

    def follow(self, changes: FleetChanges) -> None:
        """Take note of an update of the fleet's picture (a ``FeedFollower`` listener); the table
        is brought up to date soon after, bursts together."""
        pending = self._pending
        pending.reloaded |= changes.reloaded
        pending.sites |= changes.sites
        pending.apps |= changes.apps
        pending.tenants |= changes.tenants
        pending.placements |= changes.placements
        pending.replicas |= changes.replicas
        pending.replica_apps |= changes.replica_apps
        if changes.tokens or changes.keys or changes.reloaded:
            self._identity_dirty = True
        if pending or self._identity_dirty:
            self._dirty.set()

    def trigger(self) -> None:
        """Something feeding the table changed that the fleet's picture does not show (the
        signing keys were read for the first time): bring it up to date soon."""
        self._identity_dirty = True
        self._dirty.set()

    async def rebuild(self) -> bool:
        """Bring the table up to date now; True if it changed."""
        if self._identity_dirty and self.identity is not None:
            self._identity_dirty = False
            keys, revoked = await asyncio.to_thread(self.identity)
            identity_changed = keys != self.signing_keys or revoked != self.revoked
            self.signing_keys, self.revoked = keys, revoked
        else:
            identity_changed = False
        pending, self._pending = self._pending, FleetChanges()
        changes = self._apply(pending)
        changes.identity = identity_changed
        if not changes and self.table.version:
            return False
        self._publish(changes)
        return True

    def _apply(self, pending: FleetChanges) -> RoutingChanges:
        fleet = self._fleet
        if pending.reloaded or not self.table.version:
            return self._rebuild_all()
        out = RoutingChanges()
        # Apps whose rules or placement changed are redone whole; a report or a site's room
        # redoes the endpoints at that site only.
        whole: set[AppId] = pending.apps | pending.placements
        if pending.tenants:
            whole |= {key for key in fleet.apps if key[0] in pending.tenants}
        at: dict[AppId, set[str]] = {}
        for name in pending.replicas:
            for key in self._site_apps.get(name, set()) | set(fleet.replicas.get(name, {})):
                at.setdefault(key, set()).add(name)
        for key in pending.replica_apps:
            for name in pending.replicas:
                at.setdefault(key, set()).add(name)
        for name in pending.sites | pending.replicas:
            site = fleet.sites.get(name)
            if site is None:
                if name in self._route_sites:
                    del self._route_sites[name]
                    del self._points[name]
                    self._headroom.pop(name, None)
                    out.sites.add(name)
                for key in self._site_apps.get(name, set()):
                    at.setdefault(key, set()).add(name)
                continue
            record = route_site(site)
            if self._route_sites.get(name) != record:
                self._route_sites[name] = record
                self._points[name] = site_point(record)
                out.sites.add(name)
            room = headroom(site, fleet.site_totals(name).running)
            if self._headroom.get(name) != room:
                self._headroom[name] = room
                for key in self._site_apps.get(name, set()):
                    at.setdefault(key, set()).add(name)
        for key in whole:
            self._redo_app(key, out)
        for key, names in at.items():
            if key not in whole:
                self._redo_endpoints(key, names, out)
        return out

    def _rebuild_all(self) -> RoutingChanges:
        fleet = self._fleet
        self._route_sites = {name: route_site(site) for name, site in fleet.sites.items()}
        self._points = {name: site_point(r) for name, r in self._route_sites.items()}
        self._headroom = {
            name: headroom(site, fleet.site_totals(name).running)
            for name, site in fleet.sites.items()
        }
        for key in list(self._eps):
            self._forget_app(key)
        ignored = RoutingChanges()
        for key in fleet.apps:
            self._redo_app(key, ignored)
        return RoutingChanges(
            sites=set(self._route_sites),
            apps=set(self._eps),
            meta=set(self._eps),
            everything=True,
        )

    def _forget_app(self, key: AppId) -> None:
        for site in self._eps.pop(key, {}):
            self._site_apps.get(site, set()).discard(key)
        self._meta.pop(key, None)
        self._routes.pop(key, None)
        self._endpoints.pop(key, None)
        self._places.pop(key, None)
        self._bounds.pop(key, None)
        self._residency.pop(key, None)
        self._access.pop(key, None)

    def _endpoint(self, key: AppId, site: str) -> RouteEndpoint | None:
        """The app's endpoint at ``site`` as the table lists it, or None."""
        fleet = self._fleet
        share = fleet.shares.get(key, {}).get(site)
        seen = fleet.observed.get(key, {}).get(site)
        desired = share.replicas if share is not None else 0
        ready = seen.ready if seen is not None else 0
        wakeable = share is not None and (share.max_replicas or 0) > 0
        if not (desired or ready or wakeable):
            return None
        return RouteEndpoint(
            site=site, ready=ready, headroom=self._headroom.get(site, 0.0), wakeable=wakeable
        )

    def _set_endpoints(
        self, key: AppId, eps: dict[str, RouteEndpoint], changed: set[str] | None = None
    ) -> None:
        """Take an app's endpoints; ``changed``: only these sites' may differ. When all of them
        had an endpoint and still have one (a report), their places in the sorted tuple are
        rewritten and the rest kept (an app at 10,000 sites costs a list copy a report, not a
        sort of new endpoints); else the tuple is built again."""
        self._eps[key] = eps
        self._routes.pop(key, None)  # the wire form is built again when asked
        places = self._places.get(key)
        old = self._endpoints.get(key)
        if (
            changed is not None
            and places is not None
            and old is not None
            and all(name in places and name in eps for name in changed)
        ):
            items = list(old)
            for name in changed:
                e = eps[name]
                items[places[name]] = Endpoint(
                    site=e.site, ready=e.ready, headroom=e.headroom, wakeable=e.wakeable
                )
            self._endpoints[key] = tuple(items)
            return
        self._endpoints[key] = tuple(
            Endpoint(site=e.site, ready=e.ready, headroom=e.headroom, wakeable=e.wakeable)
            for _, e in sorted(eps.items())
        )
        self._places[key] = {e.site: i for i, e in enumerate(self._endpoints[key])}

    def _redo_endpoints(self, key: AppId, names: set[str], out: RoutingChanges) -> None:
        """Redo an app's endpoints at ``names`` only (a report, a site's room)."""
        eps = self._eps.get(key)
        if eps is None:
            return
        changed = set()
        for name in names:
            endpoint = self._endpoint(key, name)
            if eps.get(name) != endpoint:
                changed.add(name)
                if endpoint is None:
                    del eps[name]
                    self._site_apps.get(name, set()).discard(key)
                else:
                    eps[name] = endpoint
                    self._site_apps.setdefault(name, set()).add(key)
        if changed:
            self._set_endpoints(key, eps, changed)
            out.apps.add(key)
            out.endpoints.setdefault(key, set()).update(changed)

    def _redo_app(self, key: AppId, out: RoutingChanges) -> None:
        """Redo an app whole: its rules and every endpoint."""
        fleet = self._fleet
        app = fleet.apps.get(key)
        old = self._eps.get(key)
        if app is None:
            if old is not None:
                self._forget_app(key)
                out.apps.add(key)
                out.meta.add(key)
                out.endpoints[key] = set(old)
            return
        tenant = key[0]
        policy = fleet.tenants.get(tenant)
        regions = effective_regions(policy, app.spec)
        meta = _Meta(
            max_latency_ms=app.spec.placement.max_latency_ms,
            regions=None if regions is None else tuple(sorted(regions)),
            access=tuple(
                RouteAccess(who=who, networks=list(rule.networks), regions=list(rule.regions))
                for who, rule in access_rules(
                    tenant=tenant, tenant_spec=policy, app=key[1], spec=app.spec
                )
            ),
        )
        eps = {}
        for site in set(fleet.shares.get(key, {})) | set(fleet.observed.get(key, {})):
            endpoint = self._endpoint(key, site)
            if endpoint is not None:
                eps[site] = endpoint
        before = old or {}
        changed = {s for s in before.keys() | eps.keys() if before.get(s) != eps.get(s)}
        if old is not None and not changed and self._meta.get(key) == meta:
            return
        out.apps.add(key)
        out.endpoints[key] = changed
        if self._meta.get(key) != meta or old is None:
            out.meta.add(key)
            self._meta[key] = meta
            if meta.max_latency_ms:
                self._bounds[key] = meta.max_latency_ms
            else:
                self._bounds.pop(key, None)
            if meta.regions is not None:
                self._residency[key] = frozenset(meta.regions)
            else:
                self._residency.pop(key, None)
            rules = app_access(self.app_route_meta(key))
            if rules is not None:
                self._access[key] = rules
            else:
                self._access.pop(key, None)
        for site in before.keys() - eps.keys():
            self._site_apps.get(site, set()).discard(key)
        for site in eps:
            self._site_apps.setdefault(site, set()).add(key)
        self._set_endpoints(key, eps)

    def app_route_meta(self, key: AppId) -> AppRoutes:
        """An app's rules (residency, access, latency bound), without endpoints."""
        meta = self._meta[key]
        return AppRoutes(
            tenant=key[0],
            app=key[1],
            max_latency_ms=meta.max_latency_ms,
            regions=None if meta.regions is None else list(meta.regions),
            access=list(meta.access),
        )

    def _publish(self, changes: RoutingChanges) -> None:
        self._count += 1
        self.table = RouteTable(
            version=f"{self._epoch}.{self._count}",
            sites=dict(self._points),
            apps=dict(self._endpoints),
            latency_bounds=dict(self._bounds),
            residency=dict(self._residency),
            access=dict(self._access),
        )
        self._wire = None
        self.publications += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for event in self._events:
            event.set()
        for listener in self._listeners:
            try:
                listener(self.table, changes)
            except Exception:
                log.exception("a follower of the routing table failed")

    # -- readers ---------------------------------------------------------------------------------

    def wire(self) -> RoutingTable:
        """The whole table in its wire form (built on first ask after each change: O(fleet))."""
        if self._wire is None:
            self._wire = assemble(
                self._route_sites.values(),
                [r for r in (self.app_route(key) for key in self._eps) if r is not None],
                signing_keys=self.signing_keys,
                revoked_credentials=self.revoked,
            )
        return self._wire

    def route_site(self, name: str) -> RouteSite | None:
        """A site's record in the table."""
        return self._route_sites.get(name)

    def apps_at(self, site: str) -> set[AppId]:
        """Apps with an endpoint at ``site``."""
        return set(self._site_apps.get(site, ()))

    def app_route(self, key: AppId) -> AppRoutes | None:
        """An app's routes in the table (every endpoint; built when asked after a change)."""
        if key not in self._eps:
            return None
        routes = self._routes.get(key)
        if routes is None:
            routes = self.app_route_meta(key).model_copy(
                update={"endpoints": [e for _, e in sorted(self._eps[key].items())]}
            )
            self._routes[key] = routes
        return routes

    def app_meta(self, key: AppId) -> tuple[float | None, list[str] | None, list[RouteAccess]]:
        """An app's latency bound, regions and access rules (None, None, [] if unknown)."""
        meta = self._meta.get(key)
        if meta is None:
            return None, None, []
        return (
            meta.max_latency_ms,
            None if meta.regions is None else list(meta.regions),
            list(meta.access),
        )

    def subscribe(self, listener: RoutingListener) -> None:
        """Call ``listener`` with each new table and what it changed."""
        self._listeners.append(listener)

    def listen(self) -> asyncio.Event:
        """An event set on every table change (for in-process users such as the central DNS)."""
        event = asyncio.Event()
        self._events.append(event)
        return event

    async def run(self) -> None:
        """Bring the table up to date on every change (coalescing bursts)."""
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._settle)  # a burst of reports becomes one update
            self._dirty.clear()
            started = time.monotonic()
            try:
                await self.rebuild()
            except Exception:
                log.exception("routing table update failed")
                await asyncio.sleep(1.0)
                self._identity_dirty = True
                self._dirty.set()
            elapsed = time.monotonic() - started
            if elapsed > 0.5:
                log.info("routing table update took %.2fs", elapsed)

    async def wait(self, since: str, timeout: float) -> bool:
        """Wait until the table's version differs from ``since``; False on timeout."""
        if self.table.version != since:
            return True
        if self._closed:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        return self.table.version != since

    def close(self) -> None:
        """Answer every waiting agent now (the hub is stopping)."""
        self._closed = True
        self._changed.set()


class PeerVerdicts:
    """What agents' neighbour probes say of each site, freshest verdict per prober.

    A site is taken as down when most of the fresh verdicts about it say down: one agent with a
    broken link must not take a healthy site out of every client's answers. Only sites with a
    down verdict are ever looked at again ("suspects"), so a heartbeat's verdicts cost the hub
    their own number, not the fleet's.
    """

    def __init__(self, *, freshness: float = 5.0) -> None:
        self._freshness = freshness
        self._verdicts: dict[str, dict[str, tuple[bool, float]]] = {}
        self._by_prober: dict[str, dict[str, tuple[bool, float]]] = {}
        self._suspects: set[str] = set()
        self._down: frozenset[str] = frozenset()
        self.version = 0
        """Grows each time the set of down sites is seen to change."""

    def record(self, prober: str, probes: Mapping[str, bool], now: float | None = None) -> None:
        """Store ``prober``'s verdicts (site -> up)."""
        at = time.monotonic() if now is None else now
        mine = self._by_prober.setdefault(prober, {})
        for site, up in probes.items():
            self._verdicts.setdefault(site, {})[prober] = (up, at)
            mine[site] = (up, at)
            if not up:
                self._suspects.add(site)

    def forget(self, site: str) -> None:
        """Drop what is known of and by ``site`` (it was deleted)."""
        self._verdicts.pop(site, None)
        self._suspects.discard(site)
        for other in self._by_prober.pop(site, {}):
            self._verdicts.get(other, {}).pop(site, None)

    def by_prober(self, prober: str, now: float | None = None) -> dict[str, bool]:
        """``prober``'s fresh verdicts (site -> up)."""
        at = time.monotonic() if now is None else now
        return {
            site: up
            for site, (up, when) in self._by_prober.get(prober, {}).items()
            if at - when <= self._freshness
        }

    def down(self, now: float | None = None) -> frozenset[str]:
        """Sites a majority of fresh verdicts call down."""
        at = time.monotonic() if now is None else now
        out = set()
        for site in list(self._suspects):
            fresh = [
                up
                for up, when in self._verdicts.get(site, {}).values()
                if at - when <= self._freshness
            ]
            if not any(not up for up in fresh):
                self._suspects.discard(site)  # no fresh down verdict left: not a suspect
                continue
            if sum(not up for up in fresh) * 2 > len(fresh):
                out.add(site)
        down = frozenset(out)
        if down != self._down:
            self._down = down
            self.version += 1
        return down
