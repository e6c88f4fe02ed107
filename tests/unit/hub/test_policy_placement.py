"""The placement controller under tenants' policies, over a fake store: residency and quotas
hold whatever the apps, demand and sites (properties), and the status says why (examples)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.hub.placement_controller import Placer, decide, priority
from edgefleet.hub.store import AppId, SiteShare
from edgefleet.model import App, AppDemand, Event, SitePhase, Tenant
from edgefleet.placement.explicit import CPU_EPSILON
from edgefleet.placement.policy import effective_regions
from tests.factories import make_app, make_site

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REGIONS = ["eu-west", "eu-north", "us-east"]


class FakeStore:
    """What the controller reads and writes, in memory: sites, apps, tenants and demand in, the
    decisions of each pass applied as the store would."""

    def __init__(
        self,
        sites: Sequence[Any],
        apps: Sequence[App],
        tenants: Sequence[Tenant],
        demand: Mapping[AppId, list[AppDemand]] | None = None,
    ) -> None:
        self.sites = list(sites)
        self.apps = list(apps)
        self.tenants = list(tenants)
        self.demand_rows = dict(demand or {})
        self.placed: dict[AppId, dict[str, SiteShare]] = {}
        self.statuses: dict[AppId, tuple[int, str | None]] = {}
        self.recorded: list[Event] = []
        self.placer = Placer()


def reconcile(store: FakeStore, *, full: bool = True) -> None:
    """One pass of the controller's placement over ``store`` (a full one unless ``full`` is
    False: then the placer works from its memory, as it does between feed updates)."""
    apps = priority(store.apps)
    placed, shortfalls = store.placer.place(
        apps=apps,
        sites={site.metadata.name: site for site in store.sites},
        changed_sites=None if full else set(),
        tenants={t.metadata.name: t.spec for t in store.tenants},
        current=store.placed,
        demand=store.demand_rows,
        now=T0,
    )
    decision = decide(apps, placed, shortfalls, store.placed, T0)
    for key, (_, by_site) in decision.placement.items():
        store.placed[key] = {s: share for s, share in by_site.items() if share.placed}
    store.statuses.update(decision.statuses)
    for app in store.apps:
        status = decision.statuses.get((app.metadata.tenant or "", app.metadata.name))
        if status is not None:
            app.status.observed_generation, app.status.message = status
    store.recorded.extend(decision.events)


def ready_site(name: str, region: str, lat: float = 48.0, lon: float = 2.0) -> Any:
    site = make_site(name, region=region, lat=lat, lon=lon, max_replicas=50)
    site.status.phase = SitePhase.READY
    return site


def created(app: App, minutes: int) -> App:
    app.metadata.creation_timestamp = T0 + timedelta(minutes=minutes)
    app.metadata.generation = 1
    return app


def with_policy(app: App, regions: list[str]) -> App:
    body = app.model_dump(mode="json", by_alias=True)
    body["spec"]["policy"] = {"regions": regions}
    return App.model_validate(body)


def tenant(name: str, **spec: Any) -> Tenant:
    return Tenant.model_validate({"metadata": {"name": name}, "spec": spec})


def test_residency_moves_an_app_into_the_tenants_regions_and_says_when_none_is_left() -> None:
    sites = [ready_site("paris", "eu-west"), ready_site("boston", "us-east", 42.0, -71.0)]
    shop = created(make_app("shop", tenant="acme", placement={"replicas": 2}), 0)
    store = FakeStore(sites, [shop], [tenant("acme", regions=["us-east"])])
    reconcile(store)
    assert {s: share.replicas for s, share in store.placed[("acme", "shop")].items()} == {
        "boston": 2
    }
    store.apps = [with_policy(shop, ["eu-west"])]
    reconcile(store)
    assert store.placed[("acme", "shop")] == {}
    message = store.statuses[("acme", "shop")][1]
    assert message == (
        "placed nowhere: tenant acme's regions (us-east) and spec.policy.regions (eu-west) "
        "have no region in common"
    )


def test_a_quota_caps_the_tenants_replicas_and_the_status_says_why() -> None:
    sites = [ready_site("paris", "eu-west"), ready_site("lyon", "eu-west")]
    first = created(make_app("first", tenant="acme", placement={"replicas": 12}), 0)
    second = created(make_app("second", tenant="acme", placement={"replicas": 12}), 1)
    other = created(make_app("other", tenant="beta", placement={"replicas": 12}), 2)
    store = FakeStore(sites, [first, second, other], [tenant("acme", quota={"replicas": 20})])
    reconcile(store)
    total = {key: sum(s.replicas for s in by.values()) for key, by in store.placed.items()}
    assert total == {("acme", "first"): 12, ("acme", "second"): 8, ("beta", "other"): 12}
    assert store.statuses[("acme", "second")][1] == (
        "tenant acme is at its replica quota (20): 8 of 12 replicas placed"
    )
    assert store.statuses[("acme", "first")][1] is None
    assert any(e.reason == "PlacementShortfall" and e.name == "second" for e in store.recorded)


# -- properties ------------------------------------------------------------------------------


@st.composite
def fleets(draw: st.DrawFn) -> FakeStore:
    sites = [
        ready_site(f"s{i}", draw(st.sampled_from(REGIONS)), 40.0 + i, -70.0 + 15 * i)
        for i in range(draw(st.integers(1, 5)))
    ]
    apps: list[App] = []
    demand: dict[AppId, list[AppDemand]] = {}
    for i in range(draw(st.integers(0, 6))):
        name, owner = f"a{i}", draw(st.sampled_from(["acme", "beta"]))
        selector = {"regions": draw(st.lists(st.sampled_from(REGIONS), unique=True, max_size=2))}
        if draw(st.booleans()):
            placement: dict[str, Any] = {"mode": "traffic", "selector": selector}
            scaling: dict[str, Any] | None = {
                "minReplicas": draw(st.integers(0, 3)),
                "maxReplicas": 20,
                "targetConcurrency": 1,
            }
            demand[(owner, name)] = [
                AppDemand(
                    origin=site.metadata.name,
                    requests_per_second=5.0,
                    concurrency=draw(st.floats(0.5, 6.0)),
                    dns_per_second=0.0,
                    last_request=T0,
                )
                for site in draw(
                    st.lists(st.sampled_from(sites), unique_by=lambda s: s.metadata.name)
                )
            ]
        elif draw(st.booleans()):
            placement = {"replicasPerSite": draw(st.integers(1, 3)), "selector": selector}
            scaling = None
        else:
            placement = {"replicas": draw(st.integers(1, 8)), "selector": selector}
            scaling = None
        app = created(make_app(name, tenant=owner, placement=placement, scaling=scaling), i)
        regions = draw(st.lists(st.sampled_from(REGIONS), unique=True, max_size=2))
        apps.append(with_policy(app, regions) if regions else app)
    tenants = [
        tenant(
            name,
            regions=draw(st.lists(st.sampled_from(REGIONS), unique=True, max_size=2)),
            quota={
                "replicas": draw(st.none() | st.integers(0, 12)),
                "cpu": draw(st.none() | st.sampled_from([0.3, 0.5, 1.0])),
                "memory": draw(st.none() | st.sampled_from(["96Mi", "320Mi"])),
            },
        )
        for name in ("acme", "beta")
        if draw(st.integers(0, 3))  # mostly with a policy
    ]
    return FakeStore(sites, apps, tenants, demand)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_placement_stays_in_residency_and_within_quota_pass_after_pass(store: FakeStore) -> None:
    regions = {s.metadata.name: s.spec.region for s in store.sites}
    policies = {t.metadata.name: t.spec for t in store.tenants}
    for full in (True, False):  # the second pass starts from the first one's result
        reconcile(store, full=full)
        for app in store.apps:
            key = (app.metadata.tenant or "", app.metadata.name)
            allowed = effective_regions(policies.get(key[0]), app.spec)
            placed = store.placed.get(key, {})
            if allowed is not None:
                assert {regions[site] for site in placed} <= allowed, (key, placed, allowed)
        for name, spec in policies.items():
            quota = spec.quota
            mine = [a for a in store.apps if a.metadata.tenant == name]
            most = {
                a.metadata.name: sum(
                    max(share.replicas, share.max_replicas or 0)
                    for share in store.placed.get((name, a.metadata.name), {}).values()
                )
                for a in mine
            }
            if quota.replicas is not None:
                assert sum(most.values()) <= quota.replicas
            if quota.cpu is not None:
                cpu = sum(most[a.metadata.name] * a.spec.resources.cpu for a in mine)
                assert cpu <= quota.cpu + CPU_EPSILON
            if quota.memory is not None:
                memory = sum(most[a.metadata.name] * a.spec.resources.memory for a in mine)
                assert memory <= quota.memory
