"""A spent join token remembers the join that spent it (a digest of the id the agent chose) and
the credential it was traded for, so that a retry of that join whose answer was lost gets that
credential again.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("used_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("credential", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("credential")
        batch.drop_column("used_by")
