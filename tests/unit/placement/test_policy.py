"""Effective policy: residency, access rules, minimum needs and the apply check's messages."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.model import App, SiteSelector, TenantSpec
from edgefleet.placement.policy import (
    NO_NEED,
    Need,
    access_rules,
    apply_refusal,
    effective_regions,
    format_cpu,
    format_memory,
    minimum_need,
    residency_shortfall,
    resident_selector,
)
from tests.factories import make_app

REGIONS = ["eu-west", "eu-north", "us-east", "ap-south"]


def app(
    *,
    regions: list[str] | None = None,
    access: dict[str, Any] | None = None,
    placement: dict[str, Any] | None = None,
    scaling: dict[str, Any] | None = None,
    cpu: str = "500m",
    memory: str = "1Gi",
) -> App:
    base = make_app("shop", tenant="acme", placement=placement or {"replicas": 2}, scaling=scaling)
    body = base.model_dump(mode="json", by_alias=True)
    body["spec"]["resources"] = {"cpu": cpu, "memory": memory}
    if regions is not None or access is not None:
        body["spec"]["policy"] = {"regions": regions or [], "access": access or {}}
    return App.model_validate(body)


def tenant(**spec: Any) -> TenantSpec:
    return TenantSpec.model_validate(spec)


def test_effective_regions_intersect_the_levels_that_name_any() -> None:
    assert effective_regions(None, app().spec) is None
    assert effective_regions(tenant(), app().spec) is None
    assert effective_regions(tenant(regions=["eu-west"]), app().spec) == {"eu-west"}
    assert effective_regions(None, app(regions=["us-east"]).spec) == {"us-east"}
    both = effective_regions(tenant(regions=["eu-west", "eu-north"]), app(regions=["eu-west"]).spec)
    assert both == {"eu-west"}
    assert effective_regions(tenant(regions=["eu-west"]), app(regions=["us-east"]).spec) == set()


@given(
    tenant_regions=st.lists(st.sampled_from(REGIONS), unique=True),
    app_regions=st.lists(st.sampled_from(REGIONS), unique=True),
    selector_regions=st.lists(st.sampled_from(REGIONS), unique=True),
)
def test_a_resident_selector_never_allows_a_region_outside_the_residency(
    tenant_regions: list[str], app_regions: list[str], selector_regions: list[str]
) -> None:
    spec = app(regions=app_regions).spec
    allowed = effective_regions(tenant(regions=tenant_regions), spec)
    narrowed = resident_selector(SiteSelector(regions=selector_regions), allowed)
    if allowed is None:
        assert narrowed == SiteSelector(regions=selector_regions)
        return
    if narrowed is None:
        assert not allowed or (selector_regions and not set(selector_regions) & allowed)
        return
    # A selector with no regions matches every region: a narrowed one always names some.
    assert narrowed.regions and set(narrowed.regions) <= allowed
    if selector_regions:
        assert set(narrowed.regions) <= set(selector_regions)


def test_residency_shortfall_says_which_levels_disagree() -> None:
    spec = app(regions=["us-east"]).spec
    message = residency_shortfall(tenant="acme", tenant_spec=tenant(regions=["eu-west"]), spec=spec)
    assert message == (
        "placed nowhere: tenant acme's regions (eu-west) and spec.policy.regions (us-east) "
        "have no region in common"
    )
    selected = app(placement={"replicas": 1, "selector": {"regions": ["us-east"]}}).spec
    message = residency_shortfall(
        tenant="acme", tenant_spec=tenant(regions=["eu-west"]), spec=selected
    )
    assert message is not None and "spec.placement.selector.regions (us-east)" in message
    assert residency_shortfall(tenant="acme", tenant_spec=None, spec=app().spec) is None


def test_access_rules_leave_open_ones_out_and_say_whose() -> None:
    assert access_rules(tenant="acme", tenant_spec=None, app="shop", spec=app().spec) == []
    rules = access_rules(
        tenant="acme",
        tenant_spec=tenant(access={"networks": ["10.0.0.0/8"]}),
        app="shop",
        spec=app(access={"regions": ["eu-west"]}).spec,
    )
    assert [(who, rule.networks, rule.regions) for who, rule in rules] == [
        ("tenant acme", ["10.0.0.0/8"], []),
        ("app shop.acme", [], ["eu-west"]),
    ]


@pytest.mark.parametrize(
    ("placement", "scaling", "sites", "replicas"),
    [
        ({"replicas": 2}, None, 5, 2),
        ({"replicas": 1}, {"minReplicas": 3, "maxReplicas": 10}, 5, 3),  # clamped up
        ({"replicas": 9}, {"maxReplicas": 4}, 5, 4),  # clamped down
        ({"replicasPerSite": 2}, None, 3, 6),
        ({"replicasPerSite": 2}, {"maxReplicas": 5}, 3, 5),
        ({"replicasPerSite": 2}, None, 0, 0),
        ({"mode": "traffic"}, {"minReplicas": 2}, 5, 2),
        ({"mode": "traffic"}, None, 5, 0),
    ],
)
def test_minimum_need(
    placement: dict[str, Any], scaling: dict[str, Any] | None, sites: int, replicas: int
) -> None:
    need = minimum_need(app(placement=placement, scaling=scaling).spec, eligible_sites=sites)
    assert need == Need(replicas=replicas, cpu=replicas * 0.5, memory=replicas * 1024**3)


def test_quota_refusals_give_the_figures() -> None:
    shop = app(placement={"replicas": 2})
    need = minimum_need(shop.spec, eligible_sites=0)
    quota = tenant(quota={"cpu": 8})
    used = [Need(replicas=15, cpu=7.5, memory=0)]
    assert apply_refusal(shop, tenant_spec=quota, need=need, others=used) == (
        "tenant acme's quota is 8 cpu; its apps need 7.5 and this one asks 1 more "
        "(2 replicas x 0.5): ask for fewer replicas or raise the tenant's quota"
    )
    assert apply_refusal(shop, tenant_spec=quota, need=need, others=[]) is None
    by_count = tenant(quota={"replicas": 20})
    refusal = apply_refusal(shop, tenant_spec=by_count, need=need, others=used * 2)
    assert refusal is not None and refusal.startswith(
        "tenant acme's quota is 20 replicas; its apps need 30 and this one asks 2 more"
    )
    by_memory = tenant(quota={"memory": "16Gi"})
    refusal = apply_refusal(
        shop, tenant_spec=by_memory, need=need, others=[Need(15, 0, 15 * 1024**3)]
    )
    assert refusal is not None and refusal.startswith(
        "tenant acme's quota is 16Gi of memory; its apps need 15Gi and this one asks 2Gi more "
        "(2 replicas x 1Gi)"
    )
    # Exactly at the quota fits, float sums included (0.1 * 3 is not above 0.3).
    tight = tenant(quota={"cpu": 0.3})
    small = app(placement={"replicas": 3}, cpu="100m")
    small_need = minimum_need(small.spec, eligible_sites=0)
    assert apply_refusal(small, tenant_spec=tight, need=small_need, others=[NO_NEED]) is None


def test_residency_refusals_name_the_field() -> None:
    outside = app(regions=["eu-west", "us-east"])
    refusal = apply_refusal(
        outside, tenant_spec=tenant(regions=["eu-west"]), need=NO_NEED, others=[]
    )
    assert refusal == (
        "spec.policy.regions: us-east is outside tenant acme's regions (eu-west): name only "
        "those, or change the Tenant"
    )
    selected = app(placement={"replicas": 1, "selector": {"regions": ["us-east"]}})
    refusal = apply_refusal(
        selected, tenant_spec=tenant(regions=["eu-west"]), need=NO_NEED, others=[]
    )
    assert refusal is not None and refusal.endswith(": no site could run the app")
    assert "spec.placement.selector.regions (us-east)" in refusal
    # An app's own policy applies without a Tenant object too.
    lonely = app(regions=["eu-west"], placement={"replicas": 1, "selector": {"regions": ["x"]}})
    assert apply_refusal(lonely, tenant_spec=None, need=NO_NEED, others=[]) is not None


def test_quantities_read_as_people_write_them() -> None:
    assert format_cpu(7.5) == "7.5"
    assert format_cpu(0.1 * 3) == "0.3"
    assert format_cpu(8.0) == "8"
    assert format_memory(16 * 1024**3) == "16Gi"
    assert format_memory(1536 * 1024**2) == "1.5Gi"
    assert format_memory(512 * 1024**2) == "512Mi"
    assert format_memory(100) == "100"
