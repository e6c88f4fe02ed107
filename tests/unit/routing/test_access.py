"""Who may reach an app (``allows``), and residency in the answer choice and the table."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.model import AppRoutes, RouteAccess, RouteEndpoint, RouteSite, RoutingTable
from edgefleet.routing import OUTSIDE_RESIDENCY, AccessRule, AppAccess, Origin, allows, choose
from edgefleet.routing.access import distinct_networks, holding
from edgefleet.routing.convert import route_table

SHOP = AppAccess(
    app="shop.acme",
    rules=(
        AccessRule(
            who="tenant acme",
            networks=(ip_network("10.0.0.0/8"),),
            regions=frozenset({"eu-west"}),
        ),
    ),
)


@pytest.mark.parametrize(
    ("client", "region", "allowed"),
    [
        ("10.1.2.3", "us-east", True),  # by network
        ("192.0.2.7", "eu-west", True),  # by region
        ("192.0.2.7", "us-east", False),
        ("192.0.2.7", None, False),  # unlocated: only a network lets it in
        ("10.1.0.0/16", None, True),  # an ECS subnet inside the network
        ("10.0.0.0/7", None, False),  # wider than the network: not all of it is allowed
        ("::ffff:10.1.2.3", None, True),  # IPv4-mapped, as from a dual-stack socket
        ("2001:db8::1", None, False),
        (None, "eu-west", True),
        (None, None, False),
        ("not an address", None, False),
    ],
)
def test_allows(client: str | None, region: str | None, allowed: bool) -> None:
    assert (allows(SHOP, client, region) is None) is allowed


def test_the_refusal_says_who_is_refused_and_why() -> None:
    assert allows(SHOP, "192.0.2.7", "us-east") == (
        "client 192.0.2.7 (region us-east) may not reach shop.acme: allowed networks "
        "10.0.0.0/8, regions eu-west"
    )
    assert allows(SHOP, "192.0.2.7", None) == (
        "client 192.0.2.7 (region unknown) may not reach shop.acme: allowed networks "
        "10.0.0.0/8, regions eu-west"
    )


def test_every_rule_must_let_the_client_in_and_the_refusing_one_is_named() -> None:
    both = AppAccess(
        app="shop.acme",
        rules=(
            AccessRule(who="tenant acme", regions=frozenset({"eu-west", "eu-north"})),
            AccessRule(who="app shop.acme", networks=(ip_network("192.0.2.0/24"),)),
        ),
    )
    assert allows(both, "192.0.2.7", "eu-west") is None
    refusal = allows(both, "198.51.100.1", "eu-west")
    assert refusal is not None and refusal.endswith(
        "allowed networks 192.0.2.0/24 (app shop.acme's rule)"
    )
    refusal = allows(both, "192.0.2.7", "us-east")
    assert refusal is not None and "regions eu-north, eu-west (tenant acme's rule)" in refusal


def test_no_rules_let_everyone_in() -> None:
    assert allows(None, "192.0.2.7", None) is None
    assert allows(AppAccess(app="a.b"), None, None) is None


_octet = st.integers(0, 255)


@given(a=_octet, b=_octet, c=_octet, d=_octet, region=st.sampled_from(["eu-west", "us-east"]))
def test_allows_agrees_with_membership(a: int, b: int, c: int, d: int, region: str) -> None:
    address = f"{a}.{b}.{c}.{d}"
    expected = a == 10 or region == "eu-west"
    assert (allows(SHOP, address, region) is None) is expected


def test_holding_tells_which_networks_hold_a_client() -> None:
    networks = distinct_networks(
        [
            SHOP,
            AppAccess(
                app="b.c", rules=(AccessRule(who="x", networks=(ip_network("10.1.0.0/16"),)),)
            ),
        ]
    )
    assert [str(n) for n in networks] == ["10.0.0.0/8", "10.1.0.0/16"]
    assert holding(networks, "10.1.2.3") == {0, 1}
    assert holding(networks, "10.2.0.1") == {0}
    assert holding(networks, ip_network("10.1.0.0/12", strict=False)) == {0}
    assert holding(networks, "192.0.2.1") == frozenset()
    assert holding(networks, "garbage") == frozenset()


def table(*, regions: list[str] | None, access: list[RouteAccess] | None = None) -> RoutingTable:
    sites = [
        RouteSite(name="paris", region="eu-west", zone="a", lat=48.9, lon=2.3, ip="127.0.9.1"),
        RouteSite(name="boston", region="us-east", zone="b", lat=42.4, lon=-71.1, ip="127.0.9.2"),
    ]
    return RoutingTable(
        version="v1",
        sites=sites,
        apps=[
            AppRoutes(
                tenant="acme",
                app="shop",
                endpoints=[
                    RouteEndpoint(site="paris", ready=1),
                    RouteEndpoint(site="boston", ready=1),
                ],
                regions=regions,
                access=access or [],
            )
        ],
    )


def test_the_table_carries_residency_and_access() -> None:
    routes = route_table(
        table(
            regions=["eu-west"],
            access=[RouteAccess(who="tenant acme", networks=["10.0.0.0/8"], regions=["eu-west"])],
        )
    )
    assert routes.residency == {("acme", "shop"): frozenset({"eu-west"})}
    assert routes.access[("acme", "shop")] == SHOP
    open_table = route_table(table(regions=None))
    assert open_table.residency == {} and open_table.access == {}


def test_answers_and_spill_over_never_leave_the_residency() -> None:
    answer = choose(route_table(table(regions=["eu-west"])), "acme", "shop", Origin(site="boston"))
    assert answer is not None
    assert [s.name for s in answer.sites] == ["paris"]
    skipped = {c.site: c.reason for c in answer.considered if not c.chosen}
    assert skipped == {"boston": OUTSIDE_RESIDENCY}
    nowhere = choose(route_table(table(regions=[])), "acme", "shop", Origin(site="paris"))
    assert nowhere is not None and nowhere.sites == ()
    anywhere = choose(route_table(table(regions=None)), "acme", "shop", Origin(site="boston"))
    assert anywhere is not None and [s.name for s in anywhere.sites] == ["boston", "paris"]
