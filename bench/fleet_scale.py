"""A fleet of 1,000 to 10,000 simulated sites against real hub processes, measured.

Each size runs on a new database: the hub (``edgefleet hub serve``, one process, or ``--hubs``
processes on one PostgreSQL) and ``edgefleet sim`` (one process per hub, its sites speaking the
agents' protocol over loopback) start, and the bench measures, as an operator would see it:

- **register**: from starting the simulator (which creates the sites in bulk, makes their join
  tokens and joins them) until the hub counts every site Ready;
- **steady**: hub CPU (% of one core) and RSS over ``--steady`` seconds of heartbeats;
- **API**: p50/p99 of ``GET`` one app, ``GET`` a page of 100 sites, ``PUT`` one site and
  ``PUT`` one app, ``--calls`` each, one after another, while the fleet heartbeats;
- **rollout**: from applying an app that runs one replica at every site (``replicasPerSite``)
  until the hub counts it ready at 50 %, 99 % and 100 % of the sites;
- **failover**: from killing 1 % of the sites (picked among those running an app of
  ``replicas: N/20``) until the hub marks them Unreachable and until their replicas run ready
  elsewhere;
- **routing**: bytes of a site's share of the routing table sent per agent for one change (a
  site's address), and the agents told, next to the whole table each agent was sent before;
- **per-event hub CPU**: ms of hub CPU per heartbeat (steady CPU over heartbeats), per ``PUT``
  of a site and of an app (net of the steady load), per site of the rollout;
- **simulator**: its memory per site.

The first size is the reference the others are compared with, in the same run. With ``--hubs``
above 1 (PostgreSQL only) each hub's CPU and RSS is printed, and at the end the leader is killed
(SIGKILL) under load: the time until another hub leads the controllers and places a change, and
whether any site lost its desired state (a simulated site's replicas falling), are printed; the
killed hub is then started again, as a supervisor would.

    .venv/bin/python bench/fleet_scale.py [--sizes 1000,3000,10000] [--db sqlite,postgresql]
        [--hubs 1] [--postgres URL]

PostgreSQL: ``make postgres`` starts the test server; its URL is read from
EDGEFLEET_TEST_POSTGRES (``--postgres`` overrides it). A database is made per size and dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.hub.health import heartbeat_interval
from edgefleet.localfleet import LocalFleet, SimProcess, free_port, scratch_database

TARGETS = {
    "hub_cpu": 50.0,
    "api_p99_ms": 250.0,
    "ready99_s": 5.0,
    "ready100_s": 10.0,
    "rss_mib": 1024.0,
    "detect_s": 30.0,
    "sim_kib": 100.0,
    "agent_mib": 60.0,
}
TENANT = "bench"
EVERYWHERE = "everywhere"
SPREAD = "spread"
HEARTBEAT_RATE = 1000.0
"""The hub's default (``HubConfig.heartbeat_rate``): how many beats a second it asks for."""


