"""Access rules in the fleet's DNS: the edge and the central zone answer REFUSED to a client an
app does not let in, through the responder and its caches, wire in and wire out."""

from __future__ import annotations

from ipaddress import ip_network

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from edgefleet.agent.edge import EdgeZone
from edgefleet.dns import Responder
from edgefleet.hub.dns import CentralZone
from edgefleet.model import (
    AppRoutes,
    RouteAccess,
    RouteEndpoint,
    RouteRegion,
    RouteSite,
    RoutingTable,
)
from edgefleet.routing.access import client_region, region_holding
from edgefleet.routing.convert import route_table

NAME = "shop.acme.edge.internal."


def table(access: list[RouteAccess]) -> RoutingTable:
    return RoutingTable(
        version="v1",
        sites=[
            RouteSite(
                name="paris",
                region="eu-west",
                zone="a",
                lat=48.9,
                lon=2.3,
                ip="127.0.9.1",
                networks=["198.51.100.0/24"],
            ),
            RouteSite(
                name="boston",
                region="us-east",
                zone="b",
                lat=42.4,
                lon=-71.1,
                ip="127.0.9.2",
                networks=["203.0.113.0/24"],
            ),
        ],
        apps=[
            AppRoutes(
                tenant="acme",
                app="shop",
                endpoints=[RouteEndpoint(site="paris", ready=1)],
                regions=["eu-west"],
                access=access,
            ),
            AppRoutes(tenant="acme", app="open", endpoints=[RouteEndpoint(site="paris", ready=1)]),
        ],
    )


EU_ONLY = [RouteAccess(who="tenant acme", regions=["eu-west"])]
NETWORK_ONLY = [RouteAccess(who="app shop.acme", networks=["10.0.0.0/8"])]


def ask(
    responder: Responder, source: str, name: str = NAME, subnet: str | None = None
) -> dns.message.Message:
    options = []
    if subnet is not None:
        address, _, length = subnet.partition("/")
        options.append(dns.edns.ECSOption(address, int(length)))
    query = dns.message.make_query(name, dns.rdatatype.A, use_edns=0, options=options)
    wire = responder.handle(query.to_wire(), source, tcp=False)
    assert wire is not None
    return dns.message.from_wire(wire)


def edge(site: str, access: list[RouteAccess]) -> tuple[EdgeZone, Responder]:
    zone = EdgeZone(site, address="127.0.9.1" if site == "paris" else "127.0.9.2")
    zone.update(hub_table=route_table(table(access)))
    return zone, Responder(zone)


def test_an_edge_dns_judges_every_client_by_its_own_region() -> None:
    _, paris = edge("paris", EU_ONLY)
    _, boston = edge("boston", EU_ONLY)
    assert ask(paris, "192.0.2.7").rcode() == dns.rcode.NOERROR
    refused = ask(boston, "192.0.2.7")
    assert refused.rcode() == dns.rcode.REFUSED
    assert not refused.answer and not refused.flags & dns.flags.AA
    # Other apps of the tenant without rules, and repeats from the cache, as before.
    assert ask(boston, "192.0.2.7", "open.acme.edge.internal.").rcode() == dns.rcode.NOERROR
    assert ask(boston, "192.0.2.8").rcode() == dns.rcode.REFUSED


def test_an_edge_dns_with_network_rules_tells_clients_apart() -> None:
    zone, boston = edge("boston", NETWORK_ONLY)
    assert not zone.client_independent  # the UDP fast path would answer everyone alike
    assert boston.udp_fast_answers() is None
    allowed = ask(boston, "10.1.2.3")
    assert allowed.rcode() == dns.rcode.NOERROR
    assert [r.address for r in allowed.answer[0]] == ["127.0.9.1"]
    assert ask(boston, "192.0.2.7").rcode() == dns.rcode.REFUSED
    assert ask(boston, "10.1.2.3").rcode() == dns.rcode.NOERROR  # from the cache, still right
    # An ECS subnet inside the network passes; the refusal of a wider one holds for it only.
    assert ask(boston, "192.0.2.7", subnet="10.1.0.0/16").rcode() == dns.rcode.NOERROR
    wide = ask(boston, "192.0.2.7", subnet="10.0.0.0/7")
    assert wide.rcode() == dns.rcode.REFUSED
    (ecs,) = [o for o in wide.options if isinstance(o, dns.edns.ECSOption)]
    assert ecs.scopelen == 7
    open_zone, _ = edge("boston", [])
    assert open_zone.client_independent


