"""Lists read a page at a time, and many objects written in one transaction, on SQLite and on a
real PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.hub.store import Conflict, NotFound, Outcome, Page, Store
from edgefleet.model import App, AppReport, ReplicaState, Site, StatusReport, Tenant
from tests.factories import make_app, make_site


def tenant(name: str, **spec: Any) -> Tenant:
    return Tenant.model_validate({"metadata": {"name": name}, "spec": spec})


def names(page: Page[Site] | Page[Tenant]) -> list[str]:
    return [o.metadata.name for o in page.items]


def app_ids(page: Page[App]) -> list[tuple[str, str]]:
    return [(a.metadata.tenant or "", a.metadata.name) for a in page.items]


def test_sites_come_a_page_at_a_time_by_name(store: Store) -> None:
    for name in ("lyon", "paris", "berlin", "tokyo", "oslo", "austin", "madrid"):
        store.objects.put(make_site(name))
    everything = [s.metadata.name for s in store.objects.list_sites()]
    assert everything == sorted(everything)
    for size in (1, 2, 3, 6, 7, 8):
        pages, after = [], None
        while True:
            page = store.objects.page_sites(after=after, limit=size)
            pages.append(names(page))
            if not page.remaining:
                break
            after = page.items[-1].metadata.name
        assert [n for p in pages for n in p] == everything, size
        assert all(len(p) == size for p in pages[:-1]), size
        # A last page that ends the list exactly says so: no empty page after it.
        assert pages[-1], size
    first = store.objects.page_sites(limit=3)
    assert (names(first), first.remaining) == (["austin", "berlin", "lyon"], 4)
    assert store.objects.page_sites(after="tokyo", limit=3) == Page([], 0)
    # No limit: the rest of the list, whatever comes after.
    rest = store.objects.page_sites(after="madrid")
    assert (names(rest), rest.remaining) == (["oslo", "paris", "tokyo"], 0)


def test_a_page_continues_where_the_last_ended_whatever_changed_between(store: Store) -> None:
    for name in ("a1", "a2", "a3", "a4", "a5"):
        store.objects.put(make_site(name))
    first = store.objects.page_sites(limit=2)
    assert names(first) == ["a1", "a2"]
    # The last object of the page goes, one comes before the position, one after it.
    store.objects.delete_site("a2")
    store.objects.put(make_site("a0"))
    store.objects.put(make_site("a9"))
    second = store.objects.page_sites(after="a2", limit=2)
    assert (names(second), second.remaining) == (["a3", "a4"], 2)
    assert names(store.objects.page_sites(after="a4")) == ["a5", "a9"]


def test_a_page_composes_the_status_of_its_own_sites(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("s1", "s2", "s3", "s4"):
        store.objects.put(make_site(name))
    for site, running in (("s2", 2), ("s3", 3)):
        replicas = [
            ReplicaState(id=f"demo-hello-{i}", index=i, state="running", ready=True)
            for i in range(running)
        ]
        store.observed.save_report(
            StatusReport(
                site=site,
                agent_version="test",
                observed_revision=0,
                apps=[AppReport(tenant="demo", app="hello", replicas=replicas)],
            )
        )
    composed: list[list[str]] = []
    read = store.objects._sites

    def spy(conn: Any, rows: Any) -> list[Site]:
        composed.append([r.name for r in rows])
        return read(conn, rows)

    monkeypatch.setattr(store.objects, "_sites", spy)
    page = store.objects.page_sites(after="s1", limit=2)
    assert composed == [["s2", "s3"]]
    assert [(s.metadata.name, s.status.ready_replicas) for s in page.items] == [
        ("s2", 2),
        ("s3", 3),
    ]


def test_apps_page_by_tenant_and_name_of_every_tenant_or_some(store: Store) -> None:
    for tenant_name, app in (("t2", "b"), ("t1", "z"), ("t3", "a"), ("t1", "a"), ("t2", "a")):
        store.objects.put(make_app(app, tenant=tenant_name))
    every = [(a.metadata.tenant, a.metadata.name) for a in store.objects.list_apps()]
    assert every == [("t1", "a"), ("t1", "z"), ("t2", "a"), ("t2", "b"), ("t3", "a")]
    first = store.objects.page_apps(limit=2)
    assert (app_ids(first), first.remaining) == ([("t1", "a"), ("t1", "z")], 3)
    # The key is (tenant, name): the page after ("t1", "z") starts with t2's first app.
    second = store.objects.page_apps(after=("t1", "z"), limit=2)
    assert (app_ids(second), second.remaining) == ([("t2", "a"), ("t2", "b")], 1)
    # Some tenants only: the filter is in the query, so pages are full.
    some = store.objects.page_apps(tenants={"t1", "t3"}, limit=2)
    assert (app_ids(some), some.remaining) == ([("t1", "a"), ("t1", "z")], 1)
    last = store.objects.page_apps(tenants={"t1", "t3"}, after=("t1", "z"), limit=2)
    assert (app_ids(last), last.remaining) == ([("t3", "a")], 0)
    assert store.objects.page_apps(tenants=[]).items == []
    assert [a.metadata.name for a in store.objects.list_apps("t2")] == ["a", "b"]


def test_tenants_page_by_name_within_the_ones_asked(store: Store) -> None:
    for name in ("shop", "acme", "bank", "zoo"):
        store.objects.put(tenant(name))
    page = store.objects.page_tenants(limit=3)
    assert (names(page), page.remaining) == (["acme", "bank", "shop"], 1)
    mine = store.objects.page_tenants(names={"zoo", "bank", "nobody"}, limit=1)
    assert (names(mine), mine.remaining) == (["bank"], 1)
    assert names(store.objects.page_tenants(names={"zoo", "bank"}, after="bank")) == ["zoo"]


def test_put_many_writes_each_as_put_does_in_one_transaction(store: Store) -> None:
    store.objects.put(make_site("paris"))
    written = store.objects.put_many(
        [
            make_site("paris"),
            make_site("lyon"),
            make_app("web", tenant="t1"),
            tenant("t1", regions=["eu-west"]),
            make_site("paris", ip="127.0.0.9"),
        ]
    )
    assert [(w.kind, w.tenant, w.name, w.outcome) for w in written] == [
        ("Site", None, "paris", Outcome.UNCHANGED),
        ("Site", None, "lyon", Outcome.CREATED),
        ("App", "t1", "web", Outcome.CREATED),
        ("Tenant", None, "t1", Outcome.CREATED),
        # The same object twice: the second write sees the first.
        ("Site", None, "paris", Outcome.CONFIGURED),
    ]
    paris = store.objects.get_site("paris")
    assert paris.spec.addresses.ip == "127.0.0.9"
    assert (paris.metadata.resource_version, paris.metadata.generation) == (
        written[-1].resource_version,
        written[-1].generation,
    )
    assert written[-1].generation == 2
    versions = [int(w.resource_version) for w in written[1:4]]
    assert versions == sorted(versions)


def test_put_many_is_all_or_nothing(store: Store) -> None:
    first, _ = store.objects.put(make_app("web", tenant="t1", placement={"replicas": 1}))
    store.objects.put(make_app("web", tenant="t1", placement={"replicas": 2}))
    stale = make_app("web", tenant="t1", placement={"replicas": 5})
    stale.metadata.resource_version = first.metadata.resource_version
    with pytest.raises(Conflict, match="changed since version") as refused:
        store.objects.put_many([make_site("lyon"), tenant("t1"), stale, make_site("oslo")])
    assert refused.value.item == 2
    assert store.objects.list_sites() == [] and store.objects.list_tenants() == []
    assert store.objects.get_app("t1", "web").spec.placement.replicas == 2
    gone = make_site("nowhere")
    gone.metadata.resource_version = "7"
    with pytest.raises(NotFound, match="does not exist") as missing:
        store.objects.put_many([make_site("lyon"), gone])
    assert missing.value.item == 1
    with pytest.raises(Conflict, match="already exists") as exists:
        store.objects.put_many([make_site("lyon"), make_site("lyon")], create_only=True)
    assert exists.value.item == 1
    assert store.objects.list_sites() == []


def test_a_tenant_policy_in_put_many_wakes_the_sites_of_its_apps(store: Store) -> None:
    store.objects.put(make_site("paris"))
    store.objects.put(make_app("web", tenant="t1"))
    store.placement.write({("t1", "web"): (1, {"paris": 1})})
    before = store.revisions.all()["paris"]
    store.objects.put_many([tenant("t1", regions=["eu-west"])])
    moved = store.revisions.all()["paris"]
    assert moved > before
    # Unchanged: no new desired state.
    store.objects.put_many([tenant("t1", regions=["eu-west"])])
    assert store.revisions.all()["paris"] == moved
