"""The test bed: a fleet with real network distance on one machine, and the faults it must survive.

``up`` makes one network namespace per site, per client region and for the hub, starts the WAN
emulator (``edgefleet.testbed.wan``: one TUN per namespace, every packet delayed by the distance
of its pair), the hub in its namespace and every site's agent in the site's, each on its own
address, and declares the sites at the hub. The operator reaches the hub over a management link
(a veth pair with a /30, nothing else routed), the only path into the test bed that does not go
through the emulator. Everything is recorded in ``<workdir>/testbed.json``, so ``down`` and
``fault`` work from another process (the CLI) as well as from the ``Testbed`` that made it.

Processes are started in their own sessions with their output in ``<workdir>/logs/``, so they
outlive the command that started them. ``down`` kills every process in the namespaces, then
removes the namespaces and the management link; ``up`` on a test bed that runs does nothing, and
on the leftovers of one that died first cleans them up.

Faults (``edgefleet testbed fault ...``): kill a site (every process in its namespace: agent and
replicas), kill the hub, start either again, cut a site from the hub or from everything, change a
link's delay or loss, restart an agent (replicas keep running), reboot a site (everything killed,
then the agent started again, optionally with the hub cut off first).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import httpx

from edgefleet import waiting
from edgefleet.agent.drivers.process import proc_stat
from edgefleet.client import Client
from edgefleet.client.hub import verify_with
from edgefleet.hub.accounts import bootstrap_admin
from edgefleet.hub.tls import HubPki, init_pki
from edgefleet.model import SitePhase
from edgefleet.testbed import netns
from edgefleet.testbed.topology import (
    ANYCAST_DNS,
    DNS_PORT,
    HUB_ADDRESS,
    HUB_PORT,
    INGRESS_PORT,
    MANAGEMENT_HUB,
    MANAGEMENT_LOCAL,
    Topology,
    parse_topology,
)
from edgefleet.testbed.wan import WanControl

T = TypeVar("T")

STATE_FILE = "testbed.json"
ADMIN_TOKEN_FILE = "admin-token"
"""The admin token of the test bed's hub, made on first `up` (mode 0600)."""
"""The record of a test bed in its workdir."""
MANAGEMENT_DEVICE = "efmgmt0"
"""This side of the management link to the hub's namespace."""
DEFAULT_PREFIX = "ef-"
"""Prefix of every namespace the test bed makes."""


class TestbedError(RuntimeError):
    """The test bed cannot do what was asked; the message says why and what to do."""


