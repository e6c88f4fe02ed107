"""The agent at a site: converge the driver, serve the data plane, keep working without the hub.

The agent composes:

- its link to the hub (``edgefleet.agent.hublink``): join, the watch stream of its desired state
  and of its share of the routing table, status reports, heartbeats, demand reports; every
  connection opened by the site, so a site behind NAT works and the hub never dials it;
- its identity (``edgefleet.agent.identity``): the site's credential and the trust it extends;
- its data plane: the ingress and activator on the site address, the local scaler, spill-over
  and offload to neighbours, the edge DNS and the neighbour probes;
- its local API (``edgefleet.agent.local_api``) on the ingress port, under ``/_edgefleet/``.

The desired state and the routing table are cached on disk before they are used; after a
restart the agent converges from the cache before the hub answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from edgefleet._version import __version__
from edgefleet.agent.cache import DesiredStateCache, RoutingTableCache
from edgefleet.agent.demand import DemandCounter, DemandReporter
from edgefleet.agent.drivers.base import Driver
from edgefleet.agent.edge import EdgeZone, NeighbourProber, app_id, nearest_neighbours
from edgefleet.agent.hubclient import HubClient, PooledTransport
from edgefleet.agent.hublink import HubLink, LinkConfig
from edgefleet.agent.identity import JoinRefused, SavedCredential, SiteIdentity
from edgefleet.agent.ingress import Ingress, LocalReplicas, Peer
from edgefleet.agent.local_api import OffloadRequest, local_api, ready_counts
from edgefleet.agent.offload import (
    offload_terms,
    offloaded_replicas,
    outside_regions,
    refuses,
    should_ask,
    to_drain,
)
from edgefleet.agent.scaling import Autoscaler
from edgefleet.agent.upstream import Upstream, UpstreamError, UpstreamPool
from edgefleet.dns.responder import Responder
from edgefleet.dns.server import DnsServer
from edgefleet.identity.credentials import CredentialClaims
from edgefleet.model import (
    AppAssignment,
    AppReport,
    DesiredState,
    Heartbeat,
    RoutingTable,
    StatusReport,
)
from edgefleet.routing.convert import route_table

log = logging.getLogger(__name__)

__all__ = ["Agent", "AgentConfig", "JoinRefused", "make_driver"]


@dataclass(frozen=True)
class AgentConfig:
    """How an agent runs. Every field has the documented default."""

    site: str
    """Name of the site this agent serves (a Site object on the hub)."""
    hub: str = "http://127.0.0.1:7700"
    """Hub URL."""
    state_dir: Path = Path("edgefleet-agent")
    """Where the cache, replica records and logs live."""
    address: str = "127.0.0.1"
    """Site address: replicas and the agent's local API bind it."""
    api_port: int = 8080
    """The site's ingress port: apps by ``Host``, and the agent's API (``/_edgefleet/...``)."""
    token: str | None = field(default=None, repr=False)
    """Bearer token for the hub, used when this site has no credential and no join token."""
    join_token: str | None = field(default=None, repr=False)
    """One-time token the hub made for this site (``edgefleet site join-token SITE``): traded
    for the site's credential when this state dir has none, or has not used this token yet."""
    hub_ca: Path | None = None
    """CA bundle (PEM) to check an https hub's certificate with; unset: the system's CAs."""
    heartbeat_interval: float = 2.0
    """Seconds between heartbeats."""
    watch_timeout: float = 30.0
    """Seconds a watch stream's head may take to come from the hub."""
    report_resync: float = 60.0
    """Seconds between full status reports when nothing changed."""
    stop_replicas_on_exit: bool = False
    """Stop every replica when the agent exits (default: leave them for the next agent)."""
    dns_port: int = 5353
    """Port of the edge DNS on the site address (UDP and TCP); -1 turns it off."""
    dns_anycast: tuple[str, ...] = ()
    """More addresses the edge DNS answers on, at ``dns_port``: the anycast address that every
    site announces, so that clients reach the nearest working edge DNS at one address."""
    dns_ttl: int = 5
    """TTL of DNS answers, seconds."""
    dns_answers: int = 2
    """Most addresses in one answer, nearest first."""
    probe_interval: float = 0.5
    """Seconds between probes of each neighbour."""
    neighbours: int = 8
    """How many of the nearest sites to probe."""
    demand_window: float = 10.0
    """Seconds per demand report."""
    scale_interval: float = 0.5
    """Seconds between local scaling decisions."""
    hold_timeout: float = 30.0
    """Seconds the activator holds a request while a replica starts."""
    hold_limit: int = 1000
    """Requests held per app at most; beyond, 503 with Retry-After (or a neighbour)."""
    drain: float = 15.0
    """Seconds an app that scales keeps being served here after the hub moved it away, while
    clients with cached DNS answers still come (three DNS TTLs by default)."""
    offload_ttl: float = 60.0
    """Seconds a neighbour keeps replicas started at our request unless asked again."""
    max_offload_replicas: int = 8
    """Most replicas this site runs at neighbours' requests, all apps together."""
    kubeconfig: Path | None = None
    """Kubernetes driver: the kubeconfig file of the site's cluster when the agent runs outside
    it; unset: the service account of the agent's pod (in-cluster)."""
    kube_context: str | None = None
    """Kubernetes driver: the kubeconfig context to use; unset: the file's current context."""
    kube_namespace_prefix: str = "ef-"
    """Kubernetes driver: each tenant's apps live in the namespace ``<prefix><tenant>``."""


