"""What the site ingress costs: the sample app called directly and through the ingress.

Starts a fleet of one site (hub, agent, hello with one replica) on its own loopback address, then
sends the same requests (``GET /``, keep-alive, httpx) to the replica's own port and to the
site's ingress port with ``Host: hello.demo.edge.internal``: first one at a time, then with a
fixed number in flight. Prints latency p50/p99 and requests/s side by side, with the overhead.

    .venv/bin/python bench/ingress_overhead.py [--requests N] [--concurrency C]

The client runs in this process and shares the machine with the agent and the replica, so the
figures are for comparing the two paths, not for capacity planning.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.localfleet import LocalFleet, free_port, wait_for
from tests.factories import make_app, make_site

HOST = "hello.demo.edge.internal"
SITE_IP = "127.0.90.1"


@dataclass(frozen=True)
class Run:
    """One measured batch."""

    latencies: list[float]
    """Seconds per request."""
    elapsed: float
    """Seconds for the whole batch."""

    def percentile(self, p: float) -> float:
        """Latency at percentile ``p`` (0-100), milliseconds."""
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    @property
    def rate(self) -> float:
        """Requests per second."""
        return len(self.latencies) / self.elapsed


async def measure(url: str, host: str | None, requests: int, concurrency: int) -> Run:
    """``requests`` GETs of ``url``, ``concurrency`` in flight, after a warm-up."""
    headers = {"Host": host} if host else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10, trust_env=False) as http:
        latencies: list[float] = []

        async def worker(count: int, record: bool) -> None:
            for _ in range(count):
                started = time.perf_counter()
                reply = await http.get(url, headers=headers)
                if reply.status_code != 200:
                    raise RuntimeError(f"{url} (Host {host}) answered {reply.status_code}")
                if record:
                    latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker(100 // concurrency + 1, False) for _ in range(concurrency)))
        share = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
        started = time.perf_counter()
        await asyncio.gather(*(worker(n, True) for n in share))
        return Run(latencies, time.perf_counter() - started)


def report(label: str, direct: Run, ingress: Run) -> None:
    """Rows of one mode: direct, through the ingress, overhead."""
    rows = [
        ("p50 ms", direct.percentile(50), ingress.percentile(50)),
        ("p99 ms", direct.percentile(99), ingress.percentile(99)),
        ("req/s", direct.rate, ingress.rate),
    ]
    for name, a, b in rows:
        change = f"{b - a:+.3f} ms" if name.endswith("ms") else f"{(b / a - 1) * 100:+.0f} %"
        print(f"{label:<16} {name:<7} {a:>11.3f} {b:>11.3f} {change:>12}")


def main() -> None:
    """Start the fleet, measure both paths, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per batch")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight, concurrent batch")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
        fleet = LocalFleet(workdir=Path(tmp), hub_port=free_port(), dns_port=free_port())
        site = make_site("paris", ip=SITE_IP)
        with fleet.running():
            fleet.start_hub()
            with fleet.client() as client:
                client.apply(site)
                fleet.start_agent(site)
                client.apply(make_app(placement={"replicas": 1}))
            agent = f"http://{SITE_IP}:{site.spec.addresses.ingress_port}"

            def ready_port() -> int | None:
                found = httpx.get(f"{agent}/_edgefleet/replicas", timeout=3).json()
                ports = [r["port"] for r in found.get("demo/hello", []) if r["ready"]]
                return ports[0] if ports else None

            port = wait_for(ready_port, timeout=30, what="hello to be ready")
            direct_url, ingress_url = f"http://{SITE_IP}:{port}/", f"{agent}/"

            print(f"GET / on hello, {args.requests} requests per batch, keep-alive, httpx client")
            print(f"{'mode':<16} {'figure':<7} {'direct':>11} {'ingress':>11} {'overhead':>12}")
            for label, concurrency in (
                ("sequential", 1),
                (f"concurrent ({args.concurrency})", args.concurrency),
            ):
                direct = asyncio.run(measure(direct_url, None, args.requests, concurrency))
                ingress = asyncio.run(measure(ingress_url, HOST, args.requests, concurrency))
                report(label, direct, ingress)


if __name__ == "__main__":
    main()
