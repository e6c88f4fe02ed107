"""/api/v1/tokens, /whoami, /audit, sites' join tokens and /agent/join: who may use the hub."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from edgefleet.hub.accounts import Refused, TokenRecord, new_jti
from edgefleet.hub.admission import Busy
from edgefleet.hub.auth import PrincipalDep, bearer, source_of
from edgefleet.hub.runtime import Hub, get_hub
from edgefleet.hub.store import NotFound, utcnow
from edgefleet.hub.store.audit import AuditEntry
from edgefleet.identity import Role
from edgefleet.identity.credentials import issue
from edgefleet.identity.tokens import TokenKind, parse
from edgefleet.model import JoinRequest, JoinResponse
from edgefleet.model.access import (
    AuditRecord,
    JoinTokenRequest,
    JoinTokensRequest,
    NewToken,
    NewTokens,
    TokenInfo,
    TokenRequest,
    WhoAmI,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["identity"])
HubDep = Annotated[Hub, Depends(get_hub)]

SITE_CREDENTIAL_TTL = timedelta(days=365)
"""How long a site's credential lasts; joining again replaces it."""


def _info(record: TokenRecord) -> TokenInfo:
    return TokenInfo(
        id=record.id,
        kind=record.kind.value,
        name=record.name,
        role=record.role.value,
        tenants=list(record.tenants),
        site=record.site,
        state=record.state(utcnow()),
        created_at=record.created_at,
        created_by=record.created_by,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
        used_at=record.used_at,
    )


@router.get("/whoami", response_model=WhoAmI, response_model_exclude_none=True)
def whoami(principal: PrincipalDep) -> WhoAmI:
    """Who the hub takes the caller for: subject, role, tenants, and how it authenticated."""
    return WhoAmI(
        subject=principal.subject,
        role=principal.role.value,
        via=principal.via.value,
        tenants=list(principal.tenants),
        site=principal.site,
        token_id=principal.token_id,
        expires_at=principal.expires,
    )


@router.post(
    "/tokens",
    response_model=NewToken,
    response_model_exclude_none=True,
    status_code=status.HTTP_201_CREATED,
)
def create_token(request: TokenRequest, hub: HubDep, principal: PrincipalDep) -> NewToken:
    """Make a token. Its secret is in this answer only: the hub keeps a hash of it."""
    role = Role(request.role)
    if role in (Role.DEVELOPER, Role.VIEWER) and not request.tenants:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"tenants: a {role} acts only in its tenants: name at least one",
        )
    if role not in (Role.DEVELOPER, Role.VIEWER) and request.tenants:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"tenants: a {role} acts in every tenant; tenants apply to developer and viewer only",
        )
    made, record = hub.accounts.create_token(
        kind=TokenKind.USER,
        name=request.name,
        role=role,
        tenants=request.tenants,
        ttl=None if request.ttl is None else timedelta(seconds=request.ttl),
        created_by=principal.subject,
    )
    return NewToken(**_info(record).model_dump(), token=made.token)


@router.get("/tokens", response_model=list[TokenInfo], response_model_exclude_none=True)
def list_tokens(
    hub: HubDep,
    kind: Annotated[str | None, Query(pattern="^(user|join|site)$")] = None,
    site: str | None = None,
) -> list[TokenInfo]:
    """Every token, join token and site credential (never a secret), oldest first."""
    records = hub.accounts.list_tokens(kind=TokenKind(kind) if kind else None, site=site)
    return [_info(r) for r in records]


@router.get("/tokens/{id}", response_model=TokenInfo, response_model_exclude_none=True)
def get_token(id: str, hub: HubDep) -> TokenInfo:
    """One token by id."""
    return _info(hub.accounts.get_token(id))


