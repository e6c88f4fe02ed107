"""The store on SQLite and on a real PostgreSQL: versions, conflicts, placement, observed state."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from edgefleet.hub.store import Conflict, NotFound, Outcome, Store, utcnow
from edgefleet.model import AppReport, Event, ReplicaState, StatusReport
from tests.factories import make_app, make_site


def test_migrate_is_idempotent(store: Store) -> None:
    store.migrate()
    assert store.objects.list_sites() == []


def test_create_get_list_sites(store: Store) -> None:
    created, outcome = store.objects.put(make_site("paris"))
    assert outcome == Outcome.CREATED
    assert created.metadata.uid and created.metadata.generation == 1
    assert created.metadata.resource_version is not None
    store.objects.put(make_site("london", ip="127.0.0.2"))
    assert [s.metadata.name for s in store.objects.list_sites()] == ["london", "paris"]
    assert store.objects.get_site("paris").spec.addresses.ip == "127.0.0.1"
    with pytest.raises(NotFound):
        store.objects.get_site("tokyo")


def test_update_bumps_version_and_generation_only_on_spec_change(store: Store) -> None:
    first, _ = store.objects.put(make_app(placement={"replicas": 1}))
    same, outcome = store.objects.put(make_app(placement={"replicas": 1}))
    assert outcome == Outcome.UNCHANGED
    assert same.metadata.resource_version == first.metadata.resource_version
    assert same.metadata.generation == 1
    scaled, outcome = store.objects.put(make_app(placement={"replicas": 3}))
    assert outcome == Outcome.CONFIGURED
    assert scaled.metadata.generation == 2
    assert int(scaled.metadata.resource_version or 0) > int(first.metadata.resource_version or 0)
    relabelled_app = make_app(placement={"replicas": 3})
    relabelled_app.metadata.labels = {"team": "a"}
    relabelled, _ = store.objects.put(relabelled_app)
    assert relabelled.metadata.generation == 2  # labels are not spec
    assert relabelled.metadata.resource_version != scaled.metadata.resource_version


def test_stale_resource_version_is_a_conflict_and_changes_nothing(store: Store) -> None:
    first, _ = store.objects.put(make_app(placement={"replicas": 1}))
    store.objects.put(make_app(placement={"replicas": 2}))
    stale = make_app(placement={"replicas": 5})
    stale.metadata.resource_version = first.metadata.resource_version
    with pytest.raises(Conflict, match="changed since version"):
        store.objects.put(stale)
    assert store.objects.get_app("demo", "hello").spec.placement.replicas == 2


def test_create_only_refuses_existing(store: Store) -> None:
    store.objects.put(make_site("paris"))
    with pytest.raises(Conflict, match="already exists"):
        store.objects.put(make_site("paris"), create_only=True)


def test_concurrent_updates_with_one_version_let_exactly_one_through(store: Store) -> None:
    base, _ = store.objects.put(make_app(placement={"replicas": 1}))
    outcomes: list[str] = []

    def update(replicas: int) -> None:
        app = make_app(placement={"replicas": replicas})
        app.metadata.resource_version = base.metadata.resource_version
        try:
            store.objects.put(app)
            outcomes.append("ok")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=update, args=(n,)) for n in range(2, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 1
    assert outcomes.count("conflict") == len(threads) - 1


def test_apps_are_scoped_by_tenant(store: Store) -> None:
    store.objects.put(make_app("web", tenant="a"))
    store.objects.put(make_app("web", tenant="b"))
    assert [a.metadata.tenant for a in store.objects.list_apps()] == ["a", "b"]
    assert len(store.objects.list_apps("a")) == 1
    store.objects.delete_app("a", "web")
    with pytest.raises(NotFound):
        store.objects.get_app("a", "web")
    assert store.objects.get_app("b", "web").metadata.name == "web"


def test_placement_writes_bump_only_changed_sites(store: Store) -> None:
    for name in ("paris", "london", "tokyo"):
        store.objects.put(make_site(name))
    store.objects.put(make_app())
    changed = store.placement.write({("demo", "hello"): (1, {"paris": 1, "london": 2})})
    assert changed == {"paris", "london"}
    revisions = store.revisions.all()
    assert set(revisions) == {"paris", "london"}
    # The same placement again writes nothing.
    assert store.placement.write({("demo", "hello"): (1, {"paris": 1, "london": 2})}) == set()
    # Moving a replica from london to tokyo touches those two only.
    high = max(revisions.values())
    changed = store.placement.write({("demo", "hello"): (1, {"paris": 1, "london": 1, "tokyo": 1})})
    assert changed == {"london", "tokyo"}
    assert set(store.revisions.changed_since(high)) == {"london", "tokyo"}
    state = store.placement.desired_state("london")
    assert [(a.app, a.replicas) for a in state.apps] == [("hello", 1)]
    assert state.revision == store.revisions.all()["london"]
    assert store.placement.desired_state("nowhere").apps == []


def test_deleting_an_app_removes_its_assignments(store: Store) -> None:
    store.objects.put(make_site("paris"))
    store.objects.put(make_app())
    store.placement.write({("demo", "hello"): (1, {"paris": 2})})
    before = store.revisions.all()["paris"]
    assert store.objects.delete_app("demo", "hello") == {"paris"}
    assert store.placement.desired_state("paris").apps == []
    assert store.revisions.all()["paris"] > before


def test_reports_give_observed_status(store: Store) -> None:
    store.objects.put(make_site("paris"))
    store.objects.put(make_app())
    store.placement.write({("demo", "hello"): (1, {"paris": 2})})
    replicas = [
        ReplicaState(id=f"demo-hello-{i}", index=i, port=20000 + i, state="running", ready=i == 0)
        for i in range(2)
    ]
    store.observed.save_report(
        StatusReport(
            site="paris",
            agent_version="test",
            agent_endpoint="http://127.0.0.1:8080/_edgefleet",
            observed_revision=1,
            apps=[AppReport(tenant="demo", app="hello", replicas=replicas)],
        )
    )
    app = store.objects.get_app("demo", "hello")
    assert (app.status.desired_replicas, app.status.ready_replicas) == (2, 1)
    assert [(s.site, s.desired, s.running, s.ready) for s in app.status.sites] == [
        ("paris", 2, 2, 1)
    ]
    site = store.objects.get_site("paris")
    assert (site.status.replicas, site.status.ready_replicas) == (2, 1)
    assert site.status.agent_endpoint == "http://127.0.0.1:8080/_edgefleet"
    assert site.status.last_heartbeat is not None
    assert [r.id for r in store.observed.site_replicas("paris")["demo/hello"]] == [
        "demo-hello-0",
        "demo-hello-1",
    ]


def test_the_sites_digest_moves_with_what_a_dashboard_shows_of_sites(store: Store) -> None:
    store.objects.put(make_site("paris"))
    store.objects.put(make_app())
    seen = [store.objects.sites_digest()]
    assert store.objects.sites_digest() == seen[0]  # nothing changed, the same number

    def moved() -> bool:
        seen.append(store.objects.sites_digest())
        return seen[-1] != seen[-2]

    store.objects.put(make_site("lyon", lat=45.76, lon=4.84))
    assert moved()
    store.objects.put(make_site("paris", labels={"rack": "r2"}))
    assert moved()
    store.objects.set_site_phase("paris", "Unreachable", "no heartbeat for 9 s")
    assert moved()
    store.objects.set_site_phase("paris", "Unreachable", "no heartbeat for 12 s")
    assert moved()
    ready = ReplicaState(id="demo-hello-0", index=0, port=20000, state="running", ready=True)
    store.observed.save_report(
        StatusReport(
            site="paris",
            agent_version="test",
            observed_revision=1,
            apps=[AppReport(tenant="demo", app="hello", replicas=[ready])],
        )
    )
    assert moved()
    # A heartbeat's time alone is not worth telling a dashboard about.
    store.observed.record_heartbeats([("paris", utcnow(), 1, None)])
    assert not moved()
    store.objects.delete_site("lyon")
    assert moved()


def test_heartbeats_are_batched_upserts(store: Store) -> None:
    store.objects.put(make_site("paris"))
    store.objects.put(make_site("london"))
    t0 = utcnow()
    store.observed.record_heartbeats(
        [("paris", t0, 1, None), ("london", t0, 1, "cluster API away")]
    )
    assert store.observed.heartbeat_problems() == {"london": "cluster API away"}
    store.observed.record_heartbeats([("paris", t0 + timedelta(seconds=5), 2, None)])
    beats = store.observed.last_heartbeats()
    assert beats["paris"] - beats["london"] == timedelta(seconds=5)


def test_events_filter_and_prune(store: Store) -> None:
    now = utcnow()
    store.events.add(
        Event(time=now, kind="App", tenant="demo", name=f"app{i % 2}", reason="R", message=str(i))
        for i in range(10)
    )
    assert [e.message for e in store.events.list(name="app1", limit=3)] == ["5", "7", "9"]
    store.events.prune(keep=4)
    assert len(store.events.list(limit=100)) == 4
