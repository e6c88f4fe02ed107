"""Who may call which route: the pure decision, for every role and scope."""

from __future__ import annotations

import pytest

from edgefleet.identity import Principal, Role, Via
from edgefleet.identity.access import (
    ADMIN,
    EVERYONE,
    FLEET_WRITE,
    TENANT_READ,
    TENANT_WRITE,
    Rule,
    Scope,
    decide,
)


def principal(role: Role, tenants: tuple[str, ...] = (), site: str | None = None) -> Principal:
    return Principal(f"p-{role}", role, Via.TOKEN, tenants=tenants, site=site)


ADMIN_P = principal(Role.ADMIN)
OPERATOR = principal(Role.OPERATOR)
DEV = principal(Role.DEVELOPER, ("t1",))
VIEWER = principal(Role.VIEWER, ("t1",))
SITE = principal(Role.SITE, site="paris")
PARAMS_OWN = {"tenant": "t1", "name": "shop"}
PARAMS_OTHER = {"tenant": "t2", "name": "shop"}


@pytest.mark.parametrize(
    ("who", "rule", "params", "status"),
    [
        # reading an app
        (DEV, Rule(TENANT_READ, Scope.OBJECT), PARAMS_OWN, 200),
        (VIEWER, Rule(TENANT_READ, Scope.OBJECT), PARAMS_OWN, 200),
        (OPERATOR, Rule(TENANT_READ, Scope.OBJECT), PARAMS_OTHER, 200),
        (DEV, Rule(TENANT_READ, Scope.OBJECT), PARAMS_OTHER, 404),
        (SITE, Rule(TENANT_READ, Scope.OBJECT), PARAMS_OWN, 403),
        # changing an app
        (DEV, Rule(TENANT_WRITE, Scope.WRITE, verb="change"), PARAMS_OWN, 200),
        (VIEWER, Rule(TENANT_WRITE, Scope.WRITE, verb="change"), PARAMS_OWN, 403),
        (OPERATOR, Rule(TENANT_WRITE, Scope.WRITE, verb="change"), PARAMS_OWN, 403),
        (DEV, Rule(TENANT_WRITE, Scope.WRITE, verb="change"), PARAMS_OTHER, 403),
        (ADMIN_P, Rule(TENANT_WRITE, Scope.WRITE, verb="change"), PARAMS_OTHER, 200),
        # deleting: another tenant's is missing, not forbidden
        (DEV, Rule(TENANT_WRITE, Scope.OBJECT, verb="delete"), PARAMS_OTHER, 404),
        (VIEWER, Rule(TENANT_WRITE, Scope.OBJECT, verb="delete"), PARAMS_OWN, 403),
        # fleet objects
        (VIEWER, Rule(EVERYONE, kind="site"), {}, 200),
        (DEV, Rule(FLEET_WRITE, kind="site", verb="change"), {}, 403),
        (OPERATOR, Rule(FLEET_WRITE, kind="site", verb="change"), {}, 200),
        (OPERATOR, Rule(ADMIN, kind="token"), {}, 403),
        # sites act for themselves only
        (SITE, Rule(frozenset({Role.ADMIN, Role.SITE}), Scope.SITE), {"site": "paris"}, 200),
        (SITE, Rule(frozenset({Role.ADMIN, Role.SITE}), Scope.SITE), {"site": "lyon"}, 403),
        (ADMIN_P, Rule(frozenset({Role.ADMIN, Role.SITE}), Scope.SITE), {"site": "lyon"}, 200),
        (OPERATOR, Rule(frozenset({Role.ADMIN, Role.SITE}), Scope.SITE), {"site": "lyon"}, 403),
        # whoami
        (SITE, Rule(frozenset(Role), Scope.ANY), {}, 200),
    ],
)
def test_decide(who: Principal, rule: Rule, params: dict[str, str], status: int) -> None:
    decision = decide(rule, who, params)
    assert decision.status == status and not decision.empty_list
    if status != 200:
        assert decision.detail


def test_another_tenants_object_reads_as_missing_and_its_list_as_empty() -> None:
    missing = decide(Rule(TENANT_READ, Scope.OBJECT), DEV, PARAMS_OTHER)
    assert missing.detail == "app 'shop' not found in tenant 't2'"
    tenant = decide(
        Rule(TENANT_READ, Scope.OBJECT, tenant_param="name", kind="tenant"), DEV, {"name": "t2"}
    )
    assert tenant.detail == "tenant 't2' not found"
    listed = decide(Rule(TENANT_READ, Scope.LIST), VIEWER, {"tenant": "t2"})
    assert listed.empty_list and not listed.allowed


def test_refusals_say_who_and_what() -> None:
    refused = decide(Rule(TENANT_WRITE, Scope.WRITE, verb="change"), VIEWER, PARAMS_OWN)
    assert refused.detail == "role viewer may not change apps in tenant 't1' (caller 'p-viewer')"
    other = decide(Rule(TENANT_WRITE, Scope.WRITE, verb="change"), DEV, PARAMS_OTHER)
    assert "not bound to tenant 't2'" in other.detail
    site = decide(Rule(frozenset({Role.SITE}), Scope.SITE), SITE, {"site": "lyon"})
    assert "site 'paris' may not act for site 'lyon'" in site.detail
