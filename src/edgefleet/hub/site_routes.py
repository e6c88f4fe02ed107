"""Each site's share of the routing table, sent to its agent whole once and then as deltas.

What a share holds is ``edgefleet.routing.share``'s to say. This is the shell: it follows every
publication of the hub's table (``RoutingState``), works out which sites a change can reach,
recomputes only their sections of the apps that changed, and answers the agents' long-polls
(``GET /api/v1/agent/sites/{site}/routing-table?since=VERSION``) with what changed since the
version each holds.

Which sites a change reaches: a change of an app's endpoint at site X reaches the sites whose
neighbourhood holds X, and the sites whose section of that app had to look beyond their
neighbourhood as far as X; a change of an app's rules, of the signing keys or of the revoked
credentials reaches every site; a change of a site's record reaches the sites whose share names
it. So an app at ten thousand sites that changes at one touches a few dozen shares, and a hub
with ten thousand agents sends a few dozen small answers, not ten thousand whole tables.

Every share also holds the client networks of each region an app's access rule names
(``edgefleet.routing.regions``): a change of those (a site of such a region came, went or
changed its networks; a rule named a region more or less) reaches every share.

The hub keeps a share for each site that asked for one (and forgets it after a few minutes of
silence). A version is ``<hub>.<n>``: an agent that comes with a version this hub did not send
last (it talked to another hub, or an answer was lost) gets its share whole again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass, field

from edgefleet.hub.routing import RoutingChanges, RoutingState
from edgefleet.hub.store import AppId
from edgefleet.hub.watch import Doorbells
from edgefleet.model import (
    AppRef,
    AppRoutes,
    RouteEndpoint,
    RouteRegion,
    RouteSite,
    RoutingDelta,
    RoutingTable,
    RoutingUpdate,
)
from edgefleet.routing.regions import RegionNetworks
from edgefleet.routing.share import (
    EndpointIndex,
    Neighbourhoods,
    Section,
    ShareParams,
    km,
    quantized,
    section,
    serving,
)
from edgefleet.routing.table import RouteTable

log = logging.getLogger(__name__)

FORGET_AFTER = 300.0
"""Seconds after its last poll when the hub forgets a site's share (it gets it whole again)."""


@dataclass
class _Share:
    """One site's share as last sent, and what changed since."""

    sections: dict[AppId, Section] = field(default_factory=dict)
    sites: set[str] = field(default_factory=set)
    """Site records in the share: the neighbourhood and every site a section names."""
    number: int = 0
    sent: str = ""
    """The version last sent ('' before the first answer)."""
    apps: set[AppId] = field(default_factory=set)
    """Apps whose section or rules changed since ``sent``."""
    records: set[str] = field(default_factory=set)
    """Site records that changed (or came, or went) since ``sent``."""
    identity: bool = False
    """The keys or revocations changed since ``sent``."""
    regions: set[str] = field(default_factory=set)
    """Regions whose networks changed, or that rules came to name or stopped naming, since
    ``sent``."""
    stale: set[AppId] = field(default_factory=set)
    """Apps whose section a change may have moved: computed again when the share is next sent."""
    polled: float = field(default_factory=time.monotonic)
    sent_at: float = 0.0
    """When the share was last sent (monotonic)."""
    ring_at: float | None = None
    """When a ring is scheduled for this share's agent, if one is."""

    @property
    def pending(self) -> bool:
        return bool(self.apps or self.records or self.identity or self.regions or self.stale)


