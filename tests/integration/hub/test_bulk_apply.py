"""POST /api/v1/apply through a real hub: many objects in order, all or none, each validated,
authorized and checked exactly as its own PUT would be."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from edgefleet.localfleet import LocalFleet, wait_for
from edgefleet.model import App, Site, Tenant
from tests.factories import make_app, make_site


def wire(obj: Site | App | Tenant) -> dict[str, Any]:
    body = obj.to_wire()
    body.pop("status", None)
    return body


def tenant(name: str, **spec: Any) -> Tenant:
    return Tenant.model_validate({"metadata": {"name": name}, "spec": spec})


def apply(fleet: LocalFleet, items: list[Any], headers: dict[str, str] | None = None) -> Any:
    """POST a List of ``items`` (objects, or raw dicts)."""
    body = {
        "apiVersion": "edgefleet.io/v1alpha1",
        "kind": "List",
        "items": [i if isinstance(i, dict) else wire(i) for i in items],
    }
    return httpx.post(
        f"{fleet.hub_url}/api/v1/apply", json=body, headers=headers or fleet.headers, timeout=60
    )


def put(fleet: LocalFleet, obj: Site | App | Tenant, headers: dict[str, str]) -> httpx.Response:
    """The object's own PUT."""
    if isinstance(obj, Site):
        path = f"/api/v1/sites/{obj.metadata.name}"
    elif isinstance(obj, Tenant):
        path = f"/api/v1/tenants/{obj.metadata.name}"
    else:
        path = f"/api/v1/tenants/{obj.metadata.tenant}/apps/{obj.metadata.name}"
    return httpx.put(f"{fleet.hub_url}{path}", json=wire(obj), headers=headers, timeout=30)


def stored(fleet: LocalFleet) -> tuple[list[str], list[str], list[str]]:
    with fleet.client() as admin:
        return (
            [s.metadata.name for s in admin.list_sites()],
            [a.key for a in admin.list_apps()],
            [t.metadata.name for t in admin.list_tenants()],
        )


def test_objects_are_applied_in_order_and_each_outcome_answered(sqlite_fleet: LocalFleet) -> None:
    fleet = sqlite_fleet
    objects = [make_site("paris"), tenant("t1"), make_app("web", tenant="t1")]
    first = apply(fleet, objects)
    assert first.status_code == 200, first.text
    answer = first.json()["items"]
    assert [(i["kind"], i["tenant"], i["name"], i["outcome"]) for i in answer] == [
        ("Site", None, "paris", "created"),
        ("Tenant", None, "t1", "created"),
        ("App", "t1", "web", "created"),
    ]
    with fleet.client() as admin:
        app = admin.get_app("t1", "web")
        assert answer[2]["resourceVersion"] == app.metadata.resource_version
        # Placement was set off after the commit: the app lands on the new site.
        wait_for(
            lambda: admin.get_app("t1", "web").status.desired_replicas == 1,
            timeout=15,
            what="the app placed",
        )
    again = apply(fleet, [*objects[:2], make_app("web", tenant="t1", placement={"replicas": 2})])
    assert [i["outcome"] for i in again.json()["items"]] == ["unchanged", "unchanged", "configured"]
    with fleet.client() as admin:
        events = admin.events(kind="App", tenant="t1", name="web")
        assert [(e.reason, e.message) for e in events if e.reason in ("Created", "Updated")] == [
            ("Created", "generation 1"),
            ("Updated", "generation 2"),
        ]
        assert [e.reason for e in admin.events(kind="Site", name="paris")].count("Created") == 1
        audit = [e for e in admin.audit() if e.path == "/api/v1/apply"]
    assert [(e.action, e.status, e.result) for e in audit] == [
        ("apply objects", 200, "site: 1 created; tenant: 1 created; app: 1 created"),
        ("apply objects", 200, "site: 1 unchanged; tenant: 1 unchanged; app: 1 configured"),
    ]


def test_one_invalid_object_refuses_the_whole_request(sqlite_fleet: LocalFleet) -> None:
    fleet = sqlite_fleet
    bad = wire(make_site("oslo"))
    bad["spec"]["capacity"]["cpu"] = "lots"
    reply = apply(fleet, [make_site("paris"), make_site("lyon"), tenant("t1"), bad])
    assert reply.status_code == 422
    (error,) = reply.json()["detail"]
    assert error["loc"] == ["body", "items", 3, "spec", "capacity", "cpu"]
    assert "cpu 'lots' is not a quantity" in error["msg"]
    unknown = apply(
        fleet, [make_site("paris"), {"apiVersion": "edgefleet.io/v1alpha1", "kind": "Pod"}]
    )
    (error,) = unknown.json()["detail"]
    assert (unknown.status_code, error["loc"]) == (422, ["body", "items", 1, "kind"])
    assert "unknown kind 'Pod': use one of Site, App, Tenant" in error["msg"]
    too_many = apply(fleet, [wire(make_site(f"s{i}")) for i in range(1001)])
    assert too_many.status_code == 422
    (error,) = too_many.json()["detail"]
    assert error["loc"] == ["body", "items"]
    assert "1001 objects in one apply: the most is 1000; split them" in error["msg"]
    assert stored(fleet) == ([], [], [])


