"""import batches registered in ``importbatch``; the partial index ``ix_vote_undone`` dropped

``votes import`` on SQLite writes a file as an invisible batch (``undone`` votes tagged
``import-pending:<batch>:a|s``) and then activates it in one transaction.  ``ix_vote_undone``
(0009) was there to find a batch, a killed import's among them; but every batch vote entered it
when written and left it when activated: about half of the activation transaction (the longest
any TUI answer waits) went into that index.  A batch is now one ``importbatch`` row (its tag, the
lowest vote id it may have, its timestamp), written with its first chunk and deleted with its
activation or removal: a batch is found there and its votes by a rowid range.  The batches of
imports killed before this upgrade are registered here, so the next import still removes them.

Revision ID: 0010_import_batch
Revises: 0009_vote_indexes
Create Date: 2026-12-01 23:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010_import_batch"
down_revision: str | Sequence[str] | None = "0009_vote_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNDONE = sa.text("state = 'undone'")


def upgrade() -> None:
    op.create_table(
        "importbatch",
        sa.Column("tag", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("first_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tag"),
    )
    op.execute(  # killed imports' batches (session_id = <tag>:a or <tag>:s), while the index still finds them
        "INSERT INTO importbatch (tag, first_id, created_at) SELECT substr(session_id, 1, length(session_id) - 2),"
        " MIN(id), MIN(created_at) FROM vote WHERE state = 'undone' AND session_id LIKE 'import-pending:%'"
        " GROUP BY substr(session_id, 1, length(session_id) - 2)"
    )
    op.drop_index("ix_vote_undone", table_name="vote")


def downgrade() -> None:
    op.create_index("ix_vote_undone", "vote", ["session_id"], sqlite_where=UNDONE, postgresql_where=UNDONE)
    op.drop_table("importbatch")
