"""`condsim-annot votes import FILE.csv`: canonical order, one transaction, file:line:field errors, idempotent."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from condsim_annot.calibrate.votes_import import _sorted_order, import_votes
from condsim_annot.db import open_store
from condsim_annot.errors import CondsimError
from condsim_annot.models import Annotator, Criterion, Document, Triplet, Vote
from condsim_annot.store_api import add_triplet, get_or_create_annotator, record_vote


def _setup(cli, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"p{i}", "text": f"problem {i}"}) + "\n" for i in range(1, 6)))
    cli("ingest", docs)
    cli("criteria", "add", "proof", "-d", "same proof technique")


def _count(store, model, *where):
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def test_import_votes_canonical_and_idempotent(cli, store, tmp_path):
    _setup(cli, tmp_path)
    f = tmp_path / "votes.csv"
    f.write_text(
        "criterion,anchor,a,b,annotator,choice,kind,confidence\n"
        "proof,p1,p3,p2,alice,a,human,\n"  # a=p3 shown first; canonical first=p2 -> swapped, choice second
        "proof,p1,p2,p3,bob,b,human,\n"  # same triplet, b=p3 -> canonical second
        "proof,p1,p2,p4,gpt,tie,llm,0.7\n"
        "proof,p1,p2,p5,carol,cant_tell,,\n"
        "proof,p1,p4,p5,carol,skip,,\n"
    )
    r = json.loads(cli("votes", "import", f, "--json").stdout)
    assert r["read"] == 5 and r["added"] == 5 and r["triplets_created"] == 4
    with store.session() as s:
        ids = {d: i for d, i in s.execute(select(Document.ext_id, Document.id)).all()}
        t = s.scalars(select(Triplet).where(Triplet.anchor_id == ids["p1"], Triplet.first_id == ids["p2"],
                                            Triplet.second_id == ids["p3"])).one()
        votes = {s.get(Annotator, v.annotator_id).name: v
                 for v in s.scalars(select(Vote).where(Vote.triplet_id == t.id))}
        assert votes["alice"].choice == "second" and votes["alice"].swapped is True
        assert votes["bob"].choice == "second" and votes["bob"].swapped is False
        assert all(v.source == "import" for v in votes.values())
        gpt = s.scalars(select(Annotator).where(Annotator.name == "gpt")).one()
        assert gpt.kind == "llm"
        assert s.scalars(select(Vote.confidence).where(Vote.annotator_id == gpt.id)).one() == 0.7
    # importing again adds nothing
    res = cli("votes", "import", f)
    assert "added 0 votes, 5 already there" in res.stdout
    assert _count(store, Vote) == 5
    # and the imported votes calibrate
    cli("calibrate", "proof", "--min-votes", "1")
    f.write_text("criterion,anchor,a,b,annotator,choice\nproof,p1,p3,p2,alice,tie\n")  # alice again, on a triplet
    cli("votes", "import", f)  # that exists: the vote written records the one it replaces
    with store.session() as s:
        old, new = s.scalars(select(Vote).join(Annotator).where(Annotator.name == "alice").order_by(Vote.id)).all()
    assert (old.state, new.state, new.replaces_id) == ("superseded", "active", old.id)


def test_sqlite_stages_rows_in_key_then_annotator_code_point_order():
    """The rows are written in ``votes_publish._ORDER`` (annotators by code point, as SQLite's BINARY collation)."""
    rnd = random.Random(1)
    rows = [(i, rnd.randint(1, 2), rnd.randint(1, 3), 4, rnd.randint(5, 6), rnd.choice(["b", "B", "é", "Zoë", "b2"]),
             "tie", rnd.randint(0, 1)) for i in range(400)]
    assert [rows[i] for i in _sorted_order(rows)] == sorted(rows, key=lambda r: (*r[1:6], r[7], r[0]))


def test_import_errors_name_file_line_field_and_write_nothing(cli, store, tmp_path):
    _setup(cli, tmp_path)
    head = "criterion,anchor,a,b,annotator,choice\n"
    good = "proof,p1,p2,p3,alice,a\n"
    cases = [
        (head + good + "proof,p1,p2,p9,alice,a\n", "bad.csv:3: field 'b': no document with id 'p9'"),
        (head + good + "proof,p1,p2,p3,alice,maybe\n", "bad.csv:3: field 'choice': unknown choice 'maybe'"),
        (head + good + "nope,p1,p2,p3,alice,a\n", "bad.csv:3: field 'criterion': no criterion named 'nope'"),
        (head + good + "proof,p1,p1,p3,alice,a\n", "bad.csv:3: field 'a': the anchor is also a candidate"),
        (head + good + "proof,p1,p2,p2,alice,a\n", "bad.csv:3: field 'b': the two candidates are the same document"),
        (head + good + "proof,p1,p2,p3,,a\n", "bad.csv:3: field 'annotator': empty value"),
        ("criterion,anchor,a,annotator,choice\n" + "proof,p1,p2,alice,a\n", "bad.csv:1: missing column(s) b"),
        (head + good + "proof,p1,p2,p3,alice,a,extra\n", "bad.csv:3: 7 cells but 6 columns"),
        (
            "criterion,anchor,a,b,annotator,choice,kind\n" + "proof,p1,p2,p3,alice,a,robot\n",
            "bad.csv:2: field 'kind': unknown kind",
        ),
    ]
    for text, msg in cases:
        f = tmp_path / "bad.csv"
        f.write_text(text)
        res = cli("votes", "import", f, expect_ok=False)
        assert res.exit_code == 1, text
        assert msg in res.output.replace("\n", ""), (msg, res.output)
        assert "Traceback" not in res.output
    assert _count(store, Vote) == 0 and _count(store, Triplet) == 0  # every file rolled back whole
    res = cli("votes", "import", tmp_path / "missing.csv", expect_ok=False)
    assert res.exit_code != 0


def test_bad_file_leaves_no_annotator_and_a_corrected_file_imports(cli, store, tmp_path):
    """Defect 14.5: a file whose second row is bad kept its new annotator; the corrected re-import was refused."""
    _setup(cli, tmp_path)
    f = tmp_path / "v.csv"
    head = "criterion,anchor,a,b,annotator,choice,kind\n"
    f.write_text(head + "proof,p1,p2,p3,newbie,a,human\nproof,p1,p2,p9,newbie,a,human\n")
    res = cli("votes", "import", f, expect_ok=False)
    assert res.exit_code == 1 and "v.csv:3: field 'b'" in res.output
    assert _count(store, Annotator) == 0 and _count(store, Triplet) == 0
    f.write_text(head + "proof,p1,p2,p3,newbie,a,llm\nproof,p1,p2,p4,newbie,b,llm\n")
    r = json.loads(cli("votes", "import", f, "--json").stdout)
    assert r["added"] == 2
    with store.session() as s:
        assert s.scalars(select(Annotator.kind).where(Annotator.name == "newbie")).one() == "llm"


def test_revote_inside_one_file_is_reported_and_history_kept(cli, store, tmp_path):
    """Defect 14.9: the same annotator voting twice on a triplet inside one file silently kept the last."""
    _setup(cli, tmp_path)
    f = tmp_path / "v.csv"
    f.write_text(
        "criterion,anchor,a,b,annotator,choice\n"
        "proof,p1,p2,p3,alice,a\n"
        "proof,p1,p2,p4,alice,a\n"
        "proof,p1,p3,p2,alice,a\n"  # the first triplet again (other order): the last line counts
        "proof,p1,p2,p3,alice,a\n"
    )  # an exact repeat of line 2 adds nothing
    r = json.loads(cli("votes", "import", f, "--json").stdout)
    assert (r["read"], r["added"], r["unchanged"], r["revoted_in_file"]) == (4, 3, 1, 1)
    assert "voting again" in r["warnings"][0]
    with store.session() as s:
        states = sorted(s.scalars(select(Vote.state)).all())
        active = s.scalars(select(Vote).where(Vote.state == "active", Vote.swapped.is_(True))).one()
    assert states == ["active", "active", "superseded"]
    assert active.choice == "second" and active.meta == {"file": "v.csv", "line": 4}


def test_overlong_annotator_and_bad_numbers_are_named(cli, store, tmp_path):
    """Defect 14.9: a 400-character annotator name failed on PostgreSQL with the SQL printed."""
    _setup(cli, tmp_path)
    head = "criterion,anchor,a,b,annotator,choice,latency_ms\n"
    cases = [
        (head + f"proof,p1,p2,p3,{'x' * 400},a,\n", "v.csv:2: field 'annotator': 400 characters; at most 300"),
        (head + "proof,p1,p2,p3,bob,a,nan\n", "v.csv:2: field 'latency_ms': not a finite number"),
        (head + 'proof,p1,p2,p3,"bob,a,1\nproof,p1,p2,p4,bob,a,1\n', "v.csv:2: unterminated quoted field"),
        (head, "v.csv:2: no votes"),
    ]
    for content, msg in cases:
        f = tmp_path / "v.csv"
        f.write_text(content)
        res = cli("votes", "import", f, expect_ok=False)
        assert res.exit_code == 1 and msg in res.output.replace("\n", ""), (msg, res.output)
        assert "Traceback" not in res.output and "INSERT" not in res.output
    assert _count(store, Vote) == 0 and _count(store, Annotator) == 0


def _big_votes_file(path, n):
    rows = ["criterion,anchor,a,b,annotator,choice"]
    rows += [f"proof,p1,p{2 + i % 2},p{4 + i % 2},ann{i},{'a' if i % 3 else 'b'}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.backends("sqlite")
def test_locked_store_is_a_store_error_not_field_kind(cli, store, db_url, tmp_path, monkeypatch):
    """Defect 14.4: while another writer held the lock, the import failed with `field 'kind'`."""
    _setup(cli, tmp_path)
    f = _big_votes_file(tmp_path / "v.csv", 50)
    monkeypatch.setenv("CONDSIM_SQLITE_BUSY_S", "0.3")
    locker = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    locker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(CondsimError) as err:
            import_votes(open_store(db_url), f)
    finally:
        locker.rollback()
        locker.close()
    assert "locked" in str(err.value) and "nothing was imported" in str(err.value)
    assert "field 'kind'" not in str(err.value)
    assert import_votes(open_store(db_url), f).added == 50


@pytest.mark.backends("sqlite")
def test_import_does_not_starve_another_writer(cli, store, db_url, tmp_path, monkeypatch):
    """Defect 14.4: during an import every other writer waited for the whole file and failed with "locked"."""
    _setup(cli, tmp_path)
    f = _big_votes_file(tmp_path / "v.csv", 4000)
    monkeypatch.setenv("CONDSIM_SQLITE_BUSY_S", "2")  # the other writer gives up after 2 s
    other = open_store(db_url)
    with other.transaction() as s:
        t, _ = add_triplet(s, other_crit(s), *doc_ids(s, "p1", "p3", "p4"))
        ann = get_or_create_annotator(s, "tui-user")
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(import_votes, store, f)
        n = 0
        while not job.done():
            with other.transaction() as s:  # the TUI's path: record_vote, commit
                record_vote(s, t.id, ann.id, "first" if n % 2 else "second", source="tui")
            n += 1
            time.sleep(0.01)
        assert job.result().added == 4000
    assert n >= 1
    with other.session() as s:
        assert s.scalar(select(func.count()).select_from(Vote).where(Vote.source == "tui")) == n


def other_crit(s):
    return s.scalars(select(Criterion.id).where(Criterion.name == "proof")).one()


def doc_ids(s, *exts):
    ids = dict(s.execute(select(Document.ext_id, Document.id)).all())
    return [ids[e] for e in exts]


def test_nul_in_any_field_is_named_on_both_backends(cli, store, tmp_path):
    """A NUL reached PostgreSQL as a query parameter (a driver traceback there, a silent miss on SQLite)."""
    _setup(cli, tmp_path)
    f = tmp_path / "v.csv"
    f.write_bytes(b"criterion,anchor,a,b,annotator,choice\nproof,p1,p2,p\x003,alice,a\n")
    res = cli("votes", "import", f, expect_ok=False)
    assert res.exit_code == 1 and "v.csv:2: field 'b': contains a NUL character" in res.output, res.output
    assert "Traceback" not in res.output


@pytest.mark.backends("sqlite")
def test_fast_path_agrees_with_the_field_by_field_check(cli, store, tmp_path):
    """The hot loop of the check builds the same staging rows as the slow, error-wording path; bad rows deep
    in a big chunk are still named by their own line."""
    from condsim_annot.calibrate.votes_validate import Validator, read_csv

    _setup(cli, tmp_path)
    head = "criterion,anchor,a,b,annotator,choice,kind,latency_ms,confidence,rationale,group_id\n"
    rows = [f"proof,p{1 + i % 5},p{1 + (i + 1) % 5},p{1 + (i + 3) % 5},ann{i % 7},{'a b tie skip'.split()[i % 4]},"
            f"{'' if i % 7 else 'human'},{i * 10 if i % 2 else ''},{'0.5' if i % 3 else ''},"
            f"{'ünïcode' if i % 4 else ''},{f'g{i}' if i % 5 else ''}\n" for i in range(300)]
    text = head + "".join(rows)
    with store.engine.connect() as conn:
        header, it = read_csv([text.encode().splitlines(keepends=True)], "v.csv")
        got = list(it)
        fast = Validator(conn, "v.csv", header).chunk(got)
        slow_v = Validator(conn, "v.csv", header)
        every = [slow_v.slow_row(line, v) for line, v in got]
        slow = slow_v._in_file(every)
    assert fast == slow and len(fast) == len({r[12] for r in every}) < 300  # lines repeating an earlier one: dropped
    assert {r[7] for r in fast} == {True, False}  # both presentation orders were exercised
    bad = head + "".join(rows[:250]) + "proof,p1,p2,p3,ann1,a,,,1.5,,\n" + "".join(rows[250:])
    f = tmp_path / "v.csv"
    f.write_text(bad)
    res = cli("votes", "import", f, expect_ok=False)
    assert "v.csv:252: field 'confidence': confidence 1.5 is not in [0, 1]" in res.output, res.output
    assert _count(store, Vote) == 0


def _chunky_file(path, n=12):
    rows = ["criterion,anchor,a,b,annotator,choice"]
    rows += [f"proof,p{1 + i % 5},p{1 + (i + 1) % 5},p{1 + (i + 2) % 5},new{i},a" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _active_import_votes(store):
    return _count(store, Vote, Vote.state == "active", Vote.source == "import")


def test_import_aborted_between_chunks_shows_nothing_and_leaves_nothing(cli, store, tmp_path, monkeypatch):
    """Defect 14.4: the file goes in by chunks (SQLite: short transactions of an invisible batch; PostgreSQL:
    one transaction), yet nothing is visible before the end and an interrupted import (Ctrl-C between two
    chunks) leaves no vote, triplet or annotator behind."""
    from condsim_annot.calibrate import votes_import as vi
    from condsim_annot.calibrate import votes_publish as vp

    _setup(cli, tmp_path)
    old = tmp_path / "old.csv"
    old.write_text("criterion,anchor,a,b,annotator,choice\nproof,p1,p2,p3,new0,b\n")
    assert import_votes(store, old).added == 1  # new0's older vote on p1|p2,p3: the file below supersedes it
    before = (_count(store, Vote), _count(store, Triplet), _count(store, Annotator))
    monkeypatch.setattr(vi, "CHUNK", 4)  # staged 4 rows at a time
    monkeypatch.setattr(vp, "CHUNK", 3)  # written 3 votes per transaction (SQLite)
    monkeypatch.setattr(vp, "MAX_CHUNK", 3)
    monkeypatch.setattr(vp, "PG_CHUNK", 3)  # 3 votes per statement (PostgreSQL)
    seen = []

    def interrupt(phase, done, total):
        if phase == "publish" and done >= 6:  # two chunks committed
            seen.append((_active_import_votes(store), _count(store, Vote, Vote.state == "undone")))
            raise KeyboardInterrupt

    f = _chunky_file(tmp_path / "v.csv")
    with pytest.raises(KeyboardInterrupt):
        import_votes(store, f, progress=interrupt)
    # six votes written (SQLite: committed, as an invisible batch), none of them visible; the old vote still active
    assert seen == [(1, 6 if store.engine.dialect.name == "sqlite" else 0)]
    assert (_count(store, Vote), _count(store, Triplet), _count(store, Annotator)) == before
    assert _active_import_votes(store) == 1
    r = import_votes(store, f)  # the same file, uninterrupted: every chunk of it
    assert (r.read, r.added) == (12, 12)
    assert _active_import_votes(store) == 12 and _count(store, Vote, Vote.state == "superseded") == 1


KILLED = """
import os, sys
from condsim_annot.calibrate import votes_import as vi, votes_publish as vp
from condsim_annot.db import open_store
vi.CHUNK, vp.CHUNK, vp.MAX_CHUNK, vp.PG_CHUNK = 4, 3, 3, 3
def die(phase, done, total):
    if phase == "publish" and done >= 6:
        os._exit(9)  # as kill -9: no clean-up runs
vi.import_votes(open_store(sys.argv[1]), sys.argv[2], progress=die)
"""


def _lock_files(db_url):
    import glob

    return glob.glob(db_url.removeprefix("sqlite:///") + "-import-*.lock") if db_url.startswith("sqlite") else []


def test_killed_import_leaves_an_invisible_batch_that_the_next_import_removes(cli, store, db_url, tmp_path):
    """kill -9 between chunks: readers (calibrate among them) see nothing; the next import's start-up removes the
    batch and its triplets and annotators at once (the dead import's lock file is free), however young it is."""
    import subprocess
    import sys

    from condsim_annot.calibrate.load import load_comparisons

    _setup(cli, tmp_path)
    f = _chunky_file(tmp_path / "v.csv")
    p = subprocess.run([sys.executable, "-c", KILLED, db_url, str(f)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 9, p.stderr
    sqlite = store.engine.dialect.name == "sqlite"
    pending = 6 if sqlite else 0  # PostgreSQL: its one transaction died with it
    assert _active_import_votes(store) == 0 and _count(store, Vote, Vote.state == "undone") == pending
    assert len(_lock_files(db_url)) == (1 if sqlite else 0)  # left unlocked by the dead process
    with store.session() as s:
        crit = s.scalars(select(Criterion).where(Criterion.name == "proof")).one()
        assert load_comparisons(s, crit).votes == []  # calibrate sees none of the batch
    other = tmp_path / "w.csv"
    other.write_text("criterion,anchor,a,b,annotator,choice\nproof,p4,p5,p1,zed,a\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("criterion,anchor,a,b,annotator,choice\nproof,p4,p5,p9,zed,a\n")
    with pytest.raises(CondsimError):  # even an import that fails its check cleans up first
        import_votes(store, bad)
    assert _count(store, Vote) == 0 and _count(store, Triplet) == 0 and _count(store, Annotator) == 0
    assert _lock_files(db_url) == []
    assert import_votes(store, other).added == 1
    assert _count(store, Vote) == 1 and _count(store, Triplet) == 1
    assert _count(store, Annotator) == 1  # new0..new5 came with the killed batch and went with it


@pytest.mark.backends("sqlite")
def test_a_running_import_keeps_its_batch_while_another_import_starts(cli, store, db_url, tmp_path, monkeypatch):
    """Another import's start-up removes only dead imports' batches: a running one holds its lock file, so its
    batch stays, however old, and the running import completes."""
    from condsim_annot.calibrate import votes_import as vi
    from condsim_annot.calibrate import votes_publish as vp

    _setup(cli, tmp_path)
    monkeypatch.setattr(vi, "CHUNK", 4)
    monkeypatch.setattr(vp, "CHUNK", 3)
    monkeypatch.setattr(vp, "MAX_CHUNK", 3)
    monkeypatch.setattr(vp, "STALE_S", 0.0)  # by age alone, the running batch would count as stale at once
    other = tmp_path / "w.csv"
    other.write_text("criterion,anchor,a,b,annotator,choice\nproof,p4,p5,p1,zed,a\n")
    seen = []

    def meanwhile(phase, done, total):
        if phase == "publish" and done >= 6 and not seen:
            seen.append(len(_lock_files(db_url)))
            assert import_votes(open_store(db_url), other).added == 1  # its start-up runs the clean-up
            seen.append(_count(store, Vote, Vote.state == "undone"))

    r = import_votes(store, _chunky_file(tmp_path / "v.csv"), progress=meanwhile)
    assert seen == [1, 6] and (r.read, r.added) == (12, 12)
    assert _active_import_votes(store) == 13 and _lock_files(db_url) == []


def test_a_file_imported_before_0009_is_still_recognised(cli, store, tmp_path):
    """Migration 0009 puts the triplet's key in front of an imported vote's hash (imports then append to the
    index); the votes imported before it are rewritten, so importing their file again still adds nothing."""
    import importlib

    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    migration = importlib.import_module("condsim_annot.migrations.versions.0009_vote_indexes")
    later = importlib.import_module("condsim_annot.migrations.versions.0010_import_batch")
    _setup(cli, tmp_path)
    f = _chunky_file(tmp_path / "v.csv", n=5)
    assert import_votes(store, f).added == 5
    with store.session() as s:
        new_ids = sorted(s.scalars(select(Vote.external_id)).all())
    assert all(len(e) == 72 for e in new_ids)
    with store.engine.begin() as conn:  # the store as before 0009: old indexes, bare hashes
        with Operations.context(MigrationContext.configure(conn)):
            later.downgrade()
            migration.downgrade()
    with store.session() as s:
        assert sorted(s.scalars(select(Vote.external_id)).all()) == sorted("import:" + e[40:] for e in new_ids)
    with store.engine.begin() as conn:
        with Operations.context(MigrationContext.configure(conn)):
            migration.upgrade()
            later.upgrade()
    with store.session() as s:
        assert sorted(s.scalars(select(Vote.external_id)).all()) == new_ids
    r = import_votes(store, f)
    assert (r.added, r.unchanged) == (0, 5)


@pytest.mark.backends("sqlite")
def test_write_transactions_grow_towards_their_time_budget(cli, store, tmp_path, monkeypatch):
    """Each write transaction aims at CHUNK_S seconds of lock: quick ones are followed by bigger ones (at most
    twice as big, never above MAX_CHUNK), and every row still goes in once."""
    from condsim_annot.calibrate import votes_publish as vp

    _setup(cli, tmp_path)
    monkeypatch.setattr(vp, "CHUNK", 2)
    monkeypatch.setattr(vp, "MAX_CHUNK", 16)
    monkeypatch.setattr(vp, "CHUNK_S", 60.0)  # every chunk is far quicker than that
    done = []
    r = import_votes(store, _big_votes_file(tmp_path / "v.csv", 60),
                     progress=lambda phase, d, total: done.append(d) if phase == "publish" else None)
    assert done == [0, 2, 6, 14, 30, 46, 60] and r.added == 60
    monkeypatch.setattr(vp, "CHUNK_S", 0.0)  # every chunk is too slow: the smallest size throughout
    done.clear()
    r = import_votes(store, _chunky_file(tmp_path / "w.csv", n=7), progress=lambda phase, d, total: done.append(d)
                     if phase == "publish" else None)
    assert done == [0, 2, 4, 6, 7] and r.added == 7


def test_the_check_pauses_the_garbage_collector_and_turns_it_back_on(cli, store, tmp_path, monkeypatch):
    """The check runs with the cyclic GC off (it only allocates rows it keeps), and the GC is on again
    afterwards, after a good file and after a bad one alike."""
    import gc

    from condsim_annot.calibrate import votes_validate

    _setup(cli, tmp_path)
    seen: list[bool] = []
    chunk = votes_validate.Validator.chunk

    def spy(self, rows):
        seen.append(gc.isenabled())
        return chunk(self, rows)

    monkeypatch.setattr(votes_validate.Validator, "chunk", spy)
    head = "criterion,anchor,a,b,annotator,choice\n"
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(head + "proof,p1,p2,p3,alice,a\n")
    bad.write_text(head + "proof,p1,p2,p9,alice,a\n")
    assert gc.isenabled()
    import_votes(store, good)
    assert seen == [False] and gc.isenabled()
    with pytest.raises(CondsimError, match="bad.csv:2: field 'b'"):
        import_votes(store, bad)
    assert seen == [False, False] and gc.isenabled()
    assert _count(store, Vote) == 1


def _batches(store):
    from condsim_annot.calibrate.tables import ImportBatch

    return _count(store, ImportBatch)


@pytest.mark.backends("sqlite")
def test_a_batch_is_its_own_votes_only_whatever_others_wrote_between_its_chunks(cli, store, tmp_path, monkeypatch):
    """A batch is found by its id range (from its ``importbatch`` row), which also holds what other writers
    committed between its chunks: activation and removal touch only the batch's tagged votes (a TUI vote stays
    active, a TUI undo stays undone), and leave no ``importbatch`` row."""
    from condsim_annot.calibrate import votes_import as vi
    from condsim_annot.calibrate import votes_publish as vp
    from condsim_annot.store_api import undo_vote

    _setup(cli, tmp_path)
    monkeypatch.setattr(vi, "CHUNK", 4)
    monkeypatch.setattr(vp, "CHUNK", 3)
    monkeypatch.setattr(vp, "MAX_CHUNK", 3)
    with store.transaction() as s:
        t, _ = add_triplet(s, other_crit(s), *doc_ids(s, "p1", "p3", "p4"))
        tid, ann = t.id, get_or_create_annotator(s, "tui-user").id

    def tui(stop_at=None):
        def progress(phase, done, total):
            if phase == "publish" and done == 3:  # between the first and the second chunk
                with store.transaction() as s:
                    undo_vote(s, record_vote(s, tid, ann, "first", source="tui").id)
                    record_vote(s, tid, ann, "second", source="tui")
            if stop_at is not None and phase == "publish" and done >= stop_at:
                raise KeyboardInterrupt
        return progress

    def tui_states():
        with store.session() as s:
            return sorted(s.scalars(select(Vote.state).where(Vote.source == "tui")).all())

    f = _chunky_file(tmp_path / "v.csv")
    with pytest.raises(KeyboardInterrupt):
        import_votes(store, f, progress=tui(stop_at=6))
    assert tui_states() == ["active", "undone"] and _count(store, Vote) == 2 and _batches(store) == 0
    r = import_votes(store, f, progress=tui())
    assert (r.read, r.added) == (12, 12) and _active_import_votes(store) == 12
    assert tui_states() == ["active", "superseded", "undone", "undone"] and _batches(store) == 0  # TUI's own


@pytest.mark.backends("sqlite")
def test_a_batch_still_finds_its_votes_when_ids_below_its_first_are_handed_out_again(cli, store, tmp_path,
                                                                                      monkeypatch):
    """SQLite hands out the ids of deleted rows at the top of the table again: when the vote at the top goes
    between two chunks (another import's clean-up) after a chunk that wrote nothing, the next chunk's votes
    may get ids below the ``first_id`` registered so far; each chunk lowers it, so the batch activates."""
    from condsim_annot.calibrate import votes_publish as vp

    _setup(cli, tmp_path)
    lines = _chunky_file(tmp_path / "all.csv").read_text().splitlines(keepends=True)
    head, rows = lines[0], lines[1:]
    before = tmp_path / "before.csv"
    before.write_text(head + "".join(rows[:9] + rows[10:]))  # all but new9, whose triplet sorts last
    assert import_votes(store, before).added == 11
    with store.transaction() as s:  # the vote at the top of the table
        top = record_vote(s, *_first_triplet_and(s, "tui-user"), "first", source="tui").id
    monkeypatch.setattr(vp, "CHUNK", 1)
    monkeypatch.setattr(vp, "MAX_CHUNK", 1)
    gone = []

    def progress(phase, done, total):
        if phase == "publish" and done == 1 and not gone:  # the first chunk wrote nothing (line imported before)
            with store.engine.begin() as conn:
                conn.exec_driver_sql(f"DELETE FROM vote WHERE id = {top}")
            gone.append(top)

    r = import_votes(store, tmp_path / "all.csv", progress=progress)
    assert gone == [top] and (r.added, r.unchanged) == (1, 11)
    with store.session() as s:
        assert s.get(Vote, top).annotator_id == s.scalars(select(Annotator.id).where(Annotator.name == "new9")).one()
    assert _active_import_votes(store) == 12 and _batches(store) == 0


def _first_triplet_and(s, name):
    return s.scalars(select(Triplet.id).order_by(Triplet.id)).first(), get_or_create_annotator(s, name).id


def test_0010_registers_the_batch_of_an_import_killed_before_it(cli, store, tmp_path):
    """Migration 0010 drops the index that found invisible batches: the batch a killed import left before the
    upgrade gets its ``importbatch`` row from it, so the next import's start-up still removes it (here by age: no
    lock file), and nothing else."""
    import importlib

    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    from condsim_annot.calibrate.votes_publish import remove_stale_batches

    migration = importlib.import_module("condsim_annot.migrations.versions.0010_import_batch")
    _setup(cli, tmp_path)
    assert import_votes(store, _chunky_file(tmp_path / "v.csv", n=3)).added == 3
    with store.engine.begin() as conn:
        with Operations.context(MigrationContext.configure(conn)):
            migration.downgrade()
    tag = "import-pending:" + "ab" * 16
    with store.transaction() as s:  # a killed import's batch, as the importer before 0010 left it
        t, ann = _first_triplet_and(s, "killed")
        batch = [Vote(triplet_id=t, annotator_id=ann, choice=choice, source="import", state="undone",
                      session_id=tag + mark) for choice, mark in (("first", ":a"), ("second", ":s"))]
        s.add_all(batch)
        s.flush()
        first = min(v.id for v in batch)
    with store.engine.begin() as conn:
        with Operations.context(MigrationContext.configure(conn)):
            migration.upgrade()
        assert conn.exec_driver_sql("SELECT tag, first_id FROM importbatch").all() == [(tag, first)]
    with store.engine.connect() as conn:
        assert remove_stale_batches(conn, older_than_s=0) == 1
    assert _count(store, Vote) == 3 == _active_import_votes(store) and _batches(store) == 0


def test_every_optional_column_is_stored_and_absent_ones_are_null(cli, store, tmp_path):
    """SQLite stages only the columns a file has (and ``state`` only if a line is superseded): what a file gives
    reaches the vote, what it lacks is NULL, and a superseded line stays superseded."""
    _setup(cli, tmp_path)
    full, bare = tmp_path / "full.csv", tmp_path / "bare.csv"
    full.write_text("criterion,anchor,a,b,annotator,choice,kind,latency_ms,confidence,rationale,group_id\n"
                    "proof,p1,p2,p3,ann,a,llm,1200,0.75,same lemma,g1\n"
                    "proof,p1,p2,p3,ann,b,llm,900,0.5,changed my mind,g1\n")
    bare.write_text("criterion,anchor,a,b,annotator,choice\nproof,p2,p3,p4,bob,tie\n")
    assert import_votes(store, full).added == 2 and import_votes(store, bare).added == 1
    cols = (Vote.state, Vote.choice, Vote.latency_ms, Vote.confidence, Vote.rationale, Vote.group_id)
    with store.session() as s:
        got = [tuple(r) for r in s.execute(select(*cols).order_by(Vote.id)).all()]
    assert sorted(got, key=str) == sorted([("superseded", "first", 1200.0, 0.75, "same lemma", "g1"),
                                           ("active", "second", 900.0, 0.5, "changed my mind", "g1"),
                                           ("active", "tie", None, None, None, None)], key=str)
