"""Choosing DNS answers: properties over random routing tables, then examples as documentation.

The properties re-derive eligibility, reasons and distances from the rules instead of calling
the helpers under test, so a bug in a helper shows up as a failed property.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.routing.answer import (
    BEYOND_LIMIT,
    DOWN,
    DUPLICATE,
    NO_READY_REPLICA,
    SITE_REMOVED,
    UNREACHABLE,
    Answer,
    choose,
    locate,
)
from edgefleet.routing.geo import estimated_rtt_ms, great_circle_km
from edgefleet.routing.table import AppId, Endpoint, Origin, RouteTable, SitePoint

PROPERTIES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------
# Strategies

POOL = tuple(f"site-{i:02d}" for i in range(40))
"""Site names; those a table leaves out are removed sites that endpoints may still name."""
GONE = ("gone-a", "gone-b")
"""Names no table ever has."""
UNKNOWN_SITE = "nowhere"
"""An origin site that is not in any table."""
LATS = st.floats(-90, 90, allow_nan=False)
LONS = st.floats(-180, 180, allow_nan=False)
# A few shared places make equal distances (and so name tie-breaks) common.
PLACES = st.sampled_from([(48.8566, 2.3522), (51.5074, -0.1278), (0.0, 0.0)]) | st.tuples(
    LATS, LONS
)
REACHABLE = st.sampled_from([True, True, True, True, False])
# Networks in a small space (10.0.0.0/8, fd00::/8) so that they overlap and nest often.
V4_NETWORKS = st.builds(
    lambda value, length: ip_network((0x0A000000 | value, length), strict=False),
    st.integers(0, 2**24 - 1),
    st.integers(8, 30),
)
V6_NETWORKS = st.builds(
    lambda value, length: ip_network(((0xFD << 120) | value, length), strict=False),
    st.integers(0, 2**120 - 1),
    st.integers(8, 64),
)
# Shared networks make equal prefixes at two sites (ties) and nesting common.
SHARED_NETWORKS = st.sampled_from(
    [ip_network("10.0.0.0/8"), ip_network("10.1.0.0/16"), ip_network("10.1.2.0/24")]
)
NETWORK_LISTS = st.lists(SHARED_NETWORKS | V4_NETWORKS | V6_NETWORKS, max_size=3).map(tuple)
READY = st.sampled_from([0, 1, 2, 3])
HEADROOM = st.sampled_from([0.0, 0.5, 1.0]) | st.floats(-0.5, 1.0)
RTT = st.sampled_from([1.0, 5.0]) | st.floats(0, 300)
LIMITS = st.integers(1, 4)


@st.composite
def site_points(draw: st.DrawFn, name: str, *, networks: bool) -> SitePoint:
    """A site at a random place, a fifth of them unreachable; with client networks or none."""
    lat, lon = draw(PLACES)
    return SitePoint(
        name=name,
        region="r",
        zone="z",
        lat=lat,
        lon=lon,
        ip="192.0.2.1",
        ingress_port=8080,
        dns_port=5353,
        networks=draw(NETWORK_LISTS) if networks else (),
        reachable=draw(REACHABLE),
    )


@st.composite
def tables(draw: st.DrawFn, *, networks: bool = False) -> RouteTable:
    """3-30 sites; 1-5 apps, each at distinct sites, a few of them removed from the table.

    Client networks only when asked: ``choose`` ignores them, and drawing them costs.
    """
    names = draw(st.lists(st.sampled_from(POOL), min_size=3, max_size=30, unique=True))
    sites = {name: draw(site_points(name, networks=networks)) for name in names}
    removed = [name for name in POOL if name not in sites] + list(GONE)
    apps: dict[AppId, tuple[Endpoint, ...]] = {}
    for i in range(draw(st.integers(1, 5))):
        served = draw(st.lists(st.sampled_from(names), min_size=1, max_size=10, unique=True))
        served += draw(st.lists(st.sampled_from(removed), max_size=2, unique=True))
        apps[("tenant", f"app-{i}")] = tuple(
            Endpoint(site=site, ready=draw(READY), headroom=draw(HEADROOM))
            for site in draw(st.permutations(served))
        )
    return RouteTable(version="v1", sites=sites, apps=apps)


@dataclass(frozen=True)
class Case:
    """One question to ``choose``."""

    table: RouteTable
    app: AppId
    origin: Origin
    health: dict[str, bool]
    rtt_ms: dict[str, float]
    limit: int

    def answer(self) -> Answer:
        """``choose`` for this case; the app always exists."""
        answer = choose(
            self.table,
            *self.app,
            self.origin,
            health=self.health,
            rtt_ms=self.rtt_ms,
            limit=self.limit,
        )
        assert answer is not None
        return answer


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A random table, one of its apps, an origin of each kind, probe verdicts and round trips.

    Origins, verdicts and round trips mostly name the app's own sites, where they matter.
    """
    table = draw(tables())
    app = draw(st.sampled_from(sorted(table.apps)))
    served = [endpoint.site for endpoint in table.apps[app]]
    names = st.sampled_from(sorted(table.sites))
    if served:
        names = st.sampled_from(served) | names
    at_site = st.builds(Origin, site=names)
    origin = draw(
        st.one_of(
            at_site,
            at_site,
            st.builds(Origin, lat=LATS, lon=LONS),
            st.builds(Origin, site=st.just(UNKNOWN_SITE), lat=LATS, lon=LONS),
            st.just(Origin(site=UNKNOWN_SITE)),
            st.just(Origin()),
        )
    )
    return Case(
        table=table,
        app=app,
        origin=origin,
        health=draw(st.dictionaries(names, st.booleans(), max_size=4)),
        rtt_ms=draw(st.just({}) | st.dictionaries(names, RTT, max_size=8)),
        limit=draw(LIMITS),
    )


