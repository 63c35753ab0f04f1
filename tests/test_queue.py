"""The annotation queue (store side, no Textual): claims, overlap, attention checks, canonical
choices, undo as a new state, resume, best-of-k groups, review selection, concurrent annotators."""

from __future__ import annotations

import json
import textwrap
from collections import Counter

import pytest
from helpers import seed_triplets, votes_of
from procs import python_c
from sqlalchemy import func, select

from condsim_annot.models import (
    Annotator,
    Assignment,
    CalibrationRun,
    Criterion,
    GoldLabel,
    Triplet,
    Vote,
)
from condsim_annot.queue import GroupItem, Queue, ReviewItem
from condsim_annot.queue.tables import AnnotationSession
from condsim_annot.store_api import get_or_create_annotator, record_vote


def test_each_annotator_gets_each_triplet_once_up_to_overlap(store):
    seed_triplets(store, 6)
    seen = {}
    for name in ("alice", "bob", "carol"):
        q = Queue(store, name, overlap=2, attention_rate=0, seed=1)
        got = []
        while (it := q.next()) is not None:
            got.append(it.triplet_id)
            q.answer(it, "A")
        seen[name] = got
        q.close()
    assert len(seen["alice"]) == 6 and len(set(seen["alice"])) == 6
    assert sorted(seen["bob"]) == sorted(seen["alice"])  # overlap 2: bob gets the same six
    assert seen["carol"] == []  # every triplet already has its two annotators
    per = Counter(v.triplet_id for v in votes_of(store))
    assert set(per.values()) == {2}


def test_choice_is_canonical_and_order_randomised(store):
    info = seed_triplets(store, 20)
    q = Queue(store, "alice", attention_rate=0, seed=7)
    shown = []
    while (it := q.next()) is not None:
        shown.append(it)
        q.answer(it, "A")  # always the candidate shown as A
    assert {it.swapped for it in shown} == {True, False}
    with store.session() as s:
        for it in shown:
            v = s.scalars(select(Vote).where(Vote.triplet_id == it.triplet_id)).one()
            t = s.get(Triplet, it.triplet_id)
            assert v.swapped == it.swapped
            # the choice names the document that was shown as A, in canonical terms
            assert (t.first_id if v.choice == "first" else t.second_id) == it.a.id
            a = s.scalars(select(Assignment).where(Assignment.triplet_id == it.triplet_id)).one()
            assert a.state == "done" and a.swapped == it.swapped
            assert v.latency_ms is not None and v.session_id == q.key and v.source == "tui"
    assert len(shown) == len(info["triplets"])


def test_undo_is_a_new_state_and_the_triplet_comes_back(store):
    seed_triplets(store, 3)
    q = Queue(store, "alice", attention_rate=0, seed=2)
    first = q.next()
    q.answer(first, "B")
    second = q.next()
    back = q.undo()
    assert back.triplet_id == first.triplet_id and back.swapped == first.swapped
    rows = votes_of(store, state=None)
    assert [v.state for v in rows] == ["undone"]  # the row stays, marked undone
    q.answer(back, "A")
    nxt = q.next()
    assert nxt.triplet_id == second.triplet_id  # the one that was on screen before the undo
    assert [v.state for v in votes_of(store, state=None)] == ["undone", "active"]
    s = q.close()
    assert s["undos"] == 1 and s["answers"] == 1


def test_skip_cant_tell_tie_and_rationale(store):
    seed_triplets(store, 4)
    q = Queue(store, "alice", attention_rate=0, seed=3)
    a = q.next()
    q.answer(a, "skip")
    b = q.next()
    b.rationale = "neither uses induction"
    q.answer(b, "cant_tell")
    c = q.next()
    q.answer(c, "tie")
    got = {v.triplet_id: v for v in votes_of(store)}
    assert got[a.triplet_id].choice == "skip"
    assert got[b.triplet_id].choice == "cant_tell" and got[b.triplet_id].rationale == "neither uses induction"
    assert got[c.triplet_id].choice == "tie"
    # a skip does not count towards the overlap: two more annotators can still take it
    q2, q3 = Queue(store, "bob", attention_rate=0), Queue(store, "carol", attention_rate=0)
    taken2 = set()
    while (it := q2.next()) is not None:
        taken2.add(it.triplet_id)
        q2.answer(it, "A")
    taken3 = set()
    while (it := q3.next()) is not None:
        taken3.add(it.triplet_id)
        q3.answer(it, "A")
    assert a.triplet_id in taken2 and a.triplet_id in taken3
    assert b.triplet_id not in taken3


def test_resume_shows_the_pending_triplet_first(store):
    seed_triplets(store, 5)
    q = Queue(store, "alice", attention_rate=0, seed=4)
    it = q.answer(q.next(), "A") and q.next()  # answered one; the second is on screen when the process dies
    q2 = Queue(store, "alice", attention_rate=0, seed=99)
    again = q2.next()
    assert again.triplet_id == it.triplet_id and again.swapped == it.swapped and again.resumed
    assert q2.progress().done == 1


