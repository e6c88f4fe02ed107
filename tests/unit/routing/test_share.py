"""A site's share of the routing table answers what the whole table answers.

The property: for every site of a random fleet, ``choose`` over the site's share (its
neighbourhood's records and each app's section) picks the same sites as over the whole table,
also when a few of the section's endpoints are down by the site's own probes.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.geo import great_circle_km
from edgefleet.routing.answer import choose
from edgefleet.routing.share import (
    EndpointIndex,
    Neighbourhoods,
    quantized,
    section,
    serving,
)
from edgefleet.routing.table import Endpoint, Origin, RouteTable, SitePoint

APP = ("acme", "web")
PROPERTIES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def fleets(
    draw: st.DrawFn,
) -> tuple[dict[str, SitePoint], tuple[Endpoint, ...], float | None, frozenset[str] | None]:
    count = draw(st.integers(1, 30))
    points = {}
    for i in range(count):
        name = f"s{i:02d}"
        points[name] = SitePoint(
            name=name,
            region=draw(st.sampled_from(["eu", "us"])),
            zone="z",
            lat=draw(st.floats(-60, 60)),
            lon=draw(st.floats(-179, 179)),
            ip=f"10.0.0.{i}",
            ingress_port=8080,
            dns_port=5353,
            reachable=draw(st.sampled_from([True, True, True, False])),
        )
    endpoints = tuple(
        Endpoint(
            site=name,
            ready=draw(st.sampled_from([0, 0, 1, 3])),
            headroom=draw(st.sampled_from([0.0, 0.5, 1.0])),
            wakeable=draw(st.booleans()),
        )
        for name in sorted(points)
        if draw(st.booleans())
    )
    bound = draw(st.none() | st.sampled_from([10.0, 40.0, 150.0]))
    residency = draw(st.none() | st.just(frozenset({"eu"})))
    return points, endpoints, bound, residency


def table_of(
    points: dict[str, SitePoint],
    endpoints: tuple[Endpoint, ...],
    bound: float | None,
    residency: frozenset[str] | None,
) -> RouteTable:
    return RouteTable(
        version="t",
        sites=points,
        apps={APP: endpoints},
        latency_bounds={APP: bound} if bound else {},
        residency={APP: residency} if residency is not None else {},
    )


@PROPERTIES
@given(
    fleet=fleets(),
    neighbourhood=st.integers(1, 6),
    nearest=st.integers(2, 4),
    data=st.data(),
)
def test_a_share_answers_what_the_whole_table_answers(
    fleet: tuple[dict[str, SitePoint], tuple[Endpoint, ...], float | None, frozenset[str] | None],
    neighbourhood: int,
    nearest: int,
    data: st.DataObject,
) -> None:
    points, endpoints, bound, residency = fleet
    whole = table_of(points, endpoints, bound, residency)
    hoods = Neighbourhoods(neighbourhood)
    hoods.update(points, points)
    index = EndpointIndex()
    for e in endpoints:
        point = points.get(e.site)
        if serving(e, point, residency):
            index.set(e.site, quantized(e), point)
    limit = 2
    for site in points:
        part = section(site, index, points, hoods.near(site), latency_bound=bound, nearest=nearest)
        named = set(hoods.near(site)) | {e.site for e in part.endpoints}
        share = table_of({n: points[n] for n in named}, part.endpoints, bound, residency)
        # Down by the site's own probes: at most nearest - limit of the section's endpoints.
        down = data.draw(
            st.lists(
                st.sampled_from(sorted(e.site for e in part.endpoints) or ["none"]),
                max_size=nearest - limit,
                unique=True,
            )
        )
        health = dict.fromkeys(down, False)
        expected = choose(whole, *APP, Origin(site=site), health=health, limit=limit)
        got = choose(share, *APP, Origin(site=site), health=health, limit=limit)
        assert expected is not None and got is not None
        assert [p.name for p in got.sites] == [p.name for p in expected.sites], (
            site,
            hoods.near(site),
            [
                (c.site, c.rtt_ms, c.headroom, c.ready, c.wakeable, c.reason)
                for c in expected.considered
            ],
            [(c.site, c.rtt_ms, c.headroom, c.ready, c.wakeable, c.reason) for c in got.considered],
            bound,
        )


def test_neighbourhoods_are_the_nearest_sites_and_follow_changes() -> None:
    points = {
        f"s{i}": SitePoint(
            name=f"s{i}",
            region="r",
            zone="z",
            lat=10.0 * math.sin(i),
            lon=20.0 * math.cos(i * 1.7),
            ip="10.0.0.1",
            ingress_port=8080,
            dns_port=5353,
        )
        for i in range(40)
    }

    def brute(site: str, count: int) -> tuple[str, ...]:
        here = points[site]
        ranked = sorted(
            (great_circle_km(here.lat, here.lon, p.lat, p.lon), n) for n, p in points.items()
        )
        return (site, *[n for _, n in ranked if n != site][: count - 1])

    hoods = Neighbourhoods(5)
    assert hoods.update(points, points) == set(points)
    assert all(hoods.near(s) == brute(s, 5) for s in points)
    assert all(hoods.near(s)[0] == s for s in points)
    # A site that comes changes the neighbourhoods it enters, and no other.
    before = {s: hoods.near(s) for s in points}
    points["new"] = SitePoint(
        name="new",
        region="r",
        zone="z",
        lat=0.1,
        lon=19.9,
        ip="10.0.0.9",
        ingress_port=8080,
        dns_port=5353,
    )
    changed = hoods.update(points, {"new"})
    assert all(hoods.near(s) == brute(s, 5) for s in points)
    assert changed == {s for s in points if before.get(s) != hoods.near(s)}
    assert all(s in hoods.around(n) for s in points for n in hoods.near(s))
    # And one that goes.
    del points["s3"]
    hoods.update(points, {"s3"})
    assert all(hoods.near(s) == brute(s, 5) for s in points)
    assert not hoods.around("s3")
