"""Authentication and authorization of every request to the hub.

One dependency (``guard``) runs before every route: it finds the caller (a hub token, a site
credential, or an OIDC JWT), refuses unknown, expired and revoked ones (401), limits failed
attempts per source address (429), and applies the route's rule from ``RULES`` (403, or 404 for
another tenant's objects). A route without a rule is open to admins only, and a test walks the
OpenAPI document to make sure every route has one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request, status

from edgefleet.hub.accounts import Refused, TokenRecord, current
from edgefleet.hub.failures import SharedFailures
from edgefleet.hub.oidc import OidcError, OidcUnavailable
from edgefleet.hub.store import NotFound, utcnow
from edgefleet.identity import Principal, Role, Via
from edgefleet.identity.access import (
    ADMIN,
    EVERYONE,
    FLEET_WRITE,
    TENANT_READ,
    TENANT_WRITE,
    Decision,
    Rule,
    Scope,
    decide,
)
from edgefleet.identity.credentials import CredentialError
from edgefleet.identity.failures import FailureBudget
from edgefleet.identity.tokens import TokenKind, parse

if TYPE_CHECKING:
    from edgefleet.hub.runtime import Hub

log = logging.getLogger(__name__)

PRINCIPAL = "edgefleet.principal"
"""Key of the authenticated principal in the ASGI scope (read by the audit log)."""

PUBLIC = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/api/v1/version"),
    }
)
"""Routes anyone may call: liveness and version (the OpenAPI document and docs are not routes
of the API and carry no guard)."""

JOIN = ("POST", "/api/v1/agent/join")
"""The one route a join token is good for; it checks the token itself."""

_APPS = "/api/v1/tenants/{tenant}/apps"
_AGENT = "/api/v1/agent/sites/{site}"
_SITE_AGENT = Rule(frozenset({Role.ADMIN, Role.SITE}), Scope.SITE, kind="site", verb="act")

RULES: dict[tuple[str, str], Rule] = {
    # sites: fleet topology, readable by everyone; replicas and reporting show every tenant.
    ("GET", "/api/v1/sites"): Rule(EVERYONE, kind="site"),
    ("POST", "/api/v1/sites"): Rule(FLEET_WRITE, kind="site", verb="change"),
    ("GET", "/api/v1/sites/{name}"): Rule(EVERYONE, kind="site"),
    ("PUT", "/api/v1/sites/{name}"): Rule(FLEET_WRITE, kind="site", verb="change"),
    ("DELETE", "/api/v1/sites/{name}"): Rule(FLEET_WRITE, kind="site", verb="delete"),
    ("GET", "/api/v1/sites/{name}/replicas"): Rule(FLEET_WRITE, kind="site replica"),
    ("GET", "/api/v1/sites/{name}/reporting"): Rule(FLEET_WRITE, kind="site report"),
    ("GET", "/api/v1/sites/{name}/neighbours"): Rule(EVERYONE, kind="site"),
    ("POST", "/api/v1/sites/{name}/join-tokens"): Rule(FLEET_WRITE, kind="join token", verb="make"),
    ("POST", "/api/v1/join-tokens"): Rule(FLEET_WRITE, kind="join token", verb="make"),
    # many objects at once: any role that may write some kind gets in; each object is then
    # decided by the rule of its own PUT (``decide_apply``).
    ("POST", "/api/v1/apply"): Rule(FLEET_WRITE | TENANT_WRITE, kind="object", verb="apply"),
    # apps
    ("GET", "/api/v1/apps"): Rule(TENANT_READ),
    ("GET", _APPS): Rule(TENANT_READ, Scope.LIST),
    ("POST", _APPS): Rule(TENANT_WRITE, Scope.WRITE, verb="change"),
    ("GET", _APPS + "/{name}"): Rule(TENANT_READ, Scope.OBJECT),
    ("PUT", _APPS + "/{name}"): Rule(TENANT_WRITE, Scope.WRITE, verb="change"),
    ("DELETE", _APPS + "/{name}"): Rule(TENANT_WRITE, Scope.OBJECT, verb="delete"),
    ("GET", _APPS + "/{name}/logs"): Rule(TENANT_READ, Scope.OBJECT),
    ("GET", _APPS + "/{name}/demand"): Rule(TENANT_READ, Scope.OBJECT),
    # tenants and their policies: tenants' people read their own, admins change them.
    ("GET", "/api/v1/tenants"): Rule(TENANT_READ, kind="tenant"),
    ("POST", "/api/v1/tenants"): Rule(ADMIN, kind="tenant", verb="change"),
    ("GET", "/api/v1/tenants/{name}"): Rule(
        TENANT_READ, Scope.OBJECT, tenant_param="name", kind="tenant"
    ),
    ("PUT", "/api/v1/tenants/{name}"): Rule(ADMIN, kind="tenant", verb="change"),
    ("DELETE", "/api/v1/tenants/{name}"): Rule(ADMIN, kind="tenant", verb="delete"),
    # what happened, why DNS answers what it does: filtered to the caller's tenants.
    ("GET", "/api/v1/events"): Rule(TENANT_READ, kind="event"),
    ("GET", "/api/v1/dns/explain"): Rule(TENANT_READ),
    # dashboards: the fleet's demand and the stream of changes, filtered to the caller's tenants.
    ("GET", "/api/v1/demand"): Rule(TENANT_READ),
    ("GET", "/api/v1/stream"): Rule(TENANT_READ),
    ("GET", "/api/v1/routing-table"): Rule(
        frozenset({Role.ADMIN, Role.OPERATOR, Role.SITE}), kind="routing table"
    ),
    # identity
    ("GET", "/api/v1/whoami"): Rule(frozenset(Role), Scope.ANY),
    ("GET", "/api/v1/tokens"): Rule(ADMIN, kind="token"),
    ("POST", "/api/v1/tokens"): Rule(ADMIN, kind="token", verb="make"),
    ("GET", "/api/v1/tokens/{id}"): Rule(ADMIN, kind="token"),
    ("DELETE", "/api/v1/tokens/{id}"): Rule(ADMIN, kind="token", verb="revoke"),
    ("GET", "/api/v1/audit"): Rule(FLEET_WRITE, kind="audit entrie"),
    # agents
    ("GET", _AGENT + "/watch"): _SITE_AGENT,
    ("POST", _AGENT + "/status"): _SITE_AGENT,
    ("POST", _AGENT + "/heartbeat"): _SITE_AGENT,
    ("POST", _AGENT + "/demand"): _SITE_AGENT,
}
"""Who may call each route, by method and path template."""

_ADMIN_ONLY = Rule(ADMIN, kind="unlisted route")

_PUT_OF = {
    "Site": ("PUT", "/api/v1/sites/{name}"),
    "App": ("PUT", _APPS + "/{name}"),
    "Tenant": ("PUT", "/api/v1/tenants/{name}"),
}
"""The route that applies one object of each kind."""


def decide_apply(principal: Principal, kind: str, tenant: str | None, name: str) -> Decision:
    """Whether ``principal`` may apply one object, decided exactly as the object's own PUT
    (its route's rule, its path's parameters) would be."""
    params = {"name": name} if tenant is None else {"tenant": tenant, "name": name}
    return decide(RULES[_PUT_OF[kind]], principal, params)


@dataclass
class FailureLimiter:
    """Failed authentications per source address, as token buckets: ``burst`` failures at once,
    then one every ``1 / rate`` seconds (``edgefleet.identity.failures``). A source over its
    limit is answered 429 without its token being looked up, so guessing tokens from one address
    goes nowhere fast; only a caller that proves itself with no I/O still gets in (see
    ``identify``). Counted in memory by each hub replica (the busiest ``max_sources``
    addresses are remembered) and, with ``shared``, across the replicas too: a source over its
    limit at any hub is refused here within a second or so (``SharedFailures``)."""

    burst: float = 10.0
    rate: float = 1 / 6
    max_sources: int = 10_000
    shared: SharedFailures | None = None
    """The failures of every hub replica, when this hub shares its own."""
    budget: FailureBudget = field(init=False)
    """The failures a source may make: ``burst`` and ``rate``."""
    _buckets: OrderedDict[str, float] = field(default_factory=OrderedDict)
    """When each source's failures here are all forgiven (monotonic time)."""

    def __post_init__(self) -> None:
        self.budget = FailureBudget(burst=self.burst, rate=self.rate)

    def retry_after(self, source: str, now: float | None = None) -> float:
        """Seconds until ``source`` may try again; 0 if it may now."""
        now = time.monotonic() if now is None else now
        wait = self.budget.retry_after(self._buckets.get(source), now)
        if wait == 0 and self.shared is not None:
            return self.shared.retry_after(source)
        return wait

    def failed(self, source: str, now: float | None = None) -> None:
        """Count one failed authentication from ``source``."""
        now = time.monotonic() if now is None else now
        self._buckets[source] = self.budget.forgiven_at(self._buckets.get(source), now)
        self._buckets.move_to_end(source)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        if self.shared is not None:
            self.shared.failed(source)


