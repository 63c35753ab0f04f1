"""calibration stage: pair scores and annotator statistics per calibration run

Revision ID: 0006_calibrate
Revises: 0001_foundation
Create Date: 2026-11-28 12:40:00
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006_calibrate"
down_revision: Union[str, Sequence[str], None] = "0001_foundation"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "pairscore",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("calibration_run_id", sa.Integer(), nullable=False),
        sa.Column("criterion_id", sa.Integer(), nullable=False),
        sa.Column("anchor_id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("stderr", sa.Float(), nullable=False),
        sa.Column("component", sa.Integer(), nullable=False),
        sa.Column("n_votes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["calibration_run_id"], ["calibrationrun.id"]),
        sa.ForeignKeyConstraint(["criterion_id"], ["criterion.id"]),
        sa.ForeignKeyConstraint(["anchor_id"], ["document.id"]),
        sa.ForeignKeyConstraint(["candidate_id"], ["document.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("calibration_run_id", "anchor_id", "candidate_id", name="uq_pairscore_run_pair"),
    )
    with op.batch_alter_table("pairscore", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pairscore_calibration_run_id"), ["calibration_run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_pairscore_criterion_id"), ["criterion_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_pairscore_anchor_id"), ["anchor_id"], unique=False)

    op.create_table(
        "annotatorstat",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("calibration_run_id", sa.Integer(), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("beta", sa.Float(), nullable=False),
        sa.Column("n_votes", sa.Integer(), nullable=False),
        sa.Column("n_fitted", sa.Integer(), nullable=False),
        sa.Column("n_cant_tell", sa.Integer(), nullable=False),
        sa.Column("n_skip", sa.Integer(), nullable=False),
        sa.Column("attention_n", sa.Integer(), nullable=False),
        sa.Column("attention_correct", sa.Integer(), nullable=False),
        sa.Column("loo_agreement", sa.Float(), nullable=True),
        sa.Column("gold_agreement", sa.Float(), nullable=True),
        sa.Column("position_bias", sa.Float(), nullable=True),
        sa.Column("median_latency_ms", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["calibration_run_id"], ["calibrationrun.id"]),
        sa.ForeignKeyConstraint(["annotator_id"], ["annotator.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("calibration_run_id", "annotator_id", name="uq_annotatorstat_run_annotator"),
    )
    with op.batch_alter_table("annotatorstat", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_annotatorstat_calibration_run_id"), ["calibration_run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_annotatorstat_annotator_id"), ["annotator_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("annotatorstat", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_annotatorstat_annotator_id"))
        batch_op.drop_index(batch_op.f("ix_annotatorstat_calibration_run_id"))
    op.drop_table("annotatorstat")
    with op.batch_alter_table("pairscore", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pairscore_anchor_id"))
        batch_op.drop_index(batch_op.f("ix_pairscore_criterion_id"))
        batch_op.drop_index(batch_op.f("ix_pairscore_calibration_run_id"))
    op.drop_table("pairscore")
