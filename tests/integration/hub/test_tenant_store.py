"""Tenants in the store, on each engine: kept with the objects, composed with what their apps
take, and carried into the desired state of the sites running their apps."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.hub.store import Conflict, NotFound, Outcome, Store
from edgefleet.model import App, Tenant
from tests.factories import make_app, make_site


def tenant(name: str = "acme", **spec: Any) -> Tenant:
    return Tenant.model_validate({"metadata": {"name": name}, "spec": spec})


def traffic_app(name: str = "shop") -> App:
    return make_app(name, tenant="acme", placement={"mode": "traffic"})


def test_put_get_list_delete(store: Store) -> None:
    created, outcome = store.objects.put(tenant(regions=["eu-west"], quota={"cpu": "500m"}))
    assert outcome == Outcome.CREATED and isinstance(created, Tenant)
    assert created.metadata.generation == 1 and created.spec.quota.cpu == 0.5
    assert (
        store.objects.put(tenant(regions=["eu-west"], quota={"cpu": "500m"}))[1]
        == Outcome.UNCHANGED
    )
    changed, outcome = store.objects.put(tenant(regions=["eu-west", "eu-north"]))
    assert outcome == Outcome.CONFIGURED and changed.metadata.generation == 2
    store.objects.put(tenant("beta"))
    assert [t.metadata.name for t in store.objects.list_tenants()] == ["acme", "beta"]
    with pytest.raises(Conflict, match="tenant 'acme' already exists"):
        store.objects.put(tenant(), create_only=True)
    # A tenant and an app (or a site) of the same name do not collide.
    store.objects.put(make_app("acme", tenant="acme"))
    store.objects.put(make_site("acme"))
    store.objects.delete_tenant("acme")
    with pytest.raises(NotFound, match="tenant 'acme' not found"):
        store.objects.get_tenant("acme")
    with pytest.raises(NotFound, match="tenant 'acme' not found"):
        store.objects.delete_tenant("acme")
    # Its apps stay.
    assert [a.metadata.name for a in store.objects.list_apps("acme")] == ["acme"]
    assert store.objects.get_site("acme").metadata.name == "acme"


def test_status_counts_what_the_tenants_apps_take(store: Store) -> None:
    store.objects.put(tenant(quota={"replicas": 10}))
    store.objects.put(make_site("paris"))
    store.objects.put(make_app("a", tenant="acme"))  # 100m and 32Mi per replica
    store.objects.put(make_app("b", tenant="acme"))
    store.objects.put(make_app("c", tenant="other"))
    store.placement.write(
        {
            ("acme", "a"): (1, {"paris": 2}),
            ("acme", "b"): (1, {"paris": 1}),
            ("other", "c"): (1, {"paris": 5}),
        }
    )
    status = store.objects.get_tenant("acme").status
    assert (status.apps, status.replicas, status.memory) == (2, 3, 3 * 32 * 1024**2)
    assert status.cpu == pytest.approx(0.3)


def test_the_desired_state_carries_residency_and_offload_terms(store: Store) -> None:
    store.objects.put(make_site("paris"))
    store.objects.put(traffic_app())
    store.placement.write({("acme", "shop"): (1, {"paris": 1})})
    (free,) = store.placement.desired_state("paris").apps
    assert free.regions is None and free.may_offload
    before = store.revisions.all()["paris"]
    store.objects.put(tenant(regions=["eu-west"], quota={"replicas": 4}))
    # A new policy is a new desired state for the sites running the tenant's apps.
    assert store.revisions.all()["paris"] > before
    (held,) = store.placement.desired_state("paris").apps
    assert held.regions == ["eu-west"] and not held.may_offload
    before = store.revisions.all()["paris"]
    store.objects.put(tenant(regions=["eu-west"], quota={"replicas": 4}))
    assert store.revisions.all()["paris"] == before  # unchanged: no new revision
    assert store.objects.delete_tenant("acme") == {"paris"}
    assert store.revisions.all()["paris"] > before
    (lifted,) = store.placement.desired_state("paris").apps
    assert lifted.regions is None and lifted.may_offload
