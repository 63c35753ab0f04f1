"""proposal stage: proposal runs and per-triplet method margins

Revision ID: 0003_propose
Revises: 0001_foundation
Create Date: 2026-11-28 12:40:00
"""

from typing import Sequence, Union

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003_propose"
down_revision: Union[str, Sequence[str], None] = "0001_foundation"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "proposalrun",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("criterion_id", sa.Integer(), nullable=False),
        sa.Column("criterion_version", sa.Integer(), nullable=False),
        sa.Column("methods", sa.JSON(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("n_added", sa.Integer(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["criterion_id"], ["criterion.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("proposalrun", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_proposalrun_criterion_id"), ["criterion_id"], unique=False)

    op.create_table(
        "tripletmargin",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("triplet_id", sa.Integer(), nullable=False),
        sa.Column("proposal_run_id", sa.Integer(), nullable=True),
        sa.Column("method", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("score_first", sa.Float(), nullable=False),
        sa.Column("score_second", sa.Float(), nullable=False),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["proposal_run_id"], ["proposalrun.id"]),
        sa.ForeignKeyConstraint(["triplet_id"], ["triplet.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("triplet_id", "method", "proposal_run_id", name="uq_tripletmargin_triplet_method_run"),
    )
    with op.batch_alter_table("tripletmargin", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tripletmargin_method"), ["method"], unique=False)
        batch_op.create_index(batch_op.f("ix_tripletmargin_proposal_run_id"), ["proposal_run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tripletmargin_triplet_id"), ["triplet_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tripletmargin", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tripletmargin_triplet_id"))
        batch_op.drop_index(batch_op.f("ix_tripletmargin_proposal_run_id"))
        batch_op.drop_index(batch_op.f("ix_tripletmargin_method"))
    op.drop_table("tripletmargin")
    with op.batch_alter_table("proposalrun", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_proposalrun_criterion_id"))
    op.drop_table("proposalrun")
