"""Failed authentications per source: a token bucket, and what the audit log calls changes."""

from __future__ import annotations

from pathlib import Path

from edgefleet.hub.api import create_app
from edgefleet.hub.audit import action_of, tenant_of
from edgefleet.hub.auth import JOIN, PUBLIC, RULES, FailureLimiter
from edgefleet.hub.runtime import HubConfig


def test_a_source_gets_its_burst_then_waits() -> None:
    limiter = FailureLimiter(burst=3, rate=0.5)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1", now=0.0) == 0
        limiter.failed("10.0.0.1", now=0.0)
    assert limiter.retry_after("10.0.0.1", now=0.0) == 2.0
    assert limiter.retry_after("10.0.0.2", now=0.0) == 0  # other sources are not affected
    assert limiter.retry_after("10.0.0.1", now=2.0) == 0  # one more after 1 / rate seconds
    limiter.failed("10.0.0.1", now=2.0)
    assert limiter.retry_after("10.0.0.1", now=2.0) > 0


def test_the_limiter_remembers_a_bounded_number_of_sources() -> None:
    limiter = FailureLimiter(burst=1, rate=0.001, max_sources=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 250}.{i % 250}", now=0.0)
    assert len(limiter._buckets) == 100
    assert limiter.retry_after("10.0.3.249", now=0.0) > 0  # the newest are kept


def test_audit_names_the_change() -> None:
    assert action_of("PUT", "/api/v1/tenants/{tenant}/apps/{name}") == "apply app"
    assert action_of("DELETE", "/api/v1/tokens/{id}") == "revoke token"
    assert action_of("POST", "/api/v1/sites/{name}/join-tokens") == "create join token"
    assert action_of("POST", "/api/v1/agent/join") == "join site"
    assert tenant_of("/api/v1/tenants/{tenant}/apps/{name}", {"tenant": "t1"}) == "t1"
    assert tenant_of("/api/v1/tenants/{name}", {"name": "t2"}) == "t2"
    assert tenant_of("/api/v1/sites/{name}", {"name": "paris"}) == ""


def test_every_route_has_exactly_one_rule_and_no_rule_is_stale(tmp_path: Path) -> None:
    app = create_app(HubConfig(db=f"sqlite:///{tmp_path / 'hub.db'}", dns_port=-1))
    routes = {
        (method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item
    }
    assert routes == set(RULES) | PUBLIC | {JOIN}
