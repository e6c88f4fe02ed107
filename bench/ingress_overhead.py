"""What the site ingress costs: the sample app called directly and through the ingress.

Starts a fleet of one site (hub, agent, hello) on its own loopback address, then sends the same
requests (``GET /``, keep-alive) to the replicas' own ports and to the site's ingress port with
``Host: hello.demo.edge.internal``, in three modes:

- sequential: one request at a time (latency overhead of one hop);
- concurrent: a fixed number in flight, closed loop (requests/s at that concurrency);
- throughput: an open loop at each of ``--rates`` requests/s for ``--duration`` seconds, with
  one and then two replicas (``--replicas``): achieved rate, failures and p50/p99 latency from
  the scheduled start, for the replicas called directly (spread round robin) and through the
  ingress. An open loop does not slow down with the server, so an overloaded path shows as
  latency and timeouts, never as a politely lower rate.

Every mode also prints the agent's CPU milliseconds per request (``cpu ms``; on the direct path
that is the agent's idle work spread over the requests): latency moves with whatever else runs
on the machine, the agent's CPU per request much less.

    .venv/bin/python bench/ingress_overhead.py [--requests N] [--concurrency C]
        [--rates 200,500,1000] [--duration S] [--replicas 1,2] [--work MS] [--skip-closed]

The client is ``edgefleet.loadgen.HttpPool`` (a plain HTTP/1.1 exchange on asyncio streams, about
0.05 ms of CPU a request), so that the generator's own cost does not hide the ingress's. It runs
in this process and shares the machine with the agent and the replicas: the figures compare the
two paths, they are not for capacity planning. Check ``uptime`` first: other load on the
machine shows in both columns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.loadgen import (
    ConnectFailed,
    ConnectionLost,
    HttpPool,
    LoadSummary,
    Result,
    classify_exception,
    classify_status,
    run_open_loop,
)
from edgefleet.localfleet import LocalFleet, free_port, wait_for
from tests.factories import make_app, make_site

HOST = "hello.demo.edge.internal"
SITE_IP = "127.0.90.1"


@dataclass(frozen=True)
class Target:
    """Where one path sends its requests."""

    address: str
    """IP address to connect to."""
    port: int
    """TCP port."""
    host: str
    """``Host`` header."""


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) a process has used so far, from ``/proc``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class AgentCpu:
    """The agent's CPU time per request over a run: a figure that other load on the machine
    barely moves, unlike latency."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = 0.0

    def __enter__(self) -> AgentCpu:
        self.start = cpu_seconds(self.pid)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.used = cpu_seconds(self.pid) - self.start

    def per_request_ms(self, requests: int) -> float:
        """Milliseconds of agent CPU per request."""
        return 1000 * self.used / max(1, requests)


@dataclass(frozen=True)
class Run:
    """One measured closed-loop batch."""

    latencies: list[float]
    """Seconds per request."""
    elapsed: float
    """Seconds for the whole batch."""
    agent_cpu_ms: float = 0.0
    """Agent CPU milliseconds per request (for the direct path: the agent's idle cost)."""

    def percentile(self, p: float) -> float:
        """Latency at percentile ``p`` (0-100), milliseconds."""
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    @property
    def rate(self) -> float:
        """Requests per second."""
        return len(self.latencies) / self.elapsed


