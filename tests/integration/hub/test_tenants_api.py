"""Tenants through a real hub process: the API, the apply check, and placement under a policy."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from edgefleet.client import Client, HubError
from edgefleet.localfleet import LocalFleet, wait_for
from edgefleet.model import App, Tenant
from tests.factories import make_app, make_site


def tenant(name: str = "acme", **spec: Any) -> Tenant:
    return Tenant.model_validate({"metadata": {"name": name}, "spec": spec})


def shop(name: str = "shop", *, replicas: int = 2, regions: list[str] | None = None) -> App:
    body = make_app(name, tenant="acme", placement={"replicas": replicas}).model_dump(
        mode="json", by_alias=True
    )
    body["spec"]["resources"] = {"cpu": "500m", "memory": "64Mi"}
    if regions is not None:
        body["spec"]["policy"] = {"regions": regions}
    return App.model_validate(body)


def placed(client: Client, name: str = "shop") -> dict[str, int]:
    app = client.get_app("acme", name)
    return {s.site: s.desired for s in app.status.sites if s.desired}


def test_tenants_are_created_read_listed_and_deleted(sqlite_fleet: LocalFleet) -> None:
    with sqlite_fleet.client() as client:
        stored, outcome = client.apply(tenant(regions=["eu-west"], quota={"cpu": 4}))
        assert outcome == "created" and stored.spec.quota.cpu == 4
        assert client.apply(tenant(regions=["eu-west"], quota={"cpu": 4}))[1] == "unchanged"
        assert client.apply(tenant(regions=["eu-west"], quota={"cpu": 8}))[1] == "configured"
        client.create_tenant(tenant("beta"))
        with pytest.raises(HubError) as exists:
            client.create_tenant(tenant("beta"))
        assert exists.value.status == 409
        assert [t.metadata.name for t in client.list_tenants()] == ["acme", "beta"]
        # The tenant's policy and its apps live side by side under /api/v1/tenants/acme.
        client.apply(shop())
        assert client.get_tenant("acme").spec.quota.cpu == 8
        assert [a.metadata.name for a in client.list_apps("acme")] == ["shop"]
        reply = httpx.get(
            f"{sqlite_fleet.hub_url}/api/v1/tenants/acme/apps", headers=sqlite_fleet.headers
        )
        assert [a["metadata"]["name"] for a in reply.json()["items"]] == ["shop"]
        reasons = [e.reason for e in client.events(kind="Tenant", name="acme")]
        assert reasons == ["Created", "Updated"]
        client.delete_tenant("acme")
        with pytest.raises(HubError) as gone:
            client.get_tenant("acme")
        assert (gone.value.status, gone.value.message) == (404, "tenant 'acme' not found")
        assert client.get_app("acme", "shop").metadata.name == "shop"  # apps stay
        assert client.events(kind="Tenant", name="acme")[-1].reason == "Deleted"


def test_invalid_tenants_get_422_naming_the_field(sqlite_fleet: LocalFleet) -> None:
    base, auth = sqlite_fleet.hub_url, sqlite_fleet.headers
    body = tenant(access={"networks": ["10.0.0.0/8"]}).model_dump(mode="json", by_alias=True)
    body["spec"]["access"]["networks"].append("10.0.0.0/33")
    reply = httpx.put(f"{base}/api/v1/tenants/acme", json=body, headers=auth)
    assert reply.status_code == 422
    (error,) = reply.json()["detail"]
    assert error["loc"] == ["body", "spec", "access", "networks", 1]
    assert "'10.0.0.0/33' is not a network" in error["msg"]
    body["spec"]["access"]["networks"].pop()
    reply = httpx.put(f"{base}/api/v1/tenants/other", json=body, headers=auth)
    assert reply.status_code == 422 and "does not match" in reply.json()["detail"]
    assert httpx.get(f"{base}/api/v1/tenants", headers=auth).json()["items"] == []


def test_apply_refuses_what_the_quota_or_the_residency_cannot_take(
    sqlite_fleet: LocalFleet,
) -> None:
    with sqlite_fleet.client() as client:
        client.apply(make_site("paris"))
        client.apply(tenant(regions=["eu-west"], quota={"cpu": "1500m"}))
        client.apply(shop("first", replicas=2))  # 1 cpu of 1.5
        with pytest.raises(HubError) as over:
            client.apply(shop("second", replicas=2))
        assert over.value.status == 422
        assert over.value.message == (
            "tenant acme's quota is 1.5 cpu; its apps need 1 and this one asks 1 more "
            "(2 replicas x 0.5): ask for fewer replicas or raise the tenant's quota"
        )
        client.apply(shop("second", replicas=1))  # fits exactly
        # An update counts the app's new need, not its old one on top.
        client.apply(shop("second", replicas=1))
        with pytest.raises(HubError) as outside:
            client.apply(shop("third", replicas=0, regions=["us-east"]))
        assert outside.value.message.startswith(
            "spec.policy.regions: us-east is outside tenant acme's regions (eu-west)"
        )
        assert {a.metadata.name for a in client.list_apps("acme")} == {"first", "second"}


def test_placement_follows_a_policy_changed_under_running_apps(sqlite_fleet: LocalFleet) -> None:
    with sqlite_fleet.client() as client:
        client.apply(make_site("paris", region="eu-west"))
        client.apply(make_site("boston", region="us-east", lat=42.36, lon=-71.06))
        client.apply(shop(replicas=4))
        wait_for(lambda: sum(placed(client).values()) == 4, timeout=15, what="4 placed")
        # Residency: the tenant now runs in us-east only; the app moves there.
        client.apply(tenant(regions=["us-east"]))
        wait_for(lambda: placed(client) == {"boston": 4}, timeout=15, what="moved to boston")
        # A quota below what runs: placement cuts it and says why.
        client.apply(tenant(regions=["us-east"], quota={"replicas": 3}))
        wait_for(lambda: placed(client) == {"boston": 3}, timeout=15, what="cut to the quota")
        assert client.get_app("acme", "shop").status.message == (
            "tenant acme is at its replica quota (3): 3 of 4 replicas placed"
        )
        assert client.get_tenant("acme").status.replicas == 3

        # The routing table tells every DNS and ingress the app's regions (it follows the
        # feed on its own, a moment after placement may have).
        def regions() -> list[str] | None:
            routes = {(a.tenant, a.app): a for a in client.routing_table().apps}
            return routes[("acme", "shop")].regions

        assert wait_for(lambda: regions() == ["us-east"], timeout=10, what="the app's regions")
        # Deleting the policy lifts it: the app gets all its replicas again.
        client.delete_tenant("acme")
        wait_for(
            lambda: (
                sum(placed(client).values()) == 4
                and client.get_app("acme", "shop").status.message is None
            ),
            timeout=15,
            what="the quota lifted",
        )
