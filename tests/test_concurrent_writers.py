"""Votes are the users' labour: concurrent writer processes lose and double nothing (both backends)."""

from __future__ import annotations

import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from procs import python_c
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from condsim_annot.calibrate.votes_import import import_votes
from condsim_annot.db import open_store
from condsim_annot.models import Corpus, Criterion, Document, Triplet, Vote
from condsim_annot.store_api import ActiveVoteExists, add_triplet, get_or_create_annotator, record_vote

WRITER = textwrap.dedent(
    """
    import sys
    from condsim_annot.db import open_store
    from condsim_annot.store_api import get_or_create_annotator, record_vote
    url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = open_store(url)
    with store.transaction() as s:
        ann = get_or_create_annotator(s, name)
    for i in range(n):
        with store.transaction() as s:      # one vote, one commit: acknowledged = durable
            record_vote(s, 1 + i, ann.id, "first" if i % 2 else "second", source="tui")
        print(i, flush=True)
    """
)


def test_four_processes_write_votes_concurrently(store, db_url):
    n = 40
    with store.transaction() as s:
        c = Corpus(name="c")
        s.add(c)
        s.flush()
        docs = [Document(corpus_id=c.id, ext_id=str(i), text=str(i), content_hash=str(i)) for i in range(n + 2)]
        s.add_all(docs)
        crit = Criterion(name="k", description="d")
        s.add(crit)
        s.flush()
        ids = [d.id for d in docs]
        for i in range(n):
            add_triplet(s, crit.id, ids[0], ids[1 + i], ids[n + 1])
    procs = [python_c(WRITER, db_url, f"w{k}", n) for k in range(4)]  # 4 processes (forked, pre-imported)
    acknowledged = 0
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
        acknowledged += len(out.split())
    with store.session() as s:
        total = s.scalar(select(func.count()).select_from(Vote))
        per = dict(s.execute(select(Vote.annotator_id, func.count()).group_by(Vote.annotator_id)).all())
    assert acknowledged == 4 * n
    assert total == 4 * n and sorted(per.values()) == [n] * 4


def _shared_triplet_files(tmp_path, n_files=4, n_rows=60):
    """Vote files from different annotators over the same triplets (every file creates the same triplets)."""
    files = []
    for k in range(n_files):
        rows = ["criterion,anchor,a,b,annotator,choice"]
        rows += [f"k,d0,d{1 + i},d{2 + i},ann{k},{'a' if (i + k) % 2 else 'b'}" for i in range(n_rows)]
        f = tmp_path / f"votes{k}.csv"
        f.write_text("\n".join(rows) + "\n")
        files.append(f)
    return files


def test_concurrent_imports_sharing_triplets_all_succeed(store, db_url, tmp_path):
    """Defect 14.3: 3 of 4 concurrent imports failed on PostgreSQL with a uq_triplet_canonical traceback."""
    with store.transaction() as s:
        c = Corpus(name="c")
        s.add(c)
        s.flush()
        s.add_all([Document(corpus_id=c.id, ext_id=f"d{i}", text=str(i), content_hash=str(i)) for i in range(64)])
        s.add(Criterion(name="k", description="d", corpus_id=c.id))
    files = _shared_triplet_files(tmp_path)
    stores = [open_store(db_url) for _ in files]  # one engine (own connections) per importer
    start = threading.Barrier(len(files))

    def run(k: int) -> int:
        start.wait()
        return import_votes(stores[k], files[k]).added

    with ThreadPoolExecutor(len(files)) as pool:
        added = list(pool.map(run, range(len(files))))  # re-raises an importer's error
    assert added == [60] * 4
    for st in stores:
        st.close()
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Vote).where(Vote.state == "active")) == 4 * 60
        assert s.scalar(select(func.count()).select_from(Triplet)) == 60


def test_one_active_vote_per_presentation_is_enforced_by_the_database(store):
    with store.transaction() as s:
        c = Corpus(name="c")
        s.add(c)
        s.flush()
        docs = [Document(corpus_id=c.id, ext_id=str(i), text=str(i), content_hash=str(i)) for i in range(3)]
        s.add_all(docs)
        crit = Criterion(name="k", description="d")
        s.add(crit)
        s.flush()
        t, _ = add_triplet(s, crit.id, docs[0].id, docs[1].id, docs[2].id)
        ann = get_or_create_annotator(s, "judge", kind="llm")
        record_vote(s, t.id, ann.id, "first", source="llm", swapped=False, supersede=False)
        record_vote(s, t.id, ann.id, "second", source="llm", swapped=True, supersede=False)  # other presentation
    with pytest.raises(ActiveVoteExists):
        with store.transaction() as s:
            record_vote(s, t.id, ann.id, "second", source="llm", swapped=False, supersede=False)
    with pytest.raises(IntegrityError):  # the database itself refuses a second active vote
        with store.transaction() as s:
            s.add(Vote(triplet_id=t.id, annotator_id=ann.id, choice="tie", source="llm", swapped=False))
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Vote).where(Vote.state == "active")) == 2


