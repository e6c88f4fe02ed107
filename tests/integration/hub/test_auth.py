"""Every route of a real hub process authenticates its caller, and each role reaches exactly
what it should: the matrix below is generated from the hub's own OpenAPI document."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.client import Client
from edgefleet.hub.accounts import Accounts
from edgefleet.hub.store import Store
from edgefleet.identity import Role
from edgefleet.identity.tokens import TokenKind
from edgefleet.localfleet import LocalFleet, free_port
from edgefleet.waiting import wait_for
from tests.factories import make_app, make_site

pytestmark = pytest.mark.slow

PUBLIC = {("GET", "/healthz"), ("GET", "/api/v1/version")}
JOIN = ("POST", "/api/v1/agent/join")


def operations(base: str) -> list[tuple[str, str]]:
    """Every (method, path template) the hub's OpenAPI document lists."""
    schema = httpx.get(f"{base}/openapi.json", timeout=10).json()
    return sorted(
        (method.upper(), path) for path, item in schema["paths"].items() for method in item
    )


@pytest.fixture
def patient_fleet(tmp_path: Path) -> Iterator[LocalFleet]:
    """A hub that lets one address fail authentication very often (tests send many)."""
    fleet = own_fleet(tmp_path, ["--auth-failure-burst", "100000"])
    with fleet.running():
        fleet.start_hub()
        yield fleet


def test_every_route_but_health_and_version_needs_a_token(patient_fleet: LocalFleet) -> None:
    base = patient_fleet.hub_url
    ops = operations(base)
    assert len(ops) > 30
    for method, template in ops:
        url = base + re.sub(r"\{[^}]+\}", "x", template)
        if (method, template) in PUBLIC:
            assert httpx.request(method, url, timeout=10).status_code == 200, template
            continue
        for headers in (
            {},
            {"Authorization": "Bearer efu_0123456789abcdef_" + "A" * 43},
            {"Authorization": "Bearer not-a-token"},
            {"Authorization": "Basic YWRtaW46YWRtaW4="},
        ):
            reply = httpx.request(method, url, headers=headers, json={}, timeout=10)
            assert reply.status_code == 401, (method, template, headers, reply.text)
            assert reply.headers["www-authenticate"] == "Bearer"
            assert reply.json()["detail"]
    # The document itself and the docs stay open (they describe, they do not serve data).
    assert httpx.get(f"{base}/docs", timeout=10).status_code == 200


# -- the role x route x tenant matrix ---------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """One principal of the matrix."""

    label: str
    role: str
    headers: dict[str, str]
    tenants: tuple[str, ...] = ()
    site: str | None = None


HUMANS = {"admin", "operator", "developer", "viewer"}


def expected(caller: Caller, method: str, template: str, tenant: str | None) -> str:
    """What a caller should get: 'ok', 'refused' (401/403), 'missing' (404 as if absent) or
    'empty' (an empty list). Written from the roles' definitions, not from the hub's code."""
    role = caller.role
    own = tenant is None or tenant in caller.tenants or role in ("admin", "operator")
    if template == "/api/v1/whoami":
        return "ok"
    if template.startswith("/api/v1/agent/sites/{site}"):
        if role == "admin":
            return "ok"
        return "ok" if role == "site" and tenant == caller.site else "refused"
    if role == "site":
        return "ok" if template == "/api/v1/routing-table" else "refused"
    if template == "/api/v1/routing-table":
        return "ok" if role in ("admin", "operator") else "refused"
    if template == "/api/v1/apply":
        # Each object is judged as its own PUT would be: the matrix applies an app of t1.
        return (
            "ok"
            if role == "admin" or (role == "developer" and "t1" in caller.tenants)
            else "refused"
        )
    if template.startswith("/api/v1/tokens"):
        return "ok" if role == "admin" else "refused"
    if template in ("/api/v1/audit", "/api/v1/join-tokens"):
        return "ok" if role in ("admin", "operator") else "refused"
    if template.startswith("/api/v1/sites"):
        if method == "GET" and template in (
            "/api/v1/sites",
            "/api/v1/sites/{name}",
            "/api/v1/sites/{name}/neighbours",
        ):
            return "ok"
        return "ok" if role in ("admin", "operator") else "refused"
    if template.startswith("/api/v1/tenants/{tenant}/apps") or (
        template.startswith("/api/v1/tenants/{name}") and template != "/api/v1/tenants/{name}"
    ):
        reading = method == "GET"
        if not own:
            if method in ("POST", "PUT"):
                return "refused"
            return "empty" if template == "/api/v1/tenants/{tenant}/apps" and reading else "missing"
        if reading:
            return "ok"
        return "ok" if role in ("admin", "developer") else "refused"
    if template == "/api/v1/tenants/{name}":
        if method == "GET":
            return "ok" if own else "missing"
        return "ok" if role == "admin" else "refused"
    if template == "/api/v1/tenants":
        return "ok" if method == "GET" else ("ok" if role == "admin" else "refused")
    if template in (
        "/api/v1/apps",
        "/api/v1/events",
        "/api/v1/dns/explain",
        "/api/v1/demand",
        "/api/v1/stream",
    ):
        return "ok"
    raise AssertionError(f"the matrix has no expectation for {method} {template}: add one")


