"""Failed authentications per source address, shared by the hub replicas, so that a source over
its limit at one hub is refused at every hub.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_failures",
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("forgiven_at", sa.Float, nullable=False),
        sa.Column("failed_at", sa.Float, nullable=False),
    )
    op.create_index("ix_auth_failures_failed_at", "auth_failures", ["failed_at"])


def downgrade() -> None:
    op.drop_index("ix_auth_failures_failed_at", table_name="auth_failures")
    op.drop_table("auth_failures")
