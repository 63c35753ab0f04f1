"""The labeling TUI, driven by Textual's Pilot: vote, undo, skip, rationale, help, best-of-k,
review, resume; layout snapshots at 80x24 and 160x48."""

from __future__ import annotations

import pytest
from helpers import TUI_TEXTS as TEXTS
from helpers import seed_triplets, votes_of

from condsim_annot.models import Triplet
from condsim_annot.store_api import get_or_create_annotator, record_vote
from condsim_annot.tui.app import AnnotateApp, format_summary, make_queue
from condsim_annot.tui.screens import BestOfKScreen, HelpScreen, PairwiseScreen, RationaleScreen, ReviewScreen


def _app(store, **kw) -> AnnotateApp:
    kw.setdefault("attention_rate", 0.0)
    kw.setdefault("seed", 1)
    return AnnotateApp(make_queue(store, kw.pop("annotator", "alice"), **kw))


def _shown(app):
    return app.screen.item


async def test_vote_keys_store_canonical_choices(store):
    seed_triplets(store, 8, texts=TEXTS)
    app = _app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, PairwiseScreen)
        presses = ["a", "b", "left", "right", "1", "2", "t", "c"]
        shown = []
        for key in presses:
            item = _shown(app)
            shown.append(item)
            await pilot.press(key)
            assert _shown(app) is not item  # the next triplet is on screen only after the vote was committed
        assert _shown(app) is None  # all eight answered: the "nothing left" screen
        assert app.screen.query_one("#empty").display
    rows = {v.triplet_id: v for v in votes_of(store)}
    expect = {"a": "A", "left": "A", "1": "A", "b": "B", "right": "B", "2": "B", "t": "tie", "c": "cant_tell"}
    with store.session() as s:
        for key, item in zip(presses, shown, strict=False):
            v = rows[item.triplet_id]
            t = s.get(Triplet, item.triplet_id)
            if expect[key] in ("A", "B"):
                doc = item.a if expect[key] == "A" else item.b
                assert (t.first_id if v.choice == "first" else t.second_id) == doc.id
            else:
                assert v.choice == expect[key]
            assert v.swapped == item.swapped and v.latency_ms > 0


async def test_undo_skip_rationale_and_help(sqlite_store):
    store = sqlite_store
    seed_triplets(store, 5, texts=TEXTS)
    app = _app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        first = _shown(app)
        await pilot.press("a")
        second = _shown(app)
        await pilot.press("u")  # undo: the first triplet again, same A/B order
        assert _shown(app).triplet_id == first.triplet_id and _shown(app).swapped == first.swapped
        # pressed "a": the flash names the answer that was undone
        assert "undone: was A" in str(app.screen.query_one("#stats").render()) and _shown(app).previous == "A"
        await pilot.press("n")
        assert isinstance(app.screen, RationaleScreen)
        await pilot.press(*"same parity argument")  # typed into the box, not taken as votes
        await pilot.press("enter")
        assert isinstance(app.screen, PairwiseScreen)
        assert "note kept" in str(app.screen.query_one("#stats").render())
        await pilot.press("b")
        assert _shown(app).triplet_id == second.triplet_id
        await pilot.press("s")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, PairwiseScreen)
        await pilot.press("q")
    summary = app.return_value
    assert summary["undos"] == 1 and summary["skips"] == 1 and summary["answers"] == 2 and summary["rationales"] == 1
    assert "undone 1" in format_summary(summary)
    rows = votes_of(store, state=None)
    assert [(v.triplet_id, v.state) for v in rows] == [(first.triplet_id, "undone"), (first.triplet_id, "active"),
                                                         (second.triplet_id, "active")]
    assert rows[1].rationale == "same parity argument" and rows[2].choice == "skip"


async def test_empty_queue_says_why_and_how_to_add_votes(sqlite_store):
    store = sqlite_store
    info = seed_triplets(store, 3, texts=TEXTS)
    with store.transaction() as s:  # two others already voted every triplet but the last
        for name in ("bob", "carol"):
            ann = get_or_create_annotator(s, name)
            for tid in info["triplets"][:2]:
                record_vote(s, tid, ann.id, "first", source="tui")
    app = _app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("a")
        assert _shown(app) is None
        await app.workers.wait_for_complete()
        await pilot.pause()
        text = str(app.screen.query_one("#empty").render())
        assert "Nothing left" in text and "You answered 1 of the 3 triplets" in text
        assert "the other 2 already have 2 annotators each (--overlap 2)" in text and "--overlap 3" in text
        await pilot.press("q")


async def test_resume_after_quit_shows_the_same_screen(sqlite_store):
    store = sqlite_store
    seed_triplets(store, 4, texts=TEXTS)
    app = _app(store, seed=5)
    async with app.run_test() as pilot:
        await pilot.pause()
        await pilot.press("a")
        on_screen = _shown(app)
        await pilot.press("q")
    app.queue.close()
    app2 = _app(store, seed=77)
    async with app2.run_test() as pilot:
        await pilot.pause()
        again = _shown(app2)
        assert again.triplet_id == on_screen.triplet_id and again.swapped == on_screen.swapped and again.resumed
        assert " 1/4 " in str(app2.screen.query_one("#stats").render())
        await pilot.press("q")