def test_a_refusal_by_the_store_undoes_the_objects_before_it(sqlite_fleet: LocalFleet) -> None:
    fleet = sqlite_fleet
    with fleet.client() as admin:
        first, _ = admin.apply(make_app("web", tenant="t1"))
        admin.apply(make_app("web", tenant="t1", placement={"replicas": 2}))
    stale = make_app("web", tenant="t1", placement={"replicas": 3})
    stale.metadata.resource_version = first.metadata.resource_version
    reply = apply(fleet, [make_site("paris"), tenant("t1"), stale, make_site("lyon")])
    assert reply.status_code == 409
    assert reply.headers["x-edgefleet-item"] == "2"
    assert "was changed since version" in reply.json()["detail"]
    assert stored(fleet) == ([], ["t1/web"], [])
    with fleet.client() as admin:
        assert admin.get_app("t1", "web").spec.placement.replicas == 2
        refused = [e for e in admin.audit(failed=True) if e.path == "/api/v1/apply"]
    assert [e.action for e in refused] == ["apply objects"]


def test_each_object_is_authorized_as_its_own_put(sqlite_fleet: LocalFleet) -> None:
    fleet = sqlite_fleet
    with fleet.client() as admin:
        made = {
            role: admin.create_token(role, role, tenants=["t1"] if role != "operator" else [])
            for role in ("developer", "operator", "viewer")
        }
    as_ = {role: {"Authorization": f"Bearer {m.token}"} for role, m in made.items()}
    cases: list[tuple[str, list[Site | App | Tenant], int]] = [
        # A developer of t1: another tenant's app, a site, a tenant's policy.
        ("developer", [make_app("mine", tenant="t1"), make_app("theirs", tenant="t2")], 1),
        ("developer", [make_app("mine", tenant="t1"), make_site("paris")], 1),
        ("developer", [tenant("t1"), make_app("mine", tenant="t1")], 0),
        # An operator: sites yes, apps no.
        ("operator", [make_site("paris"), make_app("web", tenant="t1")], 1),
    ]
    for role, objects, refused in cases:
        reply = apply(fleet, objects, as_[role])
        own = put(fleet, objects[refused], as_[role])
        assert own.status_code == 403, own.text
        # Exactly what the object's own PUT answers, and which object it was.
        assert (reply.status_code, reply.json()) == (own.status_code, own.json()), role
        assert reply.headers["x-edgefleet-item"] == str(refused)
        assert stored(fleet) == ([], [], [])
    viewer = apply(fleet, [make_app("web", tenant="t1")], as_["viewer"])
    assert viewer.status_code == 403
    assert viewer.json()["detail"] == "role viewer may not apply objects (caller 'viewer')"
    mine = apply(fleet, [make_app("a", tenant="t1"), make_app("b", tenant="t1")], as_["developer"])
    assert mine.status_code == 200, mine.text
    sites = apply(fleet, [make_site("paris")], as_["operator"])
    assert sites.status_code == 200, sites.text
    assert stored(fleet) == (["paris"], ["t1/a", "t1/b"], [])


@pytest.mark.parametrize("stored_first", [False, True])
def test_apps_are_checked_against_their_tenants_policy_in_order(
    sqlite_fleet: LocalFleet, stored_first: bool
) -> None:
    """A quota set in the same request counts, and so do the apps before each app."""
    fleet = sqlite_fleet
    quota = tenant("t1", quota={"replicas": 3})
    first = make_app("one", tenant="t1", placement={"replicas": 2})
    second = make_app("two", tenant="t1", placement={"replicas": 2})
    if stored_first:
        with fleet.client() as admin:
            admin.apply(quota)
            admin.apply(first)
    reply = apply(fleet, [make_site("paris"), quota, first, second])
    assert reply.status_code == 422
    assert reply.headers["x-edgefleet-item"] == "3"
    with fleet.client() as admin:
        admin.apply(quota)
        admin.apply(first)
    own = put(fleet, second, fleet.headers)
    assert own.status_code == 422
    assert reply.json() == own.json()
    assert own.json()["detail"].startswith(
        "tenant t1's quota is 3 replicas; its apps need 2 and this one asks 2 more"
    )
    assert "paris" not in stored(fleet)[0]