@st.composite
def local_cases(draw: st.DrawFn) -> Case:
    """A random case whose origin is one of the app's sites, made eligible, at any headroom.

    Random cases rarely have a saturated origin site with better sites around, the one case
    where "local first" overrides the other rules.
    """
    case = draw(cases())
    endpoints = case.table.apps[case.app]
    here = draw(st.sampled_from([e for e in endpoints if e.site in case.table.sites]))
    apps = dict(case.table.apps)
    apps[case.app] = tuple(
        replace(e, ready=max(1, e.ready)) if e.site == here.site else e for e in endpoints
    )
    sites = dict(case.table.sites)
    sites[here.site] = replace(sites[here.site], reachable=True)
    return replace(
        case,
        table=replace(case.table, sites=sites, apps=apps),
        origin=Origin(site=here.site),
        health={name: up for name, up in case.health.items() if name != here.site},
    )


# ---------------------------------------------------------------------------------------------
# The rules, re-derived independently of the code under test


def expected_reason(case: Case, endpoint: Endpoint) -> str | None:
    """Why the endpoint is ineligible, the first rule it breaks; None if eligible."""
    site = case.table.sites.get(endpoint.site)
    if site is None:
        return SITE_REMOVED
    if not site.reachable:
        return UNREACHABLE
    if case.health.get(endpoint.site) is False:
        return DOWN
    if endpoint.ready <= 0:
        return NO_READY_REPLICA
    return None


def eligible_sites(case: Case) -> set[str]:
    """Names of the app's eligible sites."""
    return {e.site for e in case.table.apps[case.app] if expected_reason(case, e) is None}


def expected_distance(case: Case, site: str) -> float | None:
    """Measured round trip, else the estimate from the origin point, else None."""
    if site in case.rtt_ms:
        return case.rtt_ms[site]
    origin = case.origin
    at = case.table.sites.get(origin.site) if origin.site is not None else None
    if at is not None:
        here: tuple[float, float] | None = (at.lat, at.lon)
    elif origin.lat is not None and origin.lon is not None:
        here = (origin.lat, origin.lon)
    else:
        here = None
    point = case.table.sites.get(site)
    if here is None or point is None:
        return None
    return estimated_rtt_ms(great_circle_km(*here, point.lat, point.lon))


def endpoint_of(case: Case, site: str) -> Endpoint:
    """The app's endpoint at ``site`` (tables from the strategy have one per site)."""
    return next(e for e in case.table.apps[case.app] if e.site == site)


def shuffled(case: Case, rng: random.Random) -> Case:
    """The same question with every sequence and mapping built in another order."""

    def reorder(mapping: Mapping[str, object]) -> list[str]:
        keys = list(mapping)
        rng.shuffle(keys)
        return keys

    table = case.table
    site_order = reorder(table.sites)
    app_order = list(table.apps)
    rng.shuffle(app_order)
    apps = {}
    for key in app_order:
        endpoints = list(table.apps[key])
        rng.shuffle(endpoints)
        apps[key] = tuple(endpoints)
    return replace(
        case,
        table=RouteTable(
            version=table.version, sites={n: table.sites[n] for n in site_order}, apps=apps
        ),
        health={n: case.health[n] for n in reorder(case.health)},
        rtt_ms={n: case.rtt_ms[n] for n in reorder(case.rtt_ms)},
    )


