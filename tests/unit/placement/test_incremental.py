"""The incremental explicit planner: after any change it answers exactly what a full pass would,
and it computes less.

The reference is ``place_fleet`` over the new apps and sites with ``current`` set to the last
result, which is what the hub did on every change before the planner remembered anything.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.model import PlacementPolicy, SiteSelector
from edgefleet.placement import AppKey, AppView, SiteName, SiteView, place_fleet
from edgefleet.placement.incremental import ExplicitPlanner
from tests.unit.placement.test_explicit import (
    APP_CPU,
    LABELS,
    SITE_CPU,
    SITE_MAX_REPLICAS,
    SITE_NAMES,
    Fleet,
    fleets,
    policies,
)

PROPERTIES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def changed_apps(draw: st.DrawFn, apps: list[AppView]) -> list[AppView]:
    """Some apps kept, some changed, some gone, maybe new ones (appended, as new apps are)."""
    out = []
    for app in apps:
        what = draw(st.sampled_from(["keep", "keep", "policy", "cpu", "drop"]))
        if what == "keep":
            out.append(app)
        elif what == "policy":
            out.append(replace(app, policy=draw(policies())))
        elif what == "cpu":
            out.append(replace(app, cpu=draw(APP_CPU)))
    taken = {app.key for app in apps}
    fresh = [AppKey(f"tenant/new-{i}") for i in range(8) if AppKey(f"tenant/new-{i}") not in taken]
    for key in fresh[: draw(st.integers(0, 2))]:
        out.append(
            AppView(
                key=key,
                policy=draw(policies()),
                cpu=draw(APP_CPU),
                memory=0,
                min_replicas=0,
                max_replicas=draw(st.integers(0, 20)),
            )
        )
    return out


@st.composite
def changed_sites(
    draw: st.DrawFn, sites: list[SiteView]
) -> tuple[list[SiteView], list[SiteView], list[SiteName]]:
    """(every site after, the sites added or changed, the sites removed)."""
    after: list[SiteView] = []
    changed: list[SiteView] = []
    removed: list[SiteName] = []
    for site in sites:
        what = draw(
            st.sampled_from(["keep", "keep", "keep", "reach", "cpu", "max", "labels", "drop"])
        )
        new = site
        if what == "labels":
            new = replace(site, labels=draw(LABELS))
        elif what == "reach":
            new = replace(site, reachable=not site.reachable)
        elif what == "cpu":
            new = replace(site, cpu=draw(SITE_CPU))
        elif what == "max":
            new = replace(site, max_replicas=draw(SITE_MAX_REPLICAS))
        elif what == "drop":
            removed.append(site.name)
            continue
        after.append(new)
        if new != site:
            changed.append(new)
    unused = [n for n in SITE_NAMES if n not in {s.name for s in sites}]
    for name in draw(st.lists(st.sampled_from(unused), max_size=2, unique=True)) if unused else []:
        new = SiteView(
            name=SiteName(name),
            region="eu-west",
            zone="eu-west-1",
            labels={},
            reachable=draw(st.booleans()),
            cpu=draw(SITE_CPU),
            memory=1 << 40,
            max_replicas=draw(SITE_MAX_REPLICAS),
        )
        after.append(new)
        changed.append(new)
    return after, changed, removed


@PROPERTIES
@given(fleet=fleets(settled=True), data=st.data())
def test_each_update_answers_what_a_full_pass_would(fleet: Fleet, data: st.DataObject) -> None:
    planner = ExplicitPlanner()
    result = planner.full(fleet.apps, fleet.sites, fleet.current)
    assert result == place_fleet(fleet.apps, fleet.sites, fleet.current)
    apps, sites = fleet.apps, fleet.sites
    for _ in range(3):
        apps = data.draw(changed_apps(apps))
        sites, changed, removed = data.draw(changed_sites(sites))
        expected = place_fleet(apps, sites, result.replicas)
        result = planner.update(apps, sites=changed, removed=removed)
        assert result == expected


@PROPERTIES
@given(fleet=fleets(settled=True), data=st.data())
def test_a_change_of_one_app_reaches_the_apps_after_it(fleet: Fleet, data: st.DataObject) -> None:
    """Only the first app changes (or goes): the apps after it must see the room it took or
    left, and nothing else."""
    planner = ExplicitPlanner()
    result = planner.full(fleet.apps, fleet.sites, fleet.current)
    first, *rest = fleet.apps
    what = data.draw(st.sampled_from(["policy", "cpu", "drop"]))
    if what == "drop":
        apps = rest
    elif what == "cpu":
        apps = [replace(first, cpu=data.draw(APP_CPU)), *rest]
    else:
        apps = [replace(first, policy=data.draw(policies())), *rest]
    assert planner.update(apps) == place_fleet(apps, fleet.sites, result.replicas)


def test_room_an_app_gives_up_goes_to_the_next() -> None:
    site = SiteView(
        name=SiteName("a"),
        region="r",
        zone="z",
        labels={},
        reachable=True,
        cpu=10.0,
        memory=1 << 40,
        max_replicas=2,
    )
    first = AppView(
        key=AppKey("t/a"),
        policy=PlacementPolicy(replicas=2),
        cpu=0.0,
        memory=0,
        min_replicas=0,
        max_replicas=10,
    )
    second = replace(first, key=AppKey("t/b"))
    planner = ExplicitPlanner()
    before = planner.full([first, second], [site], {})
    assert before.replicas[second.key] == {}
    smaller = replace(first, policy=PlacementPolicy(replicas=1))
    after = planner.update([smaller, second])
    assert after.replicas[second.key] == {"a": 1}
    assert planner.recomputed == 2


@PROPERTIES
@given(fleet=fleets(ample=True, settled=True))
def test_nothing_changed_computes_nothing(fleet: Fleet) -> None:
    planner = ExplicitPlanner()
    first = planner.full(fleet.apps, fleet.sites, fleet.current)
    settled = planner.update(fleet.apps)
    assert settled == first
    assert planner.recomputed == 0 and planner.touched == 0


def test_a_label_no_selector_reads_moves_nothing_and_costs_no_pass() -> None:
    sites, everywhere, regional = _every_site_fleet(2_000)
    counted = replace(everywhere, key=AppKey("ops/three"), policy=PlacementPolicy(replicas=3))
    planner = ExplicitPlanner()
    first = planner.full([everywhere, counted, regional], sites, {})
    relabelled = replace(sites[7], labels={"rack": "b"})
    after = planner.update([everywhere, counted, regional], sites=[relabelled])
    assert after == first
    assert planner.recomputed == 0 and planner.touched == 0


def _every_site_fleet(count: int) -> tuple[list[SiteView], AppView, AppView]:
    sites = [
        SiteView(
            name=SiteName(f"s{i:05d}"),
            region="eu-west" if i % 2 else "us-east",
            zone="z",
            labels={},
            reachable=True,
            cpu=8.0,
            memory=1 << 34,
            max_replicas=20,
        )
        for i in range(count)
    ]
    everywhere = AppView(
        key=AppKey("ops/agent-sidecar"),
        policy=PlacementPolicy(replicas_per_site=1),
        cpu=0.1,
        memory=0,
        min_replicas=0,
        max_replicas=100_000,
    )
    regional = AppView(
        key=AppKey("shop/web"),
        policy=PlacementPolicy(replicas=3, selector=SiteSelector(regions=["eu-west"])),
        cpu=0.5,
        memory=0,
        min_replicas=0,
        max_replicas=10,
    )
    return sites, everywhere, regional


def test_a_site_joining_redoes_an_every_site_app_at_that_site_only() -> None:
    sites, everywhere, regional = _every_site_fleet(2000)
    planner = ExplicitPlanner()
    planner.full([everywhere, regional], sites, {})
    newcomer = replace(sites[0], name=SiteName("s99999"), region="us-east")
    result = planner.update([everywhere, regional], sites=[newcomer])
    assert result.replicas[everywhere.key][newcomer.name] == 1
    assert sum(result.replicas[everywhere.key].values()) == 2001
    # The every-site app was redone at one site; the regional app does not see us-east at all.
    assert (planner.recomputed, planner.touched) == (0, 1)
    assert result == place_fleet([everywhere, regional], [*sites, newcomer], result.replicas)


def test_an_unreachable_site_moves_only_the_apps_it_ran() -> None:
    sites, everywhere, regional = _every_site_fleet(200)
    planner = ExplicitPlanner()
    first = planner.full([everywhere, regional], sites, {})
    running_web = next(iter(first.replicas[regional.key]))
    gone = replace(next(s for s in sites if s.name == running_web), reachable=False)
    after = planner.update([everywhere, regional], sites=[gone])
    # The regional app places its three replicas on reachable sites and keeps the one it had
    # at the lost site (it may still serve its local clients): four in all.
    web = after.replicas[regional.key]
    assert web[running_web] == first.replicas[regional.key][running_web]
    assert sum(n for s, n in web.items() if s != running_web) == 3
    assert after.replicas[everywhere.key][gone.name] == 1
    assert planner.recomputed == 1 and planner.touched == 1


def test_the_planner_needs_a_full_pass_first() -> None:
    with pytest.raises(RuntimeError, match="full"):
        ExplicitPlanner().update([])
