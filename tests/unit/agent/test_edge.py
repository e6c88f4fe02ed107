"""The edge DNS's pure parts: probe verdicts, neighbour choice, the ready-count overlay."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.edge import (
    ProbeState,
    floor_by_distance,
    nearest_neighbours,
    next_probe_state,
    overlay,
    probe_timeout,
)
from edgefleet.routing.table import Endpoint, RouteTable, SitePoint


def point(name: str, lat: float, lon: float) -> SitePoint:
    return SitePoint(
        name=name,
        region="r",
        zone="z",
        lat=lat,
        lon=lon,
        ip="127.0.0.1",
        ingress_port=8080,
        dns_port=5353,
    )


def test_first_success_is_believed_then_two_failures_take_a_site_down() -> None:
    state = next_probe_state(ProbeState(), ok=True, rtt_ms=2.0)
    assert state.up is True and state.rtt_ms == 2.0
    state = next_probe_state(state, ok=False, rtt_ms=None)
    assert state.up is True, "one lost probe must not move clients"
    state = next_probe_state(state, ok=False, rtt_ms=None)
    assert state.up is False
    state = next_probe_state(state, ok=True, rtt_ms=4.0)
    assert state.up is False, "a flapping site does not pull clients back at once"
    state = next_probe_state(state, ok=True, rtt_ms=4.0)
    assert state.up is True


def test_a_neighbour_never_seen_up_is_down_after_two_failures() -> None:
    state = next_probe_state(ProbeState(), ok=False, rtt_ms=None)
    assert state.up is None
    assert next_probe_state(state, ok=False, rtt_ms=None).up is False


@given(st.lists(st.booleans(), max_size=30))
def test_verdict_follows_runs(results: list[bool]) -> None:
    state = ProbeState()
    for ok in results:
        state = next_probe_state(state, ok=ok, rtt_ms=1.0 if ok else None)
    if len(results) >= 2 and results[-2:] == [False, False]:
        assert state.up is False
    if len(results) >= 2 and results[-2:] == [True, True]:
        assert state.up is True
    assert state.rtt_ms is None or state.rtt_ms == 1.0


def test_round_trip_is_the_minimum_of_a_window() -> None:
    state = ProbeState()
    for rtt in (5.0, 120.0, 3.0, 90.0):
        state = next_probe_state(state, ok=True, rtt_ms=rtt)
    assert state.rtt_ms == 3.0, "a slow exchange on a busy host is not a longer path"
    for _ in range(10):
        state = next_probe_state(state, ok=True, rtt_ms=50.0)
    assert state.rtt_ms == 50.0, "an old minimum leaves the window"


def test_nearest_neighbours_by_distance() -> None:
    table = RouteTable(
        version="v",
        sites={
            "paris": point("paris", 48.86, 2.35),
            "london": point("london", 51.51, -0.13),
            "boston": point("boston", 42.36, -71.06),
            "tokyo": point("tokyo", 35.68, 139.65),
        },
    )
    assert nearest_neighbours(table, "paris", 2) == ["london", "boston"]
    assert nearest_neighbours(table, "paris", 10) == ["london", "boston", "tokyo"]
    assert nearest_neighbours(table, "unknown", 2) == ["boston", "london"]


def test_overlay_replaces_ready_counts_of_sites_we_know_better() -> None:
    table = RouteTable(
        version="v",
        sites={"a": point("a", 0, 0), "b": point("b", 0, 1)},
        apps={("t", "x"): (Endpoint("a", 1), Endpoint("b", 2)), ("t", "y"): (Endpoint("a", 3),)},
    )
    fresh = overlay(table, {"a": {("t", "x"): 0}})
    assert fresh.apps[("t", "x")] == (Endpoint("a", 0), Endpoint("b", 2))
    assert fresh.apps[("t", "y")] == (Endpoint("a", 0),), "an app the site did not list is 0"
    assert overlay(table, {}) is table


def test_a_site_that_runs_an_app_the_table_lists_without_it_serves_it() -> None:
    """The hub's share can lag a site's own replicas (the report is on its way, or the hub is
    away): the site answers with itself as soon as a replica is ready."""
    table = RouteTable(
        version="v",
        sites={"a": point("a", 0, 0), "b": point("b", 0, 1), "far": point("far", 0, 2)},
        apps={("t", "x"): (Endpoint("b", 2),), ("t", "eu"): ()},
        residency={("t", "eu"): frozenset({"eu"})},
    )
    fresh = overlay(table, {"a": {("t", "x"): 1, ("t", "eu"): 1, ("t", "unknown"): 1}})
    assert fresh.apps[("t", "x")] == (Endpoint("b", 2), Endpoint("a", 1))
    # Not where the app may not run, nor an app the share does not hold (its rules unknown).
    assert fresh.apps[("t", "eu")] == ()
    assert ("t", "unknown") not in fresh.apps
    # Nothing ready, or a site the table does not hold: nothing added.
    assert overlay(table, {"a": {("t", "x"): 0}}).apps[("t", "x")] == (Endpoint("b", 2),)
    assert overlay(table, {"nowhere": {("t", "x"): 3}}).apps[("t", "x")] == (Endpoint("b", 2),)


def test_overlay_keeps_latency_bounds_and_wakeable_sites() -> None:
    table = RouteTable(
        version="v",
        sites={"a": point("a", 0, 0)},
        apps={("t", "x"): (Endpoint("a", 0, wakeable=True),)},
        latency_bounds={("t", "x"): 20.0},
    )
    fresh = overlay(table, {"a": {}})
    assert fresh.latency_bounds == {("t", "x"): 20.0}
    assert fresh.apps[("t", "x")] == (Endpoint("a", 0, wakeable=True),)


def test_probes_make_neighbours_farther_never_nearer() -> None:
    table = RouteTable(
        version="v",
        sites={
            "paris": point("paris", 48.86, 2.35),
            "tokyo": point("tokyo", 35.68, 139.65),
            "london": point("london", 51.51, -0.13),
        },
    )
    floored = floor_by_distance(table, "paris", {"tokyo": 1.0, "london": 40.0, "gone": 3.0})
    assert floored["tokyo"] > 100, "1 ms to Tokyo is a loopback artefact, not a route"
    assert floored["london"] == 40.0, "a congested link counts as measured"
    assert floored["gone"] == 3.0


def test_distant_neighbours_get_probe_timeouts_their_round_trips_allow() -> None:
    table = RouteTable(
        version="v",
        sites={
            "paris": point("paris", 48.86, 2.35),
            "london": point("london", 51.51, -0.13),
            "singapore": point("singapore", 1.35, 103.82),
        },
    )
    assert probe_timeout(table, "paris", "london", 0.5) == 0.5  # near: the floor
    far = probe_timeout(table, "paris", "singapore", 0.5)
    assert 0.8 < far < 1.0  # about 217 ms of round trip, four of them
    assert probe_timeout(table, "paris", "unknown", 0.5) == 0.5
