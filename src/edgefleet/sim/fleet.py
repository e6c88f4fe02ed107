"""Thousands of simulated sites in one process, each speaking the real agent protocol.

Each site is a ``HubLink`` (the real agent's link to the hub: join, the watch stream of its desired
state and of its share of the routing table, status reports, heartbeats, demand reports) over a
``SimulatedDriver`` whose replicas are records that become ready after ``ready_delay``. The hub
cannot tell them from real sites. What a simulated site does not have is a data plane: no
ingress, no edge DNS, no probes (so no probe verdicts in its heartbeats).

All sites share one event loop, one pool of kept-alive connections to the hub and one timer, so
a site costs tens of kilobytes (``SimFleet.stats``). A fleet can be told to kill sites (their
links stop at once, as a crashed site's would; their replicas are lost), to bring them back,
and to make an app's replicas fail at some sites.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import resource
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edgefleet._version import __version__
from edgefleet.agent.demand import DemandCounter, DemandReporter
from edgefleet.agent.drivers.simulated import LoopTimer, SimulatedDriver
from edgefleet.agent.hubclient import IDLE_TIMEOUT, HubClient, PooledTransport, tls_context
from edgefleet.agent.hublink import HubLink, LinkConfig
from edgefleet.agent.identity import SiteIdentity
from edgefleet.agent.upstream import UpstreamPool
from edgefleet.model import AppReport, DesiredState, Heartbeat, RoutingTable, StatusReport

log = logging.getLogger(__name__)


JOINS = 64
"""Joins the simulated sites have in flight at most: as many as the hub takes at once and a
little more (``HubConfig.join_concurrency``, ``join_queue``), so that starting thousands of sites
does not turn into thousands of refused joins tried again."""


@dataclass(frozen=True)
class SimConfig:
    """How a simulated fleet runs. Every field has the documented default."""

    hub: str = "http://127.0.0.1:7700"
    """The hub's URL."""
    ca: str | None = None
    """CA bundle (PEM) of an https hub."""
    ready_delay: float = 1.0
    """Seconds from a replica's start to its readiness."""
    heartbeat_interval: float = 2.0
    """Seconds between each site's heartbeats (the hub may ask for longer)."""
    watch_timeout: float = 30.0
    """Seconds each watch stream's head may take to come from the hub."""
    report_resync: float = 300.0
    """Seconds between a site's full status reports when nothing changed."""
    demand_rps: float = 0.0
    """Requests a second each site reports for each app it runs (0: no demand reports)."""
    demand_window: float = 10.0
    """Seconds per demand report."""
    start_over: float = 10.0
    """Seconds over which the sites' first calls are spread, so that the hub is not hit by
    every site in the same instant."""
    state_dir: Path | None = None
    """Where sites keep their demand reports' queue (only with demand); None: a temp dir."""
    connections: int = 1024
    """Connections the sites' calls (status and demand reports, joins) share, and as many their
    heartbeats; each watch stream holds one more. A report is answered once the hub has written
    it, so this bounds the reports in flight (real sites, each on its own connection, have no
    such bound): with 10,000 sites, 1,024 lets ten batches of reports take a rollout's reports
    where 256 needed forty."""


class SimSite:
    """One simulated site: what its ``HubLink`` asks of it."""

    def __init__(self, name: str, driver: SimulatedDriver) -> None:
        self.name = name
        self.driver = driver
        self.desired: DesiredState | None = None
        self.routes_version = ""
        self.counter: DemandCounter | None = None

    async def take_desired(self, state: DesiredState) -> None:
        """Run what the hub says (records only: at once, on the loop)."""
        self.desired = state
        self.driver.converge(state.apps)

    async def take_routes(self, table: RoutingTable) -> None:
        """Nothing answers from it; the link keeps the share, to apply the next delta."""
        self.routes_version = table.version

    async def status_report(self, observed_revision: int) -> StatusReport:
        """What the driver says runs."""
        return StatusReport(
            site=self.name,
            agent_version=f"{__version__}+sim",
            agent_endpoint=None,
            observed_revision=observed_revision,
            apps=[
                AppReport(tenant=key.partition("/")[0], app=key.partition("/")[2], replicas=r)
                for key, r in sorted(self.driver.observe().items())
            ],
        )

    def heartbeat(self, observed_revision: int) -> Heartbeat:
        """Alive; no probe verdicts (simulated sites do not probe)."""
        return Heartbeat(
            site=self.name, observed_revision=observed_revision, problem=self.driver.problem()
        )

    def count_demand(self, rps: float, window: float) -> None:
        """Count ``rps`` requests a second for every app that runs here, for one window."""
        if self.counter is None or self.desired is None:
            return
        for assignment in self.desired.apps:
            for _ in range(round(rps * window)):
                self.counter.request(assignment.key, self.name, 0.01)