# ---------------------------------------------------------------------------------------------
# Properties


@PROPERTIES
@given(case=cases())
def test_answers_only_eligible_sites_and_some_whenever_one_exists(case: Case) -> None:
    answer = case.answer()
    eligible = eligible_sites(case)
    assert {site.name for site in answer.sites} <= eligible
    assert bool(answer.sites) == bool(eligible)
    # The answer's sites are the table's own.
    assert all(case.table.sites[site.name] is site for site in answer.sites)


@PROPERTIES
@given(case=cases() | local_cases())
def test_the_origin_site_comes_first_whenever_it_is_eligible(case: Case) -> None:
    answer = case.answer()
    local = case.origin.site in eligible_sites(case)
    assert answer.local == local
    if local:
        assert answer.sites[0].name == case.origin.site


@PROPERTIES
@given(case=cases(), rng=st.randoms(use_true_random=False))
def test_the_answer_does_not_depend_on_the_order_of_the_inputs(
    case: Case, rng: random.Random
) -> None:
    assert shuffled(case, rng).answer() == case.answer()
    assert case.answer() == case.answer()


@PROPERTIES
@given(case=cases())
def test_answers_as_many_sites_as_the_limit_allows(case: Case) -> None:
    assert len(case.answer().sites) == min(case.limit, len(eligible_sites(case)))


@PROPERTIES
@given(case=cases())
def test_nearest_first_within_headroom_groups(case: Case) -> None:
    answer = case.answer()
    ranked = []
    for site in answer.sites:
        if site.name == case.origin.site:
            continue
        endpoint = endpoint_of(case, site.name)
        distance = expected_distance(case, site.name)
        ranked.append((endpoint.headroom <= 0, distance, endpoint.headroom, site.name))
    # Sites with headroom come before saturated ones.
    groups = [saturated for saturated, *_ in ranked]
    assert groups == sorted(groups)
    for (group_a, dist_a, head_a, name_a), (group_b, dist_b, head_b, name_b) in pairwise(ranked):
        if group_a != group_b:
            continue
        if dist_a is not None and dist_b is not None:
            assert (dist_a, name_a) < (dist_b, name_b)
        elif dist_a is None and dist_b is None:
            assert (-head_a, name_a) < (-head_b, name_b)
        else:  # known distances before unknown ones
            assert dist_a is not None


@PROPERTIES
@given(case=cases())
def test_a_cut_site_is_no_better_than_the_last_chosen(case: Case) -> None:
    answer = case.answer()
    cut = [c for c in answer.considered if c.reason == BEYOND_LIMIT]
    if not cut:
        return
    last = answer.sites[-1].name
    if last == case.origin.site:
        # Only the origin site is chosen: anything goes after it.
        assert len(answer.sites) == 1
        return

    def rank(site: str) -> tuple[bool, bool, float, str]:
        headroom = endpoint_of(case, site).headroom
        distance = expected_distance(case, site)
        if distance is None:
            return headroom <= 0, True, -headroom, site
        return headroom <= 0, False, distance, site

    assert all(rank(last) < rank(c.site) for c in cut)


@PROPERTIES
@given(case=cases())
def test_considered_lists_every_endpoint_once_with_the_right_reason(case: Case) -> None:
    answer = case.answer()
    endpoints = case.table.apps[case.app]
    assert Counter((c.site, c.ready, c.headroom) for c in answer.considered) == Counter(
        (e.site, e.ready, e.headroom) for e in endpoints
    )
    chosen_names = [site.name for site in answer.sites]
    # The chosen come first, in answer order, and only they are flagged.
    assert [c.site for c in answer.considered[: len(chosen_names)]] == chosen_names
    assert [c.site for c in answer.considered if c.chosen] == chosen_names
    for candidate in answer.considered:
        reason = expected_reason(case, endpoint_of(case, candidate.site))
        if reason is None:
            assert candidate.reason == (None if candidate.chosen else BEYOND_LIMIT)
        else:
            assert candidate.reason == reason
            assert not candidate.chosen
        assert candidate.chosen == (candidate.reason is None)
        assert candidate.measured == (candidate.site in case.rtt_ms)
        distance = expected_distance(case, candidate.site)
        if distance is None:
            assert candidate.rtt_ms is None
        else:
            assert candidate.rtt_ms == pytest.approx(distance)


