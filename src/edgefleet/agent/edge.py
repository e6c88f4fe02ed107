"""The site's edge DNS and its neighbour probes.

The edge DNS answers from the routing table the agent keeps on disk, overlaid with what the
agent knows better than the hub: its own replicas, and what its probes see of its neighbours. So
it answers right with the hub away, and stops answering a dead neighbour within a probe or two.
It enforces the apps' access rules too (REFUSED), taking every client that asks it for one of
this site's region; ``EdgeZone.admit`` gives the site's ingress the same decision.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, replace

from edgefleet.agent.upstream import Upstream, UpstreamError, UpstreamPool
from edgefleet.dns.routed import RoutedZone
from edgefleet.dns.zone import Client, Lookup
from edgefleet.geo import estimated_rtt_ms, great_circle_km, nearest
from edgefleet.routing.access import allows, client_region
from edgefleet.routing.answer import ClientAddress, choose, locate
from edgefleet.routing.table import AppId, Endpoint, Origin, RouteTable, SitePoint

log = logging.getLogger(__name__)

HEALTH_PATH = b"/_edgefleet/healthz"
"""What a probe asks of a neighbour's agent: its health and ready counts."""

_UNSET = "\0unset"


def app_id(key: str) -> AppId:
    """``tenant/app`` -> (tenant, app)."""
    tenant, _, app = key.partition("/")
    return tenant, app


# -- probe verdicts (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeState:
    """What the probes say of one neighbour."""

    up: bool | None = None
    """None until the first verdict: until then the hub's view stands."""
    failures: int = 0
    """Failed probes in a row."""
    successes: int = 0
    """Successful probes in a row."""
    samples: tuple[float, ...] = ()
    """Round trips of the latest successful probes, newest last."""

    @property
    def rtt_ms(self) -> float | None:
        """The smallest recent round trip: the path's delay without queueing and processing.

        A probe is a whole HTTP exchange; on a busy host one can take a hundred milliseconds
        more than the path does. The minimum of a window is what TCP and BBR use for the same
        reason.
        """
        return min(self.samples) if self.samples else None


def next_probe_state(
    state: ProbeState,
    *,
    ok: bool,
    rtt_ms: float | None,
    fail_after: int = 2,
    recover_after: int = 2,
    window: int = 10,
) -> ProbeState:
    """The state after one probe.

    Down after ``fail_after`` failures in a row, up again after ``recover_after`` successes: one
    lost packet does not move clients, and a flapping site does not pull them back at once. The
    very first success is believed at once, so a fresh agent starts with a full view.
    """
    if ok:
        samples = state.samples if rtt_ms is None else (*state.samples, rtt_ms)[-window:]
        successes = state.successes + 1
        up = state.up
        if up is None or (not up and successes >= recover_after):
            up = True
        return ProbeState(up=up, failures=0, successes=successes, samples=samples)
    failures = state.failures + 1
    up = state.up
    if failures >= fail_after:
        up = False
    return ProbeState(up=up, failures=failures, successes=0, samples=state.samples)


def nearest_neighbours(table: RouteTable, site: str, count: int) -> list[str]:
    """The ``count`` sites nearest to ``site`` by great-circle distance (names break ties)."""
    me = table.sites.get(site)
    others = [s for name, s in table.sites.items() if name != site]
    if me is None:
        return sorted(s.name for s in others)[:count]
    return [
        name for name, _ in nearest(me.lat, me.lon, ((s.name, s.lat, s.lon) for s in others), count)
    ]


PROBE_RTTS = 4
"""A probe may take this many expected round trips (a new connection, the request, slack)."""


def probe_timeout(table: RouteTable, site: str, neighbour: str, floor: float) -> float:
    """Seconds a probe of ``neighbour`` may take: ``floor``, or more for a distant neighbour.

    Each phase of a probe (connecting, then waiting for the answer) takes at least one round
    trip; where the round trip nears a fixed timeout (intercontinental paths are 200-300 ms),
    any queueing on the way fails the probe and the neighbour looks dead. The bound follows the
    round trip that the distance implies.
    """
    me, other = table.sites.get(site), table.sites.get(neighbour)
    if me is None or other is None:
        return floor
    rtt_ms = estimated_rtt_ms(great_circle_km(me.lat, me.lon, other.lat, other.lon))
    return max(floor, PROBE_RTTS * rtt_ms / 1000)


def overlay(table: RouteTable, ready: Mapping[str, Mapping[AppId, int]]) -> RouteTable:
    """``table`` with the ready counts of some sites replaced by fresher knowledge.

    ``ready`` maps a site to its ready replicas per app, as the site itself last told us (our own
    driver, or a neighbour's health answer); an app missing there has none ready at that site.
    A site with ready replicas of an app the table lists without it (the hub has not heard its
    report yet, or cannot be reached) becomes one of the app's endpoints, where the app may run
    (its residency): a site that starts an app answers with itself at once, hub or no hub.
    """
    if not ready:
        return table
    apps = {}
    for key, endpoints in table.apps.items():
        listed = {e.site for e in endpoints}
        regions = table.residency.get(key)
        apps[key] = tuple(
            replace(e, ready=ready[e.site].get(key, 0)) if e.site in ready else e for e in endpoints
        ) + tuple(
            Endpoint(site=site, ready=counts[key])
            for site, counts in sorted(ready.items())
            if counts.get(key, 0) > 0
            and site not in listed
            and site in table.sites
            and (regions is None or table.sites[site].region in regions)
        )
    return replace(table, apps=apps)


