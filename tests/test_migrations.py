"""The SQLModel tables and the Alembic migrations describe the same schema, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from condsim_annot.db import alembic_config, current_revisions, open_store
from condsim_annot.models import load_all_models


def test_models_and_migrations_agree(db_url):
    store = open_store(db_url)  # applies every migration
    metadata = load_all_models().metadata
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    store.close()
    assert diff == [], f"models and migrations differ; write a migration for: {diff}"


def test_store_is_at_every_head(db_url):
    store = open_store(db_url)
    heads = set(ScriptDirectory.from_config(alembic_config(store.engine)).get_heads())
    assert current_revisions(store.engine) == heads
    store.close()