async def measure(targets: Sequence[Target], path: str, requests: int, concurrency: int) -> Run:
    """``requests`` GETs of ``path``, ``concurrency`` in flight, after a warm-up."""
    pool = HttpPool()
    turn = itertools.cycle(targets)
    latencies: list[float] = []

    async def worker(count: int, record: bool) -> None:
        for _ in range(count):
            target = next(turn)
            started = time.perf_counter()
            reply = await pool.get(target.address, target.port, path, target.host)
            if reply.status != 200:
                raise RuntimeError(f"{target} answered {reply.status}")
            if record:
                latencies.append(time.perf_counter() - started)

    try:
        await asyncio.gather(*(worker(100 // concurrency + 1, False) for _ in range(concurrency)))
        share = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
        started = time.perf_counter()
        await asyncio.gather(*(worker(n, True) for n in share))
        return Run(latencies, time.perf_counter() - started)
    finally:
        await pool.close()


async def open_loop(
    targets: Sequence[Target], path: str, *, rps: float, duration: float, timeout: float
) -> LoadSummary:
    """``rps`` GETs of ``path`` a second for ``duration`` seconds, spread over ``targets``."""
    pool = HttpPool(max_idle=2000)
    turn = itertools.cycle(targets)

    async def send() -> Result:
        target = next(turn)
        try:
            async with asyncio.timeout(timeout):
                reply = await pool.get(target.address, target.port, path, target.host)
        except (TimeoutError, ConnectFailed, ConnectionLost) as exc:
            return Result(failure=classify_exception(exc))
        return Result(failure=classify_status(reply.status))

    try:
        return await run_open_loop(
            rps=rps,
            duration=duration,
            send=send,
            concurrency_limit=2000,
            drain_timeout=timeout + 1.0,
        )
    finally:
        await pool.close()


def report(label: str, direct: Run, ingress: Run) -> None:
    """Rows of one closed-loop mode: direct, through the ingress, overhead."""
    rows = [
        ("p50 ms", direct.percentile(50), ingress.percentile(50)),
        ("p99 ms", direct.percentile(99), ingress.percentile(99)),
        ("req/s", direct.rate, ingress.rate),
        ("cpu ms", direct.agent_cpu_ms, ingress.agent_cpu_ms),
    ]
    for name, a, b in rows:
        change = f"{b - a:+.3f} ms" if name.endswith("ms") else f"{(b / a - 1) * 100:+.0f} %"
        print(f"{label:<16} {name:<7} {a:>11.3f} {b:>11.3f} {change:>12}", flush=True)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report_open(replicas: int, path: str, summary: LoadSummary, cpu_ms: float) -> None:
    """One row of the throughput table."""
    failures = ", ".join(f"{n} {why}" for why, n in sorted(summary.failed.items()))
    if summary.unfinished:
        failures = ", ".join(filter(None, [failures, f"{summary.unfinished} unfinished"]))
    if summary.dropped:
        failures = ", ".join(filter(None, [failures, f"{summary.dropped} dropped"]))
    print(
        f"{replicas:>8} {summary.rps:>6.0f} {path:<8} {summary.achieved_rps:>9.1f} "
        f"{summary.ok:>7} {summary.failed_total + summary.unfinished:>7} "
        f"{_ms(summary.latency.p50_ms):>9} {_ms(summary.latency.p99_ms):>9} "
        f"{cpu_ms:>8.3f}  {failures}",
        flush=True,
    )


def main() -> None:
    """Start the fleet, measure both paths, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per batch")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight, concurrent batch")
    parser.add_argument("--rates", default="200,500,1000", help="open-loop rates, requests/s")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per open-loop run")
    parser.add_argument("--replicas", default="1,2", help="replica counts for the open loop")
    parser.add_argument("--work", type=int, default=0, help="service time asked of hello, ms")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds a request may take")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between runs")
    parser.add_argument(
        "--skip-closed", action="store_true", help="only the open-loop throughput mode"
    )
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    counts = [int(c) for c in args.replicas.split(",") if c.strip()]
    path = f"/?work={args.work}" if args.work else "/"

    if not args.skip_closed:
        with fleet_of(1) as (direct, through, _, agent):
            print(f"GET {path} on hello (1 replica), {args.requests} requests per batch")
            print(f"{'mode':<16} {'figure':<7} {'direct':>11} {'ingress':>11} {'overhead':>12}")
            for label, concurrency in (
                ("sequential", 1),
                (f"concurrent ({args.concurrency})", args.concurrency),
            ):
                runs = []
                for targets in (direct, through):
                    with AgentCpu(agent) as cpu:
                        run = asyncio.run(measure(targets, path, args.requests, concurrency))
                    runs.append(replace(run, agent_cpu_ms=cpu.per_request_ms(args.requests)))
                report(label, *runs)
            print()

    print(f"open loop, GET {path}, {args.duration:g} s per run, timeout {args.timeout:g} s")
    print(
        f"{'replicas':>8} {'rate':>6} {'path':<8} {'achieved':>9} {'ok':>7} "
        f"{'failed':>7} {'p50 ms':>9} {'p99 ms':>9} {'cpu ms':>8}  failures"
    )
    for count in counts:
        # A fresh fleet for each count: an overloaded ingress can stay clogged for minutes.
        with fleet_of(count) as (direct, through, settle, agent):
            for rate in rates:
                for label, targets in (("direct", direct), ("ingress", through)):
                    settle(args.settle)
                    with AgentCpu(agent) as cpu:
                        summary = asyncio.run(
                            open_loop(
                                targets,
                                path,
                                rps=rate,
                                duration=args.duration,
                                timeout=args.timeout,
                            )
                        )
                    report_open(count, label, summary, cpu.per_request_ms(summary.sent))


@contextlib.contextmanager
def fleet_of(
    replicas: int,
) -> Iterator[tuple[list[Target], list[Target], Callable[[float], None], int]]:
    """A fleet of one site running hello with ``replicas`` replicas: the replicas' own
    addresses, the ingress's, a function that waits until the agent is idle again, and the
    agent's process id."""
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
        fleet = LocalFleet(workdir=Path(tmp), hub_port=free_port(), dns_port=free_port())
        site = make_site("paris", ip=SITE_IP)
        ingress_port = site.spec.addresses.ingress_port
        agent = f"http://{SITE_IP}:{ingress_port}"

        def ready_ports() -> list[int] | None:
            found = httpx.get(
                f"{agent}/_edgefleet/replicas", timeout=3, headers=fleet.site_headers("paris")
            ).json()
            ports = sorted(r["port"] for r in found.get("demo/hello", []) if r["ready"])
            return ports if len(ports) == replicas == len(found["demo/hello"]) else None

        def settle(pause: float) -> None:
            """Wait until the agent answers at once: an overloaded run leaves a backlog."""
            time.sleep(pause)
            wait_for(
                lambda: httpx.get(f"{agent}/_edgefleet/healthz", timeout=0.5).is_success,
                timeout=300,
                what="the agent to answer within 0.5 s again",
            )

        with fleet.running():
            fleet.start_hub()
            with fleet.client() as client:
                client.apply(site)
                fleet.start_agent(site)
                client.apply(make_app(placement={"replicas": replicas}))
            ports = wait_for(ready_ports, timeout=60, what=f"{replicas} replicas of hello ready")
            direct = [Target(SITE_IP, port, f"{SITE_IP}:{port}") for port in ports]
            yield direct, [Target(SITE_IP, ingress_port, HOST)], settle, fleet.agents["paris"].pid


if __name__ == "__main__":
    main()
