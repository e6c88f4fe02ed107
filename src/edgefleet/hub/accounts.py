"""Who may use the hub: tokens (kept as hashes), site credentials, signing keys, the audit log.

Every check reads the store, so a revocation written by one hub replica refuses the token at every
replica from the next request on: there is no cache to expire.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from edgefleet.hub.schema import audit, signing_keys, tokens
from edgefleet.hub.store import NotFound, aware, feed, utcnow
from edgefleet.hub.store.audit import AuditEntry, amend, append, audited
from edgefleet.hub.store.feed import FeedKind
from edgefleet.identity import Role
from edgefleet.identity.credentials import SigningKey
from edgefleet.identity.tokens import NewToken, ParsedToken, TokenKind, matches, new_token


class Refused(Exception):
    """A token or credential that does not authenticate; the message says why, never the secret."""


@dataclass(frozen=True)
class TokenRecord:
    """A stored token or site credential, without its secret."""

    id: str
    kind: TokenKind
    name: str
    role: Role
    tenants: tuple[str, ...]
    site: str | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    used_at: datetime | None
    used_by: str | None = None
    """Of a spent join token: the digest of the join's id (``JoinRequest.attempt``)."""
    credential: str | None = None
    """Of a spent join token: the id of the credential it was traded for."""

    def state(self, now: datetime) -> str:
        """active, expired, revoked or used (a spent join token)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.used_at is not None:
            return "used"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def _record(row: Any) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        kind=TokenKind(row.kind),
        name=row.name,
        role=Role(row.role),
        tenants=tuple(row.tenants or ()),
        site=row.site,
        created_at=aware(row.created_at),
        created_by=row.created_by,
        expires_at=None if row.expires_at is None else aware(row.expires_at),
        revoked_at=None if row.revoked_at is None else aware(row.revoked_at),
        used_at=None if row.used_at is None else aware(row.used_at),
        used_by=row.used_by,
        credential=row.credential,
    )


def attempt_digest(attempt: str) -> str:
    """What the store keeps of a join's id."""
    return hashlib.sha256(attempt.encode()).hexdigest()


JOIN_RETRY_WINDOW = timedelta(minutes=10)
"""How long after a join the same join may be tried again (its answer lost): long enough for an
agent's backoff, short enough that a join request read later (a log, a proxy) mints nothing."""


def current(record: TokenRecord, now: datetime, *, attempt: str | None = None) -> TokenRecord:
    """``record`` if it is active at ``now``, else Refused saying why not. A join token spent
    by the join whose id is ``attempt`` counts as active for ``JOIN_RETRY_WINDOW`` after, and
    while the token has not expired: that join is being tried again (its answer was lost)."""
    if (
        attempt is not None
        and record.used_by is not None
        and record.used_at is not None
        and now - record.used_at <= JOIN_RETRY_WINDOW
        and record.revoked_at is None
        and hmac.compare_digest(record.used_by, attempt_digest(attempt))
        and (record.expires_at is None or record.expires_at > now)
    ):
        return record
    state = record.state(now)
    if state == "revoked":
        raise Refused(f"token {record.id} was revoked at {record.revoked_at:%Y-%m-%d %H:%M}Z")
    if state == "expired":
        raise Refused(f"token {record.id} expired at {record.expires_at:%Y-%m-%d %H:%M}Z")
    if state == "used":
        raise Refused(f"join token {record.id} was used already")
    return record


class TokenCache:
    """User tokens this hub checked (id, the hash of the secret, the record), so that a token's
    next request needs no store read. A token revoked at any hub is dropped from every hub's
    cache when the change feed brings its id (``drop``): a revocation holds at every hub within
    a feed poll (``HubConfig.feed_poll``, 0.25 s by default) of being written, and at once at
    the hub that wrote it."""

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._known: dict[str, tuple[str, TokenRecord]] = {}

    def get(self, parsed: ParsedToken) -> TokenRecord | None:
        """The record of ``parsed`` if it was checked before and its secret matches."""
        known = self._known.get(parsed.id)
        if known is None or not matches(parsed, known[0]):
            return None
        return known[1]

    def put(self, digest: str, record: TokenRecord) -> None:
        """Remember a token that checked out."""
        if len(self._known) >= self._size:
            self._known.pop(next(iter(self._known)))
        self._known[record.id] = (digest, record)

    def drop(self, ids: Iterable[str]) -> None:
        """Forget tokens that changed (revoked, say)."""
        for token_id in ids:
            self._known.pop(token_id, None)

    def clear(self) -> None:
        """Forget everything (the feed was read again from scratch)."""
        self._known.clear()


