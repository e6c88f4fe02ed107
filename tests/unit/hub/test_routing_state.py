"""The routing table kept up to date one change at a time equals the table built whole from the
same fleet, after any sequence of changes; and a change touches only what it names."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.hub.fleet import FleetChanges, FleetState
from edgefleet.hub.routing import RoutingState, build_routing_table, per_site_replicas
from edgefleet.hub.store import ReplicaCount, SiteShare
from edgefleet.model import App, RoutingTable, SitePhase, Tenant
from tests.factories import make_app, make_site

SITES = [f"s{i}" for i in range(6)]
APPS = [("acme", "web"), ("acme", "api"), ("beta", "shop")]


def whole(fleet: FleetState) -> RoutingTable:
    """The reference: the table built from the fleet with status composed as the store does."""
    sites = []
    for name, site in fleet.sites.items():
        copy = site.model_copy(deep=True)
        copy.status.replicas = fleet.site_totals(name).running
        sites.append(copy)
    apps = []
    for key, app in fleet.apps.items():
        copy = app.model_copy(deep=True)
        copy.status.sites = per_site_replicas(
            fleet.shares.get(key, {}), fleet.observed.get(key, {})
        )
        apps.append(copy)
    tenants = [
        Tenant.model_validate({"metadata": {"name": name}, "spec": spec.model_dump(by_alias=True)})
        for name, spec in fleet.tenants.items()
    ]
    return build_routing_table(sites, apps, tenants=tenants)


def site(name: str, phase: SitePhase, max_replicas: int) -> Any:
    """A site; its slots choose its region and client networks too (to vary them)."""
    i = SITES.index(name)
    made = make_site(
        name,
        lat=40.0 + i,
        lon=2.0,
        max_replicas=max_replicas,
        region="us-east" if max_replicas > 7 else "eu-west",
        networks=[f"10.{i}.{n}.0/24" for n in range(max_replicas % 3)],
    )
    made.status.phase = phase
    return made


def app(key: tuple[str, str], latency: float | None) -> App:
    tenant, name = key
    if latency is None:
        return make_app(name, tenant=tenant)
    return make_app(name, tenant=tenant, placement={"mode": "traffic", "maxLatencyMs": latency})


CHANGE = st.one_of(
    st.tuples(
        st.just("site"),
        st.sampled_from(SITES),
        st.sampled_from([SitePhase.READY, SitePhase.UNREACHABLE, None]),
        st.integers(1, 10),
    ),
    st.tuples(st.just("app"), st.sampled_from(APPS), st.sampled_from([None, 50.0, 100.0, -1.0])),
    st.tuples(
        st.just("share"),
        st.sampled_from(APPS),
        st.dictionaries(st.sampled_from(SITES), st.tuples(st.integers(0, 3), st.booleans())),
    ),
    st.tuples(
        st.just("report"),
        st.sampled_from(SITES),
        st.dictionaries(st.sampled_from(APPS), st.tuples(st.integers(0, 3), st.integers(0, 3))),
    ),
    st.tuples(
        st.just("tenant"),
        st.sampled_from(["acme", "beta"]),
        st.sampled_from([None, "residency", "access"]),
    ),
)


def apply(fleet: FleetState, change: tuple[Any, ...]) -> FleetChanges:
    kind = change[0]
    if kind == "site":
        _, name, phase, slots = change
        if phase is None:
            fleet.sites.pop(name, None)
        else:
            fleet.sites[name] = site(name, phase, slots)
        return FleetChanges(sites={name})
    if kind == "app":
        _, key, latency = change
        if latency == -1.0:
            fleet.apps.pop(key, None)
        else:
            fleet.apps[key] = app(key, latency)
        return FleetChanges(apps={key})
    if kind == "share":
        _, key, by_site = change
        shares = {
            s: SiteShare(n, 0, 3) if wakeable else SiteShare(n)
            for s, (n, wakeable) in by_site.items()
            if n or wakeable
        }
        if shares:
            fleet.shares[key] = shares
        else:
            fleet.shares.pop(key, None)
        return FleetChanges(placements={key})
    if kind == "report":
        _, name, by_app = change
        counts = {
            k: ReplicaCount(running=r, ready=min(r, ready)) for k, (r, ready) in by_app.items()
        }
        touched = set(fleet.replicas.get(name, {})) | set(counts)
        fleet._report(name, counts)
        return FleetChanges(replicas={name}, replica_apps=touched)
    _, name, policy = change
    if policy is None:
        fleet.tenants.pop(name, None)
    else:
        spec = (
            {"regions": ["eu-west"]}
            if policy == "residency"
            else {"access": {"regions": ["us-east"]}}
        )
        fleet.tenants[name] = Tenant.model_validate({"metadata": {"name": name}, "spec": spec}).spec
    return FleetChanges(tenants={name})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CHANGE, max_size=25))
def test_kept_up_to_date_equals_built_whole(changes: list[tuple[Any, ...]]) -> None:
    async def scenario() -> None:
        fleet = FleetState()
        for name in SITES[:3]:
            fleet.sites[name] = site(name, SitePhase.READY, 5)
        fleet.apps[APPS[0]] = app(APPS[0], None)
        routing = RoutingState(fleet)
        await routing.rebuild()
        assert routing.wire().model_dump() == whole(fleet).model_dump()
        for change in changes:
            routing.follow(apply(fleet, change))
            await routing.rebuild()
            assert routing.wire().model_dump() == whole(fleet).model_dump(), change
            # The frozen table the DNS answers from holds the same sites and apps.
            assert set(routing.table.sites) == set(fleet.sites)
            assert set(routing.table.apps) == set(fleet.apps)

    asyncio.run(scenario())


def test_a_report_redoes_only_the_apps_at_that_site() -> None:
    async def scenario() -> None:
        fleet = FleetState()
        for name in SITES:
            fleet.sites[name] = site(name, SitePhase.READY, 5)
        for key in APPS:
            fleet.apps[key] = app(key, None)
        fleet.shares[APPS[0]] = {"s0": SiteShare(1)}
        fleet.shares[APPS[1]] = {"s1": SiteShare(1)}
        routing = RoutingState(fleet)
        seen: list[Any] = []
        routing.subscribe(lambda table, changes: seen.append(changes))
        await routing.rebuild()
        fleet._report("s0", {APPS[0]: ReplicaCount(1, 1)})
        routing.follow(FleetChanges(replicas={"s0"}, replica_apps={APPS[0]}))
        assert await routing.rebuild()
        last = seen[-1]
        assert last.apps == {APPS[0]} and last.endpoints == {APPS[0]: {"s0"}}
        assert not last.sites and not last.meta
        # Nothing new: nothing published.
        assert not await routing.rebuild()

    asyncio.run(scenario())
