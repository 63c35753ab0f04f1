"""vote indexes an import writes: the redundant ones dropped, two partial, imported ids in triplet order

* ``ix_vote_triplet_id``: the leading column of ``ix_vote_triplet_annotator``, which serves the same look-ups;
* ``ix_vote_source`` and ``ix_vote_state``: a handful of values each; every query on them also names a
  triplet, an annotator or a criterion (whose indexes it uses);
* ``ix_vote_undone`` (session_id, only ``undone`` votes) replaces ``ix_vote_state`` where that one was needed:
  it finds an import's invisible batch, or a killed import's;
* ``ix_vote_group_id`` holds only votes that belong to a best-of-k answer (``group_id = ?`` still uses it);
* an imported vote's ``external_id`` starts with its triplet's key (``import:<criterion><anchor><first><second>:
  <hash of the CSV line>``, each id as 8 hex digits) instead of the bare hash: an import writes its votes in
  triplet order, so it appends to ``ix_vote_external_id`` instead of writing all over it (a 200k-row import
  rewrote 1.3 GB of index pages through the WAL, 0.45 GB with this).  Votes imported before are rewritten to
  this form here, so their files are still recognised when imported again.

Revision ID: 0009_vote_indexes
Revises: 0008_train
Create Date: 2026-12-01 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_vote_indexes"
down_revision: str | Sequence[str] | None = "0008_train"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNDONE = sa.text("state = 'undone'")
KEY = {  # criterion, anchor, first, second as 8 hex digits each (the importer's format)
    "sqlite": "printf('%08x%08x%08x%08x', t.criterion_id, t.anchor_id, t.first_id, t.second_id)",
    "postgresql": "lpad(to_hex(t.criterion_id), 8, '0') || lpad(to_hex(t.anchor_id), 8, '0')"
    " || lpad(to_hex(t.first_id), 8, '0') || lpad(to_hex(t.second_id), 8, '0')",
}
OLD_FORM = "source = 'import' AND external_id LIKE 'import:%' AND length(external_id) = 39"
NEW_FORM = "source = 'import' AND external_id LIKE 'import:%' AND length(external_id) = 72"
GROUPED = sa.text("group_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_vote_triplet_id", table_name="vote")
    op.drop_index("ix_vote_source", table_name="vote")
    op.drop_index("ix_vote_state", table_name="vote")
    op.drop_index("ix_vote_group_id", table_name="vote")
    op.create_index("ix_vote_group_id", "vote", ["group_id"], sqlite_where=GROUPED, postgresql_where=GROUPED)
    op.create_index("ix_vote_undone", "vote", ["session_id"], sqlite_where=UNDONE, postgresql_where=UNDONE)
    key = KEY.get(op.get_bind().dialect.name)
    if key is not None:
        op.execute(
            f"UPDATE vote SET external_id = (SELECT 'import:' || {key} || ':' FROM triplet t"
            f" WHERE t.id = vote.triplet_id) || substr(external_id, 8) WHERE {OLD_FORM}"
        )


def downgrade() -> None:
    op.execute(f"UPDATE vote SET external_id = 'import:' || substr(external_id, 41) WHERE {NEW_FORM}")
    op.drop_index("ix_vote_undone", table_name="vote")
    op.drop_index("ix_vote_group_id", table_name="vote")
    op.create_index("ix_vote_group_id", "vote", ["group_id"])
    op.create_index("ix_vote_state", "vote", ["state"])
    op.create_index("ix_vote_source", "vote", ["source"])
    op.create_index("ix_vote_triplet_id", "vote", ["triplet_id"])