class Accounts:
    """Tokens, site credentials, signing keys and the audit log, in the hub's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- tokens ---------------------------------------------------------------------------------

    def create_token(
        self,
        *,
        kind: TokenKind,
        name: str,
        role: Role,
        tenants: Sequence[str] = (),
        site: str | None = None,
        ttl: timedelta | None,
        created_by: str,
    ) -> tuple[NewToken, TokenRecord]:
        """Make a user or join token; the returned ``NewToken.token`` is the only copy."""
        made = new_token(kind)
        now = utcnow()
        with audited(self.engine) as conn:
            conn.execute(
                insert(tokens).values(
                    id=made.id,
                    kind=kind.value,
                    name=name,
                    role=role.value,
                    tenants=sorted(set(tenants)),
                    site=site,
                    digest=made.digest,
                    created_at=now,
                    created_by=created_by,
                    expires_at=None if ttl is None else now + ttl,
                )
            )
        return made, self.get_token(made.id)

    def create_join_tokens(
        self, sites: Sequence[str], *, ttl: timedelta, created_by: str
    ) -> list[tuple[NewToken, TokenRecord]]:
        """One join token per site of ``sites``, in one transaction (each ``NewToken.token`` is
        the only copy)."""
        now = utcnow()
        made = [new_token(TokenKind.JOIN) for _ in sites]
        rows = [
            {
                "id": token.id,
                "kind": TokenKind.JOIN.value,
                "name": f"join:{site}",
                "role": Role.SITE.value,
                "tenants": [],
                "site": site,
                "digest": token.digest,
                "created_at": now,
                "created_by": created_by,
                "expires_at": now + ttl,
            }
            for token, site in zip(made, sites, strict=True)
        ]
        with audited(self.engine) as conn:
            conn.execute(insert(tokens), rows)
        return [
            (
                token,
                TokenRecord(
                    id=token.id,
                    kind=TokenKind.JOIN,
                    name=f"join:{site}",
                    role=Role.SITE,
                    tenants=(),
                    site=site,
                    created_at=now,
                    created_by=created_by,
                    expires_at=now + ttl,
                    revoked_at=None,
                    used_at=None,
                ),
            )
            for token, site in zip(made, sites, strict=True)
        ]

    def get_token(self, token_id: str) -> TokenRecord:
        """A token by id (NotFound if none)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(tokens).where(tokens.c.id == token_id)).first()
        if row is None:
            raise NotFound(f"token {token_id!r} not found")
        return _record(row)

    def check(
        self,
        parsed: ParsedToken,
        *,
        now: datetime,
        cache: TokenCache | None = None,
        attempt: str | None = None,
    ) -> TokenRecord:
        """The stored token ``parsed`` proves, or Refused saying why (and remembered in
        ``cache`` when it holds); ``attempt``: the id of a join (``current``)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(tokens).where(tokens.c.id == parsed.id, tokens.c.kind == parsed.kind.value)
            ).first()
        if row is None or row.digest is None or not matches(parsed, row.digest):
            raise Refused("unknown token")
        record = current(_record(row), now, attempt=attempt)
        if cache is not None and parsed.kind == TokenKind.USER:
            cache.put(row.digest, record)
        return record

    def list_tokens(
        self, *, kind: TokenKind | None = None, site: str | None = None
    ) -> list[TokenRecord]:
        """Every token and site credential (or those of ``kind``/``site``), oldest first."""
        query = select(tokens).order_by(tokens.c.created_at, tokens.c.id)
        if kind is not None:
            query = query.where(tokens.c.kind == kind.value)
        if site is not None:
            query = query.where(tokens.c.site == site)
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def revoke(self, token_id: str) -> TokenRecord:
        """Revoke a token or site credential from now on (revoking twice keeps the first time)."""
        with audited(self.engine) as conn:
            result = conn.execute(
                update(tokens)
                .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            if (
                result.rowcount == 0
                and conn.execute(select(tokens.c.id).where(tokens.c.id == token_id)).first() is None
            ):
                raise NotFound(f"token {token_id!r} not found")
            if result.rowcount:
                # Every hub drops the token from what it remembers (``TokenCache``).
                feed.record(conn, [(FeedKind.TOKEN, "", token_id)])
        return self.get_token(token_id)

    def has_admin(self) -> bool:
        """Whether an active admin token exists."""
        now = utcnow()
        return any(
            r.role == Role.ADMIN and r.state(now) == "active"
            for r in self.list_tokens(kind=TokenKind.USER)
        )

    # -- joining --------------------------------------------------------------------------------

    def join(
        self,
        record: TokenRecord,
        *,
        jti: str,
        site: str,
        issued_at: datetime,
        expires_at: datetime,
        attempt: str | None = None,
    ) -> list[str]:
        """Spend the join token ``record`` and record the site credential ``jti`` just signed
        (at ``issued_at``), revoking the site's earlier ones (a site that joins again,
        reinstalled or moved to new hardware, leaves its old credential dead), in one
        transaction; Refused if another request spent the token first. Returns the ids of the
        credentials it revoked.

        ``attempt`` is the join's id, which the agent keeps across its retries: the token
        remembers it and the credential, for ``traded_for``."""
        now = utcnow()
        digest = None if attempt is None else attempt_digest(attempt)
        with audited(self.engine) as conn:
            spent = conn.execute(
                update(tokens)
                .where(tokens.c.id == record.id, tokens.c.used_at.is_(None))
                .values(used_at=now, used_by=digest, credential=jti)
            )
            if spent.rowcount != 1:
                raise Refused(f"join token {record.id} was used already")
            earlier = list(
                conn.execute(
                    update(tokens)
                    .where(
                        tokens.c.site == site,
                        tokens.c.kind == TokenKind.SITE.value,
                        tokens.c.revoked_at.is_(None),
                    )
                    .values(revoked_at=now)
                    .returning(tokens.c.id)
                ).scalars()
            )
            # Only revocations are news to other hubs (a new credential is checked by its
            # signature).
            feed.record(conn, [(FeedKind.TOKEN, "", i) for i in earlier])
            conn.execute(
                insert(tokens).values(
                    id=jti,
                    kind=TokenKind.SITE.value,
                    name=f"site:{site}",
                    role=Role.SITE.value,
                    tenants=[],
                    site=site,
                    digest=None,
                    created_at=issued_at,
                    created_by=record.name,
                    expires_at=expires_at,
                )
            )
        return earlier

    def traded_for(self, record: TokenRecord, now: datetime) -> TokenRecord:
        """The credential the spent join token ``record`` was traded for, while it holds (a
        retry of that join gets it again); Refused when it does not (revoked by a later join,
        expired) or the token was never traded."""
        found = None
        if record.credential is not None:
            with self.engine.connect() as conn:
                found = conn.execute(
                    select(tokens).where(
                        tokens.c.id == record.credential, tokens.c.kind == TokenKind.SITE.value
                    )
                ).first()
        if found is None or _record(found).state(now) != "active":
            raise Refused(f"join token {record.id} was used already")
        return _record(found)

    def revoked_site_credentials(self) -> list[str]:
        """Ids of revoked site credentials that have not expired yet (sites refuse them too)."""
        now = utcnow()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(tokens.c.id).where(
                    tokens.c.kind == TokenKind.SITE.value,
                    tokens.c.revoked_at.is_not(None),
                    tokens.c.expires_at > now,
                )
            ).all()
        return sorted(row.id for row in rows)

    # -- signing keys ---------------------------------------------------------------------------

    def signing_keys(self) -> list[SigningKey]:
        """The hub's signing keys, newest first; made on first use (by whichever replica)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(signing_keys).order_by(signing_keys.c.created_at.desc())
            ).all()
        if rows:
            return [SigningKey.from_pem(row.private_pem.encode()) for row in rows]
        key = SigningKey.generate()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(signing_keys).values(
                        kid=key.kid, private_pem=key.to_pem().decode(), created_at=utcnow()
                    )
                )
                feed.record(conn, [(FeedKind.KEY, "", key.kid)])
        except IntegrityError:  # pragma: no cover - two replicas raced; both read the winner
            pass
        return self.signing_keys()

    # -- audit ----------------------------------------------------------------------------------

    def add_audit(self, entry: AuditEntry) -> None:
        """Append one audit entry (of a change that wrote nothing, or was refused: a change
        that writes carries its entry in its own transaction, ``edgefleet.hub.store.audit``)."""
        with self.engine.begin() as conn:
            append(conn, entry)

    def amend_audit(self, entry: AuditEntry) -> None:
        """Rewrite the status, result and tenant of the written entry ``entry.id``."""
        with self.engine.begin() as conn:
            amend(conn, entry)

    def list_audit(
        self,
        *,
        subject: str | None = None,
        tenant: str | None = None,
        action: str | None = None,
        failed: bool | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """The newest entries matching every filter, oldest first."""
        query = select(audit)
        conditions = []
        if subject is not None:
            conditions.append(audit.c.subject == subject)
        if tenant is not None:
            conditions.append(audit.c.tenant == tenant)
        if action is not None:
            conditions.append(audit.c.action.like(f"{action}%"))
        if failed is not None:
            conditions.append(audit.c.status >= 400 if failed else audit.c.status < 400)
        if since is not None:
            conditions.append(audit.c.time >= since)
        if conditions:
            query = query.where(and_(*conditions))
        query = query.order_by(audit.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            AuditEntry(
                id=row.id,
                time=aware(row.time),
                subject=row.subject,
                role=row.role,
                source=row.source,
                method=row.method,
                path=row.path,
                action=row.action,
                tenant=row.tenant,
                status=row.status,
                result=row.result,
            )
            for row in reversed(rows)
        ]


def new_jti() -> str:
    """A fresh id for a site credential."""
    return uuid.uuid4().hex


def bootstrap_admin(db: str, *, name: str = "admin", ttl: timedelta | None = None) -> str:
    """Migrate the store at ``db`` and make an admin token in it (for ``hub init`` and for
    fleets a program starts); returns the token, which is not kept anywhere else."""
    from edgefleet.hub.store import Store

    store = Store(db)
    try:
        store.migrate()
        made, _ = Accounts(store.engine).create_token(
            kind=TokenKind.USER, name=name, role=Role.ADMIN, ttl=ttl, created_by="hub init"
        )
        return made.token
    finally:
        store.close()