# ---------------------------------------------------------------------------------------------
# locate

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
ANY_ADDRESS = st.builds(IPv4Address, st.integers(0, 2**32 - 1)) | st.builds(
    IPv6Address, st.integers(0, 2**128 - 1)
)


@st.composite
def located(draw: st.DrawFn) -> tuple[RouteTable, Address]:
    """A table with client networks and an address, often inside one of its networks."""
    table = draw(tables(networks=True))
    networks = [network for site in table.sites.values() for network in site.networks]
    inside = draw(st.booleans())
    if networks and inside:
        network = draw(st.sampled_from(networks))
        offset = draw(st.integers(0, network.num_addresses - 1))
        return table, network.network_address + offset
    return table, draw(ANY_ADDRESS)


def expected_location(table: RouteTable, contains: Callable[[Network], bool]) -> tuple[Origin, int]:
    """Brute force over every site network that ``contains`` accepts: longest, then first name."""
    matches = [
        (-network.prefixlen, name)
        for name, site in table.sites.items()
        for network in site.networks
        if contains(network)
    ]
    if not matches:
        return Origin(), 0
    length, name = min(matches)
    return Origin(site=name), -length


@PROPERTIES
@given(case=located())
def test_locate_picks_the_longest_prefix_containing_the_address(
    case: tuple[RouteTable, Address],
) -> None:
    table, address = case

    def contains(network: Network) -> bool:
        return network.version == address.version and address in network

    expected = expected_location(table, contains)
    assert locate(table, address) == expected
    assert locate(table, str(address)) == expected


@PROPERTIES
@given(case=located(), data=st.data())
def test_locate_matches_a_subnet_only_to_networks_that_hold_all_of_it(
    case: tuple[RouteTable, Address], data: st.DataObject
) -> None:
    table, address = case
    length = data.draw(st.integers(0, address.max_prefixlen), label="subnet prefix length")
    subnet = ip_network((int(address), length), strict=False)

    def holds(network: Network) -> bool:
        # subnet_of refuses to compare across versions.
        return network.version == subnet.version and subnet.subnet_of(network)  # type: ignore[arg-type]

    expected = expected_location(table, holds)
    assert locate(table, subnet) == expected
    assert locate(table, str(subnet)) == expected
    if expected[0].site is not None:
        assert expected[1] <= length


# ---------------------------------------------------------------------------------------------
# Examples with the demo sites

DEMO = {
    "paris": (48.8566, 2.3522),
    "london": (51.5074, -0.1278),
    "new-york": (40.7128, -74.0060),
    "boston": (42.3601, -71.0589),
    "tokyo": (35.6762, 139.6503),
    "singapore": (1.3521, 103.8198),
}


def demo_table(
    *serving: str | Endpoint, unreachable: tuple[str, ...] = (), app: str = "shop"
) -> RouteTable:
    """The demo sites, with ``app`` of tenant ``acme`` at ``serving`` (names get 2 replicas)."""
    sites = {
        name: SitePoint(
            name=name,
            region="demo",
            zone="demo",
            lat=lat,
            lon=lon,
            ip=f"127.0.0.{i + 1}",
            ingress_port=8080 + i,
            dns_port=5353 + i,
            reachable=name not in unreachable,
        )
        for i, (name, (lat, lon)) in enumerate(DEMO.items())
    }
    endpoints = tuple(e if isinstance(e, Endpoint) else Endpoint(site=e, ready=2) for e in serving)
    return RouteTable(version="demo", sites=sites, apps={("acme", app): endpoints})


def names(answer: Answer | None) -> list[str]:
    """The answer's site names, best first."""
    assert answer is not None
    return [site.name for site in answer.sites]


def reasons(answer: Answer | None) -> dict[str, str | None]:
    """Each considered site's reason."""
    assert answer is not None
    return {c.site: c.reason for c in answer.considered}


PARIS = Origin(site="paris")


def test_a_paris_client_gets_london_then_tokyo() -> None:
    answer = choose(demo_table("tokyo", "london"), "acme", "shop", PARIS)
    assert names(answer) == ["london", "tokyo"]
    assert answer is not None
    assert not answer.local
    london, tokyo = answer.considered
    # Estimated from 344 km: 1 ms + 2 ms per 100 km.
    assert london.rtt_ms == pytest.approx(7.9, abs=0.1)
    paris_tokyo_km = great_circle_km(*DEMO["paris"], *DEMO["tokyo"])
    assert tokyo.rtt_ms == pytest.approx(1 + 2 * paris_tokyo_km / 100)
    assert not london.measured and not tokyo.measured
    assert (london.chosen, london.reason, london.ready, london.headroom) == (True, None, 2, 1.0)