def floor_by_distance(
    table: RouteTable, site: str, rtt_ms: Mapping[str, float]
) -> dict[str, float]:
    """Measured round trips, but never below what the distance to each site implies.

    A probe times a whole HTTP exchange with the neighbour's agent, so it can make a neighbour
    look farther than geography says (a slow or congested link), never nearer: on loopback or a
    LAN every neighbour would otherwise measure the same millisecond and the order would be noise.
    """
    me = table.sites.get(site)
    out = {}
    for name, measured in rtt_ms.items():
        other = table.sites.get(name)
        if me is None or other is None:
            out[name] = measured
            continue
        km = great_circle_km(me.lat, me.lon, other.lat, other.lon)
        out[name] = max(measured, estimated_rtt_ms(km))
    return out


# -- the zone ------------------------------------------------------------------------------------


class EdgeZone(RoutedZone):
    """The fleet zone as one site answers it: from here, nearest healthy first."""

    client_independent = True
    """Answers do not depend on who asks: the DNS server may answer repeats from a flat table.
    False while some app's access rules name networks (then the client's address matters)."""

    def __init__(self, site: str, *, address: str, max_answers: int = 2) -> None:
        super().__init__(name=site, address=address, max_answers=max_answers)
        self.site = site
        self.hub_table = self.table
        self._health: dict[str, bool] = {}
        self._rtt: dict[str, float] = {}
        self._version = ""
        self._generation = 0
        self._peers: dict[tuple[str, str, int, bool], list[SitePoint]] = {}
        self._located: dict[str, str | None] = {}

    def update(
        self,
        *,
        hub_table: RouteTable | None = None,
        ready: Mapping[str, Mapping[AppId, int]] | None = None,
        health: Mapping[str, bool] | None = None,
        rtt_ms: Mapping[str, float] | None = None,
    ) -> None:
        """Take new knowledge; every call makes cached answers stale."""
        if hub_table is not None:
            self.hub_table = hub_table
        self._take(overlay(self.hub_table, ready or {}))
        self.client_independent = not self._access_networks
        if health is not None:
            self._health = dict(health)
        if rtt_ms is not None:
            self._rtt = floor_by_distance(self.table, self.site, rtt_ms)
        self._generation += 1
        self._version = f"{self.hub_table.version}/{self._generation}"
        self._peers = {}
        if hub_table is not None:
            self._located = {}

    def version(self) -> str:
        """Changes with every update."""
        return self._version

    def client_key(self, client: Client) -> Hashable:
        """Every client of an edge DNS is near this site: answers depend on who asks only
        through the networks of the apps' access rules that hold its address."""
        return self.access_key(client)

    def region(self, site: str | None = None) -> str | None:
        """The region of ``site`` (default: this one), None while the table does not know it."""
        point = self.table.sites.get(site or self.site)
        return point.region if point is not None else None

    def admit(self, key: str, client: ClientAddress | None, origin: str | None) -> str | None:
        """Why the ingress refuses a client the app ``key`` (``tenant/app``), or None to let it
        in: by the client's address and its region, that of ``origin`` (the site it is nearest
        to, None when no site of this share holds it), else of the region whose networks hold it
        (``edgefleet.routing.access``)."""
        access = self.table.access.get(app_id(key))
        if access is None:
            return None
        return allows(access, client, client_region(self.table, origin, client))

    def peers(
        self, tenant: str, app: str, *, limit: int = 2, wakeable: bool = False
    ) -> list[SitePoint]:
        """Neighbours with ready replicas of the app, best first: where to spill requests.

        The DNS order (within the latency bound first, then headroom, then distance), without
        this site, and without sites that would only wake unless ``wakeable``. Cached until the
        next ``update``.
        """
        key = (tenant, app, limit, wakeable)
        cached = self._peers.get(key)
        if cached is not None:
            return cached
        endpoints = self.table.apps.get((tenant, app), ())
        answer = choose(
            self.table,
            tenant,
            app,
            Origin(site=self.site),
            health=self._health,
            rtt_ms=self._rtt,
            limit=max(1, len(endpoints)),
        )
        found: list[SitePoint] = []
        if answer is not None:
            for candidate in answer.considered:
                if len(found) >= limit:
                    break
                point = self.table.sites.get(candidate.site)
                if (
                    candidate.chosen
                    and (candidate.ready > 0 or wakeable)
                    and candidate.site != self.site
                    and point is not None
                ):
                    found.append(point)
        if len(self._peers) > 10_000:
            self._peers.clear()
        self._peers[key] = found
        return found

    def locate(self, address: str) -> str | None:
        """The site whose client networks hold ``address``, or None."""
        cached = self._located.get(address, _UNSET)
        if cached is not _UNSET:
            return cached
        try:
            origin, _ = locate(self.table, address)
        except ValueError:
            origin = Origin()
        if len(self._located) > 10_000:
            self._located.clear()
        self._located[address] = origin.site
        return origin.site

    def lookup(self, tenant: str, app: str, client: Client) -> Lookup | None:
        """This site if it serves the app, else its nearest healthy neighbours that do;
        ``Refused`` when the app's access rules do not let the client (of this site's region)
        in."""
        self.check_access(tenant, app, client, self.region())
        return self._lookup(
            tenant,
            app,
            Origin(site=self.site),
            scope_prefix=self.access_scope(tenant, app, client, 0),
            health=self._health,
            rtt_ms=self._rtt,
        )


