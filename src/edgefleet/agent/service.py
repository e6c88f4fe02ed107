"""The agent at a site: watch the hub, converge the driver, report, keep working without the hub.

Every connection is opened by the agent (long-poll watch, status, heartbeat), so a site behind NAT
works and the hub never dials ten thousand sites. The desired state is cached on disk before it is
applied; after a restart the agent converges from the cache before the hub answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import FastAPI, Query
from fastapi.responses import PlainTextResponse

from edgefleet._version import __version__
from edgefleet.agent.backoff import Backoff
from edgefleet.agent.cache import DesiredStateCache, RoutingTableCache
from edgefleet.agent.drivers.base import Driver
from edgefleet.agent.edge import EdgeZone, NeighbourProber, app_id
from edgefleet.agent.ingress import Ingress, LocalReplicas
from edgefleet.dns.responder import Responder
from edgefleet.dns.server import DnsServer
from edgefleet.model import (
    AppReport,
    DesiredState,
    Heartbeat,
    ReplicaState,
    RoutingTable,
    StatusReport,
)
from edgefleet.routing.convert import route_table

log = logging.getLogger(__name__)


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
    token: str | None = None
    """Bearer token for the hub."""
    heartbeat_interval: float = 2.0
    """Seconds between heartbeats."""
    watch_timeout: float = 30.0
    """Seconds a long-poll waits at the hub."""
    report_resync: float = 60.0
    """Seconds between full status reports when nothing changed."""
    stop_replicas_on_exit: bool = False
    """Stop every replica when the agent exits (default: leave them for the next agent)."""
    dns_port: int = 5353
    """Port of the edge DNS on the site address (UDP and TCP); -1 turns it off."""
    dns_ttl: int = 5
    """TTL of DNS answers, seconds."""
    dns_answers: int = 2
    """Most addresses in one answer, nearest first."""
    probe_interval: float = 0.5
    """Seconds between probes of each neighbour."""
    neighbours: int = 8
    """How many of the nearest sites to probe."""


@dataclass
class _Progress:
    revision: int = -1
    """Desired-state revision applied."""
    report_dirty: asyncio.Event = field(default_factory=asyncio.Event)


def ready_counts(observed: Mapping[str, Sequence[ReplicaState]]) -> dict[str, int]:
    """Ready replicas per ``tenant/app``."""
    return {key: sum(r.ready for r in replicas) for key, replicas in observed.items()}


def local_api(driver: Driver, site: str, replicas_view: LocalReplicas) -> FastAPI:
    """The agent's own HTTP API on the site address: health, replicas and logs."""
    api = FastAPI(title=f"edgefleet agent {site}", version=__version__)

    @api.get("/_edgefleet/healthz")
    def healthz() -> dict[str, Any]:
        # Neighbours' probes read the ready counts: their edge DNS learns of our replicas
        # without the hub.
        # Served from the same cached view as the ingress: every neighbour probes twice a second.
        return {"status": "ok", "site": site, "ready": ready_counts(replicas_view.get())}

    @api.get("/_edgefleet/replicas")
    def replicas() -> dict[str, list[ReplicaState]]:
        return driver.observe()

    @api.get("/_edgefleet/logs/{tenant}/{app}", response_class=PlainTextResponse)
    def logs(
        tenant: str,
        app: str,
        tail: Annotated[int, Query(ge=1, le=10_000)] = 100,
        replica: str | None = None,
    ) -> str:
        return driver.logs(tenant, app, replica=replica, tail=tail)

    return api


