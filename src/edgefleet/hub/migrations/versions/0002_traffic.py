"""Traffic placement: local scaling bounds on assignments, and the decayed demand matrix.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("min_replicas", sa.Integer, nullable=True))
        batch.add_column(sa.Column("max_replicas", sa.Integer, nullable=True))
    op.create_table(
        "demand",
        sa.Column("tenant", sa.String(63), primary_key=True),
        sa.Column("app", sa.String(63), primary_key=True),
        sa.Column("origin", sa.String(63), primary_key=True),
        sa.Column("requests", sa.Float, nullable=False),
        sa.Column("concurrency", sa.Float, nullable=False),
        sa.Column("dns", sa.Float, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_request", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "demand_reports",
        sa.Column("site", sa.String(63), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("demand_reports")
    op.drop_table("demand")
    with op.batch_alter_table("assignments") as batch:
        batch.drop_column("max_replicas")
        batch.drop_column("min_replicas")