# -- the probes ----------------------------------------------------------------------------------


class NeighbourProber:
    """Probes the nearest sites' agents and keeps a verdict, a round trip and ready counts each."""

    def __init__(
        self,
        site: str,
        *,
        interval: float = 0.5,
        timeout: float = 0.5,
        neighbours: int = 8,
    ) -> None:
        self.site = site
        self.interval = interval
        self.timeout = timeout
        self.count = neighbours
        self.targets: dict[str, tuple[str, int]] = {}
        """Per neighbour, the address and port of its agent's API."""
        self.timeouts: dict[str, float] = {}
        """Per neighbour, seconds its probe may take (longer for distant ones)."""
        self.states: dict[str, ProbeState] = {}
        self.ready: dict[str, dict[AppId, int]] = {}
        # Kept-alive connections to each neighbour: a probe measures the path, not a handshake.
        self.client = UpstreamPool(max_per_host=2, connect_timeout=timeout, read_timeout=timeout)
        """The probes' connections (made on first use)."""

    def set_table(self, table: RouteTable) -> None:
        """Probe the nearest sites of this table from now on."""
        names = nearest_neighbours(table, self.site, self.count)
        self.targets = {n: (table.sites[n].ip, table.sites[n].ingress_port) for n in names}
        self.timeouts = {n: probe_timeout(table, self.site, n, self.timeout) for n in names}
        # Opening a connection, then each read of the answer, may take as long as the probe of
        # the farthest neighbour (the answer itself waits only its own neighbour's timeout).
        longest = max(self.timeouts.values(), default=self.timeout)
        self.client.connect_timeout = self.client.read_timeout = longest
        for gone in set(self.states) - set(names):
            del self.states[gone]
            self.ready.pop(gone, None)

    def health(self) -> dict[str, bool]:
        """Neighbours with a verdict: True up, False down."""
        return {site: s.up for site, s in self.states.items() if s.up is not None}

    def rtt_ms(self) -> dict[str, float]:
        """Smoothed round trips to neighbours that answered."""
        return {site: s.rtt_ms for site, s in self.states.items() if s.rtt_ms is not None}

    def ready_counts(self) -> dict[str, dict[AppId, int]]:
        """Ready replicas per app at neighbours that are up, as they said."""
        return {site: r for site, r in self.ready.items() if self.states.get(site, ProbeState()).up}

    async def probe_once(self, client: Upstream) -> bool:
        """Probe every neighbour once; True if any verdict or ready count changed."""
        targets = dict(self.targets)
        results = await asyncio.gather(
            *(
                self._probe(client, target, self.timeouts.get(site, self.timeout))
                for site, target in targets.items()
            )
        )
        changed = False
        for (site, _), (ok, rtt, ready) in zip(targets.items(), results, strict=True):
            before = self.states.get(site, ProbeState())
            after = next_probe_state(before, ok=ok and ready is not None, rtt_ms=rtt)
            self.states[site] = after
            if after.up != before.up:
                changed = True
                log.log(
                    logging.WARNING if after.up is False else logging.INFO,
                    "neighbour %s is %s",
                    site,
                    "up" if after.up else "down",
                )
            if ok and ready is not None and self.ready.get(site) != ready:
                self.ready[site] = ready
                changed = True
        return changed

    async def _probe(
        self, client: Upstream, target: tuple[str, int], timeout: float
    ) -> tuple[bool, float | None, dict[AppId, int] | None]:
        started = time.perf_counter()
        try:
            reply = await client.request(
                "GET", host=target[0], port=target[1], target=HEALTH_PATH, head_timeout=timeout
            )
            async with reply:
                data = await reply.read()
            rtt = (time.perf_counter() - started) * 1000
            if reply.status != 200:
                return False, None, None
            body = json.loads(data)
            ready = {app_id(key): int(n) for key, n in body.get("ready", {}).items()}
            return True, rtt, ready
        except (UpstreamError, OSError, ValueError, AttributeError):
            return False, None, None

    async def run(self, on_change: Callable[[], None]) -> None:
        """Probe every ``interval`` seconds; call ``on_change`` when a verdict moves."""
        try:
            while True:
                started = time.monotonic()
                if await self.probe_once(self.client):
                    on_change()
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            await self.client.aclose()