@pytest.fixture
def matrix_fleet(tmp_path: Path) -> Iterator[tuple[LocalFleet, list[Caller]]]:
    fleet = LocalFleet(workdir=tmp_path / "fleet", hub_port=free_port(), dns_port=free_port())
    with fleet.running():
        fleet.start_hub()
        with fleet.client() as admin:
            for site in ("s1", "s2"):
                admin.apply(make_site(site))
            for tenant in ("t1", "t2"):
                put_tenant(fleet, tenant)
                admin.apply(make_app("a", tenant=tenant))
            callers = [Caller("admin", "admin", fleet.headers)]
            for role in ("operator", "developer", "viewer"):
                tenants = ["t1"] if role in ("developer", "viewer") else []
                made = admin.create_token(f"matrix-{role}", role, tenants=tenants, ttl=3600)
                callers.append(
                    Caller(role, role, {"Authorization": f"Bearer {made.token}"}, tuple(tenants))
                )
        credential = fleet.site_credential("s1")
        callers.append(
            Caller("site s1", "site", {"Authorization": f"Bearer {credential}"}, site="s1")
        )
        yield fleet, callers


def put_tenant(fleet: LocalFleet, tenant: str) -> None:
    """Create (or keep) the Tenant object ``tenant``, with no policy."""
    reply = httpx.put(
        f"{fleet.hub_url}/api/v1/tenants/{tenant}",
        json={"metadata": {"name": tenant}, "spec": {}},
        headers=fleet.headers,
        timeout=10,
    )
    assert reply.status_code in (200, 201), reply.text


def body_for(method: str, template: str, tenant: str | None, name: str) -> Any:
    """A valid body for a write to ``template`` (fresh names, so creates do not collide)."""
    if method not in ("POST", "PUT"):
        return None
    if template == "/api/v1/apply":
        app = make_app(name, tenant="t1").model_dump(mode="json", by_alias=True, exclude_none=True)
        return {"apiVersion": "edgefleet.io/v1alpha1", "kind": "List", "items": [app]}
    if "/apps" in template:
        app = make_app(name, tenant=tenant or "t1")
        return app.model_dump(mode="json", by_alias=True, exclude_none=True)
    if template == "/api/v1/join-tokens":
        return {"sites": ["s1"], "ttl": 600}
    if template.startswith("/api/v1/sites"):
        if template.endswith("join-tokens"):
            return {"ttl": 600}
        return make_site(name).model_dump(mode="json", by_alias=True, exclude_none=True)
    if template.startswith("/api/v1/tenants"):
        return {"metadata": {"name": tenant or name}, "spec": {}}
    if template == "/api/v1/tokens":
        return {"name": name, "role": "viewer", "tenants": ["t1"], "ttl": 600}
    if template.endswith("/status"):
        return {"site": tenant, "agentVersion": "test", "observedRevision": 0, "apps": []}
    if template.endswith("/heartbeat"):
        return {"site": tenant, "observedRevision": 0}
    if template.endswith("/demand"):
        return {
            "site": tenant,
            "seq": 1,
            "windowStart": "2026-01-01T00:00:00Z",
            "windowSeconds": 10,
            "rows": [],
        }
    return {}


def test_role_route_tenant_matrix(matrix_fleet: tuple[LocalFleet, list[Caller]]) -> None:
    fleet, callers = matrix_fleet
    with fleet.client() as admin:
        checked = walk_matrix(fleet, callers, admin)
    # Each kind of answer was exercised: 5 callers x every route x both tenants.
    assert checked["ok"] >= 100 and checked["refused"] >= 100, checked
    assert checked["missing"] >= 8 and checked["empty"] == 2, checked