# -- processes ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB."""
    with open(f"/proc/{pid}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def wait(check: Callable[[], bool], timeout: float, every: float = 0.2) -> float | None:
    """Seconds until ``check`` holds, or None after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(every)
    return None


def routing_quiet(sims: list[SimProcess], size: int, timeout: float = 180.0) -> float | None:
    """Seconds until the simulated sites take no routing update for as long as the hub may hold
    one back (``SiteShares.every``: a site's deltas come at most once in size / 500 seconds),
    or None after ``timeout``. What is measured next (an API call's CPU, the bytes of one
    change) is then not measured on top of the tail of what came before."""
    hold = max(3.0, size / 500 + 1.0)
    started = time.monotonic()
    last = sum(s.stats()["routes_taken"] for s in sims)
    still_since = started
    while time.monotonic() - started < timeout:
        time.sleep(1.0)
        now = sum(s.stats()["routes_taken"] for s in sims)
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= hold:
            return time.monotonic() - started
    return None


# -- the hub, seen through its API ------------------------------------------------------------


class Api:
    """Timed calls to a hub as its admin."""

    def __init__(self, hub: LocalFleet) -> None:
        self.http = httpx.Client(base_url=hub.hub_url, headers=hub.headers, timeout=60)

    def close(self) -> None:
        self.http.close()

    def sites(self) -> list[dict[str, Any]]:
        """Every site, paged as the CLI pages."""
        out: list[dict[str, Any]] = []
        token = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if token:
                params["continue"] = token
            reply = self.http.get("/api/v1/sites", params=params)
            reply.raise_for_status()
            body = reply.json()
            out.extend(body["items"])
            token = body.get("metadata", {}).get("continue")
            if not token:
                return out

    def ready_sites(self) -> int:
        return sum(s.get("status", {}).get("phase") == "Ready" for s in self.sites())

    def app(self, name: str) -> dict[str, Any]:
        reply = self.http.get(f"/api/v1/tenants/{TENANT}/apps/{name}")
        reply.raise_for_status()
        app: dict[str, Any] = reply.json()
        return app

    def put_app(self, name: str, placement: dict[str, Any], note: str = "") -> None:
        body = {
            "apiVersion": "edgefleet.io/v1alpha1",
            "kind": "App",
            "metadata": {"name": name, "tenant": TENANT, "annotations": {"bench/note": note}},
            "spec": {
                "workload": {"type": "container", "image": "registry.local/bench:1"},
                "placement": placement,
                "scaling": {"maxReplicas": 100_000},
            },
        }
        reply = self.http.put(f"/api/v1/tenants/{TENANT}/apps/{name}", json=body)
        reply.raise_for_status()

    def ensure_tenant(self) -> None:
        body = {
            "apiVersion": "edgefleet.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": TENANT},
        }
        reply = self.http.put(f"/api/v1/tenants/{TENANT}", json=body)
        if reply.status_code not in (200, 201):
            raise RuntimeError(f"tenant {TENANT}: {reply.status_code} {reply.text}")

    def site(self, name: str) -> dict[str, Any]:
        reply = self.http.get(f"/api/v1/sites/{name}")
        reply.raise_for_status()
        site: dict[str, Any] = reply.json()
        return site

    def put_site(self, site: dict[str, Any]) -> None:
        body = {k: site[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in site}
        body["metadata"] = {
            k: v for k, v in site["metadata"].items() if k in ("name", "labels", "annotations")
        }
        reply = self.http.put(f"/api/v1/sites/{site['metadata']['name']}", json=body)
        reply.raise_for_status()


def quantiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 of ``samples`` (ms)."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# -- one run ----------------------------------------------------------------------------------


@dataclass
class Row:
    size: int
    db: str
    hubs: int
    register_s: float | None = None
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    api: dict[str, tuple[float, float]] = field(default_factory=dict)
    api_cpu_ms: dict[str, float] = field(default_factory=dict)
    ready: dict[str, float | None] = field(default_factory=dict)
    rollout_cpu_ms: float | None = None
    detect_s: float | None = None
    moved_s: float | None = None
    killed: int = 0
    route_bytes: float | None = None
    route_told: int = 0
    whole_table: int = 0
    beat_cpu_ms: float | None = None
    sim_kib: float | None = None
    failover: dict[str, Any] = field(default_factory=dict)


def steady_cpu(pids: list[int], seconds: float) -> list[float]:
    before = [cpu_seconds(p) for p in pids]
    time.sleep(seconds)
    return [(cpu_seconds(p) - b) / seconds * 100 for p, b in zip(pids, before, strict=True)]


def timed(
    pid: int, baseline: float, calls: int, call: Callable[[int], object]
) -> tuple[Any, float]:
    """p50/p99 of ``calls`` calls (ms), and the hub CPU each cost (ms) net of the ``baseline``
    (% of a core) the fleet's steady load takes meanwhile."""
    samples = []
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
    spent = cpu_seconds(pid) - cpu0 - baseline / 100 * (time.monotonic() - wall0)
    return quantiles(samples), max(0.0, spent) / calls * 1000


def run(size: int, db: str, hubs: int, args: argparse.Namespace, root: Path) -> Row:
    row = Row(size=size, db=db, hubs=hubs)
    workdir = Path(tempfile.mkdtemp(prefix=f"fleet-{db}-{size}-", dir=root))
    with contextlib.ExitStack() as stack:
        url = None
        if db == "postgresql":
            url = stack.enter_context(scratch_database(args.postgres, prefix="ef_bench_"))
        fleets: list[LocalFleet] = []
        for i in range(hubs):
            fleet = LocalFleet(
                workdir=workdir / f"hub{i}",
                hub_port=free_port(),
                dns_port=free_port(),
                db=url,
                heartbeat_grace=6.0,
                admin_token=fleets[0].admin_token if fleets else None,
            )
            stack.callback(fleet.stop)
            fleet.start_hub(timeout=120)
            fleets.append(fleet)
        pids = [f.hub_process.pid for f in fleets if f.hub_process is not None]
        api = Api(fleets[0])
        stack.callback(api.close)
        api.ensure_tenant()
        # Register: the simulators create, tokenize and join their sites.
        share = [size // hubs + (i < size % hubs) for i in range(hubs)]
        started = time.monotonic()
        sims = [
            SimProcess.start(
                hub=f.hub_url,
                token=f.admin_token or "",
                sites=n,
                log=workdir / f"sim{i}.log",
                prefix=f"h{i}-",
                seed=7 + i,
                start_over=max(5.0, n / 1000),
            )
            for i, (f, n) in enumerate(zip(fleets, share, strict=True))
        ]
        for sim in sims:
            stack.callback(sim.stop)
        deadline = 60 + size / 20
        if wait(lambda: all(s.up() for s in sims), timeout=deadline, every=1.0) is None:
            raise RuntimeError(f"the simulators did not start; see {workdir}")
        if wait(lambda: api.ready_sites() >= size, timeout=deadline, every=3.0) is None:
            raise RuntimeError(f"not every site became Ready in {deadline}s; see {workdir}")
        row.register_s = time.monotonic() - started
        print(f"  {size} sites Ready after {row.register_s:.1f}s", flush=True)
        time.sleep(args.settle)
        # Steady: heartbeats and watches only.
        row.cpu = steady_cpu(pids, args.steady)
        row.rss = [rss_mib(p) for p in pids]
        beats = size / max(2.0, heartbeat_interval(size, rate=HEARTBEAT_RATE))
        row.beat_cpu_ms = sum(row.cpu) / 100 / beats * 1000
        baseline = row.cpu[0]
        stats = [s.stats() for s in sims]
        row.sim_kib = sum(s["rss_bytes"] for s in stats) / size / 1024
        # API while the fleet heartbeats.
        api.put_app(EVERYWHERE + "-probe", {"replicas": 1})
        # Every share names the probe app's one site: wait until each agent has heard of it.
        settled_in = routing_quiet(sims, size)
        print(f"  routing quiet {fmt(settled_in)} s after the probe app", flush=True)
        names = [s["metadata"]["name"] for s in api.sites()[:: max(1, size // 50)]]
        pid = pids[0]
        row.api["GET app"], row.api_cpu_ms["GET app"] = timed(
            pid, baseline, args.calls, lambda i: api.app(EVERYWHERE + "-probe")
        )
        row.api["GET page"], row.api_cpu_ms["GET page"] = timed(
            pid,
            baseline,
            args.calls,
            lambda i: api.http.get("/api/v1/sites", params={"limit": 100}).raise_for_status(),
        )
        bodies = [api.site(n) for n in names]

        def put_site(i: int) -> None:
            body = bodies[i % len(bodies)]
            body["metadata"].setdefault("labels", {})["bench"] = str(i)
            api.put_site(body)

        row.api["PUT site"], row.api_cpu_ms["PUT site"] = timed(pid, baseline, args.calls, put_site)
        row.api["PUT app"], row.api_cpu_ms["PUT app"] = timed(
            pid,
            baseline,
            args.calls,
            lambda i: api.put_app(EVERYWHERE + "-probe", {"replicas": 1}, note=str(i)),
        )
        # Rollout: one replica at every site.
        cpu0 = sum(cpu_seconds(p) for p in pids)
        started = time.monotonic()
        api.put_app(EVERYWHERE, {"replicasPerSite": 1})
        marks: dict[str, float | None] = {"50%": None, "99%": None, "100%": None}
        while time.monotonic() - started < 120 and marks["100%"] is None:
            ready = api.app(EVERYWHERE).get("status", {}).get("readyReplicas", 0)
            for label, fraction in (("50%", 0.5), ("99%", 0.99), ("100%", 1.0)):
                if marks[label] is None and ready >= fraction * size:
                    marks[label] = time.monotonic() - started
            # Reading the app composes its status at every site (10 ms at 1,000 sites, 100 at
            # 10,000): asked as often at every size, it would weigh on the hub it measures.
            time.sleep(max(0.1, size / 20_000))
        row.ready = marks
        row.rollout_cpu_ms = (sum(cpu_seconds(p) for p in pids) - cpu0) / size * 1000
        print(f"  rollout: {fmt_marks(marks)}", flush=True)
        settled_in = routing_quiet(sims, size)
        print(f"  routing quiet {fmt(settled_in)} s after the rollout", flush=True)
        # Routing: one site's address changes; its record reaches the shares that name it.
        whole = api.http.get("/api/v1/routing-table")
        row.whole_table = len(whole.content)
        window = max(1.0, size / 2000) + 3.0
        quiet0 = sum(s.stats()["routes_bytes"] for s in sims)
        taken0 = sum(s.stats()["routes_taken"] for s in sims)
        time.sleep(window)
        quiet1 = sum(s.stats()["routes_bytes"] for s in sims)
        taken1 = sum(s.stats()["routes_taken"] for s in sims)
        # A site of the fleet's common case: not the only endpoint of an app (every share
        # names the one site running the probe app, as it should).
        probe = {s["site"] for s in api.app(EVERYWHERE + "-probe")["status"].get("sites", [])}
        moved = next(b for b in bodies if b["metadata"]["name"] not in probe)
        moved["spec"].setdefault("addresses", {})["ip"] = "10.255.255.1"
        api.put_site(moved)
        time.sleep(window)
        after_bytes = sum(s.stats()["routes_bytes"] for s in sims)
        after_taken = sum(s.stats()["routes_taken"] for s in sims)
        told = (after_taken - taken1) - (taken1 - taken0)
        sent = (after_bytes - quiet1) - (quiet1 - quiet0)
        print(
            f"  routing: {taken1 - taken0} updates ({quiet1 - quiet0} B) in a quiet {window:.0f}s, "
            f"{after_taken - taken1} ({after_bytes - quiet1} B) in as long after one change",
            flush=True,
        )
        row.route_told = max(0, told)
        row.route_bytes = sent / told if told > 0 else None
        # Failover: 1 % of the sites die; their replicas of the spread app run elsewhere.
        spread = max(10, size // 20)
        api.put_app(SPREAD, {"replicas": spread})
        if wait(lambda: api.app(SPREAD)["status"].get("readyReplicas", 0) >= spread, 120) is None:
            raise RuntimeError(f"{SPREAD} never became ready; see {workdir}")
        hosts = [s["site"] for s in api.app(SPREAD)["status"].get("sites", []) if s.get("ready")]
        victims = random.Random(1).sample(hosts, min(len(hosts), max(1, size // 100)))
        row.killed = len(victims)
        by_sim: dict[int, list[str]] = {}
        for name in victims:
            by_sim.setdefault(int(name.split("-")[0][1:]), []).append(name)
        started = time.monotonic()
        for index, names_ in by_sim.items():
            sims[index].kill(names_)
        gone = set(victims)

        def detected() -> bool:
            return all(
                api.site(name).get("status", {}).get("phase") == "Unreachable" for name in gone
            )

        def elsewhere() -> bool:
            status = api.app(SPREAD)["status"]
            live = sum(s.get("ready", 0) for s in status.get("sites", []) if s["site"] not in gone)
            return bool(live >= spread)

        def both() -> bool:
            # The death is seen first (its time kept in the row), then the replicas moved.
            if row.detect_s is None and detected():
                row.detect_s = time.monotonic() - started
            return row.detect_s is not None and elsewhere()

        row.moved_s = wait(both, timeout=120, every=1.0)
        print(f"  failover: detected {fmt(row.detect_s)} s, moved {fmt(row.moved_s)} s", flush=True)
        if hubs > 1:
            row.failover = leader_failover(fleets, sims, api)
    return row


def leader_failover(fleets: list[LocalFleet], sims: list[SimProcess], api: Api) -> dict[str, Any]:
    """Kill the leading hub under load; how soon another leads and places, and whether any
    simulated site's replicas fell meanwhile (it lost its desired state)."""
    leaders = [
        f
        for f in fleets
        if httpx.get(f"{f.hub_url}/healthz", timeout=10).json().get("leader") is True
    ]
    if len(leaders) != 1:
        return {"error": f"{len(leaders)} leaders before the kill"}
    leader = leaders[0]
    others = [f for f in fleets if f is not leader]
    floor: dict[int, int] = {i: s.stats()["replicas"] for i, s in enumerate(sims)}
    fell: list[str] = []
    stop = threading.Event()

    def watch_replicas() -> None:
        while not stop.is_set():
            for i, sim in enumerate(sims):
                with contextlib.suppress(httpx.HTTPError):
                    now = sim.stats()["replicas"]
                    if now < floor[i]:
                        fell.append(f"sim {i}: {floor[i]} -> {now}")
                        floor[i] = now
            stop.wait(0.5)

    watcher = threading.Thread(target=watch_replicas, daemon=True)
    watcher.start()
    started = time.monotonic()
    leader.stop_hub(signal.SIGKILL)

    def someone_leads() -> bool:
        for f in others:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{f.hub_url}/healthz", timeout=2).json().get("leader") is True:
                    return True
        return False

    led = wait(someone_leads, timeout=60, every=0.2)
    # The controllers work: a change made at a surviving hub is placed.
    survivor = Api(others[0])
    try:
        survivor.put_app(SPREAD + "-after", {"replicas": 3})
        placed = wait(
            lambda: survivor.app(SPREAD + "-after")["status"].get("desiredReplicas", 0) >= 3,
            timeout=60,
        )
        placed_s = None if placed is None else time.monotonic() - started
    finally:
        survivor.close()
    leader.start_hub(timeout=120)
    time.sleep(10)
    stop.set()
    watcher.join()
    return {"leader_s": led, "placed_s": placed_s, "replicas_fell": fell}


# -- the table --------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def fmt_marks(marks: dict[str, float | None]) -> str:
    return " / ".join(fmt(marks.get(k), ".1f") for k in ("50%", "99%", "100%"))


def report(rows: list[Row]) -> None:
    reference = rows[0]
    print()
    print(f"fleet scale, {reference.db}, {reference.hubs} hub(s); the first row is the reference")
    header = (
        f"{'sites':>6} {'register s':>10} {'hub CPU %':>12} {'RSS MiB':>10} "
        f"{'ready 50/99/100% s':>20} {'dead seen s':>11} {'moved s':>8} "
        f"{'B/agent/chg':>11} {'told':>6} {'sim KiB/site':>12}"
    )
    print(header)
    for row in rows:
        cpu = "+".join(f"{c:.0f}" for c in row.cpu)
        rss = "+".join(f"{r:.0f}" for r in row.rss)
        print(
            f"{row.size:>6} {fmt(row.register_s):>10} {cpu:>12} {rss:>10} "
            f"{fmt_marks(row.ready):>20} {fmt(row.detect_s):>11} {fmt(row.moved_s):>8} "
            f"{fmt(row.route_bytes, '.0f'):>11} {row.route_told:>6} {fmt(row.sim_kib, '.0f'):>12}"
        )
    print(
        f"{'target':>6} {'':>10} {TARGETS['hub_cpu']:>12.0f} {TARGETS['rss_mib']:>10.0f} "
        f"{'- / 5.0 / 10.0':>20} {TARGETS['detect_s']:>11.0f} {'':>8} {'':>11} {'':>6} "
        f"{TARGETS['sim_kib']:>12.0f}"
    )
    print()
    print("API p50 / p99 ms while the fleet heartbeats (target p99 < 250 ms)")
    calls = list(reference.api)
    print(f"{'sites':>6} " + " ".join(f"{c:>16}" for c in calls))
    for row in rows:
        print(
            f"{row.size:>6} "
            + " ".join(
                f"{row.api[c][0]:>7.1f} / {row.api[c][1]:>6.1f}" if c in row.api else f"{'-':>16}"
                for c in calls
            )
        )
    print()
    print(f"hub CPU ms per event, and x the {reference.size}-site reference (target within 1.5x)")
    kinds = ["heartbeat", "rollout/site", *calls]

    def costs(row: Row) -> dict[str, float | None]:
        return {
            "heartbeat": row.beat_cpu_ms,
            "rollout/site": row.rollout_cpu_ms,
            **row.api_cpu_ms,
        }

    ref = costs(reference)
    print(f"{'sites':>6} " + " ".join(f"{k:>18}" for k in kinds))
    for row in rows:
        mine = costs(row)
        cells = []
        for k in kinds:
            value, base = mine.get(k), ref.get(k)
            ratio = f"{value / base:.2f}x" if value is not None and base else "-"
            cells.append(f"{fmt(value, '.3f'):>10} {ratio:>7}")
        print(f"{row.size:>6} " + " ".join(cells))
    print()
    for row in rows:
        print(
            f"{row.size:>6} sites: {row.killed} killed; whole routing table "
            f"{row.whole_table} B (what every agent got on every change before shares)"
        )
        if row.failover:
            print(f"{'':>6} leader killed: {json.dumps(row.failover)} (target: leads within 15 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,3000,10000")
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--hubs", type=int, default=1)
    parser.add_argument("--postgres", default=os.environ.get("EDGEFLEET_TEST_POSTGRES"))
    parser.add_argument("--calls", type=int, default=100, help="Calls of each API kind.")
    parser.add_argument("--steady", type=float, default=20.0, help="Seconds of steady load.")
    parser.add_argument("--settle", type=float, default=10.0, help="Seconds to settle.")
    parser.add_argument("--agent", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    dbs = args.db.split(",")
    if "postgresql" in dbs and not args.postgres:
        parser.error("PostgreSQL needs --postgres URL or EDGEFLEET_TEST_POSTGRES (make postgres)")
    if args.hubs > 1 and dbs != ["postgresql"]:
        parser.error("several hubs share one PostgreSQL: use --db postgresql")
    root = Path(tempfile.mkdtemp(prefix="fleet-scale-"))
    print(f"logs under {root}", flush=True)
    for db in dbs:
        rows = []
        for size in sizes:
            print(f"{db}, {size} sites, {args.hubs} hub(s)", flush=True)
            rows.append(run(size, db, args.hubs, args, root))
        report(rows)
    if args.agent:
        from bench.agent_memory import measure_agent_rss

        mib = measure_agent_rss()
        print(f"\nreal agent RSS: {mib:.1f} MiB (target < {TARGETS['agent_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
