"""Foundation: the store opens, migrates and keeps its invariants on both backends."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from condsim_annot.db import current_revisions, open_store, table_names
from condsim_annot.models import Corpus, Criterion, Document, Triplet, Vote
from condsim_annot.store_api import add_triplet, canonical, get_or_create_annotator, record_vote, undo_vote


def _docs(store, n=4):
    with store.transaction() as s:
        c = Corpus(name="c")
        s.add(c)
        s.flush()
        ds = [Document(corpus_id=c.id, ext_id=str(i), text=f"doc {i}", content_hash=str(i)) for i in range(n)]
        s.add_all(ds)
        crit = Criterion(name="k", description="d")
        s.add(crit)
        s.flush()
        return [d.id for d in ds], crit.id


def test_open_creates_tables_and_is_idempotent(empty_db_url):
    s1 = open_store(empty_db_url)
    names = table_names(s1)
    for t in (
        "corpus",
        "document",
        "criterion",
        "triplet",
        "annotator",
        "vote",
        "assignment",
        "goldlabel",
        "calibrationrun",
    ):
        assert t in names
    revs = current_revisions(s1.engine)
    s1.close()
    s2 = open_store(empty_db_url)
    assert current_revisions(s2.engine) == revs and revs
    s2.close()


def test_sqlite_is_wal_with_foreign_keys(sqlite_store):
    with sqlite_store.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_triplet_is_canonical_both_orders_are_one(store):
    ids, cid = _docs(store)
    a, x, y = ids[0], ids[2], ids[1]
    with store.transaction() as s:
        t1, created1 = add_triplet(s, cid, a, x, y, expected="first")
        t2, created2 = add_triplet(s, cid, a, y, x)
    assert created1 and not created2 and t1.id == t2.id
    assert (t1.first_id, t1.second_id) == (y, x)
    # expected was "x is closer" and x is canonically second
    assert t1.expected == "second"
    assert canonical(a, x, y) == (a, y, x, True)


def test_db_rejects_non_canonical_triplet(store):
    ids, cid = _docs(store)
    with pytest.raises(IntegrityError):
        with store.transaction() as s:
            s.add(Triplet(criterion_id=cid, anchor_id=ids[0], first_id=ids[2], second_id=ids[1]))


def test_votes_keep_history_on_supersede_and_undo(store):
    ids, cid = _docs(store)
    with store.transaction() as s:
        t, _ = add_triplet(s, cid, ids[0], ids[1], ids[2])
        ann = get_or_create_annotator(s, "alice")
        v1 = record_vote(s, t.id, ann.id, "first", source="tui")
        v2 = record_vote(s, t.id, ann.id, "second", source="tui")
    with store.transaction() as s:
        rows = s.scalars(select(Vote).order_by(Vote.id)).all()
        assert [(r.choice, r.state) for r in rows] == [("first", "superseded"), ("second", "active")]
        assert rows[1].replaces_id == v1.id
        undo_vote(s, v2.id)
    with store.session() as s:
        rows = s.scalars(select(Vote).order_by(Vote.id)).all()
        assert [(r.choice, r.state) for r in rows] == [("first", "active"), ("second", "undone")]


def test_annotator_get_or_create_is_idempotent(store):
    with store.transaction() as s:
        a1 = get_or_create_annotator(s, "judge", kind="llm", model="m", prompt_version="v1")
    with store.transaction() as s:
        a2 = get_or_create_annotator(s, "judge", kind="llm")
    assert a1.id == a2.id


def test_unrelated_sqlite_file_is_refused_untouched(tmp_path):
    """Defect 14.9: --db at someone else's SQLite file silently added 15 tables and switched it to WAL."""
    import sqlite3

    from click.testing import CliRunner

    from condsim_annot.cli import main

    other = tmp_path / "app.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    before = other.read_bytes()
    r = CliRunner().invoke(main, ["--db", str(other), "status"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "invoices" in r.output and "no condsim-annot migration history" in r.output.replace("\n", " ")
    assert other.read_bytes() == before  # no tables added, still in rollback-journal mode
    with sqlite3.connect(other) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_text_file_as_db_is_one_line(tmp_path):
    """Defect 14.9: --db at a text file gave a 131-line traceback."""
    from click.testing import CliRunner

    from condsim_annot.cli import main

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a database\n" * 20)
    r = CliRunner().invoke(main, ["--db", str(notes), "status"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "not a condsim-annot store" in r.output and len(r.output.strip().splitlines()) <= 2, r.output
    assert notes.read_text().startswith("my notes")


def test_overlong_annotator_name_is_named_the_same_on_both_backends(store):
    """Defect 14.9: a 400-character name failed on PostgreSQL with the SQL printed and the wrong field named."""
    from condsim_annot.errors import InputError

    with pytest.raises(InputError, match=r"field 'annotator': 400 characters; at most 300"):
        with store.transaction() as s:
            get_or_create_annotator(s, "x" * 400)
    with store.transaction() as s:
        assert get_or_create_annotator(s, "x" * 300).id
