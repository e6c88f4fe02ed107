"""Deltas of a site's share of the routing table: applying the difference gives the new share."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.identity.credentials import SigningKey
from edgefleet.model import AppRoutes, RouteEndpoint, RouteRegion, RouteSite, RoutingTable
from edgefleet.routing.delta import apply_delta, diff

SITES = st.builds(
    RouteSite,
    name=st.sampled_from(["a", "b", "c", "d"]),
    region=st.just("eu"),
    zone=st.just("eu-1"),
    lat=st.sampled_from([1.0, 2.0]),
    lon=st.just(3.0),
    ip=st.sampled_from(["10.0.0.1", "10.0.0.2"]),
    reachable=st.booleans(),
)
APPS = st.builds(
    AppRoutes,
    tenant=st.sampled_from(["t1", "t2"]),
    app=st.sampled_from(["web", "api"]),
    endpoints=st.lists(
        st.builds(
            RouteEndpoint,
            site=st.sampled_from(["a", "b"]),
            ready=st.integers(0, 1),
            headroom=st.sampled_from([0.0, 1.0]),
            wakeable=st.booleans(),
        ),
        max_size=2,
    ),
)
REGIONS = st.builds(
    RouteRegion,
    name=st.sampled_from(["eu", "us"]),
    networks=st.lists(st.sampled_from(["10.0.0.0/8", "192.0.2.0/24"]), max_size=2, unique=True),
)
KEYS = st.lists(
    st.sampled_from([SigningKey.generate().public(), SigningKey.generate().public()]),
    max_size=2,
    unique_by=lambda k: k.kid,
)


@st.composite
def tables(draw: st.DrawFn) -> RoutingTable:
    sites = {s.name: s for s in draw(st.lists(SITES, max_size=4))}
    apps = {(a.tenant, a.app): a for a in draw(st.lists(APPS, max_size=4))}
    regions = {r.name: r for r in draw(st.lists(REGIONS, max_size=2))}
    return RoutingTable(
        version=draw(st.sampled_from(["h.1", "h.2", "h.3"])),
        sites=[sites[n] for n in sorted(sites)],
        apps=[apps[k] for k in sorted(apps)],
        signing_keys=draw(KEYS),
        revoked_credentials=draw(st.lists(st.sampled_from(["j1", "j2"]), unique=True)),
        regions=[regions[n] for n in sorted(regions)],
    )


@settings(max_examples=300, deadline=None)
@given(old=tables(), new=tables())
def test_applying_the_difference_gives_the_new_share(old: RoutingTable, new: RoutingTable) -> None:
    delta = diff(old, new)
    assert apply_delta(old, delta) == new
    # The delta carries only what changed.
    assert not {s.name for s in delta.sites} & {s.name for s in old.sites if s in new.sites}
    if old.signing_keys == new.signing_keys:
        assert delta.signing_keys is None


def test_a_delta_for_another_version_is_refused() -> None:
    old = RoutingTable(version="h.1")
    delta = diff(RoutingTable(version="h.2"), RoutingTable(version="h.3"))
    with pytest.raises(ValueError, match=r"h\.2"):
        apply_delta(old, delta)