def test_paris_serving_itself_answers_paris_first() -> None:
    answer = choose(demo_table("london", "tokyo", "paris"), "acme", "shop", PARIS)
    assert names(answer) == ["paris", "london"]
    assert answer is not None and answer.local
    assert reasons(answer)["tokyo"] == BEYOND_LIMIT


def test_the_origin_site_comes_first_even_when_saturated() -> None:
    table = demo_table(Endpoint(site="paris", ready=1, headroom=0.0), "london")
    assert names(choose(table, "acme", "shop", PARIS)) == ["paris", "london"]


def test_london_marked_down_by_a_probe_drops_out() -> None:
    table = demo_table("london", "new-york", "tokyo")
    answer = choose(table, "acme", "shop", PARIS, health={"london": False, "tokyo": True})
    assert names(answer) == ["new-york", "tokyo"]
    assert reasons(answer)["london"] == DOWN


def test_a_probe_cannot_bring_back_a_site_the_hub_lost() -> None:
    table = demo_table("london", "new-york", unreachable=("london",))
    answer = choose(table, "acme", "shop", PARIS, health={"london": True})
    assert names(answer) == ["new-york"]
    assert reasons(answer)["london"] == UNREACHABLE


def test_a_measured_round_trip_overrides_geography() -> None:
    table = demo_table("london", "new-york")
    answer = choose(table, "acme", "shop", PARIS, rtt_ms={"new-york": 2.0})
    assert names(answer) == ["new-york", "london"]
    assert answer is not None
    assert [(c.site, c.measured) for c in answer.considered] == [
        ("new-york", True),
        ("london", False),
    ]


@pytest.mark.parametrize("bogus", [math.nan, math.inf, -1.0])
def test_a_bogus_measurement_is_ignored(bogus: float) -> None:
    table = demo_table("london", "new-york")
    answer = choose(table, "acme", "shop", PARIS, rtt_ms={"new-york": bogus})
    assert names(answer) == ["london", "new-york"]
    assert answer is not None and not answer.considered[1].measured


def test_sites_with_headroom_come_before_saturated_ones() -> None:
    table = demo_table(Endpoint(site="london", ready=2, headroom=0.0), "tokyo")
    answer = choose(table, "acme", "shop", PARIS)
    assert names(answer) == ["tokyo", "london"]


def test_a_client_located_by_point_gets_the_nearest_site() -> None:
    table = demo_table("london", "new-york", "tokyo")
    near_boston = Origin(lat=42.0, lon=-71.0)
    assert names(choose(table, "acme", "shop", near_boston, limit=1)) == ["new-york"]


def test_with_no_origin_point_headroom_then_name_decide() -> None:
    table = demo_table(
        Endpoint(site="tokyo", ready=1, headroom=0.2),
        Endpoint(site="boston", ready=1, headroom=0.9),
        Endpoint(site="singapore", ready=1, headroom=0.9),
    )
    answer = choose(table, "acme", "shop", Origin(), limit=3)
    assert names(answer) == ["boston", "singapore", "tokyo"]
    assert answer is not None
    assert all(c.rtt_ms is None for c in answer.considered)


def test_with_no_origin_point_measured_sites_come_before_unmeasured_ones() -> None:
    table = demo_table("boston", "tokyo", "singapore")
    answer = choose(table, "acme", "shop", Origin(), rtt_ms={"tokyo": 180.0}, limit=3)
    assert names(answer) == ["tokyo", "boston", "singapore"]


def test_everything_down_gives_an_empty_answer() -> None:
    table = demo_table(
        "london",
        "tokyo",
        "ghost",
        Endpoint(site="boston", ready=0),
        unreachable=("tokyo",),
    )
    answer = choose(table, "acme", "shop", PARIS, health={"london": False})
    assert answer is not None
    assert answer.sites == ()
    assert not answer.local
    assert reasons(answer) == {
        "london": DOWN,
        "tokyo": UNREACHABLE,
        "ghost": SITE_REMOVED,
        "boston": NO_READY_REPLICA,
    }


def test_an_app_with_no_endpoint_exists_but_has_no_answer() -> None:
    answer = choose(demo_table(), "acme", "shop", PARIS)
    assert answer == Answer(sites=(), considered=(), local=False)


def test_an_unknown_app_gives_none() -> None:
    table = demo_table("london")
    assert choose(table, "acme", "blog", PARIS) is None
    assert choose(table, "other-tenant", "shop", PARIS) is None