def test_two_concurrent_runs_of_one_judge_leave_one_vote_per_presentation(store, monkeypatch):
    """Defect 14.3: two runs of the same judge left 61 active votes for 60 presentations."""
    from openai_server import OpenAIServer, Reply, seed_corpus, seed_triplets

    from condsim_annot.llm.judge import run_judge

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    cid, ids = seed_corpus(store, [f"document number {i}" for i in range(8)])
    seed_triplets(store, cid, [(ids[0], ids[i], ids[i + 1]) for i in range(1, 7)])
    with OpenAIServer(lambda req, n: Reply(content='{"answer": "A"}', delay=0.05)) as srv:
        with ThreadPoolExecutor(2) as pool:
            runs = [
                pool.submit(run_judge, store, "same-technique", model="m", base_url=srv.base_url, concurrency=4)
                for _ in range(2)
            ]
            added = sum(r.result(timeout=120).votes_added for r in runs)  # re-raises a run's error
    with store.session() as s:
        rows = s.execute(
            select(Vote.triplet_id, Vote.swapped, func.count())
            .where(Vote.state == "active")
            .group_by(Vote.triplet_id, Vote.swapped)
        ).all()
    assert len(rows) == 12 and all(n == 1 for _t, _sw, n in rows), rows
    assert added == 12  # the run that lost a presentation does not count it as added


GREEDY = textwrap.dedent(
    """
    import sys, time
    from sqlalchemy import text
    from condsim_annot.db import open_store, write_turn
    store = open_store(sys.argv[1])
    end = time.monotonic() + float(sys.argv[2])
    print("ready", flush=True)
    n = 0
    while time.monotonic() < end:   # an import's chunks: 60 ms of lock each, the next one right after the commit
        with write_turn(store.engine, then_yield_s=0.002), store.engine.connect() as c:
            c.execute(text("INSERT INTO greedy (x) VALUES (:n)"), {"n": n})
            time.sleep(0.06)
            c.commit()
        n += 1
    print(n, flush=True)
    """
)


def test_a_writer_taking_turns_is_not_starved_by_a_writer_in_a_loop(sqlite_store):
    """SQLite's busy handler polls at growing intervals (to 100 ms): a writer that starts its next transaction
    right after each commit wins the race again and again (a TUI answer waited 1.7 s behind an import's chunks).
    Taking turns (``write_turn``), a waiting answer gets the lock at the next commit."""
    from condsim_annot.db import write_turn

    with sqlite_store.engine.begin() as c:
        c.execute(text("CREATE TABLE greedy (x INTEGER)"))
        c.execute(text("CREATE TABLE answers (x INTEGER)"))
    greedy = python_c(GREEDY, sqlite_store.url, 4.0)
    assert greedy.stdout.readline().strip() == "ready"
    waits = []
    for i in range(25):
        t = time.monotonic()
        with write_turn(sqlite_store.engine), sqlite_store.engine.begin() as c:
            c.execute(text("INSERT INTO answers (x) VALUES (:i)"), {"i": i})
        waits.append(time.monotonic() - t)
        time.sleep(0.05)
    out, err = greedy.communicate(timeout=30)
    assert greedy.returncode == 0, err
    assert int(out.split()[-1]) > 20  # the loop ran alongside, it was not the one starved
    assert max(waits) < 0.3, sorted(waits)[-5:]  # one 60 ms transaction to wait for, not dozens


def test_a_nested_turn_keeps_the_outer_one(sqlite_store):
    """A turn taken again inside a turn (same thread) neither waits for itself nor ends the outer turn."""
    import fcntl
    import os

    from condsim_annot.db import sqlite_file, write_turn

    path = f"{sqlite_file(sqlite_store.engine)}-writers.lock"
    with write_turn(sqlite_store.engine):
        with write_turn(sqlite_store.engine):
            pass
        other = os.open(path, os.O_RDWR)  # another open file: what another process would hold
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