class Unavailable(Exception):
    """The caller cannot be checked now (the OIDC provider's keys cannot be fetched): 503."""


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def bearer(request: Request) -> str | None:
    """The bearer token of a request, if it sent one."""
    return bearer_of(request.headers.get("authorization"))


def bearer_of(header: str | None) -> str | None:
    """The bearer token of an ``Authorization`` header's value, if there is one; 401 when the
    header is there but is not a bearer token."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise _unauthorized("the Authorization header must read 'Bearer <token>'")
    return value.strip()


def _user(record: TokenRecord) -> Principal:
    return Principal(
        subject=record.name,
        role=record.role,
        via=Via.TOKEN,
        tenants=record.tenants,
        token_id=record.id,
        expires=record.expires_at,
    )


def authenticate_now(hub: Hub, token: str) -> Principal | None:
    """The principal ``token`` proves when that needs no I/O: a user token this hub checked
    before (``TokenCache``), or a site credential (signatures and revocations are held in
    memory); None when the store or the OIDC provider must be asked (``authenticate``).
    Refused saying why for a token that cannot hold."""
    now = utcnow()
    parsed = parse(token)
    if parsed is not None:
        if parsed.kind == TokenKind.JOIN:
            raise Refused("a join token is good only for an agent to join its site")
        record = hub.tokens.get(parsed)
        return None if record is None else _user(current(record, now))
    if hub.oidc is not None and _kid(token) not in hub.key_ids():
        return None
    try:
        claims = hub.check_credential(token, now=now)
    except CredentialError as exc:
        raise Refused(f"not a valid token or site credential: {exc.reason}") from None
    if claims.site is None:
        raise Refused("the hub's own credential is for sites to check, not for the API")
    return Principal(
        subject=claims.subject,
        role=Role.SITE,
        via=Via.SITE_CREDENTIAL,
        site=claims.site,
        token_id=claims.jti,
        expires=claims.expires,
    )


def _proven_now(hub: Hub, authorization: str | None) -> Principal | None:
    """The principal the ``Authorization`` header's value proves with no I/O
    (``authenticate_now``); None for no token, a malformed header or a refused token."""
    try:
        token = bearer_of(authorization)
        return authenticate_now(hub, token) if token else None
    except (HTTPException, Refused):
        return None


def still_proven(hub: Hub, authorization: str | None) -> bool:
    """Whether the ``Authorization`` header's value still proves its caller with no I/O: a
    site credential not revoked nor expired, a user token this hub holds checked. A stream
    authenticated when it opened ends when this turns False (the caller opens the next one,
    and is authenticated again, from the store if need be)."""
    return _proven_now(hub, authorization) is not None


def authenticate(hub: Hub, token: str) -> Principal:
    """The principal ``token`` proves (blocking: may read the store or the OIDC provider's
    keys), or Refused saying why."""
    known = authenticate_now(hub, token)
    if known is not None:
        return known
    parsed = parse(token)
    if parsed is not None:
        return _user(hub.accounts.check(parsed, now=utcnow(), cache=hub.tokens))
    try:
        principal: Principal = hub.oidc.verify(token)
    except OidcUnavailable as exc:
        raise Unavailable(f"cannot check OIDC tokens now: {exc}") from None
    except OidcError as exc:
        raise Refused(f"OIDC token refused: {exc}") from None
    return principal


def _kid(token: str) -> str | None:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        return None
    return kid if isinstance(kid, str) else None


def source_of(request: Request) -> str:
    """The caller's address (the direct peer: the hub trusts no forwarding header)."""
    return request.client.host if request.client else "unknown"


