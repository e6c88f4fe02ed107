"""How long traffic placement takes for a large fleet: a full pass, then an incremental one.

The fleet: ``--sites`` sites (10,000 by default) in towns around 60 metros of the world, several
sites per town, with capacity for 100-200 replicas each. ``--apps`` traffic apps (1,000): most
are regional (demand from towns around one to three metros), some global, each with demand from
10 to 200 origin sites, a latency bound of 20 to 80 ms and 0.1 to 0.5 cores per replica.

Measured, each the median of ``--repeat`` runs:

- full: ``TrafficPlanner.full`` over all apps (what ``place_traffic`` does);
- incremental: ``TrafficPlanner.update`` after the demand changed at 10 origin sites (one app's
  row at each, up or down by half), from the settled state of a full pass.

The incremental result is checked against a full pass with the same inputs. Peak memory is the
tracemalloc peak of one full pass (Python and numpy allocations) and the process's max RSS.

    .venv/bin/python bench/placement_speed.py [--sites 10000] [--apps 1000] [--repeat 3]

Reference: the full pass should take seconds, the incremental one well under 100 ms.
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import replace

from edgefleet.placement import (
    AppKey,
    Demand,
    SiteName,
    SiteView,
    TrafficApp,
    TrafficPlanner,
    place_traffic,
)

MI = 1024**2
GI = 1024**3

METROS = [
    ("new-york", 40.71, -74.01, 5),
    ("los-angeles", 34.05, -118.24, 4),
    ("chicago", 41.88, -87.63, 3),
    ("houston", 29.76, -95.37, 2),
    ("toronto", 43.65, -79.38, 2),
    ("mexico-city", 19.43, -99.13, 3),
    ("sao-paulo", -23.55, -46.63, 4),
    ("buenos-aires", -34.60, -58.38, 2),
    ("bogota", 4.71, -74.07, 2),
    ("lima", -12.05, -77.04, 1),
    ("santiago", -33.45, -70.67, 1),
    ("seattle", 47.61, -122.33, 2),
    ("miami", 25.76, -80.19, 2),
    ("atlanta", 33.75, -84.39, 2),
    ("dallas", 32.78, -96.80, 2),
    ("denver", 39.74, -104.99, 1),
    ("london", 51.51, -0.13, 4),
    ("paris", 48.86, 2.35, 4),
    ("frankfurt", 50.11, 8.68, 3),
    ("amsterdam", 52.37, 4.90, 2),
    ("madrid", 40.42, -3.70, 2),
    ("milan", 45.46, 9.19, 2),
    ("warsaw", 52.23, 21.01, 2),
    ("stockholm", 59.33, 18.07, 1),
    ("istanbul", 41.01, 28.98, 3),
    ("moscow", 55.76, 37.62, 3),
    ("cairo", 30.04, 31.24, 3),
    ("lagos", 6.52, 3.38, 3),
    ("nairobi", -1.29, 36.82, 2),
    ("johannesburg", -26.20, 28.05, 2),
    ("dubai", 25.20, 55.27, 2),
    ("riyadh", 24.71, 46.68, 1),
    ("tehran", 35.69, 51.39, 2),
    ("karachi", 24.86, 67.01, 3),
    ("delhi", 28.70, 77.10, 5),
    ("mumbai", 19.08, 72.88, 5),
    ("bangalore", 12.97, 77.59, 3),
    ("kolkata", 22.57, 88.36, 3),
    ("dhaka", 23.81, 90.41, 3),
    ("bangkok", 13.76, 100.50, 3),
    ("singapore", 1.35, 103.82, 2),
    ("jakarta", -6.21, 106.85, 4),
    ("manila", 14.60, 120.98, 3),
    ("ho-chi-minh", 10.82, 106.63, 2),
    ("hong-kong", 22.32, 114.17, 2),
    ("shanghai", 31.23, 121.47, 5),
    ("beijing", 39.90, 116.41, 4),
    ("shenzhen", 22.54, 114.06, 3),
    ("chengdu", 30.57, 104.07, 2),
    ("wuhan", 30.59, 114.31, 2),
    ("seoul", 37.57, 126.98, 3),
    ("tokyo", 35.68, 139.65, 5),
    ("osaka", 34.69, 135.50, 3),
    ("taipei", 25.03, 121.57, 2),
    ("sydney", -33.87, 151.21, 2),
    ("melbourne", -37.81, 144.96, 2),
    ("auckland", -36.85, 174.76, 1),
    ("perth", -31.95, 115.86, 1),
    ("vancouver", 49.28, -123.12, 1),
    ("montreal", 45.50, -73.57, 1),
]
"""Metro name, latitude, longitude, weight (share of the towns)."""


def clamp_lat(lat: float) -> float:
    return max(-89.9, min(89.9, lat))


def wrap_lon(lon: float) -> float:
    return (lon + 180) % 360 - 180


def fleet(rng: random.Random, n_sites: int) -> tuple[list[SiteView], dict[str, list[SiteView]]]:
    """Sites in towns around the metros (2-8 sites per town); also the sites by metro."""
    weights = [w for *_, w in METROS]
    sites: list[SiteView] = []
    by_metro: dict[str, list[SiteView]] = {m[0]: [] for m in METROS}
    town = 0
    while len(sites) < n_sites:
        metro, lat0, lon0, _ = rng.choices(METROS, weights=weights)[0]
        distance_km = abs(rng.gauss(0, 250))
        bearing = rng.uniform(0, 2 * math.pi)
        lat = clamp_lat(lat0 + distance_km * math.cos(bearing) / 111)
        lon = wrap_lon(
            lon0 + distance_km * math.sin(bearing) / (111 * max(0.2, math.cos(math.radians(lat))))
        )
        for k in range(rng.randint(2, 8)):
            if len(sites) >= n_sites:
                break
            site = SiteView(
                name=SiteName(f"{metro}-{town:04d}-{k}"),
                region=metro,
                zone=f"{metro}-{town % 4}",
                labels={},
                reachable=True,
                cpu=float(rng.choice([16, 32, 64])),
                memory=rng.choice([64, 128, 256]) * GI,
                max_replicas=rng.randint(100, 200),
                lat=clamp_lat(lat + rng.gauss(0, 0.05)),
                lon=wrap_lon(lon + rng.gauss(0, 0.05)),
            )
            sites.append(site)
            by_metro[metro].append(site)
        town += 1
    return sites, by_metro


def apps(
    rng: random.Random, n_apps: int, sites: Sequence[SiteView], by_metro: dict[str, list[SiteView]]
) -> list[TrafficApp]:
    """Regional apps (demand around 1-3 metros) and some global ones."""
    metros = [m for m in by_metro if by_metro[m]]
    out = []
    for a in range(n_apps):
        if rng.random() < 0.15:
            pool: Sequence[SiteView] = sites
        else:
            home = rng.sample(metros, rng.randint(1, 3))
            pool = [s for m in home for s in by_metro[m]]
        origins = rng.sample(list(pool), min(len(pool), rng.randint(10, 200)))
        out.append(
            TrafficApp(
                key=AppKey(f"tenant-{a % 50}/app-{a}"),
                cpu=rng.choice([0.1, 0.25, 0.5]),
                memory=rng.choice([64, 128, 256]) * MI,
                target_concurrency=10.0,
                max_latency_ms=float(rng.choice([20, 30, 40, 60, 80])),
                min_replicas=rng.choice([0, 0, 1]),
                idle_timeout=300.0,
                demand=tuple(
                    Demand(
                        origin=site.name,
                        concurrency=round(rng.lognormvariate(0.0, 1.2), 3),
                        requests_per_second=1.0,
                        idle_seconds=5.0,
                    )
                    for site in origins
                ),
            )
        )
    return out


def changed_demand(
    rng: random.Random, all_apps: Sequence[TrafficApp], sites: int
) -> list[TrafficApp]:
    """New versions of the apps whose demand changed at ``sites`` origin sites (one app each)."""
    changed: dict[AppKey, TrafficApp] = {}
    for _ in range(sites):
        app = rng.choice(all_apps)
        app = changed.get(app.key, app)
        row = rng.randrange(len(app.demand))
        factor = rng.choice([0.5, 1.5])
        demand = list(app.demand)
        demand[row] = replace(demand[row], concurrency=round(demand[row].concurrency * factor, 3))
        changed[app.key] = replace(app, demand=tuple(demand))
    return list(changed.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--apps", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    sites, by_metro = fleet(rng, args.sites)
    all_apps = apps(rng, args.apps, sites, by_metro)
    origins = sum(len(app.demand) for app in all_apps)
    print(
        f"seed {args.seed}: {len(sites)} sites, {len(all_apps)} apps, {origins} demand rows"
        f" ({origins / len(all_apps):.0f} origins per app)"
    )

    # Settle first: the incremental pass runs from a placement that the previous one produced.
    planner = TrafficPlanner()
    first = planner.full(all_apps, sites, {})
    settled = first.shares

    full_times = []
    for _ in range(args.repeat):
        planner = TrafficPlanner()
        started = time.perf_counter()
        result = planner.full(all_apps, sites, settled)
        full_times.append(time.perf_counter() - started)
    placed = sum(1 for shares in result.shares.values() for s in shares.values() if s.replicas)
    replicas = sum(s.replicas for shares in result.shares.values() for s in shares.values())
    print(
        f"placed: {replicas} replicas at {placed} app-sites,"
        f" {len(result.shortfalls)} apps with a shortfall"
    )

    incremental_times = []
    recomputed = []
    checked = None
    for rep in range(args.repeat):
        planner = TrafficPlanner()
        planner.full(all_apps, sites, settled)
        before = planner.result
        updates = changed_demand(random.Random(args.seed * 1000 + rep), all_apps, 10)
        started = time.perf_counter()
        after = planner.update(updates)
        incremental_times.append(time.perf_counter() - started)
        recomputed.append(planner.recomputed)
        if rep == 0:
            by_key = {app.key: app for app in updates}
            new_apps = [by_key.get(app.key, app) for app in all_apps]
            checked = after == place_traffic(new_apps, sites, before.shares)

    tracemalloc.start()
    TrafficPlanner().full(all_apps, sites, settled)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    full_s = statistics.median(full_times)
    incremental_ms = statistics.median(incremental_times) * 1000
    print(f"full pass:        {full_s:8.2f} s    (median of {args.repeat}; reference: seconds)")
    print(
        f"incremental pass: {incremental_ms:8.1f} ms   (median of {args.repeat}; demand changed"
        f" at 10 sites, {statistics.median(recomputed):.0f} apps recomputed;"
        f" reference: well under 100 ms)"
    )
    print(f"incremental result equals a full pass: {checked}")
    print(f"peak memory: {peak / MI:.0f} MiB traced in a full pass, {rss_mib:.0f} MiB max RSS")
    return 0 if checked else 1


if __name__ == "__main__":
    sys.exit(main())
