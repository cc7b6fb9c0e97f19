"""Contract 2: each result's pooling SE, scale and undefined share; each site's audit-log anchors."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:  # batch: SQLite cannot ALTER most things in place
        batch.add_column(sa.Column("se_pooling", sa.Float, nullable=True))
        batch.add_column(sa.Column("pooling_scale", sa.String(16), nullable=True))
        batch.add_column(sa.Column("undefined_share", sa.Float, nullable=True))
    op.create_table(
        "audit_anchors",
        sa.Column("center", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.UniqueConstraint("center", "seq"),
    )


def downgrade() -> None:
    op.drop_table("audit_anchors")
    with op.batch_alter_table("results") as batch:
        for column in ("undefined_share", "pooling_scale", "se_pooling"):
            batch.drop_column(column)
