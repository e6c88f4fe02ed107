"""The hub's running parts, built once per process and shared by the routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request

from edgefleet import pauses
from edgefleet.hub.accounts import Accounts, TokenCache
from edgefleet.hub.admission import Admission
from edgefleet.hub.auth import FailureLimiter
from edgefleet.hub.changes import Changes
from edgefleet.hub.demand import DEFAULT_TAU, DemandBuffer
from edgefleet.hub.desired import DesiredStates
from edgefleet.hub.failures import SharedFailures
from edgefleet.hub.fleet import FeedFollower, FleetChanges, FleetState
from edgefleet.hub.health import heartbeat_grace, heartbeat_interval
from edgefleet.hub.health_monitor import HealthMonitor
from edgefleet.hub.heartbeats import HeartbeatBuffer
from edgefleet.hub.placement_controller import PlacementController
from edgefleet.hub.reports import ReportBuffer
from edgefleet.hub.routing import PeerVerdicts, RoutingState
from edgefleet.hub.site_routes import SiteShares
from edgefleet.hub.store import Leadership, Store
from edgefleet.hub.watch import Doorbells, SiteWatch
from edgefleet.identity.credentials import CredentialClaims, Keyring, SigningKey
from edgefleet.identity.failures import FailureBudget
from edgefleet.model import PublicKey
from edgefleet.routing.origins import NetworkIndex
from edgefleet.routing.share import ShareParams

log = logging.getLogger(__name__)

KEYRING_SIZE = 100_000
"""Site credentials whose signature the hub remembers: more than the sites of a big fleet, so
that heartbeats never pay for a signature check twice."""


@dataclass(frozen=True)
class HubConfig:
    """How a hub runs. Every field has the documented default."""

    db: str = "sqlite:///edgefleet-hub.db"
    """SQLAlchemy URL: ``sqlite:///PATH`` (embedded) or ``postgresql://USER@HOST/DB``."""
    host: str = "127.0.0.1"
    """Address the API binds."""
    port: int = 7700
    """Port the API binds."""
    heartbeat_grace: float = 6.0
    """Seconds without a heartbeat before a site is Unreachable."""
    placement_resync: float = 10.0
    """Seconds between placement passes when nothing triggers one."""
    watch_refresh: float = 0.5
    """Seconds between reads of site revisions written by other hub replicas."""
    feed_poll: float = 0.25
    """Seconds between reads of the change feed (what other hub replicas wrote; this hub's own
    writes are read at once). Bounds how stale a revocation made at another hub can be."""
    route_neighbourhood: int = 16
    """Sites nearest to each site whose endpoints its share of the routing table always holds
    (``edgefleet.routing.share``)."""
    route_nearest: int = 4
    """Endpoints of each kind a site's share holds of each app, however far."""
    route_rate: float = 500.0
    """Routing-table deltas a second the hub sends its agents at most: a fleet of more than
    ``route_rate`` sites gets its news less often than once a second (``SiteShares.every``)."""
    heartbeat_rate: float = 1000.0
    """Heartbeats a second the hub asks of its agents at most: a fleet of more than
    ``heartbeat_rate * 2`` sites beats more slowly (``edgefleet.hub.health``)."""
    join_concurrency: int = 4
    """Joins the hub works on at once (each a signature and a transaction)."""
    join_queue: int = 256
    """Joins waiting for one of those at most; more are answered 503 at once, and their agents
    come back after a backoff (``edgefleet.hub.admission``)."""
    max_watch_timeout: float = 60.0
    """Longest long-poll an agent may ask for."""
    max_stream: float = 300.0
    """Longest watch stream an agent may ask for; it is authenticated again when it opens the
    next (and a stream ends at once when the site's credential is revoked)."""
    dns_host: str = "127.0.0.1"
    """Address of the central DNS."""
    dns_port: int = 5353
    """Port of the central DNS (UDP and TCP); 0 picks a free one, -1 turns it off."""
    dns_ttl: int = 5
    """TTL of DNS answers, seconds."""
    dns_answers: int = 2
    """Most addresses in one answer, nearest first."""
    controllers: bool = True
    """Run placement and health loops in this process (while it leads)."""
    leader_check: float = 2.0
    """Seconds between checks of the controller lead (PostgreSQL advisory lock)."""
    demand_tau: float = DEFAULT_TAU
    """Time constant of the decayed demand rates, seconds (a rate halves in tau * ln 2)."""
    tls_cert: str | None = None
    """PEM server certificate (chain) of the API; None: plain HTTP (loopback only)."""
    tls_key: str | None = None
    """PEM private key of ``tls_cert``."""
    oidc: Any = None
    """``edgefleet.hub.oidc.OidcConfig``: accept the operator's OIDC provider's JWTs; None: off."""
    auth_failure_burst: float = 10.0
    """Failed authentications a source address may make at once before it is answered 429."""
    auth_failure_rate: float = 1 / 6
    """Failed authentications per second a source regains after its burst."""
    auth_failure_sync: float = 0.4
    """Seconds between a hub's exchanges of failed authentications with the other hub replicas,
    through the store: a source over its limit at one hub is refused at every hub within two
    of them (``edgefleet.hub.failures``)."""