class SiteShares:
    """The shares of the sites polling this hub (see the module)."""

    def __init__(
        self,
        routing: RoutingState,
        bells: Doorbells,
        params: ShareParams | None = None,
        *,
        every: float = 1.0,
        rate: float = 500.0,
    ) -> None:
        if every <= 0 or rate <= 0:
            raise ValueError(f"every ({every}) and rate ({rate}) must be > 0")
        self.params = params or ShareParams()
        self.least = every
        """Seconds between two deltas to one site at least: while an app rolls out at thousands
        of sites, each agent gets its share's news once a second, all of it, not once per
        report (DNS answers live five seconds anyway)."""
        self.rate = rate
        """Deltas a second the hub sends at most in a steady stream of changes: a larger fleet
        gets them less often (``every``), so a rollout at every site cannot flood the hub."""
        self._routing = routing
        self._bells = bells
        self._epoch = uuid.uuid4().hex[:6]
        self._table = RouteTable(version="")
        self._hoods = Neighbourhoods(self.params.neighbourhood)
        self._index: dict[AppId, EndpointIndex] = {}
        self._regions = RegionNetworks()
        self._named: frozenset[str] = frozenset()
        """Regions the apps' access rules name."""
        self._far: dict[AppId, dict[str, float]] = {}
        """Per app, the sites whose section looked beyond their neighbourhood, and how far."""
        self._shares: dict[str, _Share] = {}
        self._cited: dict[str, set[str]] = {}
        """Per site, the shares that hold its record."""
        self.sections = 0
        """Sections computed so far (a measure of the work changes cost)."""
        routing.subscribe(self._published)

    @property
    def every(self) -> float:
        """Seconds between two deltas to one site: ``least``, or longer when the shares are
        many (at 500 deltas a second: 1 s up to 500 sites, 20 s at 10,000)."""
        return max(self.least, len(self._shares) / self.rate)

    # -- following the table ---------------------------------------------------------------------

    def _published(self, table: RouteTable, changes: RoutingChanges) -> None:
        """Take a new table: bring the indexes and the affected shares up to date."""
        old = self._table
        self._table = table
        if changes.everything:
            self._hoods = Neighbourhoods(self.params.neighbourhood)
            self._hoods.update(table.sites, table.sites)
            self._index = {}
            for key in table.apps:
                self._reindex(key, None)
            self._far = {}
            self._regions = RegionNetworks()
            self._regions.update(table.sites, table.sites)
            was_named, self._named = self._named, _named(table)
            for name, share in self._shares.items():
                self._fill(name, share)
                share.regions |= was_named | self._named
            self._bells.ring(self._shares)
            return
        touched: dict[str, set[AppId]] = {}

        def touch(site: str, key: AppId) -> None:
            if site in self._shares:
                touched.setdefault(site, set()).add(key)

        # Sites that came, went or moved change neighbourhoods; reachability and region change
        # which endpoints serve, a place where they are.
        endpoint_sites: dict[AppId, set[str]] = {
            key: set(sites) for key, sites in changes.endpoints.items()
        }
        for name in changes.sites:
            before, after = old.sites.get(name), table.sites.get(name)
            if before is None or after is None or before != after:
                for key in self._routing.apps_at(name):
                    endpoint_sites.setdefault(key, set()).add(name)
            if after is None:
                # A site that went leaves every index that holds it.
                for key, index in self._index.items():
                    if name in index.endpoints:
                        endpoint_sites.setdefault(key, set()).add(name)
        # Apps that went: every share drops them.
        for key in changes.apps:
            if key not in table.apps:
                self._index.pop(key, None)
                self._far.pop(key, None)
                for name, share in self._shares.items():
                    if share.sections.pop(key, None) is not None:
                        share.apps.add(key)
                        self._name(name, share)
        # The indexes first: the shares computed again below search them.
        for key, sites in endpoint_sites.items():
            if key in table.apps:
                self._reindex(key, sites)
        # Sites that came, went or moved change neighbourhoods.
        moved = self._hoods.update(table.sites, changes.sites)
        for name in moved:
            refill = self._shares.get(name)
            if refill is not None:
                self._fill(name, refill)
        for key, sites in endpoint_sites.items():
            if key not in table.apps:
                continue
            reached: set[str] = set()
            for where in sites:
                reached |= self._hoods.around(where)
            far = self._far.get(key, {})
            if far:
                points = [table.sites[s] for s in sites if s in table.sites]
                for name, reach in far.items():
                    known = self._shares.get(name)
                    if known is None or key in known.stale:
                        # Computed again when next sent anyway: while an app rolls out at
                        # every site, most shares are, and need no measuring.
                        continue
                    origin = table.sites.get(name)
                    if origin is None:
                        continue
                    if math.isinf(reach) or any(km(origin, p) <= reach for p in points):
                        reached.add(name)
            for name in reached:
                touch(name, key)
        for key in changes.meta:
            if key in table.apps:
                if table.residency.get(key) != old.residency.get(key):
                    # Regions it may run in changed: which endpoints serve it did too.
                    self._reindex(key, None)
                # The app's rules (latency bound, regions, access) are resent whole, and its
                # section computed again (a new bound moves it).
                for name, share in self._shares.items():
                    share.apps.add(key)
                    touch(name, key)
        for name, keys in touched.items():
            # Computed when the share is next sent: a site touched by ten changes in a second
            # costs one section, not ten.
            self._shares[name].stale.update(keys)
        rung = set(touched) | moved
        # Records of sites a share names.
        for name in changes.sites:
            for holder in list(self._cited.get(name, ())):
                citing = self._shares.get(holder)
                if citing is None:
                    continue
                rung.add(holder)
                citing.records.add(name)
                if name not in table.sites:
                    citing.sites.discard(name)
                    self._cited[name].discard(holder)
        if changes.identity:
            for share in self._shares.values():
                share.identity = True
            rung = set(self._shares)
        regions = self._regions.update(table.sites, changes.sites) & self._named
        if changes.meta:
            was_named, self._named = self._named, _named(table)
            regions |= was_named ^ self._named
        if regions:
            for share in self._shares.values():
                share.regions |= regions
            rung = set(self._shares)
        # Only the shares this change gave news: a report costs its neighbourhood, not the
        # fleet.
        self._ring([name for name in rung if name in self._shares and self._shares[name].pending])

    def _ring(self, names: list[str]) -> None:
        """Wake the agents of ``names`` now, or once ``every`` passed since their last news."""
        now = time.monotonic()
        every = self.every
        at_once = []
        for name in names:
            share = self._shares.get(name)
            if share is None:
                continue
            due = share.sent_at + every
            if due <= now:
                at_once.append(name)
            elif share.ring_at is None:
                share.ring_at = due
                asyncio.get_running_loop().call_later(due - now, self._ring_later, name)
        self._bells.ring(at_once)

    def _ring_later(self, name: str) -> None:
        share = self._shares.get(name)
        if share is not None:
            share.ring_at = None
            self._bells.ring([name])

    def _reindex(self, key: AppId, sites: set[str] | None) -> None:
        """Bring an app's index of serving endpoints up to date (all sites when None)."""
        table = self._table
        index = self._index.setdefault(key, EndpointIndex())
        current = {e.site: e for e in table.apps.get(key, ())}
        residency = table.residency.get(key)
        names = set(current) | set(index.endpoints) if sites is None else sites
        for name in names:
            endpoint = current.get(name)
            point = table.sites.get(name)
            if endpoint is not None and serving(endpoint, point, residency):
                index.set(name, quantized(endpoint), point)
            else:
                index.set(name, None, None)

    def _section(self, site: str, key: AppId) -> Section:
        self.sections += 1
        part = section(
            site,
            self._index.get(key) or EndpointIndex(),
            self._table.sites,
            self._hoods.near(site),
            latency_bound=self._table.latency_bounds.get(key),
            nearest=self.params.nearest,
        )
        far = self._far.setdefault(key, {})
        if part.reach_km is None:
            far.pop(site, None)
        else:
            far[site] = part.reach_km
        return part

    def _resection(self, site: str, share: _Share, key: AppId) -> None:
        part = self._section(site, key)
        if share.sections.get(key) != part or key not in share.sections:
            share.sections[key] = part
            share.apps.add(key)
            self._name(site, share)

    def _fill(self, site: str, share: _Share) -> None:
        """Compute every section of a share (a new share, or its neighbourhood changed)."""
        sections = {key: self._section(site, key) for key in self._table.apps}
        share.apps |= {k for k in sections if share.sections.get(k) != sections[k]}
        share.apps |= set(share.sections) - set(sections)
        share.sections = sections
        self._name(site, share)

    def _name(self, site: str, share: _Share) -> None:
        """Bring the site records a share holds in line with its neighbourhood and sections."""
        named = set(self._hoods.near(site))
        for part in share.sections.values():
            named.update(e.site for e in part.endpoints)
        named &= self._table.sites.keys()
        share.records |= named ^ share.sites
        for gone in share.sites - named:
            self._cited.get(gone, set()).discard(site)
        for came in named - share.sites:
            self._cited.setdefault(came, set()).add(site)
        share.sites = named

    # -- the wire ------------------------------------------------------------------------------

    def _app(self, key: AppId, part: Section) -> AppRoutes:
        bound, regions, access = self._routing.app_meta(key)
        tenant, app = key
        return AppRoutes.model_construct(
            tenant=tenant,
            app=app,
            max_latency_ms=bound,
            endpoints=[
                RouteEndpoint.model_construct(
                    site=e.site, ready=e.ready, headroom=e.headroom, wakeable=e.wakeable
                )
                for e in part.endpoints
            ],
            regions=regions,
            access=access,
        )

    def _record(self, name: str) -> RouteSite | None:
        return self._routing.route_site(name)

    def _region(self, name: str) -> RouteRegion:
        return RouteRegion.model_construct(
            name=name, networks=[str(n) for n in self._regions.networks(name)]
        )

    def _whole(self, site: str, share: _Share) -> bytes:
        if share.stale:
            self._fill(site, share)
            share.stale.clear()
        share.sent_at = time.monotonic()
        share.number += 1
        share.sent = f"{self._epoch}.{share.number}"
        share.apps.clear()
        share.records.clear()
        share.identity = False
        share.regions.clear()
        records = [r for r in (self._record(n) for n in sorted(share.sites)) if r is not None]
        table = RoutingTable.model_construct(
            version=share.sent,
            zone="edge.internal.",
            sites=records,
            apps=[self._app(key, share.sections[key]) for key in sorted(share.sections)],
            signing_keys=list(self._routing.signing_keys),
            revoked_credentials=list(self._routing.revoked),
            regions=[self._region(name) for name in sorted(self._named)],
        )
        return (
            RoutingUpdate.model_construct(table=table, delta=None)
            .model_dump_json(by_alias=True)
            .encode()
        )

    def _delta(self, site: str, share: _Share) -> bytes:
        share.sent_at = time.monotonic()
        since = share.sent
        share.number += 1
        share.sent = f"{self._epoch}.{share.number}"
        records = [self._record(n) for n in sorted(share.records)]
        delta = RoutingDelta.model_construct(
            since=since,
            version=share.sent,
            sites=[
                r
                for n, r in zip(sorted(share.records), records, strict=True)
                if r is not None and n in share.sites
            ],
            removed_sites=[n for n in sorted(share.records) if n not in share.sites],
            apps=[
                self._app(key, share.sections[key])
                for key in sorted(share.apps)
                if key in share.sections
            ],
            removed_apps=[
                AppRef.model_construct(tenant=t, app=a)
                for t, a in sorted(share.apps)
                if (t, a) not in share.sections
            ],
            signing_keys=list(self._routing.signing_keys) if share.identity else None,
            revoked_credentials=list(self._routing.revoked) if share.identity else None,
            regions=[self._region(n) for n in sorted(share.regions) if n in self._named],
            removed_regions=[n for n in sorted(share.regions) if n not in self._named],
        )
        share.apps.clear()
        share.records.clear()
        share.identity = False
        share.regions.clear()
        return (
            RoutingUpdate.model_construct(table=None, delta=delta)
            .model_dump_json(by_alias=True)
            .encode()
        )

    # -- answers -------------------------------------------------------------------------------

    def answer(self, site: str, since: str) -> bytes | None:
        """What a site's long-poll gets of its share (``RoutingUpdate`` JSON): whole when
        ``since`` is not the version sent last, the delta when something changed since, else
        None (its doorbell rings when something does)."""
        share = self._shares.get(site)
        if share is None:
            share = _Share()
            self._shares[site] = share
            self._fill(site, share)
        now = time.monotonic()
        share.polled = now
        if since != share.sent or not share.sent:
            return self._whole(site, share)
        if not share.pending:
            return None
        if now < share.sent_at + self.every:
            # News, not due yet: the agent waits from now on, so its bell must ring when the
            # news is due (a ring scheduled earlier may have found nobody waiting).
            self._ring([site])
            return None
        for key in share.stale:
            if key in self._table.apps:
                self._resection(site, share, key)
        share.stale.clear()
        if not share.pending:
            return None
        return self._delta(site, share)

    def sent(self, site: str) -> str:
        """The version of ``site``'s share this hub sent last ('' if none)."""
        share = self._shares.get(site)
        return share.sent if share is not None else ""

    def forget(self, site: str) -> None:
        """Drop a site's share (the site was deleted, or went silent)."""
        share = self._shares.pop(site, None)
        if share is not None:
            for name in share.sites:
                self._cited.get(name, set()).discard(site)
        for far in self._far.values():
            far.pop(site, None)

    def sweep(self, busy: set[str]) -> int:
        """Forget the shares of sites silent for ``FORGET_AFTER`` (but those in ``busy``, whose
        agents wait right now); returns how many."""
        now = time.monotonic()
        stale = [
            name
            for name, share in self._shares.items()
            if name not in busy and now - share.polled > FORGET_AFTER
        ]
        for name in stale:
            self.forget(name)
        return len(stale)

    @property
    def held(self) -> int:
        """Shares kept now."""
        return len(self._shares)


def _named(table: RouteTable) -> frozenset[str]:
    """The regions the access rules of the table's apps name."""
    return frozenset(
        region
        for access in table.access.values()
        for rule in access.rules
        for region in rule.regions
    )
