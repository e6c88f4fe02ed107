"""Continue tokens: opaque round trips, and clear refusals of tokens that are not a list's own."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.hub import paging

names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
"""Names of sites, apps and tenants: DNS labels."""


@given(name=names)
def test_a_sites_token_gives_back_its_key(name: str) -> None:
    token = paging.encode(paging.SITES, [name])
    assert paging.decode(token, paging.SITES) == (name,)
    # Opaque to clients, but safe in a URL as it is.
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@given(tenant=names, name=names)
def test_an_apps_token_gives_back_tenant_and_name(tenant: str, name: str) -> None:
    token = paging.encode(paging.ALL_APPS, [tenant, name])
    assert paging.decode(token, paging.ALL_APPS) == (tenant, name)
    own = paging.encode(paging.tenant_apps(tenant), [name])
    assert paging.decode(own, paging.tenant_apps(tenant)) == (name,)


def _raw(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "not a token",
        "e30",  # {}
        _raw(["sites", ["a"]]),
        _raw({"list": "sites"}),
        _raw({"list": "sites", "after": "a"}),
        _raw({"list": "sites", "after": ["a", "b"]}),
        _raw({"list": "sites", "after": [1]}),
        _raw({"list": "sites", "after": ["a"], "more": 1}),
        _raw({"list": "<script>", "after": ["a"]}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        _raw({"list": "sites", "after": ["a" * 2000]}),
    ],
)
def test_a_malformed_token_is_refused_saying_what_to_do(token: str) -> None:
    with pytest.raises(paging.BadContinue) as refused:
        paging.decode(token, paging.SITES)
    message = str(refused.value)
    assert message.startswith("query parameter 'continue' of the list of sites: ")
    assert "not a continue token of this hub" in message
    assert "leave it out to start again" in message


@pytest.mark.parametrize(
    ("made_for", "key", "used_for", "named"),
    [
        (paging.SITES, ["paris"], paging.TENANTS, "the token belongs to the list of sites"),
        (paging.ALL_APPS, ["t1", "a"], paging.SITES, "belongs to the list of apps of every tenant"),
        ("apps/t1", ["a"], "apps/t2", "belongs to the list of apps of tenant 't1'"),
        ("apps/t1", ["a"], paging.ALL_APPS, "belongs to the list of apps of tenant 't1'"),
    ],
)
def test_a_token_of_another_list_is_refused(
    made_for: str, key: list[str], used_for: str, named: str
) -> None:
    with pytest.raises(paging.BadContinue) as refused:
        paging.decode(paging.encode(made_for, key), used_for)
    assert named in str(refused.value)
    assert f"of the list of {paging.described(used_for)}" in str(refused.value)
