"""Contract 2: each result's pooling SE, scale and undefined share; each site's audit-log anchors."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A store stamped at the baseline may come from a create_all that already had these columns.
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("results")}
    new = [
        sa.Column("se_pooling", sa.Float, nullable=True),
        sa.Column("pooling_scale", sa.String(16), nullable=True),
        sa.Column("undefined_share", sa.Float, nullable=True),
    ]
    with op.batch_alter_table("results") as batch:  # batch: SQLite cannot ALTER most things in place
        for column in new:
            if column.name not in have:
                batch.add_column(column)
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
