"""A burst of ten times the normal load at one site: how many requests fail, and who serves them.

Starts a hub and three sites near each other (Paris, Lyon, Brussels: a few ms apart, within the
app's latency bound) and applies the sample app ``hello`` in traffic mode. Clients near Paris
send open-loop load (each request asks the app for ``--work`` ms of service time, so requests
really are in flight): ``--rps`` for a warm-up, then ten times that for ``--burst`` seconds, then
the normal rate again. A replica serves ``2 x targetConcurrency`` requests at once and answers
503 beyond (``HELLO_CONCURRENCY``), as a server with that many workers does; a site runs at most
``--per-site`` replicas. Paris's local scaler panics up to the ceiling the hub gave it; its ingress
hands what its replicas cannot take to the nearest neighbour serving the app, and when none does,
asks one to start replicas (offload), site to site.

Printed per phase: requests sent, failed (by reason), p50/p99 latency and which sites served; the
reference is the same burst with spill-over and offload switched off at the receiving side
(``--no-spill``: one site only), measured in the same run unless ``--skip-reference``.

    .venv/bin/python bench/spillover.py [--rps 20] [--burst 10] [--work 50]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.cli.demo import ask_dns
from edgefleet.cli.load import spec_for_site
from edgefleet.loadgen import LoadSummary, run_load
from edgefleet.localfleet import LocalFleet, free_port, wait_for
from edgefleet.model import Site
from tests.factories import make_app, make_site

FQDN = "hello.demo.edge.internal"
PLACES = {
    "paris": (48.8566, 2.3522, 92),
    "lyon": (45.764, 4.8357, 93),
    "brussels": (50.8503, 4.3517, 94),
}


def sites(only_paris: bool) -> list[Site]:
    chosen = {"paris": PLACES["paris"]} if only_paris else PLACES
    return [
        make_site(
            name,
            ip=f"127.0.{n}.1",
            lat=lat,
            lon=lon,
            networks=[f"127.1.{n}.0/24"],
        )
        for name, (lat, lon, n) in chosen.items()
    ]


def phase(site: Site, *, rps: float, seconds: float, work: int) -> LoadSummary:
    spec = spec_for_site(site, app="hello", rps=rps, duration=seconds, work_ms=work, timeout=30)
    return asyncio.run(run_load(spec))


def line(name: str, summary: LoadSummary) -> str:
    latency = summary.latency
    failed = ", ".join(f"{reason} {n}" for reason, n in sorted(summary.failed.items())) or "-"
    served = ", ".join(f"{s} {n}" for s, n in sorted(summary.served_by.items())) or "-"
    p50 = f"{latency.p50_ms:7.1f}" if latency.count else "      -"
    p99 = f"{latency.p99_ms:7.1f}" if latency.count else "      -"
    return (
        f"  {name:<8} sent {summary.sent:>5}  failed {summary.failed_total:>4} ({failed})  "
        f"p50 {p50} ms  p99 {p99} ms  served by: {served}"
    )


def scenario(args: argparse.Namespace, *, only_paris: bool) -> list[tuple[str, LoadSummary]]:
    with tempfile.TemporaryDirectory(prefix="edgefleet-spill-") as tmp:
        kept = Path(args.workdir) / ("alone" if only_paris else "fleet") if args.workdir else None
        fleet = LocalFleet(
            workdir=kept or Path(tmp),
            hub_port=free_port(),
            dns_port=free_port(),
            placement_resync=2.0,
            demand_tau=10.0,
            demand_window=1.0,
        )
        fleet_sites = sites(only_paris)
        paris = fleet_sites[0]
        app = make_app(
            # A replica serves targetConcurrency x panicThreshold (2) requests at once, no more.
            env={"HELLO_CONCURRENCY": str(int(args.target * 2))},
            placement={"mode": "traffic", "maxLatencyMs": 20, "minSites": 1},
            scaling={
                "minReplicas": 0,
                "maxReplicas": 20,
                "maxReplicasPerSite": args.per_site,
                "targetConcurrency": args.target,
                "stableWindow": "10s",
                "panicWindow": "2s",
                "idleTimeout": "60s",
            },
        )
        results = []
        with fleet.running():
            fleet.start_hub()
            with fleet.client() as client:
                for site in fleet_sites:
                    client.apply(site)
                fleet.start_agents(fleet_sites)
                client.apply(app)
                wait_for(
                    lambda: ask_dns(paris.spec.addresses.ip, paris.spec.addresses.dns_port, FQDN),
                    timeout=30,
                    what="Paris's edge DNS to answer for hello",
                )
            results.append(("warm-up", phase(paris, rps=args.rps, seconds=15, work=args.work)))
            burst = phase(paris, rps=args.rps * 10, seconds=args.burst, work=args.work)
            results.append(("burst", burst))
            results.append(("after", phase(paris, rps=args.rps, seconds=10, work=args.work)))
        return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=20, help="normal requests/s")
    parser.add_argument("--burst", type=float, default=10, help="seconds of 10x load")
    parser.add_argument("--work", type=int, default=50, help="ms of service time a request")
    parser.add_argument("--target", type=float, default=2, help="targetConcurrency")
    parser.add_argument("--per-site", type=int, default=2, help="maxReplicasPerSite")
    parser.add_argument("--skip-reference", action="store_true", help="no single-site run")
    parser.add_argument("--workdir", help="keep the fleets' logs and state here")
    args = parser.parse_args()

    runs = [("three sites, spill-over and offload", False)]
    if not args.skip_reference:
        runs.append(("reference: Paris alone, nowhere to spill", True))
    failed = {}
    for title, only_paris in runs:
        results = scenario(args, only_paris=only_paris)
        print(title)
        for name, summary in results:
            print(line(name, summary))
        burst = dict(results)["burst"]
        failed[title] = (burst.failed_total, burst.sent)
    print()
    for title, (n, sent) in failed.items():
        share = 100 * n / sent if sent else 0.0
        print(f"burst of {args.rps * 10:g} req/s: {n} of {sent} failed ({share:.2f} %)  [{title}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
