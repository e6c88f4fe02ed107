"""The hub's tables. Alembic migrations under ``migrations/`` create exactly these.

Desired and observed state are kept apart on purpose: heartbeats and replica counts change every
few seconds and are written in small batches to their own tables, so they never bump an object's
resourceVersion nor rewrite its spec.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

objects = Table(
    "objects",
    metadata,
    Column("uid", String(36), primary_key=True),
    Column("kind", String(32), nullable=False),
    # '' for fleet-scoped objects (sites): NULLs would defeat the unique constraint.
    Column("tenant", String(63), nullable=False, default=""),
    Column("name", String(63), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("resource_version", BigInteger, nullable=False),
    Column("meta", JSON, nullable=False),
    Column("spec", JSON, nullable=False),
    Column("status", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("kind", "tenant", "name", name="uq_objects_kind_tenant_name"),
)

counters = Table(
    "counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

assignments = Table(
    "assignments",
    metadata,
    Column("site", String(63), primary_key=True),
    Column("tenant", String(63), primary_key=True),
    Column("app", String(63), primary_key=True),
    Column("replicas", Integer, nullable=False),
    Column("generation", Integer, nullable=False),
    # Local scaling bounds at the site (traffic mode); NULL: exactly `replicas`. A row with
    # replicas 0 and max_replicas > 0 keeps an app placed at zero, for the activator to wake.
    Column("min_replicas", Integer, nullable=True),
    Column("max_replicas", Integer, nullable=True),
    Index("ix_assignments_app", "tenant", "app"),
)

site_revisions = Table(
    "site_revisions",
    metadata,
    Column("site", String(63), primary_key=True),
    # Drawn from the global counter, so one query finds every site changed since a revision.
    Column("revision", BigInteger, nullable=False, index=True),
)

heartbeats = Table(
    "heartbeats",
    metadata,
    Column("site", String(63), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("observed_revision", BigInteger, nullable=False, default=0),
    # Why the agent cannot run replicas now (its runtime, e.g. the cluster's API, is away).
    Column("problem", String(500), nullable=True),
)

feed = Table(
    "feed",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    # The revision the writing transaction drew from the global counter: revisions are handed
    # out in commit order, so "revision > R" finds everything committed after R.
    Column("revision", BigInteger, nullable=False, index=True),
    # What changed: Site, App, Tenant, Placement, Replicas, Token, Key, Demand or Event.
    Column("kind", String(16), nullable=False),
    Column("tenant", String(63), nullable=False),
    Column("name", String(64), nullable=False),
)

site_reports = Table(
    "site_reports",
    metadata,
    Column("site", String(63), primary_key=True),
    Column("agent_version", String(64), nullable=False),
    Column("agent_endpoint", Text, nullable=True),
    Column("observed_revision", BigInteger, nullable=False),
    Column("replicas", JSON, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

replica_counts = Table(
    "replica_counts",
    metadata,
    Column("site", String(63), primary_key=True),
    Column("tenant", String(63), primary_key=True),
    Column("app", String(63), primary_key=True),
    Column("running", Integer, nullable=False),
    Column("ready", Integer, nullable=False),
    Index("ix_replica_counts_app", "tenant", "app"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("tenant", String(63), nullable=False, default=""),
    Column("name", String(63), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("type", String(16), nullable=False),
    Index("ix_events_object", "kind", "tenant", "name", "id"),
)

demand = Table(
    "demand",
    metadata,
    Column("tenant", String(63), primary_key=True),
    Column("app", String(63), primary_key=True),
    Column("origin", String(63), primary_key=True),
    # Exponentially decayed rates as of `updated_at`; a reader decays them to its own now.
    Column("requests", Float, nullable=False),
    Column("concurrency", Float, nullable=False),
    Column("dns", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_request", DateTime(timezone=True), nullable=True),
)

demand_reports = Table(
    "demand_reports",
    metadata,
    # The newest report sequence number taken from each site: a resent report is ignored.
    Column("site", String(63), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    # Reports taken from the site, and the requests they counted, since it first reported.
    Column("reports", BigInteger, nullable=False, server_default="0"),
    Column("requests", Float, nullable=False, server_default="0"),
)

tokens = Table(
    "tokens",
    metadata,
    # The public part of a token (``efu_<id>_...``), or a site credential's jti.
    Column("id", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("tenants", JSON, nullable=False),
    Column("site", String(63), nullable=True),
    # SHA-256 of the secret; NULL for site credentials (they are signed, not looked up).
    Column("digest", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # A join token is spent once: the time it was traded for a credential.
    Column("used_at", DateTime(timezone=True), nullable=True),
    # SHA-256 of the join's id (``JoinRequest.attempt``) and the credential (jti) the token
    # was traded for: a retry of that join whose answer was lost gets that credential again;
    # nobody else gets anything.
    Column("used_by", String(64), nullable=True),
    Column("credential", String(64), nullable=True),
    Index("ix_tokens_site", "site"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    # The hub's Ed25519 keys for site credentials; every hub replica signs with the newest.
    Column("kid", String(32), primary_key=True),
    Column("private_pem", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

audit = Table(
    "audit",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("subject", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("source", String(64), nullable=False),
    Column("method", String(8), nullable=False),
    Column("path", Text, nullable=False),
    Column("action", String(128), nullable=False),
    Column("tenant", String(63), nullable=False),
    Column("status", Integer, nullable=False),
    Column("result", Text, nullable=False),
    Index("ix_audit_time", "time"),
    Index("ix_audit_subject", "subject", "id"),
    Index("ix_audit_tenant", "tenant", "id"),
)

auth_failures = Table(
    "auth_failures",
    metadata,
    # Failed authentications per source address, shared by the hub replicas: each source's
    # token bucket as one time (``edgefleet.identity.failures``), in seconds since the epoch
    # (floats: the same arithmetic on both engines).
    Column("source", String(64), primary_key=True),
    # When every failure of the source is forgiven.
    Column("forgiven_at", Float, nullable=False),
    # Its last failure: only a source that failed lately can be over its limit.
    Column("failed_at", Float, nullable=False),
    Index("ix_auth_failures_failed_at", "failed_at"),
)