def wait_for(
    condition: Callable[[], T | bool | None], *, timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll ``condition`` until truthy; TestbedError naming ``what`` after ``timeout``."""
    return waiting.wait_for(
        condition, timeout=timeout, what=what, interval=interval, error=TestbedError
    )


def _alive(pid: int | None) -> bool:
    """True if the process runs (a zombie does not)."""
    if not pid:
        return False
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


@dataclass
class Testbed:
    """One test bed: its topology, its workdir, and the processes it runs."""

    __test__ = False  # not a pytest test class, whatever its name

    workdir: Path
    """Where the record, the logs, the hub's database and the sites' state live."""
    topology: Topology
    """What to build."""
    prefix: str = DEFAULT_PREFIX
    """Prefix of the namespaces' names."""
    python: str = sys.executable
    """Interpreter that runs the hub, the agents, the emulator and the load clients."""
    db: str | None = None
    """The hub's database URL; default SQLite in the workdir."""
    heartbeat_interval: float = 1.0
    """Seconds between an agent's heartbeats."""
    heartbeat_grace: float = 3.0
    """Seconds without heartbeat before the hub calls a site Unreachable."""
    agent_options: tuple[str, ...] = ()
    """More options for every agent (e.g. ``--demand-window 2``)."""
    hub_options: tuple[str, ...] = ()
    """More options for the hub."""
    pids: dict[str, int] = field(default_factory=dict)
    """Process ids by role: ``wan``, ``hub``, ``agent:<site>``."""
    _children: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    # -- names -----------------------------------------------------------------------------

    @property
    def hub_netns(self) -> str:
        """The hub's namespace."""
        return f"{self.prefix}hub"

    def site_netns(self, site: str) -> str:
        """A site's namespace."""
        return self.prefix + self.topology.site(site).netns

    def client_netns(self, region: str) -> str:
        """A client region's namespace."""
        return self.prefix + self.topology.client(region).netns

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of this test bed."""
        return (
            [self.hub_netns]
            + [self.prefix + s.netns for s in self.topology.sites]
            + [self.prefix + c.netns for c in self.topology.clients]
        )

    @property
    def hub_url(self) -> str:
        """The hub's API (HTTPS) over the management link."""
        return f"https://{MANAGEMENT_HUB}:{HUB_PORT}"

    @property
    def pki(self) -> HubPki:
        """The test bed hub's CA and certificate (``hub init``'s files)."""
        return HubPki(self.workdir / "pki")

    @property
    def admin_token(self) -> str:
        """The admin token made when the test bed first came up."""
        path = self.workdir / ADMIN_TOKEN_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise TestbedError(f"no admin token in {path}: run `edgefleet testbed up`") from None

    @property
    def control_path(self) -> Path:
        """The WAN emulator's control socket."""
        return self.workdir / "wan.sock"

    def client(self) -> Client:
        """A client of the hub (over the management link), as its admin."""
        return Client(self.hub_url, token=self.admin_token, ca=str(self.pki.ca_cert))

    def wan(self) -> WanControl:
        """The WAN emulator's control."""
        return WanControl(self.control_path)

    # -- record ----------------------------------------------------------------------------

    def save(self) -> None:
        """Write the record (topology, options, process ids) atomically."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        record = {
            "topology": self.topology.to_json(),
            "prefix": self.prefix,
            "python": self.python,
            "db": self.db,
            "heartbeatInterval": self.heartbeat_interval,
            "heartbeatGrace": self.heartbeat_grace,
            "agentOptions": list(self.agent_options),
            "hubOptions": list(self.hub_options),
            "pids": self.pids,
        }
        tmp = self.workdir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(self.workdir / STATE_FILE)

    @classmethod
    def load(cls, workdir: Path) -> Testbed:
        """The test bed recorded in ``workdir``; TestbedError if there is none."""
        path = workdir / STATE_FILE
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            raise TestbedError(
                f"no test bed in {workdir} (no {STATE_FILE}): run `edgefleet testbed up`"
            ) from None
        except (OSError, ValueError) as exc:
            raise TestbedError(f"{path}: unreadable test bed record: {exc}") from exc
        return cls(
            workdir=workdir,
            topology=parse_topology(record["topology"], str(path)),
            prefix=record["prefix"],
            python=record["python"],
            db=record["db"],
            heartbeat_interval=record["heartbeatInterval"],
            heartbeat_grace=record["heartbeatGrace"],
            agent_options=tuple(record["agentOptions"]),
            hub_options=tuple(record["hubOptions"]),
            pids={k: int(v) for k, v in record["pids"].items()},
        )

    # -- processes -------------------------------------------------------------------------

    def _spawn(
        self,
        role: str,
        namespace: str | None,
        argv: list[str],
        env: dict[str, str] | None = None,
    ) -> int:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        command = argv if namespace is None else netns.exec_args(namespace, argv)
        with open(logs / f"{role.replace(':', '-')}.log", "ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
                start_new_session=True,
            )
        self._children[process.pid] = process
        self.pids[role] = process.pid
        self.save()
        return process.pid

    def _reap(self) -> None:
        for pid, process in list(self._children.items()):
            if process.poll() is not None:
                del self._children[pid]

    def alive(self, role: str) -> bool:
        """True if the process of ``role`` runs."""
        self._reap()
        return _alive(self.pids.get(role))

    def _signal(self, role: str, sig: signal.Signals, *, wait: float = 15.0) -> None:
        pid = self.pids.pop(role, None)
        self.save()
        if pid is None or not _alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.02)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                self._reap()
                time.sleep(0.02)
        self._reap()

    # -- up and down -----------------------------------------------------------------------

    def is_up(self) -> bool:
        """True if the emulator, the hub and every agent run."""
        roles = ["wan", "hub"] + [f"agent:{s}" for s in self.topology.site_names]
        return all(self.alive(role) for role in roles)

    def up(self, *, timeout: float = 90.0) -> None:
        """Build the test bed and start everything (nothing when it already runs)."""
        reason = netns.unavailable()
        if reason:
            raise TestbedError(f"the test bed cannot run here: {reason}")
        if (self.workdir / STATE_FILE).exists():
            previous = Testbed.load(self.workdir)
            if previous.is_up() and previous.topology == self.topology:
                self.pids = previous.pids
                return
            previous.down()
        self.down()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pids = {}
        self.save()
        for name in self.namespaces:
            netns.add(name)
            # Hosts at a site resolve at the nearest edge DNS, as the site's clients do.
            netns.set_resolver(name, ANYCAST_DNS)
        for site in self.topology.sites:
            netns.add_address(self.prefix + site.netns, "lo", f"{ANYCAST_DNS}/32")
        netns.veth(
            self.hub_netns,
            local=MANAGEMENT_DEVICE,
            local_cidr=f"{MANAGEMENT_LOCAL}/30",
            peer="mgmt0",
            peer_cidr=f"{MANAGEMENT_HUB}/30",
        )
        self.start_wan(timeout=timeout)
        self._init_hub()
        self.start_hub(timeout=timeout)
        with self.client() as client:
            for manifest in self.topology.site_manifests():
                client.apply(manifest)
        for name in self.topology.site_names:
            self.start_agent(name, wait=False)
        self.wait_sites_ready(timeout=timeout)

    def down(self) -> None:
        """Stop everything and remove every namespace and link the test bed made."""
        if self.pids.get("wan") and _alive(self.pids["wan"]):
            with contextlib.suppress(OSError, TestbedError):
                self.wan().stop()
        for role in list(self.pids):
            self._signal(role, signal.SIGKILL, wait=5.0)
        listed = netns.ip("netns", "list", check=False).stdout.split("\n")
        ours = {line.split()[0] for line in listed if line.startswith(self.prefix)}
        for name in sorted(ours | {n for n in self.namespaces if netns.exists(n)}):
            netns.delete(name)
        netns.remove_link(MANAGEMENT_DEVICE)
        with contextlib.suppress(FileNotFoundError):
            self.control_path.unlink()
        for process in self._children.values():  # killed above, with their namespaces
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        self._children.clear()
        self.pids = {}
        if self.workdir.exists():
            self.save()

    def start_wan(self, *, timeout: float = 30.0) -> None:
        """Start the WAN emulator and wait until its control socket answers."""
        config = self.workdir / "wan.json"
        config.write_text(json.dumps(self.topology.wan_config(self.prefix), indent=2) + "\n")
        with contextlib.suppress(FileNotFoundError):
            self.control_path.unlink()
        self._spawn(
            "wan",
            None,
            [
                self.python,
                "-m",
                "edgefleet.testbed.wan",
                "--config",
                str(config),
                "--control",
                str(self.control_path),
            ],
        )

        def ready() -> bool:
            if not self.alive("wan"):
                raise TestbedError(
                    f"the WAN emulator exited; see {self.workdir / 'logs' / 'wan.log'}"
                )
            return bool(self.wan().stats())

        wait_for(ready, timeout=timeout, what="the WAN emulator", interval=0.1)

    def _init_hub(self) -> None:
        """What ``edgefleet hub init`` does: the CA, the hub's certificate, an admin token."""
        init_pki(self.pki.dir, ["localhost", HUB_ADDRESS, MANAGEMENT_HUB])
        path = self.workdir / ADMIN_TOKEN_FILE
        if not path.exists():
            token = bootstrap_admin(self.db or f"sqlite:///{self.workdir / 'hub.db'}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(token + "\n")

    def start_hub(self, *, timeout: float = 30.0) -> None:
        """Start the hub in its namespace and wait until it answers."""
        db = self.db or f"sqlite:///{self.workdir / 'hub.db'}"
        self._spawn(
            "hub",
            self.hub_netns,
            [
                self.python,
                "-m",
                "edgefleet",
                "hub",
                "serve",
                "--tls-dir",
                str(self.pki.dir),
                "--db",
                db,
                "--listen",
                f"0.0.0.0:{HUB_PORT}",
                "--dns-listen",
                f"{HUB_ADDRESS}:{DNS_PORT}",
                "--heartbeat-grace",
                str(self.heartbeat_grace),
                *self.hub_options,
            ],
        )

        def answers() -> bool:
            if not self.alive("hub"):
                raise TestbedError(f"the hub exited; see {self.workdir / 'logs' / 'hub.log'}")
            reply = httpx.get(
                f"{self.hub_url}/healthz", timeout=1.0, verify=verify_with(self.pki.ca_cert)
            )
            return reply.status_code == 200

        wait_for(answers, timeout=timeout, what="the hub to answer")

    def kill_hub(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Stop the hub (SIGKILL by default: a crash)."""
        self._signal("hub", sig)
        netns.kill_all(self.hub_netns, signal.SIGKILL)

    def agent_argv(self, site: str) -> list[str]:
        """The command line of a site's agent."""
        plan = self.topology.site(site)
        return [
            self.python,
            "-m",
            "edgefleet",
            "agent",
            "--site",
            site,
            "--hub",
            f"https://{HUB_ADDRESS}:{HUB_PORT}",
            "--hub-ca",
            str(self.pki.ca_cert),
            "--address",
            plan.address,
            "--api-port",
            str(INGRESS_PORT),
            "--dns-port",
            str(DNS_PORT),
            "--dns-anycast",
            ANYCAST_DNS,
            "--state-dir",
            str(self.workdir / "sites" / site),
            "--heartbeat-interval",
            str(self.heartbeat_interval),
            *self.agent_options,
        ]

    def start_agent(self, site: str, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Start a site's agent in its namespace; with ``wait``, until its DNS answers."""
        env = {}
        if not (self.workdir / "sites" / site / "credential.json").exists():
            # First start: the site joins with a one-time token; later starts (even with the
            # hub away) use the credential it got.
            with self.client() as client:
                env["EDGEFLEET_JOIN_TOKEN"] = client.join_token(site).token
        self._spawn(f"agent:{site}", self.site_netns(site), self.agent_argv(site), env)
        if wait:
            self.wait_agent(site, timeout=timeout)

    def wait_agent(self, site: str, *, timeout: float = 30.0) -> None:
        """Wait until the site's agent answers DNS at the site's address."""
        plan = self.topology.site(site)

        def answers() -> bool:
            if not self.alive(f"agent:{site}"):
                raise TestbedError(
                    f"agent {site} exited; see {self.workdir / 'logs' / f'agent-{site}.log'}"
                )
            return self.dns_query(site, plan.address, "edge.internal", kind="SOA") is not None

        wait_for(answers, timeout=timeout, what=f"agent {site} to answer DNS")

    def wait_sites_ready(self, *, timeout: float = 60.0) -> None:
        """Wait until the hub sees every site Ready."""

        def ready() -> bool:
            with self.client() as client:
                sites = client.list_sites()
            return len(sites) >= len(self.topology.sites) and all(
                s.status.phase == SitePhase.READY for s in sites
            )

        wait_for(ready, timeout=timeout, what="every site to be Ready at the hub", interval=0.25)

    def stop_agent(self, site: str, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop a site's agent only (its replicas keep running: they are in their own sessions)."""
        self._signal(f"agent:{site}", sig)

    def kill_site(self, site: str) -> int:
        """Kill every process of the site (agent and replicas) at once; returns how many."""
        self.pids.pop(f"agent:{site}", None)
        self.save()
        killed = netns.kill_all(self.site_netns(site), signal.SIGKILL)
        self._reap()
        return killed

    def restart_agent(self, site: str, *, timeout: float = 30.0) -> None:
        """Stop the agent (SIGTERM: replicas keep running) and start it again."""
        self.stop_agent(site)
        self.start_agent(site, timeout=timeout)

    def reboot_site(self, site: str, *, cut_hub: bool = False, timeout: float = 30.0) -> None:
        """Everything at the site dies; then its agent starts again (optionally cut from the hub
        first, so it comes back from its local cache alone)."""
        self.kill_site(site)
        if cut_hub:
            self.wan().cut(site, "hub")
        self.start_agent(site, timeout=timeout)

    # -- asking, as a client ---------------------------------------------------------------

    def node_netns(self, node: str) -> str:
        """The namespace of a WAN node: ``hub``, a site, or ``clients-<region>``."""
        if node == "hub":
            return self.hub_netns
        if node.startswith("clients-"):
            return self.client_netns(node.removeprefix("clients-"))
        return self.site_netns(node)

    def dns_query(
        self,
        node: str,
        server: str,
        name: str,
        *,
        kind: str = "A",
        port: int = DNS_PORT,
        timeout: float = 1.0,
    ) -> list[str] | None:
        """Ask ``server`` from inside ``node``'s namespace; the answered records, None if silent."""
        query = dns.message.make_query(name, dns.rdatatype.from_text(kind))
        with netns.socket_in(self.node_netns(node), socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)  # dnspython waits with select on a socket it is given
            try:
                reply = dns.query.udp(query, server, port=port, timeout=timeout, sock=sock)
            except (OSError, dns.exception.DNSException):
                return None
        return [r.to_text() for rrset in reply.answer for r in rrset]

    def http_get(
        self,
        node: str,
        address: str,
        path: str,
        *,
        port: int = INGRESS_PORT,
        host: str | None = None,
        timeout: float = 2.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """``GET path`` at ``address:port`` from inside ``node``'s namespace: status, headers
        (lower-case names), body. OSError when no connection can be made."""
        sock = netns.socket_in(self.node_netns(node), socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
            connection = http.client.HTTPConnection(address, port, timeout=timeout)
            connection.sock = sock
            connection.request("GET", path, headers={"Host": host or address})
            reply = connection.getresponse()
            body = reply.read()
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, body
        finally:
            sock.close()

    def ready_at(self, site: str, *, node: str | None = None) -> dict[str, int] | None:
        """Ready replicas per ``tenant/app`` that the site's agent says it has (its health
        answer, as neighbours probe it), asked from ``node`` (default: the site itself); None
        when it does not answer."""
        plan = self.topology.site(site)
        try:
            status, _, body = self.http_get(node or site, plan.address, "/_edgefleet/healthz")
        except OSError:
            return None
        if status != 200:
            return None
        ready: dict[str, int] = json.loads(body).get("ready", {})
        return ready

    def running_replicas(self, site: str) -> dict[str, tuple[int, int]]:
        """Replica processes alive at the site: replica id -> (pid, start time in clock ticks),
        from the process driver's records; a restarted replica shows a new pair."""
        folder = self.workdir / "sites" / site / "process" / "replicas"
        out: dict[str, tuple[int, int]] = {}
        if not folder.is_dir():
            return out
        for record_path in sorted(folder.glob("*/replica.json")):
            try:
                record = json.loads(record_path.read_text())
                pid, ticks = int(record["pid"]), int(record["start_ticks"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being written, or a replica without a process right now
            stat = proc_stat(pid)
            if stat is not None and stat[0] != "Z" and stat[1] == ticks:
                out[str(record["id"])] = (pid, ticks)
        return out

    # -- load ------------------------------------------------------------------------------

    def start_load(
        self,
        region: str,
        *,
        app: str,
        rps: float,
        tenant: str = "demo",
        duration: float | None = None,
        work_ms: int | None = None,
        out: Path | None = None,
    ) -> LoadRun:
        """Start steady load from a client region (a process in its namespace)."""
        out = out or self.workdir / "load" / f"{region}-{time.time_ns()}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            self.python,
            "-m",
            "edgefleet.testbed.loadclient",
            "--app",
            app,
            "--tenant",
            tenant,
            "--rps",
            str(rps),
            "--out",
            str(out),
        ]
        if duration is not None:
            argv += ["--duration", str(duration)]
        if work_ms is not None:
            argv += ["--work", str(work_ms)]
        role = f"load:{region}:{out.stem}"
        pid = self._spawn(role, self.client_netns(region), argv)
        return LoadRun(region=region, out=out, process=self._children[pid], role=role, bed=self)

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What runs: per role, the pid and whether it is alive; the emulator's counters."""
        roles = {role: {"pid": pid, "alive": self.alive(role)} for role, pid in self.pids.items()}
        wan: dict[str, Any] | None = None
        if self.alive("wan"):
            with contextlib.suppress(OSError, TestbedError, ValueError):
                wan = self.wan().stats()
        return {"workdir": str(self.workdir), "hub": self.hub_url, "processes": roles, "wan": wan}

    @contextlib.contextmanager
    def running(self, *, timeout: float = 90.0) -> Iterator[Testbed]:
        """``with bed.running():`` up on the way in, down on the way out."""
        try:
            self.up(timeout=timeout)
            yield self
        finally:
            self.down()


@dataclass
class LoadRun:
    """Load from one client region: a process writing one JSON line per second."""

    region: str
    """The client region."""
    out: Path
    """Its JSON-lines file."""
    process: subprocess.Popen[bytes]
    """The load client."""
    role: str
    """Its role in the test bed's record."""
    bed: Testbed
    """The test bed it runs in."""

    def ticks(self) -> list[dict[str, Any]]:
        """Seconds recorded so far (each with its wall-clock time ``at``)."""
        return [line["tick"] for line in self._lines() if "tick" in line]

    def _lines(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        lines = []
        for raw in self.out.read_text().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
        return lines

    def stop(self, *, timeout: float = 30.0) -> dict[str, Any]:
        """End the run (SIGTERM) and return its summary."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout=timeout)

    def wait(self, *, timeout: float = 120.0) -> dict[str, Any]:
        """Wait for the run to end; its summary."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.bed.pids.pop(self.role, None)
        self.bed.save()
        for line in reversed(self._lines()):
            if "summary" in line:
                summary: dict[str, Any] = line["summary"]
                return summary
        log = self.bed.workdir / "logs" / f"{self.role.replace(':', '-')}.log"
        raise TestbedError(f"load from {self.region} ended without a summary; see {log}")