class Agent:
    """One site's agent."""

    def __init__(
        self, config: AgentConfig, driver: Driver, *, client: HubClient | None = None
    ) -> None:
        """``client`` talks to the hub (default: kept-alive connections to ``config.hub``)."""
        self.config = config
        self.driver = driver
        self.cache = DesiredStateCache(config.state_dir / "desired-state.json")
        self.routing_cache = RoutingTableCache(config.state_dir / "routing-table.json")
        self.zone = EdgeZone(config.site, address=config.address, max_answers=config.dns_answers)
        self.prober = NeighbourProber(
            config.site,
            interval=config.probe_interval,
            timeout=max(0.2, config.probe_interval),
            neighbours=config.neighbours,
        )
        self.dns: DnsServer | None = None
        self.anycast_dns: list[DnsServer] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.identity = SiteIdentity(config.site, config.state_dir)
        """This site's credential and the keys it checks neighbours with."""
        # Until the site has a credential (or if it never gets one): the configured token.
        self.hub = client or HubClient(
            PooledTransport(
                config.hub, ca=str(config.hub_ca) if config.hub_ca is not None else None
            ),
            token=config.token,
        )
        """The agent's client of the hub."""
        self._peer_http: Upstream = UpstreamPool(
            max_per_host=2, connect_timeout=3.0, head_timeout=3.0, read_timeout=3.0
        )
        """Offload requests to neighbours' agents."""
        self._api_server: uvicorn.Server | None = None
        self.replicas = LocalReplicas(driver.observe)
        """The one cached view of the driver's replicas: ingress, health answers, edge DNS."""
        self.scaler = Autoscaler()
        """Local scaling of apps with bounds (traffic placement), with or without the hub."""
        self.desired: DesiredState | None = None
        """The hub's last word (or the cache's)."""
        self.offloads: dict[str, tuple[AppAssignment, float]] = {}
        """Apps run at neighbours' request: assignment and when it lapses (monotonic)."""
        self.draining: dict[str, tuple[AppAssignment, float]] = {}
        """Apps the hub moved away, still served until then (monotonic)."""
        self.placed: dict[str, AppAssignment] = {}
        """Every app this site runs or may wake, as last handed to the driver."""
        self._converged: list[AppAssignment] | None = None
        self._converge_lock = asyncio.Lock()
        self._asked: dict[str, float] = {}
        """When we last asked a neighbour to take an app (monotonic), per app."""
        self.demand = DemandCounter()
        """Requests and DNS queries per app and origin site, in the current window."""
        self.dns_tally: Counter[bytes] = Counter()
        """Edge DNS queries per question name, moved into ``demand`` once per window."""
        self.demand_reporter = DemandReporter(
            config.site,
            self.demand,
            self.hub,
            config.state_dir,
            window=config.demand_window,
            dns_tally=self.dns_tally,
        )
        self.link = HubLink(
            LinkConfig(
                site=config.site,
                watch_timeout=config.watch_timeout,
                heartbeat_interval=config.heartbeat_interval,
                report_resync=config.report_resync,
                join_token=config.join_token,
            ),
            self.hub,
            self.identity,
            self,
            demand=self.demand_reporter,
        )
        """The site's link to the hub."""
        self.ingress = Ingress(
            local_api(
                driver,
                config.site,
                self.replicas,
                self.accept_offload,
                verify_credential=self.verify_credential,
            ),
            site=config.site,
            address=config.address,
            replicas=self.replicas,
            assignments=lambda: self.placed,
            wake=self.wake,
            peers=self.spill_peers,
            locate=self.zone.locate,
            admit=self.zone.admit,
            on_load=self._on_load,
            on_request=self.demand.request,
            on_saturated=self._on_saturated,
            hold_limit=config.hold_limit,
            hold_timeout=config.hold_timeout,
            credential=lambda: self.credential,
            verify_credential=self.verify_credential,
        )

    @property
    def endpoint(self) -> str:
        """URL of the local API, as reported to the hub."""
        return f"http://{self.config.address}:{self.config.api_port}/_edgefleet"

    # -- identity --------------------------------------------------------------------------------

    @property
    def credential(self) -> str | None:
        """This site's credential, shown to the hub and to neighbours; None before joining."""
        return self.identity.credential

    def verify_credential(self, token: str) -> CredentialClaims:
        """The claims of a neighbour's or the hub's credential, checked against the fleet's
        keys and revocations; ``CredentialError`` saying why it does not hold."""
        return self.identity.verify(token)

    def _use_credential(self, saved: SavedCredential) -> None:
        self.link.use(saved)

    def _take_trust(self, table: RoutingTable) -> None:
        self.identity.take_trust(table)

    async def join(self) -> None:
        """Trade the join token for this site's credential when needed (``HubLink.join``)."""
        await self.link.join()

    # -- what the link asks of the site ----------------------------------------------------------

    async def take_desired(self, state: DesiredState) -> None:
        """Cache the hub's desired state (first: a crash between the two leaves a state to
        resume from), then converge to it."""
        await asyncio.to_thread(self.cache.save, state)
        await self._apply(state)
        log.info(
            "applied revision %d: %s",
            state.revision,
            ", ".join(f"{a.key}={a.replicas}" for a in state.apps) or "nothing",
        )

    async def take_routes(self, table: RoutingTable) -> None:
        """Cache the site's share of the routing table, then answer from it."""
        await asyncio.to_thread(self.routing_cache.save, table)
        self._take_trust(table)
        self.refresh_zone(table)

    async def status_report(self, observed_revision: int) -> StatusReport:
        """What runs here now (the driver is asked in a thread)."""
        observed = await asyncio.to_thread(self.driver.observe)
        apps = []
        for key, replicas in sorted(observed.items()):
            tenant, _, app = key.partition("/")
            apps.append(AppReport(tenant=tenant, app=app, replicas=replicas))
        return StatusReport(
            site=self.config.site,
            agent_version=__version__,
            agent_endpoint=self.endpoint,
            observed_revision=observed_revision,
            apps=apps,
        )

    def heartbeat(self, observed_revision: int) -> Heartbeat:
        """How the site is: its probes' verdicts, what keeps it from running replicas."""
        return Heartbeat(
            site=self.config.site,
            observed_revision=observed_revision,
            probes=self.prober.health(),
            problem=self.driver.problem(),
        )

    # -- driver side -----------------------------------------------------------------------------

    def _replicas_changed(self) -> None:
        # Called from the driver's thread.
        self.replicas.changed()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.ingress.replicas_changed)
            self._loop.call_soon_threadsafe(self.link.report_dirty.set)
            self._loop.call_soon_threadsafe(self.refresh_zone)

    # -- local scaling, activator, spill-over ------------------------------------------------------

    def assignments(self, now: float) -> list[AppAssignment]:
        """What this site must run before local scaling: the hub's share, then offloads, then
        apps being drained."""
        hub = list(self.desired.apps) if self.desired is not None else []
        keys = {a.key for a in hub}
        for key, (assignment, until) in list(self.offloads.items()):
            if until <= now:
                log.info("offload of %s lapsed: nobody asked again", key)
                del self.offloads[key]
            elif key not in keys:
                hub.append(assignment)
                keys.add(key)
        for key, (assignment, until) in list(self.draining.items()):
            if until <= now or key in keys:
                del self.draining[key]
            else:
                hub.append(assignment)
        return hub

    def _start_draining(self, before: Sequence[AppAssignment], now: float) -> None:
        """Keep serving, for cached DNS answers, what the hub just took away (``to_drain``)."""
        if self.config.drain <= 0 or self.desired is None:
            return
        for drained in to_drain(
            before,
            kept={a.key for a in self.desired.apps},
            offloads=self.offloads.keys(),
            draining=self.draining.keys(),
            existing=self.zone.hub_table.apps.keys(),
        ):
            log.info(
                "draining %s for %g s: the hub placed it elsewhere", drained.key, self.config.drain
            )
            self.draining[drained.key] = (drained, now + self.config.drain)

    def effective(self, now: float) -> list[AppAssignment]:
        """The assignments with the local scaler's counts: what the driver runs."""
        wanted = self.assignments(now)
        ready = ready_counts(self.replicas.get())
        out = self.scaler.effective(wanted, now, ready)
        self.placed = {a.key: a for a in out}
        return out

    async def converge(self) -> None:
        """Hand the driver the current effective assignments, if they changed."""
        async with self._converge_lock:
            now = time.monotonic()
            effective = self.effective(now)
            if effective == self._converged:
                return
            before = {a.key: a.replicas for a in self._converged or ()}
            for a in effective:
                if a.scaling is not None and before.get(a.key) != a.replicas:
                    log.info("scaling %s", self.scaler.explain(a.key))
            await asyncio.to_thread(self.driver.converge, effective)
            self._converged = effective

    def wake(self, key: str) -> None:
        """The activator holds a request for ``key``: start a replica now if it sleeps."""
        if self.scaler.wake(key, time.monotonic()) and self._loop is not None:
            log.info("waking %s for a held request", key)
            self._loop.create_task(self.converge())

    def _on_load(self, key: str, in_flight: int) -> None:
        now = time.monotonic()
        self.scaler.record(key, now, in_flight)
        self.scaler.request_seen(key, now)

    def spill_peers(self, key: str) -> list[Peer]:
        """Neighbours serving ``key`` with ready replicas, nearest first.

        For an app not placed here (a client with a stale DNS answer), a neighbour where it
        sleeps will do too: its activator wakes it.
        """
        if self.identity.missing("requests passed on to them"):
            return []
        tenant, app = app_id(key)
        found = self.zone.peers(tenant, app)
        if not found and key not in self.placed:
            found = self.zone.peers(tenant, app, wakeable=True)
        return [Peer(site=p.name, address=p.ip, port=p.ingress_port) for p in found]

    def _on_saturated(self, key: str) -> None:
        """Local replicas are full and no neighbour serves ``key``: ask one to, if we are at
        our own ceiling (below it the local scaler adds replicas first)."""
        assignment = self.placed.get(key)
        now = time.monotonic()
        if self._loop is None or not should_ask(
            assignment,
            self.scaler.desired(key),
            last_asked=self._asked.get(key),
            now=now,
            interval=self.config.offload_ttl / 4,
        ):
            return
        assert assignment is not None
        self._asked[key] = now
        self._loop.create_task(self._ask_neighbours(assignment))

    async def _ask_neighbours(self, assignment: AppAssignment) -> None:
        """Ask the nearest neighbours, in turn, to run ``assignment``, until one accepts."""
        credential = self.credential
        if credential is None:
            self.identity.missing("offload requests")
            return
        headers = [
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {credential}".encode()),
        ]
        table = self.zone.table
        health = self.prober.health()
        request = OffloadRequest(requester=self.config.site, assignment=assignment)
        body = request.model_dump_json(by_alias=True).encode()
        for name in nearest_neighbours(table, self.config.site, self.config.neighbours):
            point = table.sites.get(name)
            if point is None or not point.reachable or health.get(name) is False:
                continue
            if assignment.selector is not None and refuses(assignment.selector, point):
                continue
            if outside_regions(assignment.regions, point) is not None:
                continue  # residency: the app never runs outside its regions
            try:
                reply = await self._peer_http.request(
                    "POST",
                    host=point.ip,
                    port=point.ingress_port,
                    target=b"/_edgefleet/offload",
                    headers=headers,
                    body=body,
                )
                async with reply:
                    answer = await reply.read()
            except (UpstreamError, OSError) as exc:
                log.warning("offload of %s to %s failed: %s", assignment.key, name, exc)
                continue
            if reply.status == 202:
                log.info("site %s runs %s for us now", name, assignment.key)
                return
            refusal = _refusal(reply.status, answer)
            log.info("site %s declined %s: %s", name, assignment.key, refusal)
        log.warning("no neighbour took %s: local replicas stay saturated", assignment.key)

    def accept_offload(self, request: OffloadRequest) -> str | None:
        """A neighbour asks us to run an app; None when accepted, else why not."""
        key = request.assignment.key
        terms = offload_terms(
            request.assignment,
            me=self.zone.table.sites.get(self.config.site),
            placed_here=self.desired is not None and any(a.key == key for a in self.desired.apps),
            taken=offloaded_replicas({k: a for k, (a, _) in self.offloads.items()}, besides=key),
            cap=self.config.max_offload_replicas,
        )
        if isinstance(terms, str):
            return terms
        if key not in self.offloads:
            log.info(
                "running %s for site %s (up to %d replicas)",
                key,
                request.requester,
                terms.scaling.max_replicas if terms.scaling else terms.replicas,
            )
        now = time.monotonic()
        self.offloads[key] = (terms, now + self.config.offload_ttl)
        # A neighbour's request for capacity is demand: an app that slept here (drained, say)
        # must not go back to sleep before the spilled requests arrive.
        self.scaler.request_seen(key, now)
        if self._loop is not None:
            self._loop.create_task(self.converge())
        return None

    async def _scale_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.scale_interval)
            try:
                await self.converge()
            except Exception:
                log.exception("local scaling failed")

    def _probes_changed(self) -> None:
        self.refresh_zone()
        # Tell the hub at once: the central DNS leaves out sites its probers call down.
        self.link.beat_now.set()

    def refresh_zone(self, table: RoutingTable | None = None) -> None:
        """Give the edge DNS the newest routing table, our own replicas and the probe verdicts."""
        hub_table = None
        if table is not None:
            hub_table = route_table(table)
            self.prober.set_table(hub_table)
        local = {app_id(key): n for key, n in ready_counts(self.replicas.get()).items()}
        self.zone.update(
            hub_table=hub_table,
            ready={**self.prober.ready_counts(), self.config.site: local},
            health=self.prober.health(),
            rtt_ms=self.prober.rtt_ms(),
        )

    async def _apply(self, state: DesiredState) -> None:
        before = list(self.placed.values())
        self.desired = state
        self._start_draining(before, time.monotonic())
        await self.converge()

    def resume(self) -> DesiredState | None:
        """Adopt what runs and converge from the cached state, before any hub call."""
        self.driver.start(self._replicas_changed)
        saved = self.identity.load()
        if saved is not None:
            self._use_credential(saved)
        routes = self.routing_cache.load()
        if routes is not None:
            self.link.routes = routes
            self._take_trust(routes)
            self.refresh_zone(routes)
        cached = self.cache.load()
        if cached is not None:
            log.info(
                "resuming from cached revision %d (%d apps)", cached.revision, len(cached.apps)
            )
            self.desired = cached
            effective = self.effective(time.monotonic())
            self.driver.converge(effective)
            self._converged = effective
            self.link.revision = cached.revision
        return cached

    # -- process ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled or signalled."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.resume)
        self._api_server = _EmbeddedServer(
            uvicorn.Config(
                self.ingress,
                host=self.config.address,
                port=self.config.api_port,
                log_level="warning",
                access_log=False,
            )
        )
        if self.config.dns_port >= 0:
            responder = Responder(
                self.zone,
                ttl=self.config.dns_ttl,
                max_answers=self.config.dns_answers,
                tally=self.dns_tally,
            )
            self.dns = DnsServer(responder, self.config.address, self.config.dns_port)
            await self.dns.start()
            for address in self.config.dns_anycast:
                server = DnsServer(responder, address, self.config.dns_port)
                await server.start()
                self.anycast_dns.append(server)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.add_signal_handler(sig, stop.set)
        serving = asyncio.create_task(self._api_server.serve())
        # The site serves before it calls the hub: a site waiting for the hub (or for its join)
        # answers its neighbours' probes and its clients all along.
        deadline = self._loop.time() + 10.0
        while not self._api_server.started and not serving.done() and self._loop.time() < deadline:
            await asyncio.sleep(0.01)
        tasks: list[asyncio.Task[Any]] = [
            serving,
            asyncio.create_task(self.link.run()),
            asyncio.create_task(self.prober.run(self._probes_changed)),
            asyncio.create_task(self._scale_loop()),
        ]
        log.info("agent for site %s started (hub %s)", self.config.site, self.config.hub)
        stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if task is not stopper and error is not None:
                    raise error
        finally:
            await self.shutdown(serving, [*tasks[1:], stopper])

    async def shutdown(self, serving: asyncio.Task[Any], tasks: list[asyncio.Task[Any]]) -> None:
        """Stop loops and the local API; stop replicas only when configured to."""
        if self._api_server is not None:
            # Let uvicorn close its sockets itself; cancelling it mid-serve logs a traceback.
            self._api_server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(serving), 5.0)
        tasks.append(serving)
        if self.dns is not None:
            await self.dns.stop()
        for server in self.anycast_dns:
            await server.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.hub.aclose()
        await self._peer_http.aclose()
        await self.ingress.aclose()
        if self.config.stop_replicas_on_exit:
            await asyncio.to_thread(self.driver.stop_all)
        else:
            await asyncio.to_thread(self.driver.close)
        log.info("agent for site %s stopped", self.config.site)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the agent's loop: the agent, not uvicorn, owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_driver(name: str, config: AgentConfig) -> Driver:
    """The driver called ``name`` for this agent."""
    if name == "process":
        from edgefleet.agent.drivers.process import ProcessDriver

        return ProcessDriver(config.site, config.state_dir / "process", config.address)
    if name == "kubernetes":
        from edgefleet.agent.drivers.kube_objects import check_namespace_prefix
        from edgefleet.agent.drivers.kubernetes import KubernetesDriver, connect

        prefix = check_namespace_prefix(config.kube_namespace_prefix)
        api = connect(kubeconfig=config.kubeconfig, context=config.kube_context)
        return KubernetesDriver(config.site, api, namespace_prefix=prefix)
    if name == "simulated":
        from edgefleet.agent.drivers.simulated import SimulatedDriver

        # Replicas that are records (edgefleet.sim runs thousands of such sites in one process).
        return SimulatedDriver(config.site)
    raise ValueError(
        f"driver {name!r} is not available here: use 'process', 'kubernetes' or 'simulated'"
    )


def _refusal(status: int, body: bytes) -> str:
    """``HTTP 409: <detail>`` of a neighbour's refusal."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        detail = body[:200].decode("utf-8", "replace")
    return f"HTTP {status}: {detail}"
