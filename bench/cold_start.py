"""Cold start through the activator: what a request to an app asleep at zero pays.

Starts a fleet of one site (hub, agent) on its own loopback address and applies the sample app
``hello`` in traffic mode with ``minReplicas: 0`` and a short idle timeout. Each round waits until
the site has put the app to sleep (zero replicas, still placed), then sends one request through
the site's ingress and times it: the activator holds it while the agent starts a replica, and
lets it through once the replica answers its health check. Right after, the same request again
(warm: a replica is ready) through the ingress and straight to the replica.

Printed: cold-start added latency (cold minus the warm request through the ingress) p50/p99 and
max, and the warm path's overhead (through the ingress minus direct), next to Knative's published
cold starts of 0.8 to 4 s for the same kind of hold-and-start (activator).

    .venv/bin/python bench/cold_start.py [--rounds N] [--idle S]

A cold start here is: spawn a Python process (the sample app, a threaded HTTP server), wait
until it listens and answers ``/healthz`` (probed every 50 ms while starting), then forward.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.loadgen import percentile
from edgefleet.localfleet import LocalFleet, free_port, wait_for
from tests.factories import make_app, make_site

HOST = "hello.demo.edge.internal"
SITE_IP = "127.0.91.1"
KNATIVE_COLD_START = "0.8-4 s"


def replicas(base: str, headers: dict[str, str]) -> list[dict[str, object]]:
    reply = httpx.get(f"{base}/_edgefleet/replicas", timeout=3, headers=headers)
    found: list[dict[str, object]] = reply.json().get("demo/hello", [])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="cold starts to measure")
    parser.add_argument("--idle", type=float, default=2.0, help="idle timeout, seconds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="edgefleet-cold-") as tmp:
        fleet = LocalFleet(
            workdir=Path(tmp),
            hub_port=free_port(),
            dns_port=free_port(),
            placement_resync=1.0,
            demand_tau=3.0,
            demand_window=1.0,
        )
        site = make_site("paris", ip=SITE_IP, networks=["127.1.91.0/24"])
        app = make_app(
            placement={"mode": "traffic", "minSites": 1},
            scaling={
                "minReplicas": 0,
                "maxReplicas": 4,
                "targetConcurrency": 10,
                "stableWindow": f"{args.idle}s",
                "panicWindow": f"{min(args.idle, 1.0)}s",
                "idleTimeout": f"{args.idle}s",
            },
        )
        base = f"http://{SITE_IP}:{site.spec.addresses.ingress_port}"
        cold: list[float] = []
        warm: list[float] = []
        direct: list[float] = []
        with fleet.running():
            fleet.start_hub()
            with fleet.client() as client:
                client.apply(site)
                fleet.start_agent(site)
                client.apply(app)
            with httpx.Client(timeout=60) as http:
                for round_ in range(1, args.rounds + 1):
                    wait_for(
                        lambda: (
                            not [
                                r
                                for r in replicas(base, fleet.site_headers("paris"))
                                if r["state"] != "stopped"
                            ]
                        ),
                        timeout=120,
                        interval=0.1,
                        what="hello asleep at zero",
                    )
                    # A fresh connection, as a client coming back after a while would open.
                    with httpx.Client(timeout=60) as fresh:
                        started = time.perf_counter()
                        reply = fresh.get(base, headers={"Host": HOST})
                        cold.append(time.perf_counter() - started)
                    if reply.status_code != 200:
                        print(f"round {round_}: cold request failed: {reply.status_code}")
                        return 1
                    http.get(base, headers={"Host": HOST})  # open the kept-alive connection
                    started = time.perf_counter()
                    http.get(base, headers={"Host": HOST}).raise_for_status()
                    warm.append(time.perf_counter() - started)
                    ready = [r for r in replicas(base, fleet.site_headers("paris")) if r["ready"]]
                    port = ready[0]["port"]
                    direct_url = f"http://{SITE_IP}:{port}/"
                    http.get(direct_url)
                    started = time.perf_counter()
                    http.get(direct_url).raise_for_status()
                    direct.append(time.perf_counter() - started)
                    print(
                        f"round {round_:>2}: cold {cold[-1] * 1000:7.1f} ms, "
                        f"warm {warm[-1] * 1000:5.1f} ms, direct {direct[-1] * 1000:5.1f} ms"
                    )

    added = [(c - w) * 1000 for c, w in zip(cold, warm, strict=True)]
    overhead = [(w - d) * 1000 for w, d in zip(warm, direct, strict=True)]
    print()
    print(f"cold starts through the activator, {len(cold)} rounds (sample app, process driver):")
    added.sort()
    print(
        f"  added latency   p50 {percentile(added, 50):7.1f} ms   p99 {percentile(added, 99):7.1f}"
        f" ms   max {added[-1]:7.1f} ms   (reference: Knative {KNATIVE_COLD_START})"
    )
    print(
        f"  warm overhead   p50 {percentile(sorted(overhead), 50):7.2f} ms   "
        f"mean {statistics.fmean(overhead):7.2f} ms   (ingress minus direct, one request)"
    )
    print("  requests failed 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
