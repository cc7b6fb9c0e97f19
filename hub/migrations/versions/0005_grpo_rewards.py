"""GRPO rounds: each trainer's released aggregate reward statistics per round (JSON), beside its epsilon."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("site_jobs")}
    if "rewards" not in have:  # a store created by create_all already has it
        with op.batch_alter_table("site_jobs") as batch:
            batch.add_column(sa.Column("rewards", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("site_jobs") as batch:
        batch.drop_column("rewards")
