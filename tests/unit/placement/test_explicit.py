"""Explicit placement: properties over random fleets, then examples that read as documentation.

The properties re-derive eligibility, targets and fit from the brief instead of calling the
helpers under test, so a bug in a helper shows up as a failed property.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.model import PlacementPolicy, SiteSelector, Spread, SpreadBy
from edgefleet.placement import (
    AppKey,
    AppView,
    PlacementResult,
    SiteName,
    SiteView,
    eligible,
    place_app,
    place_fleet,
)

GI = 1024**3
MI = 1024**2
EPSILON = 1e-5
"""Cores of float slack allowed when checking that a site is not over its cpu."""

PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------
# Strategies

ZONES = {"eu-west": ("eu-west-1", "eu-west-2"), "us-east": ("us-east-1",), "ap": ("ap-1", "ap-2")}
SITE_NAMES = tuple(f"site-{i}" for i in range(10))
LABEL_KEYS = ("tier", "gpu")
LABEL_VALUES = ("gold", "silver")
KINDS = ("even", "weights", "spread", "per_site")


@dataclass(frozen=True)
class Fleet:
    """One random placement problem."""

    apps: list[AppView]
    sites: list[SiteView]
    current: dict[AppKey, dict[SiteName, int]]


# Strategies are built once: building them per draw costs more than the placement under test.
NAME_SETS = st.lists(st.sampled_from(SITE_NAMES), min_size=1, max_size=8, unique=True)
PLACES = st.sampled_from([(region, zone) for region, zones in ZONES.items() for zone in zones])
LABELS = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=2)
REACHABLE = st.sampled_from([True, True, True, False])
SITE_CPU = st.sampled_from([0.0, 0.3, 1.0, 2.5]) | st.floats(0, 8, allow_nan=False)
SITE_MEMORY = st.sampled_from([0, 512 * MI, GI]) | st.integers(0, 4 * GI)
SITE_MAX_REPLICAS = st.integers(0, 12)


@st.composite
def site_lists(draw: st.DrawFn, *, ample: bool) -> list[SiteView]:
    """1-8 sites over 3 regions and 5 zones, a quarter unreachable; tight or ample capacity."""
    sites = []
    for name in draw(NAME_SETS):
        region, zone = draw(PLACES)
        if ample:
            cpu, memory, max_replicas = 1000.0, 1 << 50, 10_000
        else:
            cpu, memory, max_replicas = draw(SITE_CPU), draw(SITE_MEMORY), draw(SITE_MAX_REPLICAS)
        sites.append(
            SiteView(
                name=SiteName(name),
                region=region,
                zone=zone,
                labels=draw(LABELS),
                reachable=draw(REACHABLE),
                cpu=cpu,
                memory=memory,
                max_replicas=max_replicas,
            )
        )
    return sites


def _criterion(values: Sequence[str]) -> st.SearchStrategy[list[str]]:
    """Mostly no constraint, sometimes one or two allowed values."""
    return st.just([]) | st.just([]) | st.lists(st.sampled_from(values), min_size=1, max_size=2)


SELECTORS = st.builds(
    SiteSelector,
    regions=_criterion(sorted(ZONES)),
    zones=_criterion([zone for zones in ZONES.values() for zone in zones]),
    sites=_criterion(SITE_NAMES),
    match_labels=st.just({})
    | st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=1),
)
REPLICAS = st.integers(0, 15)
PER_SITE = st.integers(0, 3)
WEIGHTS = st.dictionaries(st.sampled_from(SITE_NAMES), st.integers(0, 5), min_size=1, max_size=8)
SPREADS = st.builds(Spread, by=st.sampled_from(SpreadBy), max_skew=st.integers(1, 3))
APP_CPU = st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0])
APP_MEMORY = st.sampled_from([0, 64 * MI, 256 * MI, GI])
CURRENT = st.dictionaries(st.sampled_from(SITE_NAMES).map(SiteName), st.integers(0, 6))


@st.composite
def policies(draw: st.DrawFn, *, kinds: Sequence[str] = KINDS) -> PlacementPolicy:
    """A policy of one of the four kinds, with a random selector."""
    kind = draw(st.sampled_from(kinds))
    selector = draw(SELECTORS)
    if kind == "per_site":
        return PlacementPolicy(selector=selector, replicas_per_site=draw(PER_SITE))
    replicas = draw(REPLICAS)
    if kind == "weights":
        return PlacementPolicy(selector=selector, replicas=replicas, weights=draw(WEIGHTS))
    if kind == "spread":
        return PlacementPolicy(selector=selector, replicas=replicas, spread=draw(SPREADS))
    return PlacementPolicy(selector=selector, replicas=replicas)


@st.composite
def app_lists(draw: st.DrawFn, *, kinds: Sequence[str] = KINDS) -> list[AppView]:
    """1-4 apps with small per-replica needs and random scaling bounds."""
    apps = []
    for i in range(draw(st.integers(1, 4))):
        min_replicas = draw(st.integers(0, 3))
        apps.append(
            AppView(
                key=AppKey(f"tenant/app-{i}"),
                policy=draw(policies(kinds=kinds)),
                cpu=draw(APP_CPU),
                memory=draw(APP_MEMORY),
                min_replicas=min_replicas,
                max_replicas=draw(st.integers(min_replicas, 20)),
            )
        )
    return apps


@st.composite
def fleets(
    draw: st.DrawFn, *, ample: bool = False, settled: bool = False, kinds: Sequence[str] = KINDS
) -> Fleet:
    """Apps, sites and current replicas.

    ``settled``: current is what placement gave with every site reachable, as in a running fleet
    where some sites then stop answering; otherwise current is arbitrary (even over capacity).
    """
    apps = draw(app_lists(kinds=kinds))
    sites = draw(site_lists(ample=ample))
    current = {app.key: draw(CURRENT) for app in apps if draw(st.booleans())}
    if settled:
        everyone_up = [replace(site, reachable=True) for site in sites]
        current = {
            key: dict(placed)
            for key, placed in place_fleet(apps, everyone_up, current).replicas.items()
        }
    return Fleet(apps=apps, sites=sites, current=current)


# ---------------------------------------------------------------------------------------------
# The brief, re-derived independently of the code under test


def matches(selector: SiteSelector, site: SiteView) -> bool:
    """Every non-empty criterion matches."""
    if selector.regions and site.region not in selector.regions:
        return False
    if selector.zones and site.zone not in selector.zones:
        return False
    if selector.sites and site.name not in selector.sites:
        return False
    return all(site.labels.get(k) == v for k, v in selector.match_labels.items())


def candidates(app: AppView, sites: Sequence[SiteView]) -> list[SiteView]:
    """Reachable eligible sites, in name order."""
    return sorted(
        (s for s in sites if s.reachable and matches(app.policy.selector, s)), key=lambda s: s.name
    )


def target(app: AppView, sites: Sequence[SiteView]) -> int:
    """Replicas the app asks for at reachable sites."""
    policy = app.policy
    if policy.replicas_per_site is not None:
        return min(policy.replicas_per_site * len(candidates(app, sites)), app.max_replicas)
    assert policy.replicas is not None
    return min(max(policy.replicas, app.min_replicas), app.max_replicas)


@dataclass(frozen=True)
class Taken:
    """Usage at one site."""

    cpu: float = 0.0
    memory: int = 0
    replicas: int = 0


def usage(
    apps: Sequence[AppView], result: PlacementResult, up_to: int | None = None
) -> dict[str, Taken]:
    """What the first ``up_to`` apps (all by default) take at each site."""
    taken: dict[str, Taken] = {}
    for app in apps[:up_to]:
        for site, count in result.replicas[app.key].items():
            was = taken.get(site, Taken())
            taken[site] = Taken(
                cpu=was.cpu + count * app.cpu,
                memory=was.memory + count * app.memory,
                replicas=was.replicas + count,
            )
    return taken


def one_more_fits(site: SiteView, taken: Taken, app: AppView) -> bool:
    """Whether another replica of ``app`` fits at ``site``."""
    return (
        taken.replicas + 1 <= site.max_replicas
        and taken.cpu + app.cpu <= site.cpu + EPSILON / 10
        and taken.memory + app.memory <= site.memory
    )


def at_reachable(result: PlacementResult, app: AppView, sites: Sequence[SiteView]) -> int:
    """Replicas of ``app`` at reachable sites."""
    up = {s.name for s in sites if s.reachable}
    return sum(n for site, n in result.replicas[app.key].items() if site in up)


def domain_of(site: SiteView, by: SpreadBy) -> tuple[str, ...]:
    """The spread domain: zones are taken within their region."""
    return {
        SpreadBy.REGION: (site.region,),
        SpreadBy.ZONE: (site.region, site.zone),
        SpreadBy.SITE: (site.name,),
    }[by]


def gap(counts: Sequence[int]) -> int:
    """Fullest minus emptiest."""
    return max(counts) - min(counts) if counts else 0


# ---------------------------------------------------------------------------------------------
# Properties


@PROPERTIES
@given(fleets(settled=True))
def test_no_site_is_over_capacity_counting_held_replicas(fleet: Fleet) -> None:
    result = place_fleet(fleet.apps, fleet.sites, fleet.current)
    taken = usage(fleet.apps, result)
    for site in fleet.sites:
        used = taken.get(site.name, Taken())
        assert used.replicas <= site.max_replicas, site.name
        assert used.cpu <= site.cpu + EPSILON, site.name
        assert used.memory <= site.memory, site.name


@PROPERTIES
@given(fleets())
def test_reachable_sites_stay_within_capacity_whatever_current_says(fleet: Fleet) -> None:
    result = place_fleet(fleet.apps, fleet.sites, fleet.current)
    taken = usage(fleet.apps, result)
    for site in fleet.sites:
        if site.reachable:
            used = taken.get(site.name, Taken())
            assert used.replicas <= site.max_replicas
            assert used.cpu <= site.cpu + EPSILON
            assert used.memory <= site.memory


@PROPERTIES
@given(fleets())
def test_replicas_only_at_eligible_sites_and_only_positive(fleet: Fleet) -> None:
    result = place_fleet(fleet.apps, fleet.sites, fleet.current)
    by_name = {site.name: site for site in fleet.sites}
    assert list(result.replicas) == [app.key for app in fleet.apps]
    for app in fleet.apps:
        for site, count in result.replicas[app.key].items():
            assert count > 0
            assert matches(app.policy.selector, by_name[site])
            assert eligible(app.policy.selector, by_name[site])


@PROPERTIES
@given(fleets())
def test_unreachable_eligible_sites_keep_exactly_their_replicas(fleet: Fleet) -> None:
    result = place_fleet(fleet.apps, fleet.sites, fleet.current)
    for app in fleet.apps:
        for site in fleet.sites:
            if site.reachable:
                continue
            had = fleet.current.get(app.key, {}).get(site.name, 0)
            expected = had if matches(app.policy.selector, site) else 0
            assert result.replicas[app.key].get(site.name, 0) == expected


@PROPERTIES
@given(fleets())
def test_a_shortfall_means_no_room_was_left(fleet: Fleet) -> None:
    result = place_fleet(fleet.apps, fleet.sites, fleet.current)
    for i, app in enumerate(fleet.apps):
        wanted = target(app, fleet.sites)
        placed = at_reachable(result, app, fleet.sites)
        assert placed <= wanted
        nowhere = app.policy.replicas_per_site and not candidates(app, fleet.sites)
        if placed == wanted and not nowhere:
            assert app.key not in result.shortfalls
            continue
        message = result.shortfalls[app.key]
        if nowhere:
            assert message.startswith("placed no replicas")
            assert any(
                why in message
                for why in ("no site matches", "no reachable site matches", "no site is reachable")
            ), message
            continue
        assert message.startswith(f"placed {placed} of {wanted} replicas")
        taken = usage(fleet.apps, result, up_to=i + 1)
        mine = result.replicas[app.key]
        up = candidates(app, fleet.sites)
        for site in up:
            if app.policy.weights and app.policy.weights.get(site.name, 0) == 0:
                continue  # weight 0: never a candidate
            per_site = app.policy.replicas_per_site
            if per_site is not None and mine.get(site.name, 0) >= per_site:
                continue  # got all it may have
            assert not one_more_fits(site, taken.get(site.name, Taken()), app), site.name
            if len(up) <= 5:  # longer lists end with "and N more"
                assert site.name in message


@PROPERTIES
@given(fleets(ample=True, kinds=("even", "spread")))
def test_even_and_spread_keep_domains_within_max_skew_when_room_is_ample(fleet: Fleet) -> None:
    result = place_fleet(fleet.apps, fleet.sites, fleet.current)
    for app in fleet.apps:
        spread = app.policy.spread or Spread(by=SpreadBy.SITE, max_skew=1)
        domains: dict[tuple[str, ...], list[int]] = {}
        for site in candidates(app, fleet.sites):
            count = result.replicas[app.key].get(site.name, 0)
            domains.setdefault(domain_of(site, spread.by), []).append(count)
        assert gap([sum(counts) for counts in domains.values()]) <= spread.max_skew
        for counts in domains.values():
            assert gap(counts) <= 1
        assert sum(map(sum, domains.values())) == target(app, fleet.sites) or not domains


@PROPERTIES
@given(fleets(ample=True, kinds=("weights",)))
def test_weights_give_each_site_its_share_within_one_when_room_is_ample(fleet: Fleet) -> None:
    result = place_fleet(fleet.apps, fleet.sites, fleet.current)
    for app in fleet.apps:
        up = candidates(app, fleet.sites)
        weights = {site.name: app.policy.weights.get(site.name, 0) for site in up}
        total = sum(weights.values())
        wanted = target(app, fleet.sites)
        for site in up:
            count = result.replicas[app.key].get(site.name, 0)
            if total == 0:
                assert count == 0
            else:
                assert abs(count - Fraction(wanted * weights[site.name], total)) < 1


@PROPERTIES
@given(fleets(), st.data())
def test_same_inputs_same_result_whatever_the_order_of_sites(
    fleet: Fleet, data: st.DataObject
) -> None:
    result = place_fleet(fleet.apps, fleet.sites, fleet.current)
    shuffled = data.draw(st.permutations(fleet.sites))
    assert place_fleet(fleet.apps, shuffled, fleet.current) == result
    assert place_fleet(fleet.apps, fleet.sites, fleet.current) == result


@PROPERTIES
@given(fleets())
def test_placing_again_from_the_result_changes_nothing(fleet: Fleet) -> None:
    first = place_fleet(fleet.apps, fleet.sites, fleet.current)
    again = place_fleet(fleet.apps, fleet.sites, first.replicas)
    assert again == first


@PROPERTIES
@given(fleets(ample=True, kinds=("even", "spread")))
def test_scaling_up_by_one_adds_one_replica_and_moves_none(fleet: Fleet) -> None:
    app = replace(fleet.apps[0], min_replicas=0, max_replicas=1000)
    before = place_fleet([app], fleet.sites, fleet.current).replicas[app.key]
    assert app.policy.replicas is not None
    bigger = app.policy.model_copy(update={"replicas": app.policy.replicas + 1})
    after = place_fleet([replace(app, policy=bigger)], fleet.sites, {app.key: before})
    grown = after.replicas[app.key]
    for site, count in before.items():
        assert grown.get(site, 0) >= count
    added = 1 if candidates(app, fleet.sites) else 0
    assert sum(grown.values()) == sum(before.values()) + added


@PROPERTIES
@given(fleets(ample=True, kinds=("per_site",)))
def test_replicas_per_site_runs_that_many_at_each_site_when_room_is_ample(fleet: Fleet) -> None:
    result = place_fleet(fleet.apps, fleet.sites, fleet.current)
    for app in fleet.apps:
        per_site = app.policy.replicas_per_site
        assert per_site is not None
        up = candidates(app, fleet.sites)
        counts = [result.replicas[app.key].get(site.name, 0) for site in up]
        if per_site * len(up) <= app.max_replicas:
            assert counts == [per_site] * len(up)
        else:
            # Capped at max_replicas: the first sites by name are filled first.
            assert sum(counts) == app.max_replicas
            assert counts == sorted(counts, reverse=True)


# ---------------------------------------------------------------------------------------------
# Examples: six sites in three regions


def site(name: str, region: str, zone: str, *, reachable: bool = True, **capacity: int) -> SiteView:
    """A site with room for 10 replicas of 0.5 cores and 512Mi unless told otherwise."""
    return SiteView(
        name=SiteName(name),
        region=region,
        zone=zone,
        labels={"tier": "gold"} if region == "eu-west" else {},
        reachable=reachable,
        cpu=capacity.get("cpu", 8),
        memory=capacity.get("memory", 16 * GI),
        max_replicas=capacity.get("max_replicas", 10),
    )


FLEET = [
    site("paris", "eu-west", "eu-west-1"),
    site("london", "eu-west", "eu-west-2"),
    site("new-york", "us-east", "us-east-1"),
    site("boston", "us-east", "us-east-2"),
    site("tokyo", "ap", "ap-1"),
    site("singapore", "ap", "ap-2"),
]


def app(name: str = "web", **policy: object) -> AppView:
    """An app of 0.5 cores and 512Mi per replica, bounds 0..100."""
    return AppView(
        key=AppKey(f"shop/{name}"),
        policy=PlacementPolicy.model_validate(policy),
        cpu=0.5,
        memory=512 * MI,
        min_replicas=0,
        max_replicas=100,
    )


def place(
    *apps: AppView,
    sites: Sequence[SiteView] = FLEET,
    current: Mapping[Any, Mapping[Any, int]] | None = None,
) -> PlacementResult:
    """place_fleet over the example fleet; names may be plain strings."""
    return place_fleet(apps, sites, current or {})


def with_site(name: str, **changes: Any) -> list[SiteView]:
    """The example fleet with one site changed."""
    return [replace(s, **changes) if s.name == name else s for s in FLEET]


def test_three_replicas_spread_by_region_run_one_per_region() -> None:
    web = app(replicas=3, spread={"by": "region"})
    # Within a region the tie goes to the first name.
    assert place(web).replicas[web.key] == {"london": 1, "boston": 1, "singapore": 1}


def test_without_weights_or_spread_replicas_are_even_over_the_selected_sites() -> None:
    web = app(replicas=5, selector={"regions": ["eu-west", "us-east"]})
    assert place(web).replicas[web.key] == {"boston": 2, "london": 1, "new-york": 1, "paris": 1}


def test_an_unreachable_site_keeps_its_replicas_and_the_others_compensate() -> None:
    web = app(replicas=4, selector={"regions": ["eu-west"]})
    current = {web.key: {"paris": 2, "london": 2}}
    result = place(web, sites=with_site("paris", reachable=False), current=current)
    assert result.replicas[web.key] == {"paris": 2, "london": 4}
    assert result.shortfalls == {}


def test_when_the_site_is_back_placement_is_normal_again_and_moves_little() -> None:
    web = app(replicas=4, selector={"regions": ["eu-west"]})
    result = place(web, current={web.key: {"paris": 2, "london": 4}})
    assert result.replicas[web.key] == {"paris": 2, "london": 2}


def test_an_unreachable_site_no_longer_selected_is_told_to_drop_the_app() -> None:
    web = app(replicas=2, selector={"regions": ["us-east"]})
    sites = with_site("paris", reachable=False)
    result = place(web, sites=sites, current={web.key: {"paris": 2}})
    assert result.replicas[web.key] == {"boston": 1, "new-york": 1}


def test_weights_divide_in_proportion() -> None:
    web = app(replicas=8, weights={"paris": 3, "london": 1})
    assert place(web).replicas[web.key] == {"paris": 6, "london": 2}


def test_a_full_weighted_site_overflows_to_the_other_weighted_sites() -> None:
    web = app(replicas=8, weights={"paris": 3, "london": 1, "tokyo": 0})
    result = place(web, sites=with_site("paris", max_replicas=4))
    assert result.replicas[web.key] == {"paris": 4, "london": 4}
    assert result.shortfalls == {}


def test_replicas_per_site_runs_the_count_at_every_selected_site() -> None:
    agent = app("agent", replicas_per_site=2, selector={"regions": ["ap"]})
    assert place(agent).replicas[agent.key] == {"singapore": 2, "tokyo": 2}


def test_a_larger_skew_keeps_replicas_where_they_are() -> None:
    current = {"shop/web": {"paris": 1, "london": 1, "new-york": 1, "boston": 1}}
    sticky = app(replicas=4, spread={"by": "region", "maxSkew": 2})
    assert place(sticky, current=current).replicas[sticky.key] == current["shop/web"]
    strict = app(replicas=4, spread={"by": "region", "maxSkew": 1})
    # Skew 1 moves one replica to ap; us-east gives it up (last region name among equals),
    # from new-york (last site name among equals); ap's first site by name takes it.
    assert place(strict, current=current).replicas[strict.key] == {
        "paris": 1,
        "london": 1,
        "boston": 1,
        "singapore": 1,
    }


def test_apps_take_capacity_in_order() -> None:
    first = app("first", replicas_per_site=8, selector={"sites": ["paris"]})
    second = app("second", replicas=4, selector={"sites": ["paris"]})
    result = place(first, second)
    assert result.replicas[second.key] == {"paris": 2}
    assert result.shortfalls[second.key] == (
        "placed 2 of 4 replicas: no room at eligible sites (paris: max replicas reached)"
    )
    assert list(result.shortfalls) == [second.key]


def test_the_message_names_the_limit_that_bit() -> None:
    web = app(replicas=5, selector={"regions": ["eu-west"]})
    sites = with_site("paris", cpu=1)
    sites = [replace(s, memory=GI) if s.name == "london" else s for s in sites]
    assert place(web, sites=sites).shortfalls[web.key] == (
        "placed 4 of 5 replicas: no room at eligible sites (london: memory full, paris: cpu full)"
    )


def test_a_selector_nothing_matches_is_explained() -> None:
    web = app(replicas=2, selector={"regions": ["mars"]})
    result = place(web)
    assert result.replicas[web.key] == {}
    assert result.shortfalls[web.key] == (
        "placed 0 of 2 replicas: no site matches the selector (regions=[mars])"
    )


def test_selected_sites_that_are_all_unreachable_are_named() -> None:
    web = app(replicas=2, selector={"sites": ["tokyo"]})
    result = place(web, sites=with_site("tokyo", reachable=False))
    assert result.shortfalls[web.key] == (
        "placed 0 of 2 replicas: no reachable site matches the selector (sites=[tokyo]); "
        "unreachable: tokyo"
    )


def test_replicas_per_site_where_no_site_matches_is_explained() -> None:
    agent = app("agent", replicas_per_site=1, selector={"matchLabels": {"gpu": "yes"}})
    assert place(agent).shortfalls[agent.key] == (
        "placed no replicas (1 per site): no site matches the selector (matchLabels={gpu=yes})"
    )


def test_replicas_are_clamped_to_the_scaling_bounds() -> None:
    web = replace(app(replicas=1, selector={"regions": ["ap"]}), min_replicas=4)
    assert place(web).replicas[web.key] == {"singapore": 2, "tokyo": 2}


def test_scaling_up_by_one_adds_a_replica_where_it_does_least_harm() -> None:
    web = app(replicas=6)
    before = place(web).replicas[web.key]
    after = place(app(replicas=7), current={web.key: before}).replicas[web.key]
    assert before == dict.fromkeys(
        ["boston", "london", "new-york", "paris", "singapore", "tokyo"], 1
    )
    # The first site by name takes the seventh; nothing moves.
    assert after == {**before, SiteName("boston"): 2}


def test_place_app_is_the_single_app_step_of_place_fleet() -> None:
    web = app(replicas=3, selector={"matchLabels": {"tier": "gold"}})
    placement = place_app(web, sites=FLEET, current={}, used={})
    assert placement.replicas == {"london": 2, "paris": 1}
    assert placement.shortfall is None


def test_a_site_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="each site must be given once; repeated: paris"):
        place_fleet([], [*FLEET, FLEET[0]], {})


def test_impossible_views_are_refused_where_they_are_made() -> None:
    with pytest.raises(ValueError, match="site paris: cpu"):
        replace(FLEET[0], cpu=-1.0)
    with pytest.raises(ValueError, match="min_replicas <= max_replicas"):
        replace(app(), min_replicas=5, max_replicas=2)
