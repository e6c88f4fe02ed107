"""The routing table carries each app's effective residency and access rules."""

from __future__ import annotations

from edgefleet.hub.routing import build_routing_table
from edgefleet.model import App, RouteAccess, Tenant
from tests.factories import make_app, make_site


def test_each_app_carries_its_tenants_and_its_own_policy() -> None:
    sites = [make_site("paris"), make_site("boston", region="us-east")]
    body = make_app("shop", tenant="acme").model_dump(mode="json", by_alias=True)
    body["spec"]["policy"] = {
        "regions": ["eu-west"],
        "access": {"networks": ["192.0.2.0/24"]},
    }
    shop = App.model_validate(body)
    acme = Tenant.model_validate(
        {
            "metadata": {"name": "acme"},
            "spec": {"regions": ["eu-west", "us-east"], "access": {"regions": ["eu-west"]}},
        }
    )
    plain = make_app("plain", tenant="other")
    table = build_routing_table(sites, [shop, plain], tenants=[acme])
    routes = {(a.tenant, a.app): a for a in table.apps}
    assert routes[("acme", "shop")].regions == ["eu-west"]
    assert routes[("acme", "shop")].access == [
        RouteAccess(who="tenant acme", regions=["eu-west"]),
        RouteAccess(who="app shop.acme", networks=["192.0.2.0/24"]),
    ]
    assert routes[("other", "plain")].regions is None
    assert routes[("other", "plain")].access == []
    # The policy is part of the content: changing it changes the version agents watch.
    lifted = build_routing_table(sites, [shop, plain])
    assert lifted.version != table.version
    assert build_routing_table(sites, [shop, plain], tenants=[acme]).version == table.version