@dataclass
class _Running:
    site: SimSite
    link: HubLink
    task: asyncio.Task[None] | None = None
    killed: bool = False


@dataclass
class SimStats:
    """What a simulated fleet is doing, for the bench and the control API."""

    sites: int
    running: int
    killed: int
    joined: int
    replicas: int
    ready: int
    failing_heartbeats: int
    rss_bytes: int
    connections: int
    apps_ready: dict[str, int] = field(default_factory=dict)
    """Per app, sites where all its replicas are ready."""
    routes_taken: int = 0
    """Routing updates the sites took (whole shares and deltas)."""
    routes_bytes: int = 0
    """Bytes of the watch's news that brought routing updates only."""

    @property
    def bytes_per_site(self) -> float:
        """Resident memory of the process divided by its sites."""
        return self.rss_bytes / max(1, self.sites)


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default), from /proc."""
    with open(f"/proc/{pid or os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


class SimFleet:
    """Simulated sites speaking to one hub (see the module)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        tls = tls_context(config.ca) if config.hub.startswith("https") else None

        # The sites' calls share a few connections; each site's watch stream holds one of its own;
        # heartbeats never wait behind a burst of reports, as each real site's do not.
        def pool(connections: int) -> UpstreamPool:
            return UpstreamPool(
                max_per_host=connections,
                idle_timeout=IDLE_TIMEOUT,
                connect_timeout=30.0,
                acquire_timeout=60.0,
                tls=tls,
            )

        self.pool = pool(config.connections)
        self.long_pool = UpstreamPool(
            max_per_host=1 << 22, idle_timeout=IDLE_TIMEOUT, connect_timeout=30.0, tls=tls
        )
        self.beat_pool = pool(config.connections)
        self.transport = PooledTransport(
            config.hub, pool=self.pool, long_pool=self.long_pool, beat_pool=self.beat_pool
        )
        """One transport for every site."""
        self._timer: LoopTimer | None = None
        self._joins: asyncio.Semaphore | None = None
        self._sites: dict[str, _Running] = {}
        self._demand_task: asyncio.Task[None] | None = None
        self._state_dir = config.state_dir

    def _link(self, name: str, join_token: str | None) -> _Running:
        assert self._timer is not None
        driver = SimulatedDriver(name, ready_delay=self.config.ready_delay, timer=self._timer)
        site = SimSite(name, driver)
        client = HubClient(self.transport)
        identity = SiteIdentity(name, self._dir(name))
        demand = None
        if self.config.demand_rps > 0:
            site.counter = DemandCounter()
            demand = DemandReporter(
                name,
                site.counter,
                client,
                self._dir(name),
                window=self.config.demand_window,
            )
        link = HubLink(
            LinkConfig(
                site=name,
                watch_timeout=self.config.watch_timeout,
                heartbeat_interval=self.config.heartbeat_interval,
                report_resync=self.config.report_resync,
                join_token=join_token,
            ),
            client,
            identity,
            site,
            demand=demand,
        )
        running = _Running(site, link)
        driver.start(link.report_dirty.set)
        return running

    def _dir(self, name: str) -> Path:
        # Only the demand queue is ever written there (and only with demand): a directory of
        # this process's own, not a name another user of the machine could make first.
        if self._state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix="edgefleet-sim-"))
        return self._state_dir / name

    async def start(self, sites: dict[str, str | None]) -> None:
        """Start a site per name of ``sites`` (with its join token, or None to call the hub
        without a credential), their first calls spread over ``start_over`` seconds."""
        loop = asyncio.get_running_loop()
        self._timer = LoopTimer(loop)
        self._joins = asyncio.Semaphore(JOINS)
        names = sorted(sites)
        for name in names:
            self._sites[name] = self._link(name, sites[name])
        spread = self.config.start_over
        order = list(names)
        random.Random(1).shuffle(order)
        for i, name in enumerate(order):
            delay = spread * i / max(1, len(order))
            self._sites[name].task = loop.create_task(self._run(name, delay))
        if self.config.demand_rps > 0:
            self._demand_task = loop.create_task(self._demand_loop())

    async def _run(self, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        running = self._sites[name]
        try:
            if self._joins is not None:
                async with self._joins:
                    await running.link.join()
            await running.link.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("simulated site %s stopped", name)

    async def _demand_loop(self) -> None:
        window = self.config.demand_window
        while True:
            await asyncio.sleep(window)
            for running in self._sites.values():
                if not running.killed:
                    running.site.count_demand(self.config.demand_rps, window)

    # -- what can be made to happen ----------------------------------------------------------------

    def kill(self, names: Iterable[str]) -> list[str]:
        """Stop sites at once, as a crash would: no more calls, replicas gone."""
        killed = []
        for name in names:
            running = self._sites.get(name)
            if running is None or running.killed:
                continue
            running.killed = True
            if running.task is not None:
                running.task.cancel()
            running.site.driver.converge([])
            killed.append(name)
        return killed

    def revive(self, names: Iterable[str]) -> list[str]:
        """Start killed sites again (with the credential they had)."""
        loop = asyncio.get_running_loop()
        revived = []
        for name in names:
            running = self._sites.get(name)
            if running is None or not running.killed:
                continue
            running.killed = False
            running.link.revision = -1
            running.task = loop.create_task(self._run(name, 0.0))
            revived.append(name)
        return revived

    def fail(self, app: str, names: Iterable[str], failing: bool = True) -> list[str]:
        """Make ``app``'s replicas (``tenant/app``) fail at sites, or recover."""
        done = []
        for name in names:
            running = self._sites.get(name)
            if running is not None:
                running.site.driver.fail(app, failing)
                done.append(name)
        return done

    @property
    def names(self) -> list[str]:
        """Every site of the fleet, by name."""
        return sorted(self._sites)

    @property
    def killed(self) -> set[str]:
        """The sites killed and not revived."""
        return {name for name, r in self._sites.items() if r.killed}

    def stats(self) -> SimStats:
        """What the fleet is doing now."""
        replicas = ready = 0
        apps_ready: dict[str, int] = {}
        joined = failing = routes_taken = routes_bytes = 0
        for running in self._sites.values():
            routes_taken += running.link.routes_taken
            routes_bytes += running.link.routes_bytes
            if running.killed:
                continue
            joined += running.link.identity.credential is not None
            failing += running.link.failing
            for key, (count, up) in running.site.driver.counts().items():
                replicas += count
                ready += up
                if count and up == count:
                    apps_ready[key] = apps_ready.get(key, 0) + 1
        killed = sum(r.killed for r in self._sites.values())
        return SimStats(
            sites=len(self._sites),
            running=len(self._sites) - killed,
            killed=killed,
            joined=joined,
            replicas=replicas,
            ready=ready,
            failing_heartbeats=failing,
            rss_bytes=rss_bytes(),
            connections=sum(
                p.open_connections(self.transport.host, self.transport.port)
                for p in (self.pool, self.long_pool, self.beat_pool)
            ),
            apps_ready=apps_ready,
            routes_taken=routes_taken,
            routes_bytes=routes_bytes,
        )

    async def stop(self) -> None:
        """Stop every site and close the connections."""
        tasks = [r.task for r in self._sites.values() if r.task is not None]
        if self._demand_task is not None:
            tasks.append(self._demand_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for pool in (self.pool, self.long_pool, self.beat_pool):
            await pool.aclose()


async def wait_joined(fleet: SimFleet, *, timeout: float, every: float = 0.5) -> SimStats:
    """Wait until every running site of ``fleet`` holds a credential (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = fleet.stats()
        if stats.joined >= stats.running or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(every)


__all__ = ["SimConfig", "SimFleet", "SimSite", "SimStats", "rss_bytes", "wait_joined"]