class Agent:
    """One site's agent."""

    def __init__(self, config: AgentConfig, driver: Driver) -> None:
        self.config = config
        self.driver = driver
        self.cache = DesiredStateCache(config.state_dir / "desired-state.json")
        self.routing_cache = RoutingTableCache(config.state_dir / "routing-table.json")
        self.routing_version = ""
        self.zone = EdgeZone(config.site, address=config.address, max_answers=config.dns_answers)
        self.prober = NeighbourProber(
            config.site,
            interval=config.probe_interval,
            timeout=max(0.2, config.probe_interval),
            neighbours=config.neighbours,
        )
        self.dns: DnsServer | None = None
        self._beat_now = asyncio.Event()
        self.progress = _Progress()
        self._loop: asyncio.AbstractEventLoop | None = None
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        self._http = httpx.AsyncClient(
            base_url=config.hub.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(10.0, read=config.watch_timeout + 10.0),
        )
        self._api_server: uvicorn.Server | None = None
        self.replicas = LocalReplicas(driver.observe)
        """The one cached view of the driver's replicas: ingress, health answers, edge DNS."""
        self.ingress = Ingress(
            local_api(driver, config.site, self.replicas),
            site=config.site,
            address=config.address,
            replicas=self.replicas,
        )

    @property
    def endpoint(self) -> str:
        """URL of the local API, as reported to the hub."""
        return f"http://{self.config.address}:{self.config.api_port}/_edgefleet"

    # -- driver side -----------------------------------------------------------------------------

    def _replicas_changed(self) -> None:
        # Called from the driver's thread.
        self.replicas.changed()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.progress.report_dirty.set)
            self._loop.call_soon_threadsafe(self.refresh_zone)

    def _probes_changed(self) -> None:
        self.refresh_zone()
        # Tell the hub at once: the central DNS leaves out sites its probers call down.
        self._beat_now.set()

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
        await asyncio.to_thread(self.driver.converge, state.apps)
        self.progress.revision = state.revision
        self.progress.report_dirty.set()

    def resume(self) -> DesiredState | None:
        """Adopt what runs and converge from the cached state, before any hub call."""
        self.driver.start(self._replicas_changed)
        routes = self.routing_cache.load()
        if routes is not None:
            self.routing_version = routes.version
            self.refresh_zone(routes)
        cached = self.cache.load()
        if cached is not None:
            log.info(
                "resuming from cached revision %d (%d apps)", cached.revision, len(cached.apps)
            )
            self.driver.converge(cached.apps)
            self.progress.revision = cached.revision
        return cached

    # -- hub side --------------------------------------------------------------------------------

    async def watch_once(self) -> bool:
        """One long-poll; True when a new desired state was applied."""
        reply = await self._http.get(
            f"/api/v1/agent/sites/{self.config.site}/desired-state",
            params={"since": self.progress.revision, "timeout": self.config.watch_timeout},
        )
        if reply.status_code == 204:
            return False
        reply.raise_for_status()
        state = DesiredState.model_validate(reply.json())
        # Cache first: a crash between the two leaves a state we can resume from.
        await asyncio.to_thread(self.cache.save, state)
        await self._apply(state)
        log.info(
            "applied revision %d: %s",
            state.revision,
            ", ".join(f"{a.key}={a.replicas}" for a in state.apps) or "nothing",
        )
        return True

    async def watch_routing_once(self) -> bool:
        """One long-poll for the routing table; True when a new one was taken."""
        reply = await self._http.get(
            f"/api/v1/agent/sites/{self.config.site}/routing-table",
            params={"since": self.routing_version, "timeout": self.config.watch_timeout},
        )
        if reply.status_code == 204:
            return False
        reply.raise_for_status()
        table = RoutingTable.model_validate(reply.json())
        await asyncio.to_thread(self.routing_cache.save, table)
        self.routing_version = table.version
        self.refresh_zone(table)
        return True

    async def _routing_loop(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self.watch_routing_once()
                backoff.reset()
            except (httpx.HTTPError, ValueError) as exc:
                delay = backoff.next()
                log.warning("routing watch failed (%s); retrying in %.1fs", _reason(exc), delay)
                await asyncio.sleep(delay)

    async def _watch_loop(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self.watch_once()
                backoff.reset()
            except (httpx.HTTPError, ValueError) as exc:
                delay = backoff.next()
                log.warning("hub watch failed (%s); retrying in %.1fs", _reason(exc), delay)
                await asyncio.sleep(delay)

    def status_report(self) -> StatusReport:
        """What runs here now."""
        observed = self.driver.observe()
        apps = []
        for key, replicas in sorted(observed.items()):
            tenant, _, app = key.partition("/")
            apps.append(AppReport(tenant=tenant, app=app, replicas=replicas))
        return StatusReport(
            site=self.config.site,
            agent_version=__version__,
            agent_endpoint=self.endpoint,
            observed_revision=self.progress.revision,
            apps=apps,
        )

    async def _report_loop(self) -> None:
        backoff = Backoff()
        dirty = self.progress.report_dirty
        dirty.set()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dirty.wait(), self.config.report_resync)
            await asyncio.sleep(0.1)  # let a burst of replica changes settle into one report
            dirty.clear()
            report = await asyncio.to_thread(self.status_report)
            try:
                reply = await self._http.post(
                    f"/api/v1/agent/sites/{self.config.site}/status",
                    content=report.model_dump_json(by_alias=True),
                    headers={"Content-Type": "application/json"},
                )
                reply.raise_for_status()
                backoff.reset()
            except httpx.HTTPError as exc:
                dirty.set()  # unsent: try again after the backoff
                delay = backoff.next()
                log.warning("status report failed (%s); retrying in %.1fs", _reason(exc), delay)
                await asyncio.sleep(delay)

    async def _heartbeat_loop(self) -> None:
        failing = False
        while True:
            beat = Heartbeat(
                site=self.config.site,
                observed_revision=self.progress.revision,
                probes=self.prober.health(),
            )
            try:
                reply = await self._http.post(
                    f"/api/v1/agent/sites/{self.config.site}/heartbeat",
                    content=beat.model_dump_json(by_alias=True),
                    headers={"Content-Type": "application/json"},
                )
                reply.raise_for_status()
                if failing:
                    log.info("hub reachable again")
                    # The hub may have lost what we told it: report everything again.
                    self.progress.report_dirty.set()
                failing = False
            except httpx.HTTPError as exc:
                if not failing:
                    log.warning("heartbeat failed (%s); running autonomously", _reason(exc))
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), self.config.heartbeat_interval)
            self._beat_now.clear()

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
                self.zone, ttl=self.config.dns_ttl, max_answers=self.config.dns_answers
            )
            self.dns = DnsServer(responder, self.config.address, self.config.dns_port)
            await self.dns.start()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.add_signal_handler(sig, stop.set)
        serving = asyncio.create_task(self._api_server.serve())
        tasks: list[asyncio.Task[Any]] = [
            serving,
            asyncio.create_task(self._watch_loop()),
            asyncio.create_task(self._routing_loop()),
            asyncio.create_task(self.prober.run(self._probes_changed)),
            asyncio.create_task(self._report_loop()),
            asyncio.create_task(self._heartbeat_loop()),
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
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._http.aclose()
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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        try:
            detail = exc.response.json().get("detail")
        except ValueError:
            detail = exc.response.text[:200]
        return f"HTTP {exc.response.status_code}: {detail}"
    return str(exc) or type(exc).__name__


def make_driver(name: str, config: AgentConfig) -> Driver:
    """The driver called ``name`` for this agent."""
    if name == "process":
        from edgefleet.agent.drivers.process import ProcessDriver

        return ProcessDriver(config.site, config.state_dir / "process", config.address)
    raise ValueError(f"driver {name!r} is not available here: use 'process'")