def walk_matrix(fleet: LocalFleet, callers: list[Caller], admin: Client) -> dict[str, int]:
    """Call every guarded route as every caller, in every tenant; check each answer."""
    base = fleet.hub_url
    counter = itertools.count()
    checked = {"ok": 0, "refused": 0, "missing": 0, "empty": 0}
    for method, template in operations(base):
        if (method, template) in PUBLIC or (method, template) == JOIN:
            continue
        scoped = "{tenant}" in template or template.startswith("/api/v1/tenants/{name}")
        sited = "{site}" in template
        contexts: list[str | None] = ["t1", "t2"] if scoped else (["s1", "s2"] if sited else [None])
        for caller, context in itertools.product(callers, contexts):
            name = f"m{next(counter)}"
            values = {"tenant": context, "site": context, "name": "a"}
            if template.startswith("/api/v1/tenants/{name}") and "{tenant}" not in template:
                values["name"] = context
            elif template.startswith("/api/v1/sites/{name}"):
                values["name"] = "s1" if method != "PUT" else name
            elif method == "PUT":
                values["name"] = name
            if template == "/api/v1/tokens/{id}":
                values["id"] = admin.create_token(name, "viewer", tenants=["t1"], ttl=600).id
            if method == "DELETE" and template == "/api/v1/sites/{name}":
                admin.apply(make_site(name))
                values["name"] = name
            if method == "DELETE" and template == "/api/v1/tenants/{name}":
                put_tenant(fleet, str(context))
            if method == "DELETE" and "/apps/{name}" in template:
                admin.apply(make_app(name, tenant=context or "t1"))
                values["name"] = name
            path = template.format(**values)
            params = {}
            if template == "/api/v1/dns/explain":
                params["name"] = "a.t1.edge.internal"
            body = body_for(method, template, context, name)
            if template.startswith("/api/v1/sites/{name}") and body is not None and method == "PUT":
                body["metadata"]["name"] = name
            if template == "/api/v1/stream":
                reply = first_event(base + path, caller.headers)
            else:
                reply = httpx.request(
                    method,
                    base + path,
                    json=body,
                    params=params,
                    headers=caller.headers,
                    timeout=30,
                )
            want = expected(caller, method, template, context)
            where = f"{caller.label} {method} {path}: {reply.status_code} {reply.text[:200]}"
            if want == "ok":
                assert reply.status_code < 400 or (reply.status_code == 404 and "/logs" in path), (
                    where
                )
            elif want == "refused":
                assert reply.status_code in (401, 403), where
            elif want == "missing":
                assert reply.status_code == 404, where
                assert reply.json()["detail"] == missing_detail(template, values), where
            else:
                assert reply.status_code == 200 and reply.json()["items"] == [], where
            checked[want] += 1
    return checked


def first_event(url: str, headers: dict[str, str]) -> httpx.Response:
    """GET an event stream and close it after its first event (it never ends by itself)."""
    with httpx.stream("GET", url, headers=headers, timeout=30) as stream:
        if stream.status_code >= 400:
            stream.read()
            return stream
        lines = stream.iter_lines()
        first = [line for line in itertools.takewhile(bool, lines) if not line.startswith("retry")]
    return httpx.Response(stream.status_code, text="\n".join(first))


def missing_detail(template: str, values: dict[str, Any]) -> str:
    """What the hub answers for an object that does not exist (the store's words)."""
    if template.startswith("/api/v1/tenants/{name}"):
        return f"tenant {values['name']!r} not found"
    return f"app {values['name']!r} not found in tenant {values['tenant']!r}"