def test_progress_counts_claimed_and_look_ahead_triplets_once(store):
    seed_triplets(store, 6)
    q = Queue(store, "alice", attention_rate=0, seed=4)
    it = q.next()
    q.prefetch(it)  # a second pending claim, in the background
    q.wait_prefetch()
    assert q.count_available() == 6 and q.progress().assigned == 6
    q.answer(it, "A")
    assert q.count_available() == 5 and q.progress().assigned == 6 and q.progress().done == 1
    assert q.why_empty() == {"total": 6, "mine": 1, "most_others": 0, "overlap": 2}
    q.close()


def test_attention_checks_are_mixed_in_and_scored(store):
    info = seed_triplets(store, 30, attention=3)
    q = Queue(store, "alice", attention_rate=0.3, overlap=1, seed=5)
    seen = []
    while (it := q.next()) is not None:
        seen.append(it)
        q.answer(it, "A" if not it.swapped else "B")  # always the canonical first = the expected answer
    att = [it for it in seen if it.attention]
    assert len(att) == 3 and {it.triplet_id for it in att} == set(info["attention"])
    assert len(seen) == 33
    s = q.close()
    assert s["attention"] == 3 and s["attention_correct"] == 3
    with store.session() as ss:
        row = ss.scalars(select(AnnotationSession).where(AnnotationSession.key == q.key)).one()
        assert row.n_votes == 33 and row.n_attention == 3 and row.n_attention_correct == 3 and row.ended_at is not None
        assert row.median_latency_ms is not None
    # attention checks are not limited by the overlap: bob sees them too
    q2 = Queue(store, "bob", attention_rate=1.0, overlap=1, seed=6)
    assert q2.next().attention


def test_priority_then_calibration_uncertainty_first(store):
    info = seed_triplets(store, 6, priorities=[0, 5, 1, 0, 0, 0])
    q = Queue(store, "alice", attention_rate=0)
    assert q.next().triplet_id == info["triplets"][1]
    q.answer(q.next(), "A")
    assert q.next().triplet_id == info["triplets"][2]
    # a calibration run left triplet 4 the most uncertain: it comes first for a new annotator
    with store.transaction() as s:
        run = CalibrationRun(criterion_id=info["criterion_id"])
        s.add(run)
        s.flush()
        for tid, p, st in ((info["triplets"][4], 0.52, "uncertain"), (info["triplets"][3], 0.7, "contested"),
                           (info["triplets"][5], 0.99, "gold")):
            s.add(GoldLabel(calibration_run_id=run.id, criterion_id=info["criterion_id"], triplet_id=tid, label="first",
                            probability=p, status=st))
    q2 = Queue(store, "bob", attention_rate=0)
    order = []
    while (it := q2.next()) is not None and len(order) < 3:
        order.append(it.triplet_id)
        q2.answer(it, "A")
    assert order[:2] == [info["triplets"][4], info["triplets"][3]]


def test_best_of_k_stores_k_minus_1_votes_in_one_group(store):
    info = seed_triplets(store, 2, n_docs=12)
    q = Queue(store, "alice", mode="best-of-k", k=4, attention_rate=0, seed=8)
    g = q.next()
    assert isinstance(g, GroupItem) and len(g.candidates) == 4 and g.anchor.id not in {d.id for d in g.candidates}
    ids = q.answer(g, 2)
    rows = [v for v in votes_of(store) if v.id in ids]
    assert len(rows) == 3 and len({v.group_id for v in rows}) == 1 and rows[0].group_id
    win = g.candidates[2].id
    with store.session() as s:
        for v in rows:
            t = s.get(Triplet, v.triplet_id)
            assert t.anchor_id == g.anchor.id
            assert (t.first_id if v.choice == "first" else t.second_id) == win
            assert v.meta["candidates"] == [d.id for d in g.candidates]
            assert s.scalars(select(Assignment).where(Assignment.triplet_id == t.id)).one().state == "done"
        made = s.scalars(select(Triplet).where(Triplet.method == "best-of-k")).all()
        assert made  # comparisons the grid asked about but nobody proposed were created on the fly
    back = q.undo()
    assert [d.id for d in back.candidates] == [d.id for d in g.candidates]
    assert {v.state for v in votes_of(store, state=None) if v.id in ids} == {"undone"}
    # calibration reads the group as one Luce choice
    q.answer(back, 0)
    from condsim_annot.calibrate.pipeline import load_comparisons

    with store.session() as s:
        data = load_comparisons(s, s.get(Criterion, info["criterion_id"]))
    assert len(data.choice_sets) == 1 and len(data.choice_sets[0][1]) == 4