def test_the_ingress_asks_the_edge_zone_with_the_origins_region() -> None:
    zone, _ = edge("boston", EU_ONLY)
    assert zone.admit("acme/shop", "203.0.113.9", "paris") is None
    refusal = zone.admit("acme/shop", "203.0.113.9", "boston")
    assert refusal == (
        "client 203.0.113.9 (region us-east) may not reach shop.acme: allowed regions eu-west"
    )
    assert zone.admit("acme/open", "203.0.113.9", "boston") is None
    assert zone.admit("acme/shop", None, "nowhere") is not None  # unknown origin: no region


def test_an_ingress_with_a_share_finds_the_region_of_a_client_no_site_of_it_holds() -> None:
    # Boston's share holds no Paris record; it carries eu-west's networks because a rule names
    # the region.
    share = table(EU_ONLY).model_copy(deep=True)
    share.sites = [s for s in share.sites if s.name == "boston"]
    share.regions = [RouteRegion(name="eu-west", networks=["198.51.100.0/24", "192.0.2.0/25"])]
    zone = EdgeZone("boston", address="127.0.9.2")
    zone.update(hub_table=route_table(share))
    assert zone.locate("198.51.100.9") is None
    assert zone.admit("acme/shop", "198.51.100.9", None) is None
    assert zone.admit("acme/shop", "192.0.2.9", None) is None
    # A client of a Boston network is placed there; one of no known network has no region.
    assert zone.admit("acme/shop", "203.0.113.9", zone.locate("203.0.113.9")) is not None
    assert zone.admit("acme/shop", "192.0.2.200", None) == (
        "client 192.0.2.200 (region unknown) may not reach shop.acme: allowed regions eu-west"
    )


def test_a_client_is_of_the_region_whose_networks_hold_it_most_narrowly() -> None:
    regions = {
        "eu-west": (ip_network("10.0.0.0/8"),),
        "eu-north": (ip_network("10.1.0.0/16"), ip_network("2001:db8::/32")),
        "a-first": (ip_network("10.1.0.0/16"),),
    }
    assert region_holding(regions, "10.2.0.1") == "eu-west"
    assert region_holding(regions, "10.1.0.1") == "a-first"  # equal prefixes: the first name
    assert region_holding(regions, "2001:db8::1") == "eu-north"
    assert region_holding(regions, "10.0.0.0/7") is None  # a subnet wider than every network
    assert region_holding(regions, "192.0.2.1") is None
    assert region_holding(regions, "not an address") is None
    assert region_holding(regions, None) is None


def test_the_central_dns_locates_the_client_for_its_region() -> None:
    zone = CentralZone(address="127.0.0.1")
    zone.update(route_table(table(EU_ONLY)), frozenset())
    central = Responder(zone)
    assert ask(central, "198.51.100.7").rcode() == dns.rcode.NOERROR  # located at paris
    assert ask(central, "203.0.113.7").rcode() == dns.rcode.REFUSED  # located at boston
    assert ask(central, "192.0.2.7").rcode() == dns.rcode.REFUSED  # unlocated: no region
    # A resolver's ECS subnet locates the client, whatever the resolver's own address.
    assert ask(central, "203.0.113.7", subnet="198.51.100.0/24").rcode() == dns.rcode.NOERROR
    assert ask(central, "198.51.100.7", subnet="203.0.113.0/24").rcode() == dns.rcode.REFUSED


def test_the_central_dns_keeps_network_rules_apart_in_its_cache() -> None:
    zone = CentralZone(address="127.0.0.1")
    zone.update(route_table(table(NETWORK_ONLY)), frozenset())
    central = Responder(zone)
    assert ask(central, "10.9.9.9").rcode() == dns.rcode.NOERROR
    assert ask(central, "192.0.2.7").rcode() == dns.rcode.REFUSED
    assert ask(central, "10.9.9.8").rcode() == dns.rcode.NOERROR
    # A positive answer for a subnet holds for that subnet only, not the located network.
    allowed = ask(central, "192.0.2.7", subnet="10.9.0.0/16")
    (ecs,) = [o for o in allowed.options if isinstance(o, dns.edns.ECSOption)]
    assert allowed.rcode() == dns.rcode.NOERROR and ecs.scopelen == 16


def test_the_region_an_ingress_judges_by_comes_from_the_site_else_the_region_networks() -> None:
    share = table(EU_ONLY).model_copy(deep=True)
    share.regions = [RouteRegion(name="eu-north", networks=["192.0.2.0/24"])]
    routes = route_table(share)
    assert client_region(routes, "boston", "192.0.2.1") == "us-east"  # the site decides
    assert client_region(routes, "gone", "192.0.2.1") is None  # a site the table lacks
    assert client_region(routes, None, "192.0.2.1") == "eu-north"
    assert client_region(routes, None, "203.0.113.1") is None
