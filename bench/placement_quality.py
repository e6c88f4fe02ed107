"""How close traffic placement comes to the optimum, on small fleets solved exactly as a MILP.

Each instance is a fleet of ``--sites`` sites (20-40 by default) scattered around 3-5 European
metros, with random capacity, and 5-10 traffic apps: random demand from a random part of the
sites, a latency bound of 4-30 ms, a target concurrency, sometimes a selector (some metros),
``maxSites`` or a tight ``maxReplicas``. Every origin has demand above 0 (the MILP below has no
term for active origins without load).

The MILP is the objective of ``edgefleet.placement.traffic`` (its module docstring), for all apps
at once, with the same constraints: per app and site, ``open`` (binary), ``placed`` (binary),
``replicas`` (integer), per app, origin and site within the bound, the requests in flight sent
there (continuous), per app and origin, the unserved fraction (continuous in [0, 1]):

    min  sum_a SITE_COST * open + REPLICA_COST * replicas
               + LATENCY_COST * sum flow * rtt / (T * L) + UNSERVED_COST * sum (1 + c/T) * unserved
    s.t. sum_s flow_os + c_o * unserved_o = c_o              every origin
         sum_o flow_os <= T * replicas_s                      every site
         open_s <= replicas_s <= room_s * open_s              (room: empty site, maxReplicasPerSite)
         open_s <= placed_s; minSites <= sum placed <= maxSites
         minReplicas <= sum replicas <= maxReplicas
         sum_a cpu_a replicas_as <= cpu_s, same for memory and replica count   every site

solved with ``scipy.optimize.milp`` (HiGHS). The heuristic places the apps one after the other
(each takes capacity from the next), the MILP jointly: its optimum is a lower bound for any order.
The heuristic's cost is computed from its shares and routes under the same cost function.

    .venv/bin/python bench/placement_quality.py [--instances 30] [--seed N] [--time-limit 60]

Prints one line per instance and the mean and max ratio heuristic / optimum (reference: mean
<= 1.05), for the plain objective (hysteresis margins 0, as the MILP) and with the default
``TrafficParams`` (which size a fresh placement with headroom).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp  # type: ignore[import-untyped]
from scipy.sparse import coo_matrix  # type: ignore[import-untyped]

from edgefleet.geo import estimated_rtt_ms, great_circle_km
from edgefleet.model import SiteSelector
from edgefleet.placement import (
    LATENCY_COST,
    REPLICA_COST,
    SITE_COST,
    UNSERVED_COST,
    AppKey,
    Demand,
    SiteName,
    SiteView,
    TrafficApp,
    TrafficParams,
    TrafficResult,
    place_traffic,
)

GI = 1024**3
MI = 1024**2
REFERENCE_MEAN = 1.05

METROS = {
    "paris": (48.8566, 2.3522),
    "frankfurt": (50.1109, 8.6821),
    "amsterdam": (52.3676, 4.9041),
    "london": (51.5074, -0.1278),
    "milan": (45.4642, 9.19),
    "madrid": (40.4168, -3.7038),
    "warsaw": (52.2297, 21.0122),
    "stockholm": (59.3293, 18.0686),
}


@dataclass(frozen=True)
class Instance:
    """One placement problem."""

    sites: list[SiteView]
    apps: list[TrafficApp]


def generate(rng: random.Random, n_sites: int) -> Instance:
    """Sites around 3-5 metros, 5-10 apps with random demand, bounds and capacity."""
    metros = rng.sample(sorted(METROS), rng.randint(3, 5))
    sites = []
    for i in range(n_sites):
        metro = metros[i % len(metros)] if i < len(metros) else rng.choice(metros)
        lat0, lon0 = METROS[metro]
        spread_km = rng.choice([20, 60, 150, 300])
        lat = lat0 + rng.gauss(0, spread_km / 111)
        lon = lon0 + rng.gauss(0, spread_km / (111 * math.cos(math.radians(lat0))))
        sites.append(
            SiteView(
                name=SiteName(f"{metro}-{i:02d}"),
                region=metro,
                zone=f"{metro}-1",
                labels={},
                reachable=True,
                cpu=float(rng.choice([2, 4, 8, 16])),
                memory=rng.choice([8, 16, 32, 64]) * GI,
                max_replicas=rng.randint(5, 30),
                lat=max(-90.0, min(90.0, lat)),
                lon=max(-180.0, min(180.0, lon)),
            )
        )
    apps = []
    for a in range(rng.randint(5, 10)):
        target = float(rng.choice([5, 10, 20]))
        origins = rng.sample(sites, rng.randint(3, max(3, n_sites * 2 // 3)))
        scale = rng.choice([0.3, 1.0, 3.0])
        demand = tuple(
            Demand(
                origin=site.name,
                concurrency=round(max(0.1, rng.lognormvariate(math.log(3 * scale), 1.0)), 2),
                requests_per_second=1.0,
                idle_seconds=1.0,
            )
            for site in origins
        )
        regions = rng.sample(metros, rng.randint(1, len(metros))) if rng.random() < 0.2 else []
        max_sites = rng.choice([2, 3, 4]) if rng.random() < 0.15 else None
        min_replicas = rng.choice([0, 0, 1, 2])
        max_replicas = rng.choice([6, 10]) if rng.random() < 0.1 else 1000
        apps.append(
            TrafficApp(
                key=AppKey(f"t/app-{a}"),
                cpu=rng.choice([0.25, 0.5, 1.0]),
                memory=rng.choice([128, 256, 1024]) * MI,
                selector=SiteSelector(regions=regions),
                min_replicas=min(min_replicas, max_replicas),
                max_replicas=max_replicas,
                max_replicas_per_site=rng.choice([None, None, 4, 8]),
                target_concurrency=target,
                max_latency_ms=float(rng.choice([4, 8, 12, 20, 30])),
                min_sites=1,
                max_sites=max_sites,
                idle_timeout=300.0,
                demand=demand,
            )
        )
    return Instance(sites=sites, apps=apps)


def rtt_between(a: SiteView, b: SiteView) -> float:
    """The estimate placement uses, 0 for the same site."""
    if a.name == b.name:
        return 0.0
    assert a.lat is not None and a.lon is not None and b.lat is not None and b.lon is not None
    return estimated_rtt_ms(great_circle_km(a.lat, a.lon, b.lat, b.lon))


def eligible_sites(app: TrafficApp, sites: Sequence[SiteView]) -> list[int]:
    return [
        i
        for i, s in enumerate(sites)
        if not app.selector.regions or s.region in app.selector.regions
    ]


def site_room(app: TrafficApp, site: SiteView) -> int:
    """Replicas of ``app`` the empty site holds."""
    fits = site.max_replicas
    fits = min(fits, math.floor((site.cpu + 1e-6) / app.cpu), site.memory // app.memory)
    if app.max_replicas_per_site is not None:
        fits = min(fits, app.max_replicas_per_site)
    return fits


@dataclass
class Optimum:
    cost: float
    status: str
    seconds: float


def solve_milp(instance: Instance, time_limit: float) -> Optimum:
    """The exact optimum of the objective over all apps jointly."""
    sites = instance.sites
    by_name = {s.name: i for i, s in enumerate(sites)}
    cost: list[float] = []
    lower: list[float] = []
    upper: list[float] = []
    integer: list[int] = []

    def var(c: float, lo: float, hi: float, is_int: bool) -> int:
        cost.append(c)
        lower.append(lo)
        upper.append(hi)
        integer.append(1 if is_int else 0)
        return len(cost) - 1

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    row_lo: list[float] = []
    row_hi: list[float] = []

    def constraint(terms: Sequence[tuple[int, float]], lo: float, hi: float) -> None:
        r = len(row_lo)
        for col, val in terms:
            rows.append(r)
            cols.append(col)
            vals.append(val)
        row_lo.append(lo)
        row_hi.append(hi)

    per_site_replicas: dict[int, list[tuple[int, TrafficApp]]] = {i: [] for i in range(len(sites))}
    for app in instance.apps:
        target = app.target_concurrency
        bound = app.max_latency_ms
        assert bound is not None
        elig = eligible_sites(app, sites)
        opened = {}
        placed = {}
        replicas = {}
        for i in elig:
            room = site_room(app, sites[i])
            opened[i] = var(SITE_COST, 0, 1 if room >= 1 else 0, True)
            placed[i] = var(0.0, 0, 1, True)
            replicas[i] = var(REPLICA_COST, 0, room, True)
            constraint([(opened[i], 1), (replicas[i], -1)], -np.inf, 0)  # open <= replicas
            constraint([(replicas[i], 1), (opened[i], -room)], -np.inf, 0)  # replicas <= room*open
            constraint([(opened[i], 1), (placed[i], -1)], -np.inf, 0)
            per_site_replicas[i].append((replicas[i], app))
        total_replicas = [(replicas[i], 1.0) for i in elig]
        constraint(total_replicas, app.min_replicas, app.max_replicas)
        constraint(
            [(placed[i], 1.0) for i in elig],
            min(app.min_sites, len(elig)),
            app.max_sites if app.max_sites is not None else np.inf,
        )
        inflow: dict[int, list[tuple[int, float]]] = {i: [] for i in elig}
        for d in app.demand:
            origin = sites[by_name[d.origin]]
            c = d.concurrency
            unserved = var(UNSERVED_COST * (1 + c / target), 0, 1, False)
            terms = [(unserved, c)]
            for i in elig:
                ms = rtt_between(origin, sites[i])
                if ms > bound:
                    continue
                flow = var(LATENCY_COST * ms / (target * bound), 0, c, False)
                terms.append((flow, 1.0))
                inflow[i].append((flow, 1.0))
                # Redundant (capacity implies it) but tightens the relaxation a lot.
                constraint([(flow, 1.0), (opened[i], -c)], -np.inf, 0)
            constraint(terms, c, c)
        for i in elig:
            constraint([*inflow[i], (replicas[i], -target)], -np.inf, 0)
    for i, site in enumerate(sites):
        group = per_site_replicas[i]
        if not group:
            continue
        constraint([(v, app.cpu) for v, app in group], -np.inf, site.cpu + 1e-6)
        constraint([(v, float(app.memory)) for v, app in group], -np.inf, float(site.memory))
        constraint([(v, 1.0) for v, _ in group], -np.inf, site.max_replicas)
    matrix = coo_matrix((vals, (rows, cols)), shape=(len(row_lo), len(cost))).tocsr()
    started = time.perf_counter()
    result = milp(
        np.array(cost),
        integrality=np.array(integer),
        bounds=Bounds(np.array(lower), np.array(upper)),
        constraints=LinearConstraint(matrix, np.array(row_lo), np.array(row_hi)),
        options={"time_limit": time_limit, "mip_rel_gap": 1e-6},
    )
    seconds = time.perf_counter() - started
    if result.x is None:
        return Optimum(cost=math.nan, status=result.message, seconds=seconds)
    status = "optimal" if result.status == 0 else "time limit (best found)"
    return Optimum(cost=float(result.fun), status=status, seconds=seconds)


def heuristic_cost(instance: Instance, result: TrafficResult) -> float:
    """The objective, computed from the shares and routes placement returned."""
    by_name = {s.name: s for s in instance.sites}
    total = 0.0
    for app in instance.apps:
        target = app.target_concurrency
        bound = app.max_latency_ms
        assert bound is not None
        shares = result.shares[app.key]
        total += SITE_COST * sum(1 for share in shares.values() if share.replicas > 0)
        total += REPLICA_COST * sum(share.replicas for share in shares.values())
        served: dict[str, float] = {}
        load_at: dict[str, float] = {}
        for route in result.routes[app.key]:
            ms = rtt_between(by_name[route.origin], by_name[route.site])
            assert ms <= bound + 1e-6, (app.key, route)
            total += LATENCY_COST * route.concurrency * ms / (target * bound)
            served[route.origin] = served.get(route.origin, 0.0) + route.concurrency
            load_at[route.site] = load_at.get(route.site, 0.0) + route.concurrency
        for site, load in load_at.items():
            assert load <= shares[SiteName(site)].replicas * target + 1e-6, (app.key, site)
        for d in app.demand:
            left = max(0.0, 1 - served.get(d.origin, 0.0) / d.concurrency)
            total += UNSERVED_COST * (1 + d.concurrency / target) * left
    return total


def run_heuristic(instance: Instance, params: TrafficParams) -> tuple[float, float]:
    started = time.perf_counter()
    result = place_traffic(instance.apps, instance.sites, {}, params=params)
    seconds = time.perf_counter() - started
    return heuristic_cost(instance, result), seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None, help="default: random")
    parser.add_argument("--min-sites", type=int, default=20)
    parser.add_argument("--max-sites", type=int, default=40)
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per MILP")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    print(f"seed {seed}")
    rng = random.Random(seed)
    plain = TrafficParams().without_hysteresis()
    default = TrafficParams()
    ratios: list[float] = []
    ratios_default: list[float] = []
    print(
        f"{'#':>3} {'sites':>5} {'apps':>4} {'optimum':>10} {'heuristic':>10} {'ratio':>6}"
        f" {'defaults':>8}  {'milp s':>6} {'ours ms':>7}  status"
    )
    for n in range(args.instances):
        instance = generate(rng, rng.randint(args.min_sites, args.max_sites))
        optimum = solve_milp(instance, args.time_limit)
        cost, seconds = run_heuristic(instance, plain)
        cost_default, _ = run_heuristic(instance, default)
        ratio = cost / optimum.cost
        ratio_default = cost_default / optimum.cost
        ratios.append(ratio)
        ratios_default.append(ratio_default)
        print(
            f"{n:>3} {len(instance.sites):>5} {len(instance.apps):>4} {optimum.cost:>10.1f}"
            f" {cost:>10.1f} {ratio:>6.3f} {ratio_default:>8.3f}  {optimum.seconds:>6.1f}"
            f" {seconds * 1000:>7.1f}  {optimum.status}",
            flush=True,
        )
    finite = [r for r in ratios if math.isfinite(r)]
    finite_default = [r for r in ratios_default if math.isfinite(r)]
    print()
    print(
        f"heuristic / optimum, plain objective: mean {statistics.fmean(finite):.4f}"
        f" (reference: <= {REFERENCE_MEAN}), max {max(finite):.4f},"
        f" within 0.1% of the optimum in {sum(1 for r in finite if r <= 1.001)} of {len(finite)}"
    )
    print(
        f"heuristic / optimum, default params:  mean {statistics.fmean(finite_default):.4f},"
        f" max {max(finite_default):.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
