"""The SQLModel tables and the Alembic migrations describe the same schema, on both backends."""

from __future__ import annotations

import importlib

from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from condsim_annot.db import alembic_config, current_revisions, open_store
from condsim_annot.models import Corpus, Criterion, Document, Vote, load_all_models
from condsim_annot.store_api import add_triplet, get_or_create_annotator


def test_models_and_migrations_agree(empty_db_url):
    store = open_store(empty_db_url)  # applies every migration
    metadata = load_all_models().metadata
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    store.close()
    assert diff == [], f"models and migrations differ; write a migration for: {diff}"


def test_store_is_at_every_head(empty_db_url):
    store = open_store(empty_db_url)
    heads = set(ScriptDirectory.from_config(alembic_config(store.engine)).get_heads())
    assert current_revisions(store.engine) == heads
    store.close()


def test_0007_keeps_duplicate_active_votes_as_history(store):
    """A store that already holds two active votes for one presentation (the judge race) upgrades cleanly."""
    migration = importlib.import_module("condsim_annot.migrations.versions.0007_vote_active_unique")
    with store.transaction() as s:
        c = Corpus(name="c")
        s.add(c)
        s.flush()
        docs = [Document(corpus_id=c.id, ext_id=str(i), text=str(i), content_hash=str(i)) for i in range(3)]
        crit = Criterion(name="k", description="d")
        s.add_all([*docs, crit])
        s.flush()
        t, _ = add_triplet(s, crit.id, docs[0].id, docs[1].id, docs[2].id)
        judge = get_or_create_annotator(s, "judge", kind="llm")
        tid, aid = t.id, judge.id
    with store.engine.begin() as conn:
        conn.execute(text("DROP INDEX uq_vote_active_presentation"))  # as before 0007
        for choice in ("first", "second", "tie"):
            conn.execute(
                text(
                    "INSERT INTO vote (triplet_id, annotator_id, choice, swapped, source, state, created_at) "
                    "VALUES (:t, :a, :c, false, 'llm', 'active', CURRENT_TIMESTAMP)"
                ),
                {"t": tid, "a": aid, "c": choice},
            )
        with Operations.context(MigrationContext.configure(conn)):
            migration.upgrade()
    with store.session() as s:
        rows = s.execute(select(Vote.choice, Vote.state).order_by(Vote.id)).all()
    assert [tuple(r) for r in rows] == [("first", "superseded"), ("second", "superseded"), ("tie", "active")]
