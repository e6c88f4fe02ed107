"""Who is asking: the principal every request to the hub is made by, and the roles there are."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    """What a principal may do; tenant-bound roles act only in their tenants."""

    ADMIN = "admin"
    """Everything, in every tenant: identities, policies, sites, apps."""
    OPERATOR = "operator"
    """Sites and their join tokens; reads every app, event and the audit log; changes no app."""
    DEVELOPER = "developer"
    """Apps of the tenants it is bound to: read, apply, delete."""
    VIEWER = "viewer"
    """Reads the apps of the tenants it is bound to."""
    SITE = "site"
    """A site's agent: reads its own desired state and the routing table, writes its status."""


TENANT_BOUND = frozenset({Role.DEVELOPER, Role.VIEWER})
"""Roles that act only in the tenants they are bound to."""


class Via(StrEnum):
    """How a principal proved who it is."""

    TOKEN = "token"
    """A bearer token made by the hub (``edgefleet token create``)."""
    OIDC = "oidc"
    """A JWT from the operator's OIDC provider, checked against its JWKS."""
    SITE_CREDENTIAL = "site-credential"
    """A site's credential, traded for a join token."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    subject: str
    """Who: a token's name, the OIDC subject, or ``site:<name>``."""
    role: Role
    """What it may do."""
    via: Via
    """How it authenticated."""
    tenants: tuple[str, ...] = ()
    """Tenants a developer or viewer is bound to (ignored for other roles)."""
    site: str | None = None
    """The site of a site credential."""
    token_id: str | None = None
    """The token's or credential's id (never its secret)."""
    expires: datetime | None = None
    """When the token or credential stops working; None: never."""

    def in_tenant(self, tenant: str) -> bool:
        """Whether this principal may see objects of ``tenant`` at all."""
        if self.role in (Role.ADMIN, Role.OPERATOR):
            return True
        if self.role in TENANT_BOUND:
            return tenant in self.tenants
        return False
