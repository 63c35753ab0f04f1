"""tui stage: annotation sessions, queue index on triplet

Revision ID: 0004_tui
Revises: 0001_foundation
Create Date: 2026-11-28 13:00:00
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004_tui"
down_revision: Union[str, Sequence[str], None] = "0001_foundation"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "annotationsession",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("criterion_id", sa.Integer(), nullable=True),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_vote_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("n_votes", sa.Integer(), nullable=False),
        sa.Column("n_comparisons", sa.Integer(), nullable=False),
        sa.Column("n_skips", sa.Integer(), nullable=False),
        sa.Column("n_undos", sa.Integer(), nullable=False),
        sa.Column("n_rationales", sa.Integer(), nullable=False),
        sa.Column("n_attention", sa.Integer(), nullable=False),
        sa.Column("n_attention_correct", sa.Integer(), nullable=False),
        sa.Column("total_latency_ms", sa.Float(), nullable=False),
        sa.Column("median_latency_ms", sa.Float(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["annotator_id"], ["annotator.id"]),
        sa.ForeignKeyConstraint(["criterion_id"], ["criterion.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("annotationsession", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_annotationsession_key"), ["key"], unique=True)
        batch_op.create_index(batch_op.f("ix_annotationsession_annotator_id"), ["annotator_id"], unique=False)
    op.create_index(
        "ix_triplet_queue", "triplet", ["criterion_id", "is_attention_check", "priority", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_triplet_queue", table_name="triplet")
    with op.batch_alter_table("annotationsession", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_annotationsession_annotator_id"))
        batch_op.drop_index(batch_op.f("ix_annotationsession_key"))
    op.drop_table("annotationsession")
