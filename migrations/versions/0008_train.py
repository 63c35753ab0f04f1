"""training stage: trained criterion-specific similarities (adapters, fine-tuned models)

Revision ID: 0008_train
Revises: 0001_foundation
Create Date: 2026-12-01 18:20:00
"""

from typing import Sequence, Union

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008_train"
down_revision: Union[str, Sequence[str], None] = "0001_foundation"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "trainedmodel",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("criterion_id", sa.Integer(), nullable=False),
        sa.Column("criterion_version", sa.Integer(), nullable=False),
        sa.Column("calibration_run_id", sa.Integer(), nullable=True),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("base_model", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("n_train", sa.Integer(), nullable=False),
        sa.Column("train_triplets", sa.JSON(), nullable=True),
        sa.Column("weights", sa.LargeBinary(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["calibration_run_id"], ["calibrationrun.id"]),
        sa.ForeignKeyConstraint(["criterion_id"], ["criterion.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("trainedmodel", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trainedmodel_criterion_id"), ["criterion_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trainedmodel", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trainedmodel_criterion_id"))
    op.drop_table("trainedmodel")