def test_limit_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="limit"):
        choose(demo_table("london"), "acme", "shop", PARIS, limit=0)


def test_a_duplicate_endpoint_is_answered_once() -> None:
    table = demo_table(Endpoint(site="london", ready=1), Endpoint(site="london", ready=3), "tokyo")
    answer = choose(table, "acme", "shop", PARIS)
    assert names(answer) == ["london", "tokyo"]
    assert answer is not None
    assert [(c.site, c.ready, c.reason) for c in answer.considered] == [
        ("london", 3, None),
        ("tokyo", 2, None),
        ("london", 1, DUPLICATE),
    ]


def located_table() -> RouteTable:
    """Demo sites with client networks: london's /25 nests in paris's /24."""
    table = demo_table("london")
    networks = {
        "paris": (ip_network("192.0.2.0/24"),),
        "london": (ip_network("192.0.2.128/25"),),
        "tokyo": (ip_network("2001:db8::/32"),),
    }
    sites = {
        name: replace(site, networks=networks.get(name, ())) for name, site in table.sites.items()
    }
    return replace(table, sites=sites)


@pytest.mark.parametrize(
    ("address", "site", "length"),
    [
        ("192.0.2.5", "paris", 24),
        ("192.0.2.200", "london", 25),  # longest prefix wins
        ("::ffff:192.0.2.5", "paris", 24),  # IPv4-mapped, as from a dual-stack socket
        ("2001:db8:1::7", "tokyo", 32),
        ("192.0.2.0/24", "paris", 24),  # ECS subnet: london's /25 holds only half of it
        ("192.0.2.128/26", "london", 25),
        ("192.0.2.130/26", "london", 25),  # host bits are ignored
        ("192.0.0.0/16", None, 0),  # wider than every site network
        ("198.51.100.1", None, 0),
    ],
)
def test_locate_maps_clients_to_sites(address: str, site: str | None, length: int) -> None:
    assert locate(located_table(), address) == (Origin(site=site), length)


def test_locate_refuses_text_that_is_no_address() -> None:
    with pytest.raises(ValueError, match="does not appear to be"):
        locate(located_table(), "paris")


# ---------------------------------------------------------------------------------------------
# Wakeable sites and the latency bound (scale to zero)


def bounded(table: RouteTable, bound: float) -> RouteTable:
    """``table`` with a latency bound on acme/shop."""
    return replace(table, latency_bounds={("acme", "shop"): bound})


ASLEEP_IN_PARIS = Endpoint(site="paris", ready=0, wakeable=True)


def test_a_ready_site_comes_before_a_wakeable_one_when_both_are_within_the_bound() -> None:
    table = demo_table(ASLEEP_IN_PARIS, "london")
    assert names(choose(table, "acme", "shop", PARIS)) == ["london", "paris"]
    # London is 7.9 ms from Paris: within a 10 ms bound, so still no cold start.
    assert names(choose(bounded(table, 10), "acme", "shop", PARIS)) == ["london", "paris"]


def test_a_wakeable_site_within_the_bound_beats_a_ready_one_beyond_it() -> None:
    table = bounded(demo_table(ASLEEP_IN_PARIS, "london"), 5)
    answer = choose(table, "acme", "shop", PARIS)
    assert names(answer) == ["paris", "london"]
    assert answer is not None and answer.local
    assert {c.site: c.ready for c in answer.considered} == {"paris": 0, "london": 2}


def test_beyond_the_bound_ready_sites_still_come_before_wakeable_ones() -> None:
    far_asleep = Endpoint(site="tokyo", ready=0, wakeable=True)
    table = bounded(demo_table(far_asleep, "london"), 5)
    assert names(choose(table, "acme", "shop", PARIS)) == ["london", "tokyo"]


def test_a_site_at_zero_that_cannot_wake_is_not_answered() -> None:
    table = demo_table(Endpoint(site="paris", ready=0), "london")
    answer = choose(bounded(table, 5), "acme", "shop", PARIS)
    assert names(answer) == ["london"]
    assert reasons(answer)["paris"] == NO_READY_REPLICA


def test_a_wakeable_site_the_hub_lost_is_not_answered() -> None:
    table = bounded(demo_table(ASLEEP_IN_PARIS, "london", unreachable=("paris",)), 5)
    answer = choose(table, "acme", "shop", PARIS)
    assert names(answer) == ["london"]
    assert reasons(answer)["paris"] == UNREACHABLE
