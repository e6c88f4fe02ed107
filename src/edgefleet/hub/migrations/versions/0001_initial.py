"""The first schema: objects, placement assignments, site revisions, observed state, events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "objects",
        sa.Column("uid", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("resource_version", sa.BigInteger, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("kind", "tenant", "name", name="uq_objects_kind_tenant_name"),
    )
    op.create_table(
        "counters",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(
        sa.table("counters", sa.column("name", sa.String), sa.column("value", sa.BigInteger)),
        [{"name": "revision", "value": 0}],
    )
    op.create_table(
        "assignments",
        sa.Column("site", sa.String(63), primary_key=True),
        sa.Column("tenant", sa.String(63), primary_key=True),
        sa.Column("app", sa.String(63), primary_key=True),
        sa.Column("replicas", sa.Integer, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
    )
    op.create_index("ix_assignments_app", "assignments", ["tenant", "app"])
    op.create_table(
        "site_revisions",
        sa.Column("site", sa.String(63), primary_key=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_site_revisions_revision", "site_revisions", ["revision"])
    op.create_table(
        "heartbeats",
        sa.Column("site", sa.String(63), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("observed_revision", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "site_reports",
        sa.Column("site", sa.String(63), primary_key=True),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("agent_endpoint", sa.Text, nullable=True),
        sa.Column("observed_revision", sa.BigInteger, nullable=False),
        sa.Column("replicas", sa.JSON, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "replica_counts",
        sa.Column("site", sa.String(63), primary_key=True),
        sa.Column("tenant", sa.String(63), primary_key=True),
        sa.Column("app", sa.String(63), primary_key=True),
        sa.Column("running", sa.Integer, nullable=False),
        sa.Column("ready", sa.Integer, nullable=False),
    )
    op.create_index("ix_replica_counts_app", "replica_counts", ["tenant", "app"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
    )
    op.create_index("ix_events_object", "events", ["kind", "tenant", "name", "id"])


def downgrade() -> None:
    for table in (
        "events",
        "replica_counts",
        "site_reports",
        "heartbeats",
        "site_revisions",
        "assignments",
        "counters",
        "objects",
    ):
        op.drop_table(table)
