"""Identity on the wire: tokens, who am I, joining sites, the audit log."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, field_validator

from edgefleet.model.objects import DnsLabel, Duration, _Base


class TokenRequest(_Base):
    """What ``edgefleet token create`` asks for."""

    name: str = Field(min_length=1, max_length=128, description="Who or what uses the token.")
    role: str = Field(description="admin, operator, developer or viewer.")
    tenants: list[DnsLabel] = Field(
        default_factory=list, description="Tenants a developer or viewer acts in."
    )
    ttl: Duration | None = Field(
        default=90 * 86400.0,
        description="Seconds (or '12h', '30d') until the token expires; null: never.",
    )

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in ("admin", "operator", "developer", "viewer"):
            raise ValueError(
                f"role {value!r} is not one of admin, operator, developer, viewer (sites join "
                "with 'edgefleet site join-token')"
            )
        return value

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: float | None) -> float | None:
        if value is not None and not 60 <= value <= 10 * 365 * 86400:
            raise ValueError("ttl must be between 60 s and 10 years (or null: never expires)")
        return value


class TokenInfo(_Base):
    """A token or site credential as listed: never its secret."""

    id: str = Field(description="The token's public id (part of the token itself).")
    kind: str = Field(description="user, join (a site's one-time join token) or site.")
    name: str
    role: str
    tenants: list[str] = Field(default_factory=list)
    site: str | None = None
    state: str = Field(description="active, expired, revoked or used.")
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    used_at: datetime | None = None


class NewToken(TokenInfo):
    """A token just made. ``token`` is shown this once: the hub keeps only its hash."""

    token: str = Field(description="The bearer token (shown once).")


class JoinTokensRequest(_Base):
    """Join tokens for many sites at once (bringing up a fleet, or a simulated one)."""

    sites: list[str] = Field(
        min_length=1, max_length=10_000, description="Sites to make one join token each for."
    )
    ttl: Duration = Field(default=3600.0, description="Seconds (or '30m', '24h') until expiry.")

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: float) -> float:
        if not 60 <= value <= 30 * 86400:
            raise ValueError("ttl of a join token must be between 60 s and 30 days")
        return value


class NewTokens(_Base):
    """Tokens just made, each shown this once."""

    items: list[NewToken] = Field(description="One per site asked, in the order asked.")


class JoinTokenRequest(_Base):
    """How long a site's join token stays good."""

    ttl: Duration = Field(default=3600.0, description="Seconds (or '30m', '24h') until it expires.")

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: float) -> float:
        if not 60 <= value <= 30 * 86400:
            raise ValueError("ttl of a join token must be between 60 s and 30 days")
        return value


class WhoAmI(_Base):
    """Who the hub takes the caller for."""

    subject: str
    role: str
    via: str = Field(description="token, oidc or site-credential.")
    tenants: list[str] = Field(default_factory=list)
    site: str | None = None
    token_id: str | None = None
    expires_at: datetime | None = None


class AuditRecord(_Base):
    """One change asked of the hub, by whom, and what came of it."""

    id: int
    time: datetime
    subject: str = Field(description="Who asked ('-' when authentication failed).")
    role: str
    source: str = Field(description="The caller's address.")
    method: str
    path: str
    action: str = Field(description="e.g. 'apply app', 'revoke token'.")
    tenant: str = Field(description="The tenant the change was in; '' for fleet objects.")
    status: int = Field(description="HTTP status answered.")
    result: str = Field(description="created, configured, unchanged, deleted, or the refusal.")