@router.delete("/tokens/{id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(id: str, hub: HubDep) -> None:
    """Revoke a token or a site credential: refused by this hub from the next request on, by
    every other hub within a poll of the change feed, and by every site once its share of the
    routing table carries it."""
    hub.accounts.revoke(id)
    hub.tokens.drop([id])
    hub.revoked_now([id])  # a site credential: this hub's checks refuse it from now on
    hub.wrote()


@router.post(
    "/sites/{name}/join-tokens",
    response_model=NewToken,
    response_model_exclude_none=True,
    status_code=status.HTTP_201_CREATED,
)
def create_join_token(
    name: str, hub: HubDep, principal: PrincipalDep, request: JoinTokenRequest | None = None
) -> NewToken:
    """A one-time join token for the site's agent, good for ``ttl`` (an hour by default)."""
    hub.store.objects.get_site(name)
    ttl = (request or JoinTokenRequest()).ttl
    made, record = hub.accounts.create_token(
        kind=TokenKind.JOIN,
        name=f"join:{name}",
        role=Role.SITE,
        site=name,
        ttl=timedelta(seconds=ttl),
        created_by=principal.subject,
    )
    return NewToken(**_info(record).model_dump(), token=made.token)


@router.post(
    "/join-tokens",
    response_model=NewTokens,
    response_model_exclude_none=True,
    status_code=status.HTTP_201_CREATED,
)
async def create_join_tokens(
    request: JoinTokensRequest, hub: HubDep, principal: PrincipalDep
) -> NewTokens:
    """One-time join tokens for many sites at once (each as ``POST /sites/{name}/join-tokens``
    makes one); 404 naming the sites that do not exist, and then none is made."""
    wanted = list(dict.fromkeys(request.sites))
    missing = [name for name in wanted if name not in hub.fleet.sites]
    if missing:
        # The picture may be a poll behind a site just created: ask the store.
        found = {
            s.metadata.name for s in await asyncio.to_thread(hub.store.objects.bare_sites, missing)
        }
        missing = [name for name in missing if name not in found]
    if missing:
        shown = ", ".join(missing[:10]) + (
            f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        raise NotFound(f"no such site: {shown}; create the sites first")
    made = await asyncio.to_thread(
        hub.accounts.create_join_tokens,
        wanted,
        ttl=timedelta(seconds=request.ttl),
        created_by=principal.subject,
    )
    return NewTokens(
        items=[NewToken(**_info(record).model_dump(), token=token.token) for token, record in made]
    )


@router.post("/agent/join", response_model=JoinResponse, tags=["agent"])
async def join(body: JoinRequest, request: Request, hub: HubDep) -> JoinResponse:
    """An agent trades its site's one-time join token (``Authorization: Bearer``) for the
    site's credential; earlier credentials of the site stop working. A retry of the same join
    (the same ``attempt``) whose answer was lost is answered again."""
    source = source_of(request)
    token = bearer(request)
    parsed = parse(token) if token else None
    assert parsed is not None  # the guard let only join tokens through

    def trade() -> JoinResponse:
        record = hub.accounts.check(parsed, now=utcnow(), attempt=body.attempt)
        if record.site != body.site:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this join token is for site {record.site!r}, not {body.site!r}",
            )
        if body.site not in hub.fleet.sites:
            hub.store.objects.get_site(body.site)  # a site just made at another hub, or 404
        if record.used_at is None:
            try:
                return first(record)
            except Refused:
                if body.attempt is None:
                    raise
                # A twin of this request (the same join, tried again) spent it meanwhile.
                record = hub.accounts.check(parsed, now=utcnow(), attempt=body.attempt)
        return again(record)

    def first(record: TokenRecord) -> JoinResponse:
        key = hub.signing_keys()[0]
        jti = new_jti()
        now = utcnow()
        expires = now + SITE_CREDENTIAL_TTL
        credential = issue(
            key,
            subject=f"site:{body.site}",
            site=body.site,
            ttl=SITE_CREDENTIAL_TTL,
            now=now,
            jti=jti,
        )
        revoked = hub.accounts.join(
            record,
            jti=jti,
            site=body.site,
            issued_at=now,
            expires_at=expires,
            attempt=body.attempt,
        )
        hub.revoked_now(revoked)  # this hub refuses the site's earlier credentials from now on
        log.info("site %s joined: earlier credentials of the site are revoked", body.site)
        return answered(credential, expires)

    def again(record: TokenRecord) -> JoinResponse:
        # The join that spent the token, tried again: the credential it was traded for, signed
        # again with the same claims (the same credential while the signing key is the same).
        held = hub.accounts.traded_for(record, utcnow())
        assert held.expires_at is not None
        credential = issue(
            hub.signing_keys()[0],
            subject=f"site:{body.site}",
            site=body.site,
            ttl=held.expires_at - held.created_at,
            now=held.created_at,
            jti=held.id,
        )
        log.info("site %s joined again with the same join: its credential sent again", body.site)
        return answered(credential, held.expires_at)

    def answered(credential: str, expires: datetime) -> JoinResponse:
        return JoinResponse(
            site=body.site,
            credential=credential,
            expires_at=expires,
            signing_keys=[k.public() for k in hub.signing_keys()],
        )

    try:
        async with hub.joins.slot():
            answer = await asyncio.to_thread(trade)
    except Busy:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the hub is busy with other sites' joins: try again shortly",
            headers={"Retry-After": "2"},
        ) from None
    except Refused as exc:
        hub.limiter.failed(source)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from None
    hub.wrote()
    return answer


@router.get("/audit", response_model=list[AuditRecord])
def list_audit(
    hub: HubDep,
    subject: str | None = None,
    tenant: str | None = None,
    action: str | None = None,
    failed: bool | None = None,
    since: Annotated[
        float | None, Query(ge=0, le=10 * 365 * 86400, description="Seconds back from now.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[AuditRecord]:
    """The newest changes asked of the hub matching every filter, oldest first."""
    entries = hub.accounts.list_audit(
        subject=subject,
        tenant=tenant,
        action=action,
        failed=failed,
        since=None if since is None else utcnow() - timedelta(seconds=since),
        limit=limit,
    )
    return [_record(e) for e in entries]


def _record(entry: AuditEntry) -> AuditRecord:
    return AuditRecord(
        id=entry.id or 0,
        time=entry.time,
        subject=entry.subject,
        role=entry.role,
        source=entry.source,
        method=entry.method,
        path=entry.path,
        action=entry.action,
        tenant=entry.tenant,
        status=entry.status,
        result=entry.result,
    )