def test_another_tenants_app_is_indistinguishable_from_a_missing_one(
    matrix_fleet: tuple[LocalFleet, list[Caller]],
) -> None:
    fleet, callers = matrix_fleet
    developer = next(c for c in callers if c.role == "developer")
    base = f"{fleet.hub_url}/api/v1/tenants/t2/apps"
    with fleet.client() as admin:
        admin.delete_app("t2", "a")
        gone = httpx.get(f"{base}/a", headers=fleet.headers, timeout=10)
        admin.apply(make_app("a", tenant="t2"))
    existing = httpx.get(f"{base}/a", headers=developer.headers, timeout=10)
    assert (existing.status_code, existing.json()) == (gone.status_code, gone.json())
    # Lists and fleet-wide views leave it out too.
    assert httpx.get(base, headers=developer.headers).json()["items"] == []
    every = httpx.get(f"{fleet.hub_url}/api/v1/apps", headers=developer.headers).json()
    assert [i["metadata"]["tenant"] for i in every["items"]] == ["t1"]
    tenants = httpx.get(f"{fleet.hub_url}/api/v1/tenants", headers=developer.headers).json()
    assert [t["metadata"]["name"] for t in tenants["items"]] == ["t1"]
    events = httpx.get(f"{fleet.hub_url}/api/v1/events", headers=developer.headers).json()
    assert events and {e.get("tenant") for e in events} == {"t1"}


# -- tokens ---------------------------------------------------------------------------------


