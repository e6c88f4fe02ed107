"""Totals of the demand reports taken from each site, so that none lost can be told.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("demand_reports") as batch:
        batch.add_column(sa.Column("reports", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("requests", sa.Float, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("demand_reports") as batch:
        batch.drop_column("requests")
        batch.drop_column("reports")