def test_review_finds_disagreements_and_records_adjudication(store):
    info = seed_triplets(store, 4)
    t = info["triplets"]
    with store.transaction() as s:
        al, bo = get_or_create_annotator(s, "alice"), get_or_create_annotator(s, "bob")
        judge = get_or_create_annotator(s, "gpt-judge", kind="llm", model="m")
        record_vote(s, t[0], al.id, "first", source="tui", rationale="same trick")
        record_vote(s, t[0], bo.id, "second", source="tui", rationale="B is induction too")  # human vs human
        record_vote(s, t[1], al.id, "first", source="tui")
        record_vote(s, t[1], judge.id, "second", source="llm", supersede=False)
        record_vote(s, t[1], judge.id, "second", source="llm", swapped=True, supersede=False)  # both orders agree
        record_vote(s, t[2], al.id, "first", source="tui")
        record_vote(s, t[2], bo.id, "first", source="tui")  # agreement: not reviewed
    q = Queue(store, "carol", mode="review")
    first = q.next()
    assert isinstance(first, ReviewItem) and first.triplet_id == t[0] and first.reason == "human vs human"
    assert {v.rationale for v in first.votes} == {"same trick", "B is induction too"}
    shown = {v.annotator: v.choice for v in first.votes}
    assert shown["alice"] == ("B" if first.swapped else "A")
    first.rationale = "the key step is induction"
    q.answer(first, "A")
    second = q.next()
    assert second.triplet_id == t[1] and second.reason == "human vs LM judge"
    q.answer(second, "skip")  # leaves no vote
    assert q.next() is None
    rv = votes_of(store, "carol")
    assert len(rv) == 1 and rv[0].source == "review" and rv[0].rationale == "the key step is induction"
    assert rv[0].choice == ("second" if first.swapped else "first")
    assert Queue(store, "dave", mode="review").next().triplet_id == t[1]  # adjudicated ones are done


WORKER = textwrap.dedent(
    """
    import json, sys
    from condsim_annot.db import open_store
    from condsim_annot.queue import Queue
    url, name, overlap = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = open_store(url)
    q = Queue(store, name, overlap=overlap, attention_rate=0.0)
    print("ready", flush=True)
    sys.stdin.readline()  # start together: a process that starts late would find the work gone
    while (it := q.next()) is not None:
        if int(name[-1]) % 2:
            q.prefetch(it)  # two of the four claim ahead in a background thread, like the TUI
        q.answer(it, "A")
        print(json.dumps([it.triplet_id, it.swapped]), flush=True)   # acknowledged
    q.close()
    """
)


@pytest.mark.parametrize("backend,overlap", [("postgresql", 1), ("postgresql", 2), ("sqlite", 2)])
def test_four_annotators_concurrently_lose_and_double_nothing(store, db_url, overlap):
    n = 60
    seed_triplets(store, n)
    procs = [python_c(WORKER, db_url, f"ann{k}", overlap) for k in range(4)]  # 4 processes (forked, pre-imported)
    for p in procs:  # every worker has imported, opened the store and started its session
        assert p.stdout.readline().strip() == "ready", p.stderr.read()[-2000:]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    acked: dict[str, list[int]] = {}
    for k, p in enumerate(procs):
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
        acked[f"ann{k}"] = [json.loads(line)[0] for line in out.splitlines()]
    total_acked = sum(len(v) for v in acked.values())
    assert total_acked == n * overlap  # every triplet got exactly `overlap` answers
    for _name, tids in acked.items():
        assert len(tids) == len(set(tids))  # nobody saw a triplet twice
    with store.session() as s:
        rows = s.execute(select(Vote.triplet_id, Annotator.name)
                         .join(Annotator, Annotator.id == Vote.annotator_id)).all()
        pending = s.scalar(select(func.count()).select_from(Assignment).where(Assignment.state == "pending"))
    assert len(rows) == total_acked and len(set(rows)) == len(rows)  # nothing lost, nothing doubled
    assert set(Counter(t for t, _ in rows).values()) == {overlap} and len({t for t, _ in rows}) == n
    assert pending == 0
    if overlap == 1:  # disjoint work, shared fairly
        assert all(len(v) > 0 for v in acked.values())


def test_an_abandoned_claim_stops_blocking_after_the_ttl(store):
    from datetime import timedelta

    from condsim_annot.models import utcnow
    from condsim_annot.queue import PENDING_TTL

    info = seed_triplets(store, 1)
    with store.transaction() as s:
        ghost = get_or_create_annotator(s, "ghost")
        s.add(Assignment(triplet_id=info["triplets"][0], annotator_id=ghost.id, state="pending",
                         updated_at=utcnow() - timedelta(minutes=5)))
    assert Queue(store, "alice", overlap=1, attention_rate=0).next() is None  # a fresh claim holds the slot
    with store.transaction() as s:
        a = s.scalars(select(Assignment).where(Assignment.annotator_id == ghost.id)).one()
        a.updated_at = utcnow() - PENDING_TTL - timedelta(minutes=1)
        s.add(a)
    assert Queue(store, "bob", overlap=1, attention_rate=0).next().triplet_id == info["triplets"][0]