async def test_best_of_k_grid(sqlite_store):
    store = sqlite_store
    seed_triplets(store, 3, n_docs=12, texts=TEXTS)
    app = _app(store, k=4)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, BestOfKScreen)
        grid = _shown(app)
        assert len(grid.candidates) == 4
        await pilot.press("3")
        await pilot.press("u")
        assert [d.id for d in _shown(app).candidates] == [d.id for d in grid.candidates]
        assert _shown(app).previous == "3" and "undone: was 3" in str(app.screen.query_one("#stats").render())
        await pilot.press("2")
    rows = votes_of(store)
    assert len(rows) == 3 and len({v.group_id for v in rows}) == 1
    with store.session() as s:
        for v in rows:
            t = s.get(Triplet, v.triplet_id)
            assert (t.first_id if v.choice == "first" else t.second_id) == grid.candidates[1].id


def _disagreements(store):
    info = seed_triplets(store, 3, texts=TEXTS)
    t = info["triplets"]
    with store.transaction() as s:
        al, bo = get_or_create_annotator(s, "alice"), get_or_create_annotator(s, "bob")
        judge = get_or_create_annotator(s, "judge-gpt", kind="llm", model="gpt")
        record_vote(s, t[0], al.id, "first", source="tui", rationale="both by induction")
        record_vote(s, t[0], bo.id, "second", source="tui", rationale="B is pigeonhole like the anchor")
        record_vote(s, t[0], judge.id, "second", source="llm", confidence=0.8, supersede=False)
    return t


async def test_review_records_an_adjudication(store):
    t = _disagreements(store)
    app = _app(store, annotator="carol", review=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, ReviewScreen)
        item = _shown(app)
        assert item.triplet_id == t[0]
        votes = str(app.screen.query_one("#votes-text").render())
        assert "both by induction" in votes and "judge-gpt" in votes
        await pilot.press("n", *"anchor is pigeonhole", "enter", "b")
        assert _shown(app) is None
    rv = votes_of(store, "carol")
    assert len(rv) == 1 and rv[0].source == "review" and rv[0].rationale == "anchor is pigeonhole"
    assert rv[0].choice == ("first" if item.swapped else "second")


def test_cli_help_has_an_example(cli):
    res = cli("tui", "--help")
    assert "Example" in res.output and "--annotator" in res.output and "--review" in res.output


def test_cli_reports_an_unknown_criterion(cli):
    cli("criteria", "add", "x", "-d", "y")
    res = cli("tui", "--annotator", "a", "--criterion", "nope", expect_ok=False)
    assert res.exit_code == 1 and "no criterion named 'nope'" in res.output


# --------------------------------------------------------------------------- snapshots


async def _settle(pilot):
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_snapshot_pairwise(sqlite_store, snap_compare, size):
    seed_triplets(sqlite_store, 6, texts=TEXTS)
    assert snap_compare(_app(sqlite_store), terminal_size=size, run_before=_settle)


def test_snapshot_pairwise_light_theme(sqlite_store, snap_compare):
    seed_triplets(sqlite_store, 6, texts=TEXTS)
    app = _app(sqlite_store)
    app.theme = "textual-light"
    assert snap_compare(app, terminal_size=(80, 24), run_before=_settle)


def test_snapshot_help(sqlite_store, snap_compare):
    seed_triplets(sqlite_store, 6, texts=TEXTS)
    assert snap_compare(_app(sqlite_store), press=["question_mark"], terminal_size=(80, 24), run_before=_settle)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_snapshot_best_of_k(sqlite_store, snap_compare, size):
    seed_triplets(sqlite_store, 3, n_docs=12, texts=TEXTS)
    assert snap_compare(_app(sqlite_store, k=4), terminal_size=size, run_before=_settle)


def test_snapshot_review(sqlite_store, snap_compare):
    _disagreements(sqlite_store)
    assert snap_compare(_app(sqlite_store, annotator="carol", review=True), terminal_size=(80, 24), run_before=_settle)


def test_snapshot_nothing_left(sqlite_store, snap_compare):
    info = seed_triplets(sqlite_store, 2, texts=TEXTS)
    with sqlite_store.transaction() as s:
        for name in ("bob", "carol", "dave"):
            ann = get_or_create_annotator(s, name)
            for tid in info["triplets"]:
                record_vote(s, tid, ann.id, "first", source="tui")
    assert snap_compare(_app(sqlite_store), terminal_size=(80, 24), run_before=_settle)


async def test_long_documents_scroll_with_the_keyboard(sqlite_store):
    long = "\n\n".join(f"Paragraph {i}: " + "induction on the length of the sequence " * 6 for i in range(30))
    seed_triplets(sqlite_store, 2, texts=[long])
    app = _app(sqlite_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        box = app.screen.query_one("#cand-a")
        for _ in range(3):  # tab moves between the anchor and the candidates
            if app.focused is box:
                break
            await pilot.press("tab")
        assert app.focused is box and box.virtual_size.height > box.size.height
        await pilot.press("down", "down", "pagedown")
        assert box.scroll_y > 0
        item = _shown(app)
        await pilot.press("right")  # the arrows still vote while a box is focused
        assert _shown(app) is not item and box.scroll_y == 0


def test_summary_of_a_session_with_no_answers_left_has_no_pace():
    s = {"annotator": "kim", "mode": "pairwise", "criteria": ["c"], "answers": 0, "duration_s": 12.0,
         "votes_per_min": 0.0, "median_latency_ms": 4200.0, "skips": 0, "undos": 1, "ties": 0, "cant_tell": 0,
         "rationales": 0, "done_total": 0, "session": "abcdef0123"}
    text = format_summary(s)
    assert "0 answers in 0.2 min\n" in text and "median" not in text and "undone 1" in text
    s.update(answers=3, votes_per_min=15.0, median_latency_ms=2100.0)
    assert "3 answers in 0.2 min (15.0/min, median 2.1s per answer)" in format_summary(s)
