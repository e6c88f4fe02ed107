"""How often traffic placement changes its mind under noisy but steady demand.

One simulated hour of hub rounds (every ``--round`` seconds, 10 by default) over a fleet of
``--sites`` sites (30) around five European metros, with ``--apps`` apps (8) whose demand per
origin has a fixed mean and, each round, noise of up to +-30% (normal, sd 15%, clipped): what the
decayed demand the hub sees looks like when nothing really changes. Each round places all apps
from the previous round's result.

A flap is a change, from one round to the next, of an app's set of sites running replicas, or of
the replica count at one site. Counted per hour with the default ``TrafficParams`` and, as the
reference in the same run, with every hysteresis margin 0 (``without_hysteresis()``); also shown:
replicas on average (what the margins cost) and the demand left unserved.

    .venv/bin/python bench/placement_flaps.py [--seed 3] [--hours 1] [--round 10]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace

from edgefleet.placement import (
    AppKey,
    Demand,
    SiteName,
    SiteView,
    TrafficApp,
    TrafficParams,
    TrafficPlanner,
    TrafficResult,
)

GI = 1024**3
MI = 1024**2
NOISE = 0.3
METROS = {
    "paris": (48.8566, 2.3522),
    "frankfurt": (50.1109, 8.6821),
    "amsterdam": (52.3676, 4.9041),
    "milan": (45.4642, 9.19),
    "madrid": (40.4168, -3.7038),
}


def fleet(rng: random.Random, n_sites: int) -> list[SiteView]:
    """Sites within ~100 km of the metros, room for 8 to 24 replicas."""
    names = sorted(METROS)
    out = []
    for i in range(n_sites):
        metro = names[i % len(names)]
        lat0, lon0 = METROS[metro]
        out.append(
            SiteView(
                name=SiteName(f"{metro}-{i:02d}"),
                region=metro,
                zone=f"{metro}-1",
                labels={},
                reachable=True,
                cpu=float(rng.choice([4, 8, 12])),
                memory=32 * GI,
                max_replicas=rng.choice([8, 16, 24]),
                lat=lat0 + rng.uniform(-0.8, 0.8),
                lon=lon0 + rng.uniform(-0.8, 0.8),
            )
        )
    return out


@dataclass(frozen=True)
class Steady:
    """An app and the mean demand of each of its origins."""

    app: TrafficApp
    means: dict[SiteName, float]


def apps(rng: random.Random, sites: Sequence[SiteView], count: int) -> list[Steady]:
    out = []
    for a in range(count):
        origins = rng.sample(list(sites), rng.randint(5, 15))
        means = {s.name: round(rng.lognormvariate(math.log(6), 0.9), 2) for s in origins}
        app = TrafficApp(
            key=AppKey(f"t/app-{a}"),
            cpu=0.5,
            memory=256 * MI,
            target_concurrency=10.0,
            max_latency_ms=float(rng.choice([5, 10, 20])),
            idle_timeout=300.0,
        )
        out.append(Steady(app=app, means=means))
    return out


def noisy(rng: random.Random, steady: Sequence[Steady]) -> list[TrafficApp]:
    """This round's apps: every origin's mean times 1 +- up to 30%."""
    out = []
    for s in steady:
        rows = tuple(
            Demand(
                origin=origin,
                concurrency=mean * max(1 - NOISE, min(1 + NOISE, rng.gauss(1.0, NOISE / 2))),
                requests_per_second=mean,
                idle_seconds=1.0,
            )
            for origin, mean in sorted(s.means.items())
        )
        out.append(replace(s.app, demand=rows))
    return out


@dataclass
class Tally:
    site_set_flaps: int = 0
    replica_flaps: int = 0
    replicas: int = 0
    unserved: float = 0.0
    demand: float = 0.0
    rounds: int = 0


def count(before: TrafficResult | None, after: TrafficResult, tally: Tally) -> None:
    for key, shares in after.shares.items():
        running = {site: s.replicas for site, s in shares.items() if s.replicas > 0}
        tally.replicas += sum(running.values())
        if before is None:
            continue
        was = {site: s.replicas for site, s in before.shares[key].items() if s.replicas > 0}
        if set(was) != set(running):
            tally.site_set_flaps += 1
        tally.replica_flaps += sum(
            1 for site in set(was) | set(running) if was.get(site) != running.get(site)
        )


def simulate(
    steady: Sequence[Steady],
    sites: Sequence[SiteView],
    params: TrafficParams,
    rounds: int,
    seed: int,
) -> Tally:
    rng = random.Random(seed)  # the same noise for every variant
    planner = TrafficPlanner(params)
    tally = Tally()
    result: TrafficResult | None = None
    for n in range(rounds):
        now = noisy(rng, steady)
        result_next = planner.full(now, sites, {}) if result is None else planner.update(now)
        # The first rounds settle from nothing; flaps count from the second on.
        count(result if n > 0 else None, result_next, tally)
        for app in now:
            sent = sum(r.concurrency for r in result_next.routes[app.key])
            total = sum(d.concurrency for d in app.demand)
            tally.unserved += max(0.0, total - sent)
            tally.demand += total
        tally.rounds += 1
        result = result_next
    return tally


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--round", type=float, default=10.0, help="seconds between rounds")
    parser.add_argument("--sites", type=int, default=30)
    parser.add_argument("--apps", type=int, default=8)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    sites = fleet(rng, args.sites)
    steady = apps(rng, sites, args.apps)
    rounds = int(args.hours * 3600 / args.round)
    print(
        f"seed {args.seed}: {len(sites)} sites, {len(steady)} apps,"
        f" {sum(len(s.means) for s in steady)} origins, {rounds} rounds of {args.round:g} s,"
        f" noise +-{NOISE:.0%}"
    )
    variants = [
        ("hysteresis (defaults)", TrafficParams()),
        ("margins 0 (reference)", TrafficParams().without_hysteresis()),
    ]
    print(
        f"{'':24} {'site-set flaps/h':>16} {'replica flaps/h':>16} {'replicas avg':>13}"
        f" {'unserved':>9}"
    )
    for name, params in variants:
        tally = simulate(steady, sites, params, rounds, args.seed)
        per_hour = 3600 / (args.round * max(1, tally.rounds - 1))
        print(
            f"{name:24} {tally.site_set_flaps * per_hour:>16.1f}"
            f" {tally.replica_flaps * per_hour:>16.1f}"
            f" {tally.replicas / tally.rounds:>13.1f}"
            f" {tally.unserved / max(tally.demand, 1e-9):>9.2%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
