"""The change feed: one row per object, placement or observed state a transaction changed, with
the revision it committed at, so that every hub follows every other hub's writes with one indexed
query.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
    )
    op.create_index("ix_feed_revision", "feed", ["revision"])
    op.execute("INSERT INTO counters (name, value) VALUES ('feed_pruned', 0)")


def downgrade() -> None:
    op.execute("DELETE FROM counters WHERE name = 'feed_pruned'")
    op.drop_index("ix_feed_revision", table_name="feed")
    op.drop_table("feed")
