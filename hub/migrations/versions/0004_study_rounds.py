"""Studies that run for weeks: each round's own deadline, the Flower run driving a launch, rerun attempts."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    # A store stamped at the baseline may come from a create_all that already had these columns.
    for table, column in (
        ("launches", sa.Column("run_id", sa.String(32), nullable=True)),
        ("site_jobs", sa.Column("attempt", sa.Integer, nullable=True)),
    ):
        if column.name not in {c["name"] for c in inspector.get_columns(table)}:
            with op.batch_alter_table(table) as batch:  # batch: SQLite cannot ALTER most things in place
                batch.add_column(column)
    op.create_table(
        "study_rounds",
        sa.Column("launch_id", sa.String(64), nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("deadline_at", sa.Float, nullable=False),
        sa.Column("closed_at", sa.Float, nullable=True),
        sa.Column("close_reason", sa.Text, nullable=True),
        sa.UniqueConstraint("launch_id", "round", "kind"),
    )


def downgrade() -> None:
    op.drop_table("study_rounds")
    with op.batch_alter_table("site_jobs") as batch:
        batch.drop_column("attempt")
    with op.batch_alter_table("launches") as batch:
        batch.drop_column("run_id")