async def guard(request: Request) -> None:
    """Authenticate and authorize the request, or refuse it (see the module docstring). The
    principal is left in the scope before it is authorized, so that the audit log names the
    caller of a change it refused."""
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    method = "GET" if request.method == "HEAD" else request.method
    hub: Hub = request.app.state.hub
    principal = await identify(
        hub,
        method=method,
        template=template,
        authorization=request.headers.get("authorization"),
        source=source_of(request),
    )
    if principal is not None:
        request.scope[PRINCIPAL] = principal
        authorize(principal, method=method, template=template, params=request.path_params)


async def check(
    hub: Hub,
    *,
    method: str,
    template: str,
    authorization: str | None,
    source: str,
    params: Mapping[str, Any],
) -> Principal | None:
    """Who calls ``method template`` and whether they may: the principal (None for the public
    routes and the join, which checks its token itself), or an exception saying no
    (``HTTPException`` 401, 403, 429 or 503; ``NotFound``; ``EmptyList``). Shared by ``guard``
    and the agents' gateway (``edgefleet.hub.gateway``)."""
    principal = await identify(
        hub, method=method, template=template, authorization=authorization, source=source
    )
    if principal is not None:
        authorize(principal, method=method, template=template, params=params)
    return principal


async def identify(
    hub: Hub, *, method: str, template: str, authorization: str | None, source: str
) -> Principal | None:
    """Who calls ``method template``: the principal (None for the public routes and the join,
    which checks its token itself), or an ``HTTPException`` saying why not (401, 429, 503)."""
    key = (method, template)
    if key in PUBLIC:
        return None
    wait = hub.limiter.retry_after(source)
    if wait > 0:
        # Over its limit, a source is let in only with what proves itself without I/O (a site
        # credential, a user token this hub checked before): one bad agent behind an address
        # many share (a NAT, a carrier's CGNAT) must not lock out every site and operator
        # behind it. Anything else is refused unchecked: no thread, no store read, no guess.
        known = None if key == JOIN else _proven_now(hub, authorization)
        if known is None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"too many failed authentications from {source}: try again in {wait:.0f} s",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        return known
    token = bearer_of(authorization)
    if key == JOIN:
        # The route trades the join token itself; only its shape is checked here, before
        # the body is even read.
        parsed = parse(token) if token else None
        if parsed is None or parsed.kind != TokenKind.JOIN:
            if token is not None:
                hub.limiter.failed(source)
            raise _unauthorized(
                "joining needs the site's join token as 'Authorization: Bearer efj_...' (make "
                "one with 'edgefleet site join-token SITE')"
            )
        return None
    if token is None:
        raise _unauthorized(
            "authentication required: send 'Authorization: Bearer <token>' (an admin makes "
            "tokens with 'edgefleet token create')"
        )
    try:
        # Most callers (agents, a dashboard polling) are known: no thread, no store read.
        known = authenticate_now(hub, token)
        return known if known is not None else await asyncio.to_thread(authenticate, hub, token)
    except Refused as exc:
        hub.limiter.failed(source)
        raise _unauthorized(str(exc)) from None
    except Unavailable as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"}
        ) from None


