"""Who may call which route of the hub: one rule per route, and the decision. Pure.

Tenant-bound roles (developer, viewer) see nothing of other tenants: reading or deleting an object
of another tenant answers exactly what a missing object answers (404), and listing another
tenant's objects gives an empty list, so nobody learns what other tenants run. Creating or
applying in another tenant is refused (403) whether or not the object exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from edgefleet.identity.principal import TENANT_BOUND, Principal, Role

EVERYONE = frozenset(Role) - {Role.SITE}
"""Every human (or tool) role."""
FLEET_WRITE = frozenset({Role.ADMIN, Role.OPERATOR})
TENANT_READ = frozenset({Role.ADMIN, Role.OPERATOR, Role.DEVELOPER, Role.VIEWER})
TENANT_WRITE = frozenset({Role.ADMIN, Role.DEVELOPER})
ADMIN = frozenset({Role.ADMIN})


class Scope(StrEnum):
    """What a route touches, which decides how a principal outside the tenant is answered."""

    FLEET = "fleet"
    """Fleet-wide: the role alone decides."""
    OBJECT = "object"
    """One tenant's object (read or delete): outside the tenant, 404 as if missing."""
    LIST = "list"
    """One tenant's list: outside the tenant, an empty list."""
    WRITE = "write"
    """Create or apply in a tenant: outside the tenant, 403."""
    SITE = "site"
    """A site's agent call: a site credential acts only for its own site."""
    ANY = "any"
    """Every authenticated principal, including sites (e.g. whoami)."""


@dataclass(frozen=True)
class Rule:
    """Who may call one route."""

    roles: frozenset[Role]
    """Roles allowed at all."""
    scope: Scope = Scope.FLEET
    """How the tenant or site in the path is judged."""
    tenant_param: str = "tenant"
    """The path parameter naming the tenant (OBJECT, LIST, WRITE)."""
    kind: str = "app"
    """The object kind, for the not-found message."""
    name_param: str | None = "name"
    """The path parameter naming the object, for the not-found message."""
    verb: str = "read"
    """What the route does, for refusals: read, change, delete."""


@dataclass(frozen=True)
class Decision:
    """The answer to one request: allowed, or the status and detail to refuse with."""

    status: int = 200
    detail: str = ""
    empty_list: bool = False
    """Answer an empty list (a list in a tenant the principal is not bound to)."""

    @property
    def allowed(self) -> bool:
        """Whether the request goes on to the route."""
        return self.status == 200 and not self.empty_list


ALLOW = Decision()


def not_found(rule: Rule, params: Mapping[str, str]) -> str:
    """The detail a missing object answers with (the store's wording)."""
    tenant = params.get(rule.tenant_param, "")
    name = params.get(rule.name_param or "", "")
    if rule.kind == "tenant":
        return f"tenant {tenant!r} not found"
    return f"{rule.kind} {name!r} not found in tenant {tenant!r}"


def decide(rule: Rule, principal: Principal, params: Mapping[str, str]) -> Decision:
    """Whether ``principal`` may make a request to a route with ``rule`` and path ``params``."""
    if rule.scope == Scope.ANY:
        return ALLOW
    if principal.role == Role.SITE:
        if Role.SITE not in rule.roles:
            return Decision(
                403, f"a site credential (site {principal.site}) may not {rule.verb} this"
            )
        if rule.scope == Scope.SITE and params.get("site") != principal.site:
            return Decision(
                403,
                f"the credential of site {principal.site!r} may not act for site "
                f"{params.get('site')!r}",
            )
        return ALLOW
    if rule.scope in (Scope.OBJECT, Scope.LIST, Scope.WRITE) and principal.role in TENANT_BOUND:
        tenant = params.get(rule.tenant_param, "")
        if not principal.in_tenant(tenant):
            if rule.scope == Scope.OBJECT:
                return Decision(404, not_found(rule, params))
            if rule.scope == Scope.LIST:
                return Decision(empty_list=True)
            return Decision(
                403,
                f"{principal.role} {principal.subject!r} is not bound to tenant {tenant!r}: it "
                f"may not {rule.verb} {rule.kind}s there",
            )
    if principal.role not in rule.roles:
        where = ""
        if rule.scope in (Scope.OBJECT, Scope.LIST, Scope.WRITE):
            where = f" in tenant {params.get(rule.tenant_param, '')!r}"
        return Decision(
            403,
            f"role {principal.role} may not {rule.verb} {rule.kind}s{where} "
            f"(caller {principal.subject!r})",
        )
    return ALLOW
