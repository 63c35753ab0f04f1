"""one active vote per (annotator, triplet, source, presentation), enforced by the database

Two concurrent runs of the same judge could both add a vote for one presentation
(61 active votes for 60 presentations).  Older duplicates are kept as history
(marked ``superseded``, newest stays active) before the partial unique index is built.

Revision ID: 0007_vote_active_unique
Revises: 0001_foundation
Create Date: 2026-12-01 18:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_vote_active_unique"
down_revision: str | Sequence[str] | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ["triplet_id", "annotator_id", "source", "swapped"]
ACTIVE = sa.text("state = 'active'")


def upgrade() -> None:
    op.execute(
        "UPDATE vote SET state = 'superseded' WHERE state = 'active' AND id NOT IN ("
        " SELECT keep FROM (SELECT MAX(id) AS keep FROM vote WHERE state = 'active'"
        " GROUP BY triplet_id, annotator_id, source, swapped) AS newest)"
    )
    op.create_index(
        "uq_vote_active_presentation", "vote", KEY, unique=True, sqlite_where=ACTIVE, postgresql_where=ACTIVE
    )


def downgrade() -> None:
    op.drop_index("uq_vote_active_presentation", table_name="vote")