def authorize(
    principal: Principal, *, method: str, template: str, params: Mapping[str, Any]
) -> None:
    """Whether ``principal`` may call ``method template``: nothing if it may, else an exception
    saying no (``HTTPException`` 403; ``NotFound``; ``EmptyList``), by the route's rule."""
    rule = RULES.get((method, template))
    if rule is None:
        log.warning("no access rule for %s %s: admins only", method, template)
        rule = _ADMIN_ONLY
    decision = decide(rule, principal, params)
    if decision.empty_list:
        raise EmptyList(rule.kind)
    if decision.status == 404:
        raise NotFound(decision.detail)
    if not decision.allowed:
        raise HTTPException(decision.status, decision.detail)


class EmptyList(Exception):
    """Answer an empty list of ``kind`` (a list in a tenant the caller is not bound to)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def current_principal(request: Request) -> Principal:
    """Dependency: the principal ``guard`` authenticated."""
    principal: Principal | None = request.scope.get(PRINCIPAL)
    if principal is None:  # pragma: no cover - guard runs first on every guarded route
        raise _unauthorized("authentication required")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def visible_tenants(principal: Principal) -> frozenset[str] | None:
    """The tenants whose objects ``principal`` may see; None: all of them."""
    if principal.role in (Role.DEVELOPER, Role.VIEWER):
        return frozenset(principal.tenants)
    return None


def list_body(kind: str) -> dict[str, Any]:
    """The empty list answered for ``kind`` (see ``EmptyList``)."""
    from edgefleet.model import API_VERSION

    return {"apiVersion": API_VERSION, "kind": f"{kind.capitalize()}List", "items": []}
