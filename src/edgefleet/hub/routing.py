"""The hub's routing table: built from sites, placement and reported replicas; watched by agents.

``build_routing_table`` is pure. ``RoutingState`` rebuilds it when something that feeds it changes
(a status report, a phase change, a placement write) and wakes the agents long-polling for it.
``PeerVerdicts`` collects what agents' probes say of their neighbours, for the central DNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence

from edgefleet.hub.store import Store
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
    Tenant,
)
from edgefleet.placement.policy import access_rules, effective_regions

log = logging.getLogger(__name__)


def build_routing_table(
    sites: Sequence[Site],
    apps: Sequence[App],
    *,
    signing_keys: Sequence[PublicKey] = (),
    revoked_credentials: Sequence[str] = (),
    tenants: Sequence[Tenant] = (),
) -> RoutingTable:
    """The routing table for these sites and apps; its version is a hash of its content.

    An endpoint is a site where the app has desired or ready replicas, or is placed at zero
    (wakeable). Headroom is the share of the site's replica slots still free, the same for every
    app there. Each app carries its effective residency and access rules (its tenant's policy,
    from ``tenants``, and its own; ``edgefleet.placement.policy``), which every DNS and ingress
    of the fleet enforces.
    """
    policies = {t.metadata.name: t.spec for t in tenants}
    route_sites = [
        RouteSite(
            name=s.metadata.name,
            region=s.spec.region,
            zone=s.spec.zone,
            lat=s.spec.location.lat,
            lon=s.spec.location.lon,
            ip=s.spec.addresses.ip,
            ipv6=s.spec.addresses.ipv6,
            ingress_port=s.spec.addresses.ingress_port,
            dns_port=s.spec.addresses.dns_port,
            networks=list(s.spec.networks),
            reachable=s.status.phase != SitePhase.UNREACHABLE,
        )
        for s in sorted(sites, key=lambda s: s.metadata.name)
    ]
    headroom = {
        s.metadata.name: (
            max(0.0, 1.0 - s.status.replicas / s.spec.capacity.max_replicas)
            if s.spec.capacity.max_replicas
            else 0.0
        )
        for s in sites
    }
    routes = []
    for app in sorted(apps, key=lambda a: (a.metadata.tenant or "", a.metadata.name)):
        tenant = app.metadata.tenant or ""
        regions = effective_regions(policies.get(tenant), app.spec)
        rules = access_rules(
            tenant=tenant, tenant_spec=policies.get(tenant), app=app.metadata.name, spec=app.spec
        )
        endpoints = [
            RouteEndpoint(
                site=p.site,
                ready=p.ready,
                headroom=round(headroom.get(p.site, 0.0), 3),
                wakeable=p.wakeable,
            )
            for p in app.status.sites
            if p.desired or p.ready or p.wakeable
        ]
        routes.append(
            AppRoutes(
                tenant=app.metadata.tenant or "",
                app=app.metadata.name,
                max_latency_ms=app.spec.placement.max_latency_ms,
                endpoints=endpoints,
                regions=None if regions is None else sorted(regions),
                access=[
                    RouteAccess(who=who, networks=list(rule.networks), regions=list(rule.regions))
                    for who, rule in rules
                ],
            )
        )
    content = RoutingTable(
        version="",
        sites=route_sites,
        apps=routes,
        signing_keys=list(signing_keys),
        revoked_credentials=list(revoked_credentials),
    )
    digest = hashlib.sha256(
        json.dumps(content.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()[:16]
    return content.model_copy(update={"version": digest})


class RoutingState:
    """The current routing table of this hub, and the agents waiting for a new one."""

    def __init__(
        self,
        store: Store,
        *,
        refresh: float = 1.0,
        identity: Callable[[], tuple[list[PublicKey], list[str]]] | None = None,
    ) -> None:
        self._store = store
        self.identity = identity
        """The hub's public keys and the revoked site credentials, which sites check peers
        with (``Hub.routing_identity``)."""
        self._refresh = refresh
        self.table = RoutingTable(version="")
        self._dirty = asyncio.Event()
        self._changed = asyncio.Event()
        self._listeners: list[asyncio.Event] = []
        self._closed = False

    def trigger(self) -> None:
        """Something feeding the table changed: rebuild soon."""
        self._dirty.set()

    async def rebuild(self) -> bool:
        """Rebuild now; True if the table changed."""
        sites, apps, tenants = await asyncio.to_thread(
            lambda: (
                self._store.objects.list_sites(),
                self._store.objects.list_apps(),
                self._store.objects.list_tenants(),
            )
        )
        keys, revoked = (
            await asyncio.to_thread(self.identity) if self.identity is not None else ([], [])
        )
        table = build_routing_table(
            sites, apps, signing_keys=keys, revoked_credentials=revoked, tenants=tenants
        )
        if table.version == self.table.version:
            return False
        self.table = table
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for listener in self._listeners:
            listener.set()
        return True

    def listen(self) -> asyncio.Event:
        """An event set on every table change (for in-process users such as the central DNS)."""
        event = asyncio.Event()
        self._listeners.append(event)
        return event

    async def run(self) -> None:
        """Rebuild on triggers (coalescing bursts) and every ``refresh`` seconds."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self._refresh)
            await asyncio.sleep(0.02)  # a burst of reports becomes one rebuild
            self._dirty.clear()
            try:
                await self.rebuild()
            except Exception:
                log.exception("routing table rebuild failed")

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
    broken link must not take a healthy site out of every client's answers.
    """

    def __init__(self, *, freshness: float = 5.0) -> None:
        self._freshness = freshness
        self._verdicts: dict[str, dict[str, tuple[bool, float]]] = {}
        self.version = 0

    def record(self, prober: str, probes: dict[str, bool], now: float | None = None) -> None:
        """Store ``prober``'s verdicts (site -> up)."""
        at = time.monotonic() if now is None else now
        before = self.down(at)
        for site, up in probes.items():
            self._verdicts.setdefault(site, {})[prober] = (up, at)
        if self.down(at) != before:
            self.version += 1

    def by_prober(self, prober: str, now: float | None = None) -> dict[str, bool]:
        """``prober``'s fresh verdicts (site -> up)."""
        at = time.monotonic() if now is None else now
        return {
            site: up
            for site, verdicts in self._verdicts.items()
            if (verdict := verdicts.get(prober)) is not None
            for up, when in (verdict,)
            if at - when <= self._freshness
        }

    def down(self, now: float | None = None) -> frozenset[str]:
        """Sites a majority of fresh verdicts call down."""
        at = time.monotonic() if now is None else now
        out = set()
        for site, by_prober in self._verdicts.items():
            fresh = [up for up, when in by_prober.values() if at - when <= self._freshness]
            if fresh and sum(not up for up in fresh) * 2 > len(fresh):
                out.add(site)
        return frozenset(out)