def test_token_shown_once_hashed_expires_and_revoked_everywhere(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two hub replicas on one PostgreSQL: a token revoked at one is refused by the other within
    a feed poll, though the other had checked it and remembered it."""
    first = LocalFleet(
        workdir=tmp_path / "a", hub_port=free_port(), db=postgres_url, dns_port=free_port()
    )
    second = LocalFleet(
        workdir=tmp_path / "b", hub_port=free_port(), db=postgres_url, dns_port=free_port()
    )
    with first.running(), second.running():
        first.start_hub()
        second.start_hub()
        with first.client() as admin:
            made = admin.create_token("ci", "developer", tenants=["t1"], ttl=3600)
            listed = {t.id: t for t in admin.list_tokens()}
        assert made.token.startswith(f"efu_{made.id}_")
        assert made.id in listed and listed[made.id].state == "active"
        assert made.token not in listed[made.id].model_dump_json()
        store = Store(postgres_url)
        try:
            with store.engine.connect() as conn:
                dump = str(list(conn.exec_driver_sql("SELECT * FROM tokens")))
            # Only the hash is stored (the secret is base64url, which may hold "_").
            assert made.token.removeprefix(f"efu_{made.id}_") not in dump
            expired, _ = Accounts(store.engine).create_token(
                kind=TokenKind.USER,
                name="old",
                role=Role.VIEWER,
                tenants=["t1"],
                ttl=timedelta(seconds=-1),
                created_by="test",
            )
        finally:
            store.close()
        with second.client(made.token) as client:
            me = client.whoami()
            assert (me.subject, me.role, me.tenants) == ("ci", "developer", ["t1"])
        reply = httpx.get(
            f"{second.hub_url}/api/v1/whoami",
            headers={"Authorization": f"Bearer {expired.token}"},
        )
        assert reply.status_code == 401 and "expired" in reply.json()["detail"]
        with first.client() as admin:
            admin.revoke_token(made.id)
        # The first hub refuses it at once; the second remembered it as good (its whoami above)
        # and drops it when its change feed brings the revocation (a feed poll, 0.25 s).
        mine = {"Authorization": f"Bearer {made.token}"}
        reply = httpx.get(f"{first.hub_url}/api/v1/whoami", headers=mine)
        assert reply.status_code == 401 and "revoked" in reply.json()["detail"]
        refused = wait_for(
            lambda: httpx.get(f"{second.hub_url}/api/v1/whoami", headers=mine).status_code == 401,
            timeout=10,
            what="the revocation to reach the second hub",
        )
        assert refused
        reply = httpx.get(f"{second.hub_url}/api/v1/whoami", headers=mine)
        assert reply.status_code == 401 and "revoked" in reply.json()["detail"]


def own_fleet(tmp_path: Path, hub_args: list[str]) -> LocalFleet:
    """A fleet of this test's own, its hub started with ``hub_args``."""
    return LocalFleet(
        workdir=tmp_path / "fleet", hub_port=free_port(), dns_port=free_port(), hub_args=hub_args
    )


def test_failed_authentications_are_rate_limited_per_source(tmp_path: Path) -> None:
    fleet = own_fleet(tmp_path, ["--auth-failure-burst", "3"])
    with fleet.running():
        fleet.start_hub()
        url = f"{fleet.hub_url}/api/v1/sites"
        bad = {"Authorization": "Bearer efu_0123456789abcdef_" + "B" * 43}
        assert [httpx.get(url, headers=bad).status_code for _ in range(3)] == [401] * 3
        limited = httpx.get(url, headers=bad)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        # While limited, a token the hub must look up is not checked, nor is no token at all.
        assert httpx.get(url, headers=fleet.headers).status_code == 429
        assert httpx.get(url).status_code == 429
        # Health stays open.
        assert httpx.get(f"{fleet.hub_url}/healthz").status_code == 200


def test_a_limited_address_still_lets_in_who_proves_itself_without_a_lookup(
    tmp_path: Path,
) -> None:
    """Sites and operators behind one shared address (a NAT, a carrier's CGNAT): one of them
    failing over and over must not lock the others out. A site credential (checked in memory)
    and a user token this hub checked before still get in; a token the hub would have to look
    up, a bad one, or none are refused unchecked."""
    fleet = own_fleet(tmp_path, ["--auth-failure-burst", "3"])
    with fleet.running():
        fleet.start_hub()
        with fleet.client() as admin:
            admin.apply(make_site("paris"))
            operator = admin.create_token("ops-on-call", "operator", tenants=[], ttl=3600)
            unused = admin.create_token("ops-away", "operator", tenants=[], ttl=3600)
        credential = fleet.site_credential("paris")
        known = {"Authorization": f"Bearer {operator.token}"}
        url = f"{fleet.hub_url}/api/v1/sites"
        assert httpx.get(url, headers=known).status_code == 200  # checked once: known now
        bad = {"Authorization": "Bearer efu_0123456789abcdef_" + "B" * 43}
        assert [httpx.get(url, headers=bad).status_code for _ in range(3)] == [401] * 3
        assert httpx.get(url, headers=bad).status_code == 429
        # The same address, proven callers:
        assert httpx.get(url, headers=known).status_code == 200
        beat = httpx.post(
            f"{fleet.hub_url}/api/v1/agent/sites/paris/heartbeat",
            headers={"Authorization": f"Bearer {credential}"},
            json={"site": "paris", "observedRevision": 0},
        )
        assert beat.status_code == 200, beat.text
        # ... and the rest, unchecked:
        away = {"Authorization": f"Bearer {unused.token}"}
        assert httpx.get(url, headers=away).status_code == 429  # good, but never checked here
        assert httpx.get(url, headers=bad).status_code == 429
        assert httpx.get(url).status_code == 429
        forged = credential[:-4] + ("AAAA" if not credential.endswith("AAAA") else "BBBB")
        refused = httpx.post(
            f"{fleet.hub_url}/api/v1/agent/sites/paris/heartbeat",
            headers={"Authorization": f"Bearer {forged}"},
            json={"site": "paris", "observedRevision": 0},
        )
        assert refused.status_code == 429


def test_failed_authentications_are_limited_across_hub_replicas(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two hub replicas on one PostgreSQL: failures at one push the source over its limit at
    the other too, within about a second (two exchanges with the store)."""
    first, second = (
        LocalFleet(
            workdir=tmp_path / name,
            hub_port=free_port(),
            db=postgres_url,
            dns_port=free_port(),
            hub_args=["--auth-failure-burst", "3"],
        )
        for name in ("a", "b")
    )
    with first.running(), second.running():
        first.start_hub()
        second.start_hub()
        at_second = f"{second.hub_url}/api/v1/sites"
        assert httpx.get(at_second, headers=second.headers).status_code == 200
        bad = {"Authorization": "Bearer efu_0123456789abcdef_" + "B" * 43}
        at_first = f"{first.hub_url}/api/v1/sites"
        assert [httpx.get(at_first, headers=bad).status_code for _ in range(3)] == [401] * 3
        failed = time.monotonic()
        # The second hub has seen no failure itself: a call without a token (which counts no
        # failure) gets 401 there until the shared limit refuses the source, then 429.
        limited = wait_for(
            lambda: (r := httpx.get(at_second)).status_code == 429 and r,
            timeout=5.0,
            interval=0.05,
            what="the second hub to refuse the source",
        )
        shared_in = time.monotonic() - failed
        assert int(limited.headers["retry-after"]) >= 1
        assert "too many failed authentications" in limited.json()["detail"]
    assert shared_in < 2.0, f"the second hub refused the source only after {shared_in:.2f} s"


def test_secrets_never_reach_the_logs(tmp_path: Path) -> None:
    fleet = own_fleet(tmp_path, ["--log-level", "debug"])
    with fleet.running():
        fleet.start_hub()
        with fleet.client() as admin:
            admin.apply(make_site("paris"))
            made = admin.create_token("ci", "viewer", tenants=["t1"])
            join = admin.join_token("paris").token
        with fleet.client(made.token) as viewer:
            viewer.whoami()
        reply = httpx.post(
            f"{fleet.hub_url}/api/v1/agent/join",
            json={"site": "paris"},
            headers={"Authorization": f"Bearer {join}"},
        )
        credential = reply.json()["credential"]
        httpx.get(
            f"{fleet.hub_url}/api/v1/routing-table",
            headers={"Authorization": f"Bearer {credential}"},
        )
        # A reused join token and a wrong one are refused, and their refusals are logged too.
        again = httpx.post(
            f"{fleet.hub_url}/api/v1/agent/join",
            json={"site": "paris"},
            headers={"Authorization": f"Bearer {join}"},
        )
        assert again.status_code == 401 and "used already" in again.json()["detail"]
        with fleet.client() as admin:
            audit = admin.audit(limit=1000)
    logs = (fleet.workdir / "hub.log").read_text()
    assert "GET /api/v1/whoami" in logs  # debug: every request is logged
    for secret in (made.token, join, credential, fleet.admin_token or "?"):
        assert secret not in logs
        # The secret part: after a token's kind and id (base64url, which may hold "_" itself),
        # or a credential's signature.
        tail = secret.split(".")[-1] if secret.count(".") == 2 else secret.split("_", 2)[2]
        assert len(tail) >= 40 and tail not in logs
        assert all(secret not in e.result and secret not in e.path for e in audit)


def test_join_tokens_are_one_time_expiring_and_site_bound(sqlite_fleet: LocalFleet) -> None:
    base = sqlite_fleet.hub_url
    with sqlite_fleet.client() as admin:
        admin.apply(make_site("paris"))
        admin.apply(make_site("lyon"))
        join = admin.join_token("paris").token
        with pytest.raises(Exception, match="ttl"):
            admin.join_token("paris", ttl=1)

    def trade(token: str, site: str) -> httpx.Response:
        return httpx.post(
            f"{base}/api/v1/agent/join",
            json={"site": site},
            headers={"Authorization": f"Bearer {token}"},
        )

    # An expired join token is refused.
    store = Store(sqlite_fleet.db_url)
    try:
        stale, _ = Accounts(store.engine).create_token(
            kind=TokenKind.JOIN,
            name="join:paris",
            role=Role.SITE,
            site="paris",
            ttl=timedelta(seconds=-1),
            created_by="test",
        )
    finally:
        store.close()
    expired = trade(stale.token, "paris")
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    # A join token is good for nothing else, and only for its own site.
    assert (
        httpx.get(f"{base}/api/v1/sites", headers={"Authorization": f"Bearer {join}"}).status_code
        == 401
    )
    wrong = trade(join, "lyon")
    assert wrong.status_code == 403 and "for site 'paris'" in wrong.json()["detail"]
    first = trade(join, "paris")
    assert first.status_code == 200, first.text
    assert trade(join, "paris").status_code == 401  # spent
    credential = first.json()["credential"]
    auth = {"Authorization": f"Bearer {credential}"}
    own = httpx.get(f"{base}/api/v1/agent/sites/paris/watch", headers=auth)
    assert own.status_code == 200
    other = httpx.get(f"{base}/api/v1/agent/sites/lyon/watch", headers=auth)
    assert other.status_code == 403 and "paris" in other.json()["detail"]
    table = httpx.get(f"{base}/api/v1/routing-table", headers=auth).json()
    assert table["signingKeys"] and table["revokedCredentials"] == []
    # It writes its own status only.
    beat = {"site": "lyon", "observedRevision": 0}
    other_beat = httpx.post(f"{base}/api/v1/agent/sites/lyon/heartbeat", json=beat, headers=auth)
    assert other_beat.status_code == 403
    beat["site"] = "paris"
    own_beat = httpx.post(f"{base}/api/v1/agent/sites/paris/heartbeat", json=beat, headers=auth)
    assert own_beat.status_code == 200 and own_beat.json()["heartbeatInterval"] >= 0
    assert httpx.get(f"{base}/api/v1/apps", headers=auth).status_code == 403
    # Joining again (a reinstalled site) revokes the first credential.
    with sqlite_fleet.client() as admin:
        second = trade(admin.join_token("paris").token, "paris")
    assert second.status_code == 200
    refused = httpx.get(f"{base}/api/v1/agent/sites/paris/watch", headers=auth)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    with sqlite_fleet.client() as admin:
        sites = admin.list_tokens(kind="site", site="paris")
        assert [t.state for t in sites] == ["revoked", "active"]
        # The routing table tells every site once the hub's feed brings the revocation.
        wait_for(
            lambda: sites[0].id in admin.routing_table().revoked_credentials,
            timeout=10,
            what="the revocation in the routing table",
        )


def test_a_join_whose_answer_was_lost_is_answered_again_and_nobody_else_is(
    sqlite_fleet: LocalFleet,
) -> None:
    base = sqlite_fleet.hub_url
    with sqlite_fleet.client() as admin:
        admin.apply(make_site("nice"))
        join = admin.join_token("nice").token

    def trade(attempt: str | None) -> httpx.Response:
        body = {"site": "nice"} if attempt is None else {"site": "nice", "attempt": attempt}
        return httpx.post(
            f"{base}/api/v1/agent/join", json=body, headers={"Authorization": f"Bearer {join}"}
        )

    mine = "a" * 24
    first = trade(mine)
    assert first.status_code == 200, first.text  # ... and say its answer never arrived
    # Another join with the same token, with another id or none, finds it spent.
    for other in ("b" * 24, None):
        refused = trade(other)
        assert refused.status_code == 401 and "used already" in refused.json()["detail"]
    # The retry of the same join gets the credential the lost answer held, again; nothing is
    # revoked, so a late first answer and the retry's agree.
    again = trade(mine)
    assert again.status_code == 200, again.text
    assert again.json()["credential"] == first.json()["credential"]
    assert again.json()["expiresAt"] == first.json()["expiresAt"]
    auth = {"Authorization": f"Bearer {first.json()['credential']}"}
    assert httpx.get(f"{base}/api/v1/agent/sites/nice/watch", headers=auth).status_code == 200
    with sqlite_fleet.client() as admin:
        assert [t.state for t in admin.list_tokens(kind="site", site="nice")] == ["active"]
        # Once the site joins anew (a reinstall, another token), the old join gets nothing.
        renewed = httpx.post(
            f"{base}/api/v1/agent/join",
            json={"site": "nice"},
            headers={"Authorization": f"Bearer {admin.join_token('nice').token}"},
        )
    assert renewed.status_code == 200
    stale = trade(mine)
    assert stale.status_code == 401 and "used already" in stale.json()["detail"]
    # A join id too short to be unguessable is refused before the token is looked at.
    assert trade("short").status_code == 422


def test_audit_records_who_what_when_and_the_result(sqlite_fleet: LocalFleet) -> None:
    with sqlite_fleet.client() as admin:
        admin.apply(make_site("paris"))
        dev = admin.create_token("dana", "developer", tenants=["t1"])
    with sqlite_fleet.client(dev.token) as client:
        client.apply(make_app("shop", tenant="t1"))
        client.apply(make_app("shop", tenant="t1"))
        client.delete_app("t1", "shop")
        with pytest.raises(Exception, match="not bound"):
            client.apply(make_app("shop", tenant="t2"))
    with sqlite_fleet.client() as admin:
        mine = admin.audit(subject="dana")
        refused = admin.audit(failed=True)
        in_t1 = admin.audit(tenant="t1", action="delete")
    assert [(e.action, e.tenant, e.status, e.result) for e in mine] == [
        ("apply app", "t1", 201, "created"),
        ("apply app", "t1", 200, "unchanged"),
        ("delete app", "t1", 204, "deleted"),
        ("apply app", "t2", 403, mine[-1].result),
    ]
    assert "not bound to tenant 't2'" in mine[-1].result
    assert all(e.role == "developer" and e.source == "127.0.0.1" for e in mine)
    assert [e.path for e in in_t1] == ["/api/v1/tenants/t1/apps/shop"]
    assert any(e.subject == "dana" for e in refused)
    assert all(e.status >= 400 for e in refused)
    # Telemetry of agents is not a change and is not recorded.
    assert not any("/heartbeat" in e.path for e in admin_audit(sqlite_fleet))


def admin_audit(fleet: LocalFleet) -> list[Any]:
    with fleet.client() as admin:
        return admin.audit(limit=10_000)
