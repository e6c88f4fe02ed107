"""Each region's client networks, kept one site at a time, equal those merged afresh."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.routing.regions import RegionNetworks
from edgefleet.routing.table import SitePoint

NAMES = ["a", "b", "c", "d"]
NETWORKS = [
    "10.0.0.0/25",
    "10.0.0.128/25",
    "10.0.1.0/24",
    "192.0.2.0/24",
    "2001:db8::/48",
    "2001:db8:1::/48",
]


def point(name: str, region: str, networks: list[str]) -> SitePoint:
    return SitePoint(
        name=name,
        region=region,
        zone=f"{region}-a",
        lat=0.0,
        lon=0.0,
        ip="127.0.0.1",
        ingress_port=8080,
        dns_port=5353,
        networks=tuple(ipaddress.ip_network(n) for n in networks),
    )


CHANGES = st.lists(
    st.tuples(
        st.sampled_from(NAMES),
        st.one_of(
            st.none(),
            st.tuples(st.sampled_from(["eu", "us"]), st.lists(st.sampled_from(NETWORKS))),
        ),
    ),
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(CHANGES)
def test_kept_up_to_date_equals_merged_afresh(
    changes: list[tuple[str, tuple[str, list[str]] | None]],
) -> None:
    regions = RegionNetworks()
    sites: dict[str, SitePoint] = {}
    for name, record in changes:
        if record is None:
            sites.pop(name, None)
        else:
            sites[name] = point(name, *record)
        changed = regions.update(sites, [name])
        for region in ("eu", "us"):
            found = [n for s in sites.values() if s.region == region for n in s.networks]
            expected = (
                *ipaddress.collapse_addresses(n for n in found if n.version == 4),
                *ipaddress.collapse_addresses(n for n in found if n.version == 6),
            )
            assert regions.networks(region) == expected
        assert changed <= {"eu", "us"}


def test_two_halves_merge_and_a_site_that_leaves_takes_its_networks() -> None:
    regions = RegionNetworks()
    sites = {
        "a": point("a", "eu", ["10.0.0.0/25"]),
        "b": point("b", "eu", ["10.0.0.128/25"]),
        "c": point("c", "us", ["192.0.2.0/24"]),
    }
    assert regions.update(sites, sites) == {"eu", "us"}
    assert [str(n) for n in regions.networks("eu")] == ["10.0.0.0/24"]
    del sites["b"]
    assert regions.update(sites, ["b"]) == {"eu"}
    assert [str(n) for n in regions.networks("eu")] == ["10.0.0.0/25"]
    assert regions.update(sites, ["a"]) == set()  # nothing changed
    assert regions.networks("nowhere") == ()
