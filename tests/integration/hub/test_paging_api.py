"""Lists a page at a time through a real hub: ``limit`` and ``continue`` as Kubernetes has them,
refused tokens, and the tenant filter of developers applied before the page is cut."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from edgefleet.localfleet import LocalFleet
from edgefleet.model import Tenant
from tests.factories import make_app, make_site


def walk(url: str, headers: dict[str, str], limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every page of a list, each page's answer as it came."""
    pages = []
    query: dict[str, Any] = {"limit": limit, **params}
    while True:
        reply = httpx.get(url, params=query, headers=headers, timeout=30)
        assert reply.status_code == 200, reply.text
        pages.append(reply.json())
        token = pages[-1]["metadata"].get("continue")
        if token is None:
            return pages
        query["continue"] = token


def keys(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["metadata"].get("tenant", ""), i["metadata"]["name"]) for i in items]


def test_sites_page_with_limit_and_continue(fleet: LocalFleet) -> None:
    with fleet.client() as admin:
        admin.apply_many([make_site(f"s{i:02d}", ip=f"127.0.3.{i + 1}") for i in range(23)])
    url = f"{fleet.hub_url}/api/v1/sites"
    whole = httpx.get(url, headers=fleet.headers, timeout=30).json()
    assert (whole["apiVersion"], whole["kind"], whole["metadata"]) == (
        "edgefleet.io/v1alpha1",
        "SiteList",
        {},
    )
    assert [i["metadata"]["name"] for i in whole["items"]] == [f"s{i:02d}" for i in range(23)]
    pages = walk(url, fleet.headers, 5)
    assert [len(p["items"]) for p in pages] == [5, 5, 5, 5, 3]
    assert [p["metadata"].get("remainingItemCount") for p in pages] == [18, 13, 8, 3, None]
    assert all(p["kind"] == "SiteList" for p in pages)
    assert [i for p in pages for i in p["items"]] == whole["items"]
    # Each item is what the site's own GET answers: one serialization for both.
    one = httpx.get(f"{url}/s07", headers=fleet.headers, timeout=30).json()
    assert whole["items"][7] == one
    # A limit the list fits in exactly: no token, no empty page after it.
    assert walk(url, fleet.headers, 23)[0]["metadata"] == {}


@pytest.mark.parametrize("limit", ["0", "-1", "5001", "many"])
def test_a_limit_outside_1_to_5000_is_refused(sqlite_fleet: LocalFleet, limit: str) -> None:
    for path in ("/api/v1/sites", "/api/v1/apps", "/api/v1/tenants", "/api/v1/tenants/t1/apps"):
        reply = httpx.get(
            f"{sqlite_fleet.hub_url}{path}",
            params={"limit": limit},
            headers=sqlite_fleet.headers,
            timeout=30,
        )
        assert reply.status_code == 422, (path, reply.text)
        assert reply.json()["detail"][0]["loc"] == ["query", "limit"]
    for limit in (1, 5000):
        reply = httpx.get(
            f"{sqlite_fleet.hub_url}/api/v1/sites",
            params={"limit": limit},
            headers=sqlite_fleet.headers,
            timeout=30,
        )
        assert reply.status_code == 200


def test_a_token_not_of_the_list_is_refused_with_400(sqlite_fleet: LocalFleet) -> None:
    base = f"{sqlite_fleet.hub_url}/api/v1"
    headers = sqlite_fleet.headers
    with sqlite_fleet.client() as admin:
        admin.apply_many(
            [make_site("paris"), make_site("lyon")]
            + [make_app(f"a{i}", tenant=t) for t in ("t1", "t2") for i in range(3)]
        )

    def token(path: str) -> str:
        reply = httpx.get(f"{base}{path}", params={"limit": 1}, headers=headers, timeout=30)
        found: str = reply.json()["metadata"]["continue"]
        return found

    sites, apps, t1_apps = token("/sites"), token("/apps"), token("/tenants/t1/apps")
    refusals = [
        ("/sites", "not-a-token!", "not a continue token of this hub"),
        ("/sites", sites[:-3], "not a continue token of this hub"),
        ("/tenants", sites, "the token belongs to the list of sites"),
        ("/sites", apps, "belongs to the list of apps of every tenant"),
        ("/tenants/t1/apps", apps, "belongs to the list of apps of every tenant"),
        ("/tenants/t2/apps", t1_apps, "belongs to the list of apps of tenant 't1'"),
        ("/apps", t1_apps, "belongs to the list of apps of tenant 't1'"),
    ]
    for path, bad, why in refusals:
        reply = httpx.get(
            f"{base}{path}", params={"limit": 1, "continue": bad}, headers=headers, timeout=30
        )
        assert reply.status_code == 400, (path, reply.text)
        detail = reply.json()["detail"]
        assert detail.startswith("query parameter 'continue' of the list of"), detail
        assert why in detail and "leave it out to start again" in detail, detail
    # One tenant's list is the same list under both of its paths.
    same = httpx.get(
        f"{base}/apps", params={"tenant": "t1", "continue": t1_apps}, headers=headers, timeout=30
    )
    assert [i["metadata"]["name"] for i in same.json()["items"]] == ["a1", "a2"]


def test_a_developer_pages_through_its_own_tenants_only(sqlite_fleet: LocalFleet) -> None:
    fleet = sqlite_fleet
    tenants = ("t1", "t2", "t3", "t4")
    with fleet.client() as admin:
        admin.apply_many(
            [Tenant.model_validate({"metadata": {"name": t}, "spec": {}}) for t in tenants]
            # Other tenants' apps sort between and around the developer's.
            + [make_app(f"app{i}", tenant=t) for i in range(5) for t in tenants]
        )
        made = admin.create_token("dev", "developer", tenants=["t1", "t3"], ttl=3600)
    dev = {"Authorization": f"Bearer {made.token}"}
    base = f"{fleet.hub_url}/api/v1"
    pages = walk(f"{base}/apps", dev, 3)
    # Filtered in the query: every page but the last is full, and none is empty.
    assert [len(p["items"]) for p in pages] == [3, 3, 3, 1]
    mine = [(t, f"app{i}") for t in ("t1", "t3") for i in range(5)]
    assert [k for p in pages for k in keys(p["items"])] == mine
    assert [i["metadata"]["name"] for p in walk(f"{base}/tenants", dev, 1) for i in p["items"]] == [
        "t1",
        "t3",
    ]
    own = walk(f"{base}/tenants/t3/apps", dev, 2)
    assert [k for p in own for k in keys(p["items"])] == [(t, n) for t, n in mine if t == "t3"]
    for path, params in (("/apps", {"tenant": "t2"}), ("/tenants/t2/apps", {})):
        other = httpx.get(f"{base}{path}", params={"limit": 2, **params}, headers=dev, timeout=30)
        assert other.status_code == 200 and other.json()["items"] == [], path
    # An admin sees every tenant, a page at a time too.
    everything = walk(f"{base}/apps", fleet.headers, 7)
    assert len([i for p in everything for i in p["items"]]) == 20
