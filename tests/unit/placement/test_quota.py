"""Tenant quotas over a placement: examples as documentation, then properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.placement import AppKey, SiteName
from edgefleet.placement.explicit import CPU_EPSILON
from edgefleet.placement.quota import Placed, Quota, QuotaApp, cap_to_quotas

K = AppKey
S = SiteName


def qapp(key: str, *, cpu: float = 0.5, memory: int = 0) -> QuotaApp:
    return QuotaApp(key=K(key), tenant=key.partition("/")[0], cpu=cpu, memory=memory)


def fixed(**counts: int) -> dict[SiteName, Placed]:
    return {S(site): Placed(n, n) for site, n in counts.items()}


def test_within_the_quota_nothing_changes() -> None:
    placed = {K("acme/a"): fixed(paris=2, lyon=1)}
    result = cap_to_quotas([qapp("acme/a")], placed, {"acme": Quota(replicas=3)})
    assert result.placed == placed and result.messages == {}


def test_the_oldest_app_keeps_its_replicas_and_the_next_is_cut_from_its_fullest_site() -> None:
    placed = {K("acme/old"): fixed(paris=3), K("acme/new"): fixed(paris=1, lyon=2, nice=2)}
    result = cap_to_quotas(
        [qapp("acme/old"), qapp("acme/new")], placed, {"acme": Quota(replicas=5)}
    )
    assert result.placed[K("acme/old")] == fixed(paris=3)
    # Two of five kept: cut from the sites with most first, the last name first on ties.
    assert result.placed[K("acme/new")] == fixed(lyon=1, nice=1)
    assert result.messages == {
        K("acme/new"): "tenant acme is at its replica quota (5): 2 of 5 replicas placed"
    }


def test_the_binding_limit_is_named() -> None:
    placed = {K("acme/a"): fixed(paris=4)}
    by_cpu = cap_to_quotas([qapp("acme/a", cpu=0.5)], placed, {"acme": Quota(cpu=1.0)})
    assert by_cpu.placed[K("acme/a")] == fixed(paris=2)
    assert by_cpu.messages[K("acme/a")].startswith("tenant acme is at its cpu quota (1)")
    by_memory = cap_to_quotas(
        [qapp("acme/a", memory=1024**3)], placed, {"acme": Quota(memory=3 * 1024**3)}
    )
    assert by_memory.placed[K("acme/a")] == fixed(paris=3)
    assert "memory quota (3Gi)" in by_memory.messages[K("acme/a")]


def test_headroom_is_what_is_left_spread_evenly_and_sleeping_sites_lose_it_first() -> None:
    placed = {
        K("acme/t"): {
            S("paris"): Placed(1, 4),
            S("lyon"): Placed(1, 4),
            S("nice"): Placed(0, 2),  # placed at zero, to wake
        }
    }
    result = cap_to_quotas([qapp("acme/t")], placed, {"acme": Quota(replicas=5)})
    # Two running, three more to share: one each.
    assert result.placed[K("acme/t")] == {
        S("lyon"): Placed(1, 2),
        S("nice"): Placed(0, 1),
        S("paris"): Placed(1, 2),
    }
    # Four: one each, then the first name.
    four = cap_to_quotas([qapp("acme/t")], placed, {"acme": Quota(replicas=6)})
    assert four.placed[K("acme/t")][S("lyon")] == Placed(1, 3)
    tight = cap_to_quotas([qapp("acme/t")], placed, {"acme": Quota(replicas=2)})
    assert tight.placed[K("acme/t")] == {S("lyon"): Placed(1, 1), S("paris"): Placed(1, 1)}
    assert tight.messages[K("acme/t")] == (
        "tenant acme is at its replica quota (2): its sites may scale it to 2 replicas, not 10"
    )


def test_other_tenants_and_unlimited_quotas_pass_unchanged() -> None:
    placed = {K("acme/a"): fixed(paris=9), K("beta/b"): fixed(paris=9)}
    result = cap_to_quotas(
        [qapp("acme/a"), qapp("beta/b")], placed, {"acme": Quota(), "gamma": Quota(replicas=0)}
    )
    assert result.placed == placed and result.messages == {}


def test_a_zero_quota_places_nothing() -> None:
    result = cap_to_quotas([qapp("acme/a")], {K("acme/a"): fixed(paris=2)}, {"acme": Quota(0)})
    assert result.placed[K("acme/a")] == {}


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValueError, match="replicas <= ceiling"):
        Placed(3, 2)
    with pytest.raises(ValueError, match="cpu quota"):
        Quota(cpu=math.nan)


# -- properties ------------------------------------------------------------------------------

SITES = [S(f"s{i}") for i in range(5)]
TENANTS = ["acme", "beta"]


@st.composite
def placements(
    draw: st.DrawFn,
) -> tuple[list[QuotaApp], dict[AppKey, dict[SiteName, Placed]], dict[str, Quota]]:
    apps = []
    placed: dict[AppKey, dict[SiteName, Placed]] = {}
    for i in range(draw(st.integers(0, 6))):
        tenant = draw(st.sampled_from(TENANTS))
        app = QuotaApp(
            key=K(f"{tenant}/a{i}"),
            tenant=tenant,
            cpu=draw(st.sampled_from([0.0, 0.1, 0.25, 1.0])),
            memory=draw(st.sampled_from([0, 64 * 1024**2, 1024**3])),
        )
        apps.append(app)
        shares = {}
        for site in draw(st.lists(st.sampled_from(SITES), unique=True, max_size=5)):
            replicas = draw(st.integers(0, 6))
            shares[site] = Placed(replicas, replicas + draw(st.integers(0, 4)))
        placed[app.key] = shares
    quotas = {
        tenant: Quota(
            replicas=draw(st.none() | st.integers(0, 30)),
            cpu=draw(st.none() | st.sampled_from([0.0, 0.3, 1.0, 2.5, 8.0])),
            memory=draw(st.none() | st.integers(0, 8).map(lambda g: g * 1024**3)),
        )
        for tenant in draw(st.lists(st.sampled_from(TENANTS), unique=True))
    }
    return apps, placed, quotas


@settings(max_examples=300, deadline=None)
@given(placements())
def test_a_tenant_never_exceeds_its_quota_and_nothing_grows(
    case: tuple[list[QuotaApp], dict[AppKey, dict[SiteName, Placed]], dict[str, Quota]],
) -> None:
    apps, placed, quotas = case
    result = cap_to_quotas(apps, placed, quotas)
    for tenant, quota in quotas.items():
        mine = [a for a in apps if a.tenant == tenant]
        ceilings = {a.key: sum(p.ceiling for p in result.placed[a.key].values()) for a in mine}
        if quota.replicas is not None:
            assert sum(ceilings.values()) <= quota.replicas
        if quota.cpu is not None:
            assert sum(ceilings[a.key] * a.cpu for a in mine) <= quota.cpu + CPU_EPSILON
        if quota.memory is not None:
            assert sum(ceilings[a.key] * a.memory for a in mine) <= quota.memory
    for app in apps:
        before, after = placed[app.key], result.placed[app.key]
        assert set(after) <= set(before)
        for site, share in after.items():
            assert share.replicas <= before[site].replicas
            assert share.ceiling <= before[site].ceiling
        if app.key not in result.messages:
            assert {s: p for s, p in after.items() if p.ceiling} == {
                s: p for s, p in before.items() if p.ceiling
            }


@settings(max_examples=200, deadline=None)
@given(placements())
def test_capping_again_changes_nothing(
    case: tuple[list[QuotaApp], dict[AppKey, dict[SiteName, Placed]], dict[str, Quota]],
) -> None:
    apps, placed, quotas = case
    once = cap_to_quotas(apps, placed, quotas)
    twice = cap_to_quotas(apps, {k: dict(v) for k, v in once.placed.items()}, quotas)
    assert twice.placed == once.placed and twice.messages == {}
