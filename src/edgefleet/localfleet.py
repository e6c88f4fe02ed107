"""A fleet on one machine: a hub process and one agent process per site, on loopback addresses.

The demo runs on it, and so do the integration tests: real processes, real sockets, real replicas.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from edgefleet.agent.drivers.process import ProcessDriver
from edgefleet.client import Client
from edgefleet.model import Site
from edgefleet.ports import free_port, port_free
from edgefleet.waiting import wait_for

__all__ = ["LocalFleet", "SimProcess", "free_port", "scratch_database", "wait_for"]


@contextlib.contextmanager
def scratch_database(url: str, *, prefix: str = "ef_") -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of ``url`` (any database there; the
    server's ``postgres`` database is used to make and drop it), dropped afterwards, with
    whatever sessions still use it."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    server = url.rpartition("/")[0]
    admin = create_engine(
        f"{server}/postgres".replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield f"{server}/{name}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@dataclass
class LocalFleet:
    """Processes of a fleet on this machine; stop() ends them all."""

    workdir: Path
    hub_port: int = 7700
    hub_host: str = "127.0.0.1"
    db: str | None = None
    heartbeat_grace: float = 3.0
    heartbeat_interval: float = 1.0
    dns_port: int = 5353
    """Central DNS port on the hub's address (0: a free one); sites use their own dnsPort."""
    placement_resync: float = 10.0
    """Seconds between the hub's placement passes."""
    demand_tau: float = 60.0
    """Time constant of the hub's decayed demand, seconds."""
    demand_window: float = 10.0
    """Seconds per agent demand report."""
    python: str = sys.executable
    agent_args: dict[str, list[str]] = field(default_factory=dict)
    """More options per site's agent (e.g. ``--driver kubernetes --kubeconfig ...``)."""
    hub_args: list[str] = field(default_factory=list)
    """More options of the hub (e.g. ``--oidc-config FILE``)."""
    admin_token: str | None = None
    """The admin token made when the hub first starts (the fleet's own: tests and the demo)."""
    hub_process: subprocess.Popen[bytes] | None = None
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    sim: SimProcess | None = None
    """``edgefleet sim``, running simulated sites, if started."""
    sites: dict[str, Site] = field(default_factory=dict)
    _logs: list[object] = field(default_factory=list)

    @property
    def hub_url(self) -> str:
        """The hub's base URL."""
        return f"http://{self.hub_host}:{self.hub_port}"

    def client(self, token: str | None = None) -> Client:
        """A client of this fleet's hub, as its admin unless given another ``token``."""
        return Client(self.hub_url, token=token or self.admin_token)

    @property
    def headers(self) -> dict[str, str]:
        """The admin's Authorization header, for raw HTTP calls to the hub."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    @property
    def db_url(self) -> str:
        """The hub's database."""
        return self.db or f"sqlite:///{self.workdir / 'hub.db'}"

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        inherited = dict(os.environ, PYTHONUNBUFFERED="1")
        # The fleet's agents join with their own site's token, never an inherited one.
        inherited.pop("EDGEFLEET_TOKEN", None)
        env = {**inherited, **(env or {})}
        return subprocess.Popen(
            [self.python, "-m", "edgefleet", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def start_hub(self, *, timeout: float = 30.0) -> None:
        """Start the hub and wait until it answers."""
        if not port_free(self.hub_host, self.hub_port):
            raise RuntimeError(
                f"{self.hub_host}:{self.hub_port} is in use: stop what listens there "
                "(another demo?) or choose another port"
            )
        db = self.db_url
        if self.admin_token is None:
            from edgefleet.hub.accounts import bootstrap_admin

            self.workdir.mkdir(parents=True, exist_ok=True)
            self.admin_token = bootstrap_admin(db)
        self.hub_process = self._spawn(
            "hub",
            [
                "hub",
                "serve",
                "--insecure-http",
                "--db",
                db,
                "--listen",
                f"{self.hub_host}:{self.hub_port}",
                "--heartbeat-grace",
                str(self.heartbeat_grace),
                "--dns-listen",
                f"{self.hub_host}:{self.dns_port}",
                "--placement-resync",
                str(self.placement_resync),
                "--demand-tau",
                str(self.demand_tau),
                *self.hub_args,
            ],
        )
        process = self.hub_process

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"hub exited with {process.returncode}; see {self.workdir}/hub.log"
                )
            return httpx.get(f"{self.hub_url}/healthz", timeout=1.0).status_code == 200

        wait_for(up, timeout=timeout, what="the hub to answer")

    def stop_hub(self, sig: int = signal.SIGTERM) -> None:
        """Stop (or kill, with SIGKILL) the hub."""
        if self.hub_process is not None:
            _end(self.hub_process, sig)
            self.hub_process = None

    def start_agent(self, site: Site, *, timeout: float = 30.0) -> None:
        """Start the agent of ``site`` and wait until its local API answers."""
        self.start_agents([site], timeout=timeout)

    def start_agents(self, sites: list[Site], *, timeout: float = 30.0) -> None:
        """Start several agents at once, then wait until every one answers."""
        waits = [self._spawn_agent(site) for site in sites]
        for up, name in waits:
            wait_for(up, timeout=timeout, what=f"agent {name} to answer")

    def _spawn_agent(self, site: Site) -> tuple[Callable[[], bool], str]:
        name = site.metadata.name
        self.sites[name] = site
        address = site.spec.addresses.ip
        port = site.spec.addresses.ingress_port
        state_dir = self.workdir / "sites" / name
        env = {}
        if not (state_dir / "credential.json").exists():
            # First start: the site joins with a one-time token; restarts (even with the hub
            # away) use the credential it got.
            env["EDGEFLEET_JOIN_TOKEN"] = self.join_token(name)
        process = self._spawn(
            f"agent-{name}",
            [
                "agent",
                "--site",
                name,
                "--hub",
                self.hub_url,
                "--address",
                address,
                "--api-port",
                str(port),
                "--state-dir",
                str(self.workdir / "sites" / name),
                "--heartbeat-interval",
                str(self.heartbeat_interval),
                "--dns-port",
                str(site.spec.addresses.dns_port),
                "--demand-window",
                str(self.demand_window),
                *self.agent_args.get(name, []),
            ],
            env,
        )
        self.agents[name] = process

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"agent {name} exited with {process.returncode}; "
                    f"see {self.workdir}/agent-{name}.log"
                )
            url = f"http://{address}:{port}/_edgefleet/healthz"
            return httpx.get(url, timeout=1.0).status_code == 200

        return up, name

    def start_sim(
        self, sites: int, *, prefix: str, start_over: float, timeout: float = 60.0
    ) -> SimProcess:
        """Run ``sites`` simulated sites in one ``edgefleet sim`` process, as the admin, once
        its control API answers.

        The sites must exist on the hub, named as ``edgefleet.sim.world_sites`` names them with
        ``prefix``; the process makes their join tokens. It is a process of its own so that its
        thousands of connections and its CPU stay apart from whoever started it.
        """
        if self.admin_token is None:
            raise RuntimeError("start the hub before the simulated sites: they need its admin")
        sim = SimProcess.start(
            hub=self.hub_url,
            token=self.admin_token,
            sites=sites,
            log=self.workdir / "sim.log",
            prefix=prefix,
            start_over=start_over,
            extra=["--no-create"],
        )
        self.sim = sim
        wait_for(sim.up, timeout=timeout, what="the simulated sites' control API to answer")
        return sim

    def stop_sim(self) -> None:
        """Stop the simulated sites (their links end; the hub sees them go silent)."""
        if self.sim is not None:
            self.sim.stop()
            self.sim = None

    def site_headers(self, name: str) -> dict[str, str]:
        """A site's own credential as an Authorization header (any site's agent API takes it)."""
        saved = json.loads((self.workdir / "sites" / name / "credential.json").read_text())
        return {"Authorization": f"Bearer {saved['credential']}"}

    def join_token(self, site: str) -> str:
        """A one-time join token for ``site`` (which must exist on the hub)."""
        with self.client() as client:
            return client.join_token(site).token

    def site_credential(self, site: str) -> str:
        """Join ``site`` as its agent would, without running one: a new join token traded at
        the hub for the site's credential (which revokes the site's earlier ones)."""
        reply = httpx.post(
            f"{self.hub_url}/api/v1/agent/join",
            json={"site": site},
            headers={"Authorization": f"Bearer {self.join_token(site)}"},
            timeout=10,
        )
        if reply.status_code != 200:
            raise RuntimeError(f"site {site} could not join: {reply.status_code} {reply.text}")
        credential: str = reply.json()["credential"]
        return credential

    def stop_agent(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop (SIGTERM: replicas keep running) or kill (SIGKILL) a site's agent."""
        process = self.agents.pop(name, None)
        if process is not None:
            _end(process, sig)

    def stop_replicas(self, name: str) -> None:
        """Stop every replica of a site whose agent is gone (teardown)."""
        site = self.sites[name]
        driver = ProcessDriver(
            name, self.workdir / "sites" / name / "process", site.spec.addresses.ip
        )
        driver.start(lambda: None)
        driver.stop_all()

    def stop(self) -> None:
        """End the simulated sites, every agent (and its replicas) and the hub."""
        self.stop_sim()
        for name in list(self.agents):
            self.stop_agent(name)
        for name in list(self.sites):
            with contextlib.suppress(Exception):
                self.stop_replicas(name)
        self.stop_hub()
        for log in self._logs:
            log.close()  # type: ignore[attr-defined]
        self._logs.clear()

    @contextlib.contextmanager
    def running(self) -> Iterator[LocalFleet]:
        """``with fleet.running():`` stops everything on the way out."""
        try:
            yield self
        finally:
            self.stop()


def _end(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class SimProcess:
    """One ``edgefleet sim`` process (see the module)."""

    process: subprocess.Popen[bytes]
    control: str
    """Base URL of its control API (loopback)."""
    sites: int
    log: Path
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @classmethod
    def start(
        cls,
        *,
        hub: str,
        token: str,
        sites: int,
        log: Path,
        prefix: str = "sim-",
        seed: int = 7,
        ready_delay: float = 0.5,
        start_over: float | None = None,
        extra: list[str] | None = None,
    ) -> SimProcess:
        """Start ``sites`` simulated sites against ``hub``: the process creates them with
        ``token`` (an admin's or operator's), makes their join tokens and joins them."""
        port = free_port()
        env = dict(os.environ, EDGEFLEET_HUB=hub, EDGEFLEET_TOKEN=token)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edgefleet",
                    "sim",
                    "--sites",
                    str(sites),
                    "--prefix",
                    prefix,
                    "--seed",
                    str(seed),
                    "--ready-delay",
                    str(ready_delay),
                    "--start-over",
                    str(max(2.0, sites / 1000) if start_over is None else start_over),
                    "--control",
                    f"127.0.0.1:{port}",
                    *(extra or []),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        return cls(process=process, control=f"http://127.0.0.1:{port}", sites=sites, log=log)

    def _failed(self) -> RuntimeError:
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        return RuntimeError(f"the simulator exited with {self.process.returncode}:\n{tail}")

    def up(self) -> bool:
        """Whether the control API answers (an error if the process ended)."""
        if self.process.poll() is not None:
            raise self._failed()
        try:
            return self._http.get(f"{self.control}/stats", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_joined(self, timeout: float) -> dict[str, Any]:
        """Wait until every running site holds its credential; the stats then."""
        deadline = time.monotonic() + timeout
        while True:
            if self.up():
                stats = self.stats()
                if stats["joined"] >= stats["running"] == self.sites:
                    return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"the simulated sites did not join in {timeout}s ({self.log})")
            time.sleep(0.5)

    def stats(self) -> dict[str, Any]:
        """``GET /stats``: sites, joined, replicas, ready, memory, routing updates taken."""
        reply = self._http.get(f"{self.control}/stats")
        reply.raise_for_status()
        stats: dict[str, Any] = reply.json()
        return stats

    def names(self) -> list[str]:
        reply = self._http.get(f"{self.control}/sites")
        reply.raise_for_status()
        names: list[str] = reply.json()
        return names

    def kill(self, sites: list[str]) -> list[str]:
        """Stop these sites now (their agents go silent)."""
        reply = self._http.post(f"{self.control}/kill", json={"sites": sites})
        reply.raise_for_status()
        killed: list[str] = reply.json()["killed"]
        return killed

    def revive(self, sites: list[str]) -> list[str]:
        reply = self._http.post(f"{self.control}/revive", json={"sites": sites})
        reply.raise_for_status()
        revived: list[str] = reply.json()["revived"]
        return revived

    def fail(self, app: str, sites: list[str], failing: bool = True) -> list[str]:
        """Make ``app``'s (``tenant/app``) replicas fail at ``sites`` (or recover)."""
        reply = self._http.post(
            f"{self.control}/fail", json={"app": app, "sites": sites, "failing": failing}
        )
        reply.raise_for_status()
        named: list[str] = reply.json()["sites"]
        return named

    def stop(self) -> None:
        """Interrupt the process (its sites stop) and wait for it."""
        self._http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
