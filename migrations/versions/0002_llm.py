"""LM stage: the llmcall log / cache

Revision ID: 0002_llm
Revises: 0001_foundation
Create Date: 2026-11-28 12:40:00
"""

from typing import Sequence, Union

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002_llm"
down_revision: Union[str, Sequence[str], None] = "0001_foundation"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "llmcall",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("task", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("base_url", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("prompt_version", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("annotator_id", sa.Integer(), nullable=True),
        sa.Column("criterion_id", sa.Integer(), nullable=True),
        sa.Column("request", sa.JSON(), nullable=True),
        sa.Column("response_text", sa.Text(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("parsed", sa.JSON(), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=True),
        sa.Column("tokens_out", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["annotator_id"], ["annotator.id"]),
        sa.ForeignKeyConstraint(["criterion_id"], ["criterion.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_llmcall_annotator_id"), "llmcall", ["annotator_id"], unique=False)
    op.create_index(op.f("ix_llmcall_criterion_id"), "llmcall", ["criterion_id"], unique=False)
    op.create_index(op.f("ix_llmcall_model"), "llmcall", ["model"], unique=False)
    op.create_index(op.f("ix_llmcall_request_hash"), "llmcall", ["request_hash"], unique=True)
    op.create_index(op.f("ix_llmcall_status"), "llmcall", ["status"], unique=False)
    op.create_index(op.f("ix_llmcall_task"), "llmcall", ["task"], unique=False)


def downgrade() -> None:
    for ix in ("task", "status", "request_hash", "model", "criterion_id", "annotator_id"):
        op.drop_index(op.f(f"ix_llmcall_{ix}"), table_name="llmcall")
    op.drop_table("llmcall")
