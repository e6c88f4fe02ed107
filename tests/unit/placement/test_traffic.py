"""Traffic placement: properties over random fleets, then examples that read as documentation.

The properties re-derive round trips, eligibility and capacity from the rules instead of calling
the helpers under test, so a bug in a helper shows up as a failed property.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.geo import estimated_rtt_ms, great_circle_km
from edgefleet.model import SiteSelector
from edgefleet.placement import (
    AppKey,
    Demand,
    Share,
    SiteName,
    SiteView,
    TrafficApp,
    TrafficParams,
    TrafficPlanner,
    TrafficResult,
    Usage,
    eligible,
    is_active,
    place_traffic,
)

GI = 1024**3
MI = 1024**2
CPU_SLACK = 1e-5
"""Cores of float slack allowed when checking that a site is not over its cpu."""
MS_SLACK = 1e-6
"""Milliseconds of float slack allowed when checking a latency bound."""
LOAD_SLACK = 1e-6
"""Requests in flight of float slack allowed when checking loads."""

PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------
# Strategies: sites around three cities (Paris, Berlin ~ 880 km away, Tokyo), a few without a
# location; bounds that reach within a city, across Europe, or anywhere.

CITIES = {"fr": (48.8566, 2.3522), "de": (52.52, 13.405), "jp": (35.6762, 139.6503)}
SITE_NAMES = tuple(f"site-{i}" for i in range(8))
ORIGINS = (*SITE_NAMES, "elsewhere")  # "elsewhere": an origin the fleet does not know
BOUNDS = st.sampled_from([None, 0.5, 2.0, 4.0, 12.0, 25.0, 400.0])


@dataclass(frozen=True)
class Fleet:
    """One random placement problem."""

    apps: list[TrafficApp]
    sites: list[SiteView]
    current: dict[AppKey, dict[SiteName, Share]]
    used: dict[SiteName, Usage]
    params: TrafficParams


# Small limits make the narrowing of many candidates (meant for large fleets) run here too.
PARAMS = st.builds(
    TrafficParams,
    keep_load_margin=st.sampled_from([0.0, 0.2]),
    move_margin=st.sampled_from([0.0, 0.1]),
    scale_down_margin=st.sampled_from([0.0, 0.3]),
    max_parked_sites=st.sampled_from([0, 3]),
    swap_limit=st.sampled_from([0, 64]),
    candidate_limit=st.sampled_from([1, 3, 256, 256]),
)


@st.composite
def site_lists(draw: st.DrawFn, *, ample: bool = False) -> list[SiteView]:
    """1-8 sites in three cities (up to ~100 km from the centre), some unreachable or unlocated."""
    sites = []
    names = draw(st.lists(st.sampled_from(SITE_NAMES), min_size=1, max_size=8, unique=True))
    for name in names:
        region = draw(st.sampled_from(sorted(CITIES)))
        lat0, lon0 = CITIES[region]
        located = draw(st.sampled_from([True] * 7 + [False]))
        dlat = draw(st.floats(-0.9, 0.9, allow_nan=False))
        dlon = draw(st.floats(-0.9, 0.9, allow_nan=False))
        if ample:
            cpu, memory, max_replicas = 1000.0, 1 << 50, 10_000
        else:
            cpu = draw(st.sampled_from([0.0, 0.5, 1.0, 2.5, 8.0]))
            memory = draw(st.sampled_from([0, 512 * MI, GI, 16 * GI]))
            max_replicas = draw(st.integers(0, 12))
        sites.append(
            SiteView(
                name=SiteName(name),
                region=region,
                zone=f"{region}-1",
                labels=draw(st.sampled_from([{}, {"tier": "gold"}])),
                reachable=draw(st.sampled_from([True, True, True, False])),
                cpu=cpu,
                memory=memory,
                max_replicas=max_replicas,
                lat=lat0 + dlat if located else None,
                lon=lon0 + dlon if located else None,
            )
        )
    return sites


DEMAND_ROW = st.builds(
    Demand,
    origin=st.sampled_from(ORIGINS).map(SiteName),
    concurrency=st.sampled_from([0.0, 0.01, 1.0, 4.5, 10.0, 25.0])
    | st.floats(0, 60, allow_nan=False),
    requests_per_second=st.sampled_from([0.0, 1.0]),
    idle_seconds=st.sampled_from([None, 0.0, 5.0, 299.0, 300.0, 1000.0]),
)
SELECTORS = st.sampled_from(
    [
        SiteSelector(),
        SiteSelector(),
        SiteSelector(regions=["fr", "de"]),
        SiteSelector(match_labels={"tier": "gold"}),
        SiteSelector(sites=["site-0", "site-1", "site-2"]),
    ]
)


@st.composite
def app_lists(draw: st.DrawFn) -> list[TrafficApp]:
    """1-3 apps with random demand, bounds and scaling."""
    apps = []
    for i in range(draw(st.integers(1, 3))):
        rows = draw(st.lists(DEMAND_ROW, max_size=6, unique_by=lambda d: d.origin))
        min_replicas = draw(st.integers(0, 3))
        min_sites = draw(st.integers(0, 2))
        apps.append(
            TrafficApp(
                key=AppKey(f"t/app-{i}"),
                cpu=draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])),
                memory=draw(st.sampled_from([0, 64 * MI, 256 * MI])),
                selector=draw(SELECTORS),
                min_replicas=min_replicas,
                max_replicas=draw(st.sampled_from([min_replicas, min_replicas + 2, 1000])),
                max_replicas_per_site=draw(st.sampled_from([None, None, 1, 3])),
                target_concurrency=draw(st.sampled_from([1.0, 5.0, 10.0])),
                max_latency_ms=draw(BOUNDS),
                min_sites=min_sites,
                max_sites=draw(st.sampled_from([None, None, max(1, min_sites), 3])),
                idle_timeout=draw(st.sampled_from([0.0, 300.0])),
                demand=tuple(rows),
            )
        )
    return apps


SHARES = st.builds(
    lambda r, extra, floor: Share(replicas=r, min_replicas=min(floor, r), max_replicas=r + extra),
    st.integers(0, 5),
    st.integers(0, 3),
    st.integers(0, 2),
)


@st.composite
def fleets(draw: st.DrawFn, *, ample: bool = False, settled: bool = False) -> Fleet:
    """Apps, sites, current shares and what other apps used.

    ``settled``: current is what placement gave with every site reachable (a running fleet
    where some sites then stop answering); otherwise current is arbitrary, even over capacity.
    """
    apps = draw(app_lists())
    sites = draw(site_lists(ample=ample))
    names = [site.name for site in sites]
    current: dict[AppKey, dict[SiteName, Share]] = {}
    for app in apps:
        if draw(st.booleans()):
            current[app.key] = draw(st.dictionaries(st.sampled_from(names), SHARES, max_size=3))
    used = {}
    if not ample and draw(st.booleans()):
        used = draw(
            st.dictionaries(
                st.sampled_from(names),
                st.builds(Usage, cpu=st.sampled_from([0.0, 0.5, 2.0]), replicas=st.integers(0, 4)),
                max_size=3,
            )
        )
    params = draw(PARAMS)
    if settled:
        everyone_up = [replace(site, reachable=True) for site in sites]
        placed = place_traffic(apps, everyone_up, current, used=used, params=params)
        current = {key: dict(by_site) for key, by_site in placed.shares.items()}
    return Fleet(apps=apps, sites=sites, current=current, used=used, params=params)


# ---------------------------------------------------------------------------------------------
# The rules, re-derived independently of the code under test


def rtt(sites: Mapping[SiteName, SiteView], origin: str, site: str) -> float | None:
    """Round trip from an origin to a site: 0 for itself, else from coordinates, if known."""
    if origin == site:
        return 0.0
    a, b = sites.get(SiteName(origin)), sites.get(SiteName(site))
    if a is None or b is None or a.lat is None or b.lat is None:
        return None
    assert a.lon is not None and b.lon is not None
    return estimated_rtt_ms(great_circle_km(a.lat, a.lon, b.lat, b.lon))


@dataclass(frozen=True)
class Taken:
    """Usage at one site."""

    cpu: float = 0.0
    memory: int = 0
    replicas: int = 0


def usage(fleet: Fleet, result: TrafficResult) -> dict[str, Taken]:
    """What ``used`` and every app take at each site."""
    taken: dict[str, Taken] = {
        name: Taken(u.cpu, u.memory, u.replicas) for name, u in fleet.used.items()
    }
    for app in fleet.apps:
        for site, share in result.shares[app.key].items():
            was = taken.get(site, Taken())
            taken[site] = Taken(
                cpu=was.cpu + share.replicas * app.cpu,
                memory=was.memory + share.replicas * app.memory,
                replicas=was.replicas + share.replicas,
            )
    return taken


def within_capacity(site: SiteView, taken: Taken) -> bool:
    return (
        taken.replicas <= site.max_replicas
        and taken.cpu <= site.cpu + CPU_SLACK
        and taken.memory <= site.memory
    )


def place(fleet: Fleet) -> TrafficResult:
    return place_traffic(
        fleet.apps, fleet.sites, fleet.current, used=fleet.used, params=fleet.params
    )


# ---------------------------------------------------------------------------------------------
# Properties


@PROPERTIES
@given(fleets(settled=True))
def test_no_site_is_over_capacity_counting_held_shares(fleet: Fleet) -> None:
    result = place(fleet)
    taken = usage(fleet, result)
    for site in fleet.sites:
        if fleet.used.get(site.name) and not within_capacity(
            site, Taken(**vars(fleet.used[site.name]))
        ):
            continue  # already over before any app: nothing placement can do
        assert within_capacity(site, taken.get(site.name, Taken())), site.name


@PROPERTIES
@given(fleets())
def test_reachable_sites_get_nothing_beyond_their_room(fleet: Fleet) -> None:
    result = place(fleet)
    taken = usage(fleet, result)
    for site in fleet.sites:
        before = fleet.used.get(site.name)
        if not site.reachable or (before and not within_capacity(site, Taken(**vars(before)))):
            continue
        assert within_capacity(site, taken.get(site.name, Taken())), site.name


@PROPERTIES
@given(fleets())
def test_every_route_is_within_the_bound_to_an_open_eligible_site(fleet: Fleet) -> None:
    result = place(fleet)
    by_name = {site.name: site for site in fleet.sites}
    for app in fleet.apps:
        shares = result.shares[app.key]
        demand = {d.origin: d for d in app.demand}
        load: dict[str, float] = {}
        sent: dict[str, float] = {}
        for route in result.routes[app.key]:
            site = by_name[route.site]
            assert site.reachable and eligible(app.selector, site)
            assert shares[route.site].replicas >= 1
            assert is_active(demand[route.origin], app.idle_timeout)
            ms = rtt(by_name, route.origin, route.site)
            if app.max_latency_ms is not None:
                assert ms is not None, route
                assert ms <= app.max_latency_ms + MS_SLACK, route
            load[route.site] = load.get(route.site, 0.0) + route.concurrency
            sent[route.origin] = sent.get(route.origin, 0.0) + route.concurrency
        for site_name, carried in load.items():
            capacity = shares[SiteName(site_name)].replicas * app.target_concurrency
            assert carried <= capacity + LOAD_SLACK
        for origin, amount in sent.items():
            assert amount <= demand[SiteName(origin)].concurrency + LOAD_SLACK


@PROPERTIES
@given(fleets())
def test_shares_respect_the_apps_bounds_and_their_own(fleet: Fleet) -> None:
    result = place(fleet)
    by_name = {site.name: site for site in fleet.sites}
    for app in fleet.apps:
        mine = {
            name: share for name, share in result.shares[app.key].items() if by_name[name].reachable
        }
        for name, share in result.shares[app.key].items():
            assert share.placed
            assert eligible(app.selector, by_name[name])
            assert 0 <= share.min_replicas <= share.replicas <= share.max_replicas
        for share in mine.values():
            assert share.max_replicas >= 1
            if app.max_replicas_per_site is not None:
                assert share.replicas <= app.max_replicas_per_site
        assert sum(share.replicas for share in mine.values()) <= app.max_replicas
        if app.max_sites is not None:
            assert len(mine) <= app.max_sites
        if not any(s.replicas for s in mine.values()) and app.key not in result.shortfalls:
            # Nothing runs and nothing is wrong: no active demand and no replicas asked for.
            assert app.min_replicas == 0
            assert not any(
                is_active(d, app.idle_timeout) and d.concurrency > 0 for d in app.demand
            ) or all(not by_name.get(d.origin) for d in app.demand)


@PROPERTIES
@given(fleets())
def test_unreachable_eligible_sites_keep_exactly_their_share(fleet: Fleet) -> None:
    result = place(fleet)
    for app in fleet.apps:
        for site in fleet.sites:
            if site.reachable:
                continue
            had = fleet.current.get(app.key, {}).get(site.name)
            kept = had is not None and had.placed and eligible(app.selector, site)
            expected = had if kept else None
            assert result.shares[app.key].get(site.name) == expected


@PROPERTIES
@given(fleets(ample=True))
def test_with_ample_room_every_reachable_origin_is_fully_served(fleet: Fleet) -> None:
    apps = [
        replace(app, max_replicas=1000, max_sites=None, max_replicas_per_site=None)
        for app in fleet.apps
    ]
    result = place_traffic(apps, fleet.sites, fleet.current, params=fleet.params)
    by_name = {site.name: site for site in fleet.sites}
    for app in apps:
        sent: dict[str, float] = {}
        for route in result.routes[app.key]:
            sent[route.origin] = sent.get(route.origin, 0.0) + route.concurrency
        routed = {route.origin for route in result.routes[app.key]}
        for d in app.demand:
            if not is_active(d, app.idle_timeout):
                continue
            reachable = [
                s
                for s in fleet.sites
                if s.reachable
                and eligible(app.selector, s)
                and (ms := rtt(by_name, d.origin, s.name)) is not None
                and (app.max_latency_ms is None or ms <= app.max_latency_ms)
            ]
            if reachable:
                assert d.origin in routed, d
                assert sent[d.origin] == pytest.approx(d.concurrency, abs=1e-6)
        if app.key in result.shortfalls:
            # Room is ample: only demand out of reach, or no eligible site for the minimums.
            message = result.shortfalls[app.key]
            assert "unserved" in message or "the selector" in message


@PROPERTIES
@given(fleets(), st.data())
def test_same_inputs_same_result_whatever_the_order_of_sites_and_demand(
    fleet: Fleet, data: st.DataObject
) -> None:
    result = place(fleet)
    shuffled_sites = data.draw(st.permutations(fleet.sites))
    shuffled_apps = [
        replace(app, demand=tuple(data.draw(st.permutations(app.demand)))) for app in fleet.apps
    ]
    again = place_traffic(
        shuffled_apps, shuffled_sites, fleet.current, used=fleet.used, params=fleet.params
    )
    assert again == result
    assert place(fleet) == result


@PROPERTIES
@given(fleets())
def test_placing_again_from_the_result_changes_nothing(fleet: Fleet) -> None:
    first = place(fleet)
    again = place_traffic(
        fleet.apps, fleet.sites, first.shares, used=fleet.used, params=fleet.params
    )
    assert again == first


@PROPERTIES
@given(fleets(), st.data())
def test_an_incremental_pass_equals_a_full_pass(fleet: Fleet, data: st.DataObject) -> None:
    planner = TrafficPlanner(fleet.params)
    before = planner.full(fleet.apps, fleet.sites, fleet.current, used=fleet.used)
    changed = []
    for app in data.draw(st.lists(st.sampled_from(fleet.apps), unique_by=lambda a: a.key)):
        rows = data.draw(st.lists(DEMAND_ROW, max_size=6, unique_by=lambda d: d.origin))
        changed.append(replace(app, demand=tuple(rows)))
    after = planner.update(changed)
    by_key = {app.key: app for app in changed}
    new_apps = [by_key.get(app.key, app) for app in fleet.apps]
    expected = place_traffic(
        new_apps, fleet.sites, before.shares, used=fleet.used, params=fleet.params
    )
    assert after == expected
    assert planner.recomputed <= len(fleet.apps)


# ---------------------------------------------------------------------------------------------
# Examples: two sites in Paris (10 km apart), Lyon (390 km), two in Berlin (880 km), Tokyo.
# A round trip is 1 ms plus 2 ms per 100 km: Paris-Paris 1.2 ms, Paris-Lyon 8.8 ms.


def site(name: str, region: str, lat: float | None, lon: float | None, **changes: Any) -> SiteView:
    """A site with room for 10 replicas of 0.5 cores and 256Mi unless told otherwise."""
    view = SiteView(
        name=SiteName(name),
        region=region,
        zone=f"{region}-1",
        labels={},
        reachable=True,
        cpu=8.0,
        memory=16 * GI,
        max_replicas=10,
        lat=lat,
        lon=lon,
    )
    return replace(view, **changes)


FLEET = [
    site("paris-1", "fr", 48.8566, 2.3522),
    site("paris-2", "fr", 48.8000, 2.4500),
    site("lyon", "fr", 45.7640, 4.8357),
    site("berlin-1", "de", 52.5200, 13.4050),
    site("berlin-2", "de", 52.4500, 13.3000),
    site("tokyo", "jp", 35.6762, 139.6503),
]
BY_NAME = {s.name: s for s in FLEET}


def with_site(name: str, **changes: Any) -> list[SiteView]:
    """The example fleet with one site changed."""
    return [replace(s, **changes) if s.name == name else s for s in FLEET]


def demand(origin: str, concurrency: float, idle: float | None = 5.0) -> Demand:
    return Demand(
        origin=SiteName(origin), concurrency=concurrency, requests_per_second=1.0, idle_seconds=idle
    )


def app(*rows: Demand, **changes: Any) -> TrafficApp:
    """An app of 0.5 cores and 256Mi per replica, 10 in flight each, within 5 ms."""
    view = TrafficApp(
        key=AppKey("shop/web"),
        cpu=0.5,
        memory=256 * MI,
        target_concurrency=10.0,
        max_latency_ms=5.0,
        demand=rows,
    )
    return replace(view, **changes)


def shares(result: TrafficResult, key: str = "shop/web") -> dict[str, Share]:
    return {str(name): share for name, share in result.shares[AppKey(key)].items()}


def running(result: TrafficResult, key: str = "shop/web") -> dict[str, int]:
    return {name: s.replicas for name, s in result.shares[AppKey(key)].items() if s.replicas}


def test_demand_in_one_region_opens_a_site_there_only() -> None:
    web = app(demand("paris-1", 25), demand("paris-2", 5))
    result = place_traffic([web], FLEET, {})
    # One site reaches both origins; paris-1 carries the larger one at 0 ms.
    assert shares(result) == {"paris-1": Share(replicas=3, min_replicas=0, max_replicas=6)}
    assert [(r.origin, r.site, r.concurrency) for r in result.routes[web.key]] == [
        ("paris-1", "paris-1", 25.0),
        ("paris-2", "paris-1", 5.0),
    ]
    assert result.shortfalls == {}
    assert result.used == {"paris-1": Usage(cpu=1.5, memory=3 * 256 * MI, replicas=3)}


def test_demand_moving_to_another_region_moves_replicas_and_parks_the_old_site_after_idle() -> None:
    step1 = place_traffic([app(demand("paris-1", 25))], FLEET, {})
    assert running(step1) == {"paris-1": 3}

    # Berlin wakes up while Paris is still active (idle 299 s < 300 s): both run.
    web = app(demand("paris-1", 0.5, idle=299), demand("berlin-1", 12))
    step2 = place_traffic([web], FLEET, step1.shares)
    assert running(step2) == {"paris-1": 1, "berlin-1": 2}

    # Paris idle for the whole idle timeout: its site goes to zero but stays placed.
    web = app(demand("paris-1", 0.0, idle=300), demand("berlin-1", 12))
    step3 = place_traffic([web], FLEET, step2.shares)
    assert shares(step3) == {
        "berlin-1": Share(replicas=2, min_replicas=0, max_replicas=4),
        "paris-1": Share(replicas=0, min_replicas=0, max_replicas=2),
    }
    assert step3.routes[web.key][0].site == "berlin-1"
    # And stays parked while that past demand is remembered.
    assert place_traffic([web], FLEET, step3.shares) == step3


def test_parked_sites_beyond_the_limit_are_dropped_farthest_first() -> None:
    params = TrafficParams(max_parked_sites=1)
    current = {
        AppKey("shop/web"): {
            SiteName("lyon"): Share(0, 0, 2),
            SiteName("tokyo"): Share(0, 0, 2),
            SiteName("berlin-2"): Share(2, 0, 4),
        }
    }
    # Past demand in two regions (fr, jp), active demand at berlin-1: one parked site is kept,
    # the nearest to berlin (lyon, not tokyo); berlin-2 (open before) serves berlin now.
    web = app(demand("lyon", 0.0, idle=900), demand("tokyo", 0.0, idle=900), demand("berlin-1", 5))
    result = place_traffic([web], FLEET, current, params=params)
    assert shares(result) == {
        "berlin-2": Share(replicas=1, min_replicas=0, max_replicas=3),
        "lyon": Share(replicas=0, min_replicas=0, max_replicas=2),
    }


def test_small_recent_demand_keeps_a_replica() -> None:
    result = place_traffic([app(demand("tokyo", 0.001, idle=10))], FLEET, {})
    assert running(result) == {"tokyo": 1}


def test_an_origin_seen_but_idle_counts_as_no_demand() -> None:
    web = app(demand("tokyo", 3.0, idle=400), min_sites=0)
    assert shares(place_traffic([web], FLEET, {})) == {}
    never_idle = replace(web, idle_timeout=0.0)
    assert running(place_traffic([never_idle], FLEET, {})) == {"tokyo": 1}


def test_no_origin_is_served_beyond_the_latency_bound() -> None:
    # Lyon is 8.8 ms from Paris: beyond 5 ms. With Lyon not eligible, its demand is unserved.
    web = app(demand("lyon", 4.0), demand("paris-1", 4.0), selector=SiteSelector(sites=["paris-2"]))
    result = place_traffic([web], FLEET, {})
    assert running(result) == {"paris-2": 1}
    assert [r.origin for r in result.routes[web.key]] == ["paris-1"]
    nearest = estimated_rtt_ms(
        great_circle_km(45.7640, 4.8357, BY_NAME[SiteName("paris-2")].lat or 0, 2.45)
    )
    assert result.shortfalls[web.key] == (
        "served 4 of 8 requests in flight; unserved: lyon 4 of 4 (no eligible reachable site "
        f"within 5 ms; nearest: paris-2 at {nearest:.1f} ms)"
    )
    # A wider bound reaches it.
    wider = place_traffic([replace(web, max_latency_ms=10.0)], FLEET, {})
    assert {r.origin for r in wider.routes[web.key]} == {"lyon", "paris-1"}
    assert wider.shortfalls == {}


def test_a_full_site_within_the_bound_is_named_in_the_shortfall() -> None:
    web = app(demand("paris-1", 30.0), selector=SiteSelector(regions=["fr"]))
    used = {
        SiteName("paris-1"): Usage(cpu=8.0, replicas=1),
        SiteName("paris-2"): Usage(replicas=10),
    }
    result = place_traffic([web], FLEET, {}, used=used)
    # Nothing runs; minSites keeps it placed, at zero, at the nearest site with room.
    assert shares(result) == {"lyon": Share(0, 0, 2)}
    assert result.shortfalls[web.key] == (
        "served 0 of 30 requests in flight; unserved: paris-1 30 of 30 (sites within 5 ms are "
        "full (paris-1: cpu full, paris-2: max replicas reached))"
    )


def test_capacity_taken_before_is_respected() -> None:
    web = app(demand("paris-1", 45.0))
    used = {SiteName("paris-1"): Usage(cpu=7.0, memory=GI, replicas=3)}
    result = place_traffic([web], FLEET, {}, used=used)
    # paris-1 has room for 2 (1 core left): paris-2 (1.2 ms away) takes all 5 instead.
    assert running(result) == {"paris-2": 5}
    assert result.used[SiteName("paris-1")] == used[SiteName("paris-1")]


def test_apps_take_capacity_one_after_the_other_tightest_bound_first() -> None:
    small = [with_site("paris-1", max_replicas=3)[0], *FLEET[1:]]
    loose = replace(app(demand("paris-1", 30.0)), key=AppKey("shop/loose"), max_latency_ms=5.0)
    tight = replace(app(demand("paris-1", 30.0)), key=AppKey("shop/tight"), max_latency_ms=0.5)
    result = place_traffic([loose, tight], small, {})
    # The tight app can only use paris-1 itself, so it chooses first; the loose one goes next door.
    assert running(result, "shop/tight") == {"paris-1": 3}
    assert running(result, "shop/loose") == {"paris-2": 3}
    assert list(result.shares) == [loose.key, tight.key]  # the result keeps the order given


def test_max_sites_leaves_the_smaller_demand_unserved() -> None:
    web = app(demand("paris-1", 20.0), demand("berlin-1", 5.0), max_sites=1)
    result = place_traffic([web], FLEET, {})
    assert running(result) == {"paris-1": 2}
    assert result.shortfalls[web.key] == (
        "served 20 of 25 requests in flight; unserved: berlin-1 5 of 5 (maxSites 1 reached)"
    )


def test_min_sites_parks_the_nearest_extra_sites() -> None:
    web = app(demand("paris-1", 5.0), min_sites=3)
    result = place_traffic([web], FLEET, {})
    assert shares(result) == {
        "paris-1": Share(1, 0, 3),
        "paris-2": Share(0, 0, 2),
        "lyon": Share(0, 0, 2),
    }


def test_fleet_max_replicas_caps_the_count() -> None:
    web = app(demand("paris-1", 30.0), max_replicas=2)
    result = place_traffic([web], FLEET, {})
    assert running(result) == {"paris-1": 2}
    assert shares(result)["paris-1"].max_replicas == 2  # headroom trimmed to the fleet bound
    assert result.shortfalls[web.key] == (
        "served 20 of 30 requests in flight; unserved: paris-1 10 of 30 (maxReplicas 2 reached)"
    )


def test_fleet_min_replicas_run_even_without_the_demand_for_them() -> None:
    web = app(demand("paris-1", 5.0), min_replicas=4)
    assert shares(place_traffic([web], FLEET, {})) == {"paris-1": Share(4, 4, 8)}


def test_max_replicas_per_site_spreads_load_over_more_sites() -> None:
    web = app(demand("paris-1", 45.0), max_replicas_per_site=3)
    assert running(place_traffic([web], FLEET, {})) == {"paris-1": 3, "paris-2": 2}


def test_no_demand_at_all_places_min_sites_at_zero() -> None:
    web = app(min_sites=2)
    result = place_traffic([web], FLEET, {})
    placed = shares(result)
    assert len(placed) == 2
    assert all(s == Share(0, 0, 2) for s in placed.values())
    assert result.shortfalls == {}
    # Sticky: the same sites next time, and with minReplicas 1 one of them runs it.
    assert place_traffic([web], FLEET, result.shares) == result
    woken = place_traffic([replace(web, min_replicas=1)], FLEET, result.shares)
    assert set(shares(woken)) == set(placed)
    assert sorted(s.replicas for s in shares(woken).values()) == [0, 1]


def test_an_unreachable_site_keeps_its_share_and_reachable_ones_serve_its_demand() -> None:
    current = {AppKey("shop/web"): {SiteName("paris-1"): Share(3, 0, 6)}}
    web = app(demand("paris-1", 25.0), demand("paris-2", 5.0))
    result = place_traffic([web], with_site("paris-1", reachable=False), current)
    assert shares(result) == {"paris-1": Share(3, 0, 6), "paris-2": Share(3, 0, 6)}
    assert {r.site for r in result.routes[web.key]} == {"paris-2"}
    # Back: paris-1 serves again (it is open and sticky), the compensating site goes.
    back = place_traffic([web], FLEET, result.shares)
    assert running(back) == {"paris-1": 3}


def test_replicas_scale_down_only_past_the_margin() -> None:
    current = {AppKey("shop/web"): {SiteName("paris-1"): Share(4, 0, 8)}}
    # 4 replicas stay while the load is at least (4 - 1) * 10 * (1 - 0.3) = 21.
    assert running(place_traffic([app(demand("paris-1", 21.0))], FLEET, current)) == {"paris-1": 4}
    # Below it, down to what keeps the load above the same line for the new count.
    assert running(place_traffic([app(demand("paris-1", 20.0))], FLEET, current)) == {"paris-1": 3}
    assert running(place_traffic([app(demand("paris-1", 5.0))], FLEET, current)) == {"paris-1": 1}
    # Up at once.
    assert running(place_traffic([app(demand("paris-1", 41.0))], FLEET, current)) == {"paris-1": 5}


def test_a_current_site_closes_only_when_the_rest_has_room_to_spare() -> None:
    two = place_traffic([app(demand("paris-1", 60.0), demand("paris-2", 60.0))], FLEET, {})
    assert running(two) == {"paris-1": 6, "paris-2": 6}
    # 90 in flight fit one site (100) but not with 20% to spare: both stay.
    web = app(demand("paris-1", 45.0), demand("paris-2", 45.0))
    assert set(running(place_traffic([web], FLEET, two.shares))) == {"paris-1", "paris-2"}
    # From scratch one site is enough.
    assert running(place_traffic([web], FLEET, {})) == {"paris-1": 9}
    # At 70 in flight one site has room to spare: one closes.
    web = app(demand("paris-1", 35.0), demand("paris-2", 35.0))
    assert len(running(place_traffic([web], FLEET, two.shares))) == 1


def test_the_current_site_stays_when_another_is_only_slightly_better() -> None:
    current = {AppKey("shop/web"): {SiteName("paris-2"): Share(2, 0, 4)}}
    web = app(demand("paris-1", 10.0), demand("paris-2", 9.0))
    # From scratch paris-1 (the larger origin) wins; with paris-2 running, it stays.
    assert running(place_traffic([web], FLEET, {})) == {"paris-1": 2}
    assert running(place_traffic([web], FLEET, current)) == {"paris-2": 2}
    # Without hysteresis it moves.
    plain = TrafficParams().without_hysteresis()
    assert running(place_traffic([web], FLEET, current, params=plain)) == {"paris-1": 2}


def test_a_measured_round_trip_replaces_the_estimate() -> None:
    web = app(demand("lyon", 4.0), selector=SiteSelector(sites=["paris-1"]))
    assert running(place_traffic([web], FLEET, {})) == {}
    measured = {(SiteName("lyon"), SiteName("paris-1")): 4.5}
    assert running(place_traffic([web], FLEET, {}, rtt_ms=measured)) == {"paris-1": 1}


def test_a_site_without_coordinates_is_used_only_when_no_located_site_qualifies() -> None:
    nowhere = site("edge-x", "fr", None, None)
    fleet = [*FLEET, nowhere]
    unbounded = app(demand("paris-1", 5.0), demand("edge-x", 5.0), max_latency_ms=None)
    result = place_traffic([unbounded], fleet, {})
    # edge-x serves itself (0 ms); paris-1's demand stays with a located site.
    assert {(r.origin, r.site) for r in result.routes[unbounded.key]} == {
        ("edge-x", "edge-x"),
        ("paris-1", "paris-1"),
    }
    only_unlocated = replace(unbounded, selector=SiteSelector(sites=["edge-x"]))
    result = place_traffic([only_unlocated], fleet, {})
    assert {(r.origin, r.site) for r in result.routes[unbounded.key]} == {
        ("edge-x", "edge-x"),
        ("paris-1", "edge-x"),
    }
    # With a bound, a distance that cannot be known is not within it.
    bounded = replace(only_unlocated, max_latency_ms=50.0)
    result = place_traffic([bounded], fleet, {})
    assert {r.origin for r in result.routes[bounded.key]} == {"edge-x"}


def test_an_incremental_pass_redoes_only_the_changed_app() -> None:
    apps = [
        replace(app(demand("paris-1", 25.0)), key=AppKey("shop/a")),
        replace(app(demand("berlin-1", 25.0)), key=AppKey("shop/b")),
        replace(app(demand("tokyo", 25.0)), key=AppKey("shop/c")),
    ]
    planner = TrafficPlanner()
    first = planner.full(apps, FLEET, {})
    settled = planner.full(apps, FLEET, first.shares)
    changed = replace(apps[1], demand=(demand("berlin-1", 45.0),))
    after = planner.update([changed])
    assert planner.recomputed == 1
    assert running(after, "shop/b") == {"berlin-1": 5}
    assert after.shares[AppKey("shop/a")] == settled.shares[AppKey("shop/a")]
    assert after == place_traffic([apps[0], changed, apps[2]], FLEET, settled.shares)
    # Nothing changed: the same; the changed app is redone once more, to see it settled.
    assert planner.update([]) == after
    assert planner.recomputed == 1
    assert planner.update([]) == after
    assert planner.recomputed == 0


def test_the_planner_needs_a_full_pass_first_and_known_apps() -> None:
    planner = TrafficPlanner()
    with pytest.raises(RuntimeError, match="call full"):
        planner.update([])
    planner.full([app()], FLEET, {})
    with pytest.raises(ValueError, match="app shop/other was not in the last full pass"):
        planner.update([replace(app(), key=AppKey("shop/other"))])


def test_impossible_values_are_refused_where_they_are_made() -> None:
    with pytest.raises(ValueError, match="app shop/web: target_concurrency must be > 0"):
        app(target_concurrency=0.0)
    with pytest.raises(ValueError, match="min_sites 3 exceeds max_sites 2"):
        app(min_sites=3, max_sites=2)
    with pytest.raises(ValueError, match="one demand row per origin; repeated: tokyo"):
        app(demand("tokyo", 1.0), demand("tokyo", 2.0))
    with pytest.raises(ValueError, match="concurrency must be finite"):
        demand("tokyo", math.nan)
    with pytest.raises(ValueError, match="min_replicas <= replicas <= max_replicas"):
        Share(replicas=3, min_replicas=0, max_replicas=2)
    with pytest.raises(ValueError, match="site x: set both lat and lon"):
        site("x", "fr", 1.0, None)
    with pytest.raises(ValueError, match="keep_load_margin must be in"):
        TrafficParams(keep_load_margin=1.0)
    with pytest.raises(ValueError, match="each site must be given once; repeated: lyon"):
        place_traffic([], [*FLEET, FLEET[2]], {})


def test_selectors_match_as_in_explicit_placement() -> None:
    labelled = with_site("lyon", labels={"tier": "gold"})
    cases: Sequence[SiteSelector] = [
        SiteSelector(regions=["de"]),
        SiteSelector(zones=["fr-1"]),
        SiteSelector(sites=["tokyo", "lyon", "nowhere"]),
        SiteSelector(match_labels={"tier": "gold"}),
        SiteSelector(regions=["fr"], match_labels={"tier": "gold"}),
    ]
    for selector in cases:
        web = app(min_sites=6, selector=selector)
        placed = set(shares(place_traffic([web], labelled, {})))
        assert placed == {s.name for s in labelled if eligible(selector, s)}, selector