@dataclass
class Hub:
    """Store, picture of the fleet, watches and control loops of one hub process."""

    config: HubConfig
    store: Store
    fleet: FleetState
    """The fleet as this hub knows it, kept up to date from the change feed."""
    follower: FeedFollower
    """Reads the change feed into ``fleet`` and tells the loops below."""
    watch: SiteWatch
    heartbeats: HeartbeatBuffer
    placement: PlacementController
    health: HealthMonitor
    routing: RoutingState
    """The routing table the central DNS answers from."""
    shares: SiteShares
    """Each site's share of the routing table, sent to its agent."""
    bells: Doorbells
    """The agents watching this hub (a stream or a long-poll), one per site."""
    desired: DesiredStates
    """Each site's desired state, as its agent gets it."""
    demand: DemandBuffer
    """Demand reports received, written to the store once a second."""
    reports: ReportBuffer = field(init=False)
    """Status reports received, written in batches."""
    peers: PeerVerdicts = field(default_factory=PeerVerdicts)
    """What agents' probes say of their neighbours."""
    changes: Changes = field(default_factory=Changes)
    """What changed, for the dashboards watching ``/api/v1/stream``."""
    dns: Any = None
    """The central DNS server, once started."""
    leadership: Leadership | None = None
    leader: bool = False
    """True while this process runs the controllers."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    accounts: Accounts = field(init=False)
    """Tokens, site credentials, signing keys and the audit log."""
    tokens: TokenCache = field(default_factory=TokenCache)
    networks: NetworkIndex = field(default_factory=NetworkIndex)
    """Every site's client networks (``edgefleet.routing.origins``), kept from the feed."""
    """User tokens this hub checked already (dropped when the feed says they changed)."""
    limiter: FailureLimiter = field(init=False)
    """Failed authentications per source address."""
    failures: SharedFailures = field(init=False)
    """Failed authentications of every hub replica, as the limiter shares them."""
    oidc: Any = None
    """The OIDC verifier, when the hub accepts the operator's provider's tokens."""
    _keys: list[SigningKey] = field(default_factory=list)
    _own: tuple[str, datetime] | None = None
    _keyring: Keyring | None = None
    _keyring_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.accounts = Accounts(self.store.engine)
        self.reports = ReportBuffer(self.store.observed)
        self.joins = Admission(
            concurrent=self.config.join_concurrency, waiting=self.config.join_queue
        )
        self.failures = SharedFailures(
            self.store.auth_failures,
            FailureBudget(burst=self.config.auth_failure_burst, rate=self.config.auth_failure_rate),
            interval=self.config.auth_failure_sync,
        )
        self.limiter = FailureLimiter(
            burst=self.config.auth_failure_burst,
            rate=self.config.auth_failure_rate,
            shared=self.failures,
        )
        if self.config.oidc is not None:
            from edgefleet.hub.oidc import OidcVerifier

            self.oidc = OidcVerifier(self.config.oidc)

    # -- the fleet's size sets the pace ------------------------------------------------------------

    def heartbeat_interval(self) -> float:
        """Seconds between an agent's heartbeats, as this hub asks them (``heartbeat_interval``
        of the fleet's size)."""
        return heartbeat_interval(len(self.fleet.sites), rate=self.config.heartbeat_rate)

    def grace(self) -> float:
        """Seconds without a heartbeat before a site is Unreachable (``heartbeat_grace``)."""
        return heartbeat_grace(self.heartbeat_interval(), self.config.heartbeat_grace)

    def wrote(self) -> None:
        """This hub just wrote to the store: take it in from the feed now, not at the next
        poll (placement, routing and watches follow from there)."""
        self.follower.poke()

    # -- identity --------------------------------------------------------------------------------

    def own_credential(self) -> str:
        """A short-lived credential the hub signs for itself, for calls to agents (logs)."""
        from datetime import timedelta

        from edgefleet.hub.accounts import new_jti
        from edgefleet.hub.store import utcnow
        from edgefleet.identity.credentials import issue

        now = utcnow()
        if self._own is None or (self._own[1] - now).total_seconds() < 60:
            ttl = timedelta(minutes=5)
            token = issue(
                self.signing_keys()[0], subject="hub", site=None, ttl=ttl, now=now, jti=new_jti()
            )
            self._own = (token, now + ttl)
        return self._own[0]

    def check_credential(self, token: str, *, now: datetime) -> CredentialClaims:
        """The claims of a credential the hub signed, not revoked (its signature checked once,
        then remembered; revocations held in memory, from the change feed: see
        ``routing_identity``); CredentialError if it does not hold. No I/O once the keys are
        read."""
        with self._keyring_lock:
            return self._held_keyring().verify(token, now=now)

    def _held_keyring(self) -> Keyring:
        """The keyring, made on first need (under ``_keyring_lock``)."""
        if self._keyring is None:
            self._keyring = Keyring(
                [k.public() for k in self.signing_keys()],
                self.routing.revoked,
                remember=KEYRING_SIZE,
            )
        return self._keyring

    def revoked_now(self, ids: Iterable[str]) -> None:
        """This hub refuses these site credentials from now on (a revocation it just wrote;
        the change feed brings it to the routing table and the other hubs), whether or not it
        checked a site credential before."""
        ids = list(ids)
        if not ids:
            return
        with self._keyring_lock:
            self._held_keyring().revoke(ids)

    def key_ids(self) -> frozenset[str]:
        """The ids of the hub's signing keys."""
        return frozenset(k.kid for k in self.signing_keys())

    def routing_identity(self) -> tuple[list[PublicKey], list[str]]:
        """What the routing table tells sites to check each other with: the hub's public keys
        and the revoked site credentials (blocking: read when the feed says tokens or keys
        changed). The hub's own checks of site credentials take the same revocations."""
        self._keys = self.accounts.signing_keys()
        keys = [k.public() for k in self._keys]
        revoked = self.accounts.revoked_site_credentials()
        with self._keyring_lock:
            if self._keyring is not None:
                self._keyring.update(keys, revoked)
        return keys, revoked

    def signing_keys(self) -> list[SigningKey]:
        """The hub's keys for site credentials, newest first (read once, made on first use)."""
        if not self._keys:
            self._keys = self.accounts.signing_keys()
        return self._keys

    @classmethod
    def build(cls, config: HubConfig) -> Hub:
        """Open the store (migrating it) and wire the loops together."""
        store = Store(config.db)
        store.migrate()
        fleet = FleetState()
        follower = FeedFollower(store, fleet, interval=config.feed_poll)
        bells = Doorbells()
        watch = SiteWatch(store, bells)
        heartbeats = HeartbeatBuffer(store)
        routing = RoutingState(fleet)
        shares = SiteShares(
            routing,
            bells,
            ShareParams(neighbourhood=config.route_neighbourhood, nearest=config.route_nearest),
            rate=config.route_rate,
        )

        async def placed() -> None:
            # New assignments: wake the sites' watches now, and take the writes into the
            # picture the next pass reads.
            await watch.refresh()
            await follower.poll()

        placement = PlacementController(
            store,
            fleet,
            on_written=placed,
            resync=config.placement_resync,
            demand_tau=config.demand_tau,
        )
        demand = DemandBuffer(store.demand, tau=config.demand_tau)
        hub: Hub

        def grace() -> float:
            return hub.grace()

        health = HealthMonitor(store, fleet, heartbeats, grace=grace)
        hub = cls(
            config,
            store,
            fleet,
            follower,
            watch,
            heartbeats,
            placement,
            health,
            routing,
            shares,
            bells,
            DesiredStates(fleet),
            demand,
        )
        routing.identity = hub.routing_identity
        hub.leadership = Leadership(store.engine)
        placement.is_leader = health.is_leader = lambda: hub.leader
        follower.listen(routing.follow)
        follower.listen(placement.follow)
        follower.listen(health.follow)
        follower.listen(hub.changes.follow)
        follower.listen(hub._desired_states_changed)
        follower.listen(hub._tokens_changed)
        follower.listen(hub._networks_changed)
        return hub

    def _networks_changed(self, changes: FleetChanges) -> None:
        names = set(self.fleet.sites) if changes.reloaded else changes.sites
        for name in names:
            site = self.fleet.sites.get(name)
            if site is None:
                self.networks.drop(name)
            else:
                self.networks.put(name, site.spec.networks)

    def _tokens_changed(self, changes: FleetChanges) -> None:
        if changes.reloaded:
            self.tokens.clear()
        self.tokens.drop(changes.tokens)

    def _desired_states_changed(self, changes: FleetChanges) -> None:
        # Placement or a tenant's policy changed: sites' desired states may have new revisions.
        if changes.placements or changes.tenants or changes.apps or changes.reloaded:
            self.watch.nudge()
        for name in changes.sites:
            if name not in self.fleet.sites:
                self.watch.forget(name)
                self.peers.forget(name)
                self.shares.forget(name)
                self.desired.forget(name)

    async def _lead_loop(self) -> None:
        assert self.leadership is not None
        while True:
            leading = await asyncio.to_thread(self.leadership.try_acquire)
            if leading and not self.leader:
                log.info("leading: this hub runs placement and site health")
                self.placement.trigger(full=True)
            elif self.leader and not leading:
                log.warning("lost the lead: another hub runs the controllers")
            self.leader = leading
            await asyncio.sleep(self.config.leader_check)

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(60.0)
            self.shares.sweep(self.bells.sites())
            if self.leader:
                try:
                    await asyncio.to_thread(self.store.feed.prune)
                except Exception:
                    log.exception("pruning the change feed failed")

    async def start(self) -> None:
        """Read the fleet, then start the background loops and the central DNS."""
        pauses.watch()
        await self.follower.load()
        await self.watch.refresh()
        await self.routing.rebuild()
        if self.config.dns_port >= 0:
            from edgefleet.hub.dns import start_central_dns

            self.dns = await start_central_dns(self)
        loops = [
            self.follower.run(),
            self.watch.run(self.config.watch_refresh),
            self.heartbeats.run(),
            self.demand.run(),
            self.reports.run(),
            self.routing.run(),
            self.failures.run(),
        ]
        if self.config.controllers:
            assert self.leadership is not None
            # Decide the lead before serving, so /healthz is right from the first answer.
            self.leader = await asyncio.to_thread(self.leadership.try_acquire)
            if self.leader:
                self.placement.trigger(full=True)
            loops += [self._lead_loop(), self.placement.run(), self.health.run()]
        loops.append(self._prune_loop())
        self.tasks += [asyncio.create_task(loop) for loop in loops]

    async def stop(self) -> None:
        """Stop the loops and the DNS, write pending heartbeats and demand, close the store."""
        self.changes.close()
        if self.dns is not None:
            await self.dns.stop()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.heartbeats.flush()
        await self.demand.flush()
        await self.reports.flush()
        await self.failures.sync()
        if self.leadership is not None:
            self.leadership.release()
        self.store.close()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the hub's loops for as long as the ASGI app lives."""
    hub: Hub = app.state.hub
    await hub.start()
    try:
        yield
    finally:
        await hub.stop()


async def get_hub(request: Request) -> Hub:
    """Dependency: the hub of this app (async: a plain function would cost every request a hop
    to FastAPI's thread pool)."""
    hub: Hub = request.app.state.hub
    return hub
