"""Calibration through the store: simulated annotators with known truth -> calibrate -> gold labels.

Runs on SQLite and PostgreSQL (the ``store`` / ``cli`` fixtures)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import func, select

from condsim_annot.calibrate.pipeline import calibrate, load_run
from condsim_annot.calibrate.tables import AnnotatorStat, PairScore
from condsim_annot.errors import CondsimError
from condsim_annot.models import CalibrationRun, Corpus, Criterion, Document, GoldLabel, Triplet
from condsim_annot.store_api import add_triplet, get_or_create_annotator, record_vote, undo_vote

GOOD = (("ann-h1", "human", 3.0), ("ann-h2", "human", 3.0), ("ann-h3", "human", 3.0), ("ann-llm", "llm", 2.0))
ADVERSARIAL = ("ann-bad", "human", -3.0)


def simulate(
    store,
    *,
    n_docs=30,
    n_anchors=6,
    per_anchor=16,
    votes_per=3,
    annotators=GOOD + (ADVERSARIAL,),
    attention_per_anchor=3,
    seed=0,
    criterion="crit",
    corpus="sim",
):
    """Documents, a criterion, triplets and votes of annotators with discrimination beta
    (negative = adversarial) under true pair scores.  Returns (truth, triplet ids)."""
    rng = np.random.default_rng(seed)
    with store.transaction() as s:
        c = Corpus(name=corpus)
        s.add(c)
        s.flush()
        docs = [
            Document(
                corpus_id=c.id,
                ext_id=f"d{i}",
                text=f"document number {i} " + "lorem " * (i % 5),
                content_hash=f"{i:064d}",
                meta={"group": f"g{i % 3}"},
            )
            for i in range(n_docs)
        ]
        s.add_all(docs)
        s.flush()
        crit = Criterion(name=criterion, description="a simulated criterion", corpus_id=c.id)
        s.add(crit)
        s.flush()
        ids = [d.id for d in docs]
        anns = [get_or_create_annotator(s, n, kind=k) for n, k, _ in annotators]
        betas = [b for *_, b in annotators]
        truth: dict[tuple[int, int], float] = {}
        trips = []
        for a in ids[:n_anchors]:
            made = 0
            while made < per_anchor + attention_per_anchor:
                x, y = (int(v) for v in rng.choice([i for i in ids if i != a], 2, replace=False))
                for d in (x, y):
                    truth.setdefault((a, d), float(rng.normal(0, 1.5)))
                att = made >= per_anchor
                gap = truth[(a, x)] - truth[(a, y)]
                if att and abs(gap) < 2.0:
                    continue  # attention checks are the obvious ones
                t, new = add_triplet(
                    s,
                    crit.id,
                    a,
                    x,
                    y,
                    method=str(rng.choice(["m-embed", "m-bm25"])),
                    strategy="audit" if made % 4 == 0 else "disagreement",
                    is_attention_check=att,
                    expected=("first" if gap > 0 else "second") if att else None,
                )
                if not new:
                    continue
                made += 1
                trips.append(t.id)
                diff = truth[(a, t.first_id)] - truth[(a, t.second_id)]
                for ai in rng.choice(len(anns), votes_per, replace=False):
                    p = 1 / (1 + np.exp(-betas[ai] * diff))
                    choice = "first" if rng.random() < p else "second"
                    conf = float(0.5 + 0.5 * abs(2 * p - 1)) if annotators[ai][1] == "llm" else None
                    record_vote(
                        s,
                        t.id,
                        anns[ai].id,
                        choice,
                        source="llm" if annotators[ai][1] == "llm" else "tui",
                        swapped=bool(rng.random() < 0.5),
                        latency_ms=float(rng.integers(800, 6000)),
                        confidence=conf,
                    )
    return truth, trips


def corpus_with_criterion(s, name: str, n_docs: int, *, description: str = "d") -> tuple[Criterion, list[int]]:
    """A corpus of ``n_docs`` tiny documents and a criterion over it (inside session ``s``)."""
    c = Corpus(name=name)
    s.add(c)
    s.flush()
    docs = [
        Document(corpus_id=c.id, ext_id=f"{name}{i}", text=f"t{i}", content_hash=f"{name}:{i}") for i in range(n_docs)
    ]
    s.add_all(docs)
    s.flush()
    crit = Criterion(name=name, description=description, corpus_id=c.id)
    s.add(crit)
    s.flush()
    return crit, [x.id for x in docs]


def truth_label(truth, t: Triplet) -> str:
    return "first" if truth[(t.anchor_id, t.first_id)] > truth[(t.anchor_id, t.second_id)] else "second"


def test_gold_labels_recover_truth_and_catch_the_adversary(store):
    truth, trips = simulate(store)
    summ = calibrate(store, "crit", tau=0.9, min_votes=2)
    with store.session() as s:
        run = s.scalars(select(CalibrationRun)).one()
        labels = {g.triplet_id: g for g in s.scalars(select(GoldLabel).where(GoldLabel.calibration_run_id == run.id))}
        tmap = {t.id: t for t in s.scalars(select(Triplet))}
        n_pairs = s.scalar(select(func.count()).select_from(PairScore).where(PairScore.calibration_run_id == run.id))
        n_stats = s.scalar(select(func.count()).select_from(AnnotatorStat))
    gold = [g for g in labels.values() if g.status == "gold"]
    correct = sum(g.label == truth_label(truth, tmap[g.triplet_id]) for g in gold)
    # majority vote over the same triplets, for comparison (the adversary drags it down)
    print(f"gold {len(gold)}/{len(trips)}, accuracy {correct / len(gold):.3f}")
    assert len(gold) >= 0.6 * len(trips)
    assert correct / len(gold) >= 0.93
    assert all(g.probability >= 0.9 and g.n_votes >= 2 for g in gold)
    assert summ["gold"]["gold"] == len(gold)
    assert n_pairs == summ["n_items"] and n_stats == 5
    betas = {a["name"]: a["beta"] for a in summ["annotators"]}
    assert betas["ann-bad"] < 0.25 * min(v for k, v in betas.items() if k != "ann-bad")
    failed = [f["name"] for f in summ["attention"]["failed"]]
    assert failed == ["ann-bad"]
    loo = {a["name"]: a["loo_agreement"] for a in summ["annotators"]}
    assert loo["ann-bad"] < 0.4 < min(v for k, v in loo.items() if k != "ann-bad")
    assert summ["alpha"]["all"]["value"] is not None and summ["alpha"]["all"]["ci"][0] <= summ["alpha"]["all"]["value"]
    assert summ["alpha"]["human"]["value"] is not None
    assert [k["judge"] for k in summ["kappa"]] == ["ann-llm"] and summ["kappa"][0]["kappa"] > 0.5


def test_vote_kinds_ties_cant_tell_skip_undo_and_best_of_k(store):
    with store.transaction() as s:
        crit, d = corpus_with_criterion(s, "k", 8)
        h1 = get_or_create_annotator(s, "h1")
        h2 = get_or_create_annotator(s, "h2")
        t1, _ = add_triplet(s, crit.id, d[0], d[1], d[2])
        t2, _ = add_triplet(s, crit.id, d[0], d[3], d[4])
        t3, _ = add_triplet(s, crit.id, d[0], d[5], d[6])
        # t1: two ties;  t2: cant_tell x2;  t3: a skip and an undone vote
        for a in (h1, h2):
            record_vote(s, t1.id, a.id, "tie", source="tui")
            record_vote(s, t2.id, a.id, "cant_tell", source="tui")
        record_vote(s, t3.id, h1.id, "skip", source="tui")
        v = record_vote(s, t3.id, h2.id, "first", source="tui")
        undo_vote(s, v.id)
        # best-of-3 answer: anchor d7 with candidates d1, d2, d3; d2 chosen -> comparisons (d2>d1), (d2>d3)
        g = "group-1"
        ta, _ = add_triplet(s, crit.id, d[7], d[1], d[2])
        tb, _ = add_triplet(s, crit.id, d[7], d[2], d[3])
        record_vote(s, ta.id, h1.id, "second", source="tui", group_id=g)
        record_vote(s, tb.id, h1.id, "first", source="tui", group_id=g)
    summ = calibrate(store, "k", alpha_bootstrap=0)
    nv = summ["n_votes"]
    assert nv["active"] == 7  # the undone vote is gone, the skip counted
    assert nv["tie"] == 2 and nv["cant_tell"] == 2 and nv["skip"] == 1
    assert nv["luce_choices"] == 1 and nv["pairwise"] == 2  # two ties; the group is one Luce choice
    assert nv["fitted"] == 4
    assert summ["tie_parameter"] > 0
    assert [r["triplet_id"] for r in summ["ill_defined"]] == [t2.id]
    st = {lo_["triplet_id"]: lo_ for lo_ in summ["labels"]}
    assert t2.id not in st and t3.id not in st  # nothing fitted there, no derived labels by default
    assert st[t1.id]["status"] != "gold" and abs(st[t1.id]["p_first"] - 0.5) < 0.02
    # the best-of-k winner d2 scores above both alternatives under anchor d7
    sc = {(p["anchor_id"], p["candidate_id"]): p["score"] for p in summ["pair_scores"]}
    assert sc[(d[7], d[2])] > sc[(d[7], d[1])] and sc[(d[7], d[2])] > sc[(d[7], d[3])]
    assert st[ta.id]["label"] == "second" and st[tb.id]["label"] == "first"
    # two comparisons under anchor d0 ({d0,d1},{d0,d2}) and d7 are separate components
    assert summ["components"]["count"] == 2


def test_adjudication_and_derived_labels(store):
    truth, trips = simulate(
        store, n_docs=12, n_anchors=2, per_anchor=10, attention_per_anchor=0, votes_per=3, annotators=GOOD, seed=3
    )
    with store.transaction() as s:
        tlist = [s.get(Triplet, t) for t in trips]
        pending, reviewed = tlist[0], tlist[1]
        pending.meta = {"needs_adjudication": True}
        s.add(pending)
        rev = get_or_create_annotator(s, "expert")
        against = "second" if truth_label(truth, reviewed) == "first" else "first"
        record_vote(s, reviewed.id, rev.id, against, source="review")
        unclear = tlist[3]
        record_vote(s, unclear.id, rev.id, "cant_tell", source="review")
    summ = calibrate(store, "crit", alpha_bootstrap=0)
    st = {lo_["triplet_id"]: lo_ for lo_ in summ["labels"]}
    assert st[pending.id]["status"] == "contested"
    assert st[reviewed.id]["status"] == "gold" and st[reviewed.id]["label"] == against  # the adjudicator decides
    assert st[unclear.id]["status"] == "uncertain" and st[unclear.id]["label"] is None
    # an unvoted triplet whose two pairs were voted elsewhere under the same anchor, in one component
    comp = {(p["anchor_id"], p["candidate_id"]): p["component"] for p in summ["pair_scores"]}
    existing = {(t.anchor_id, t.first_id, t.second_id) for t in tlist}
    best = max(
        (
            (a, x, y)
            for (a, x), cx in comp.items()
            for (b, y), cy in comp.items()
            if a == b and x < y and cx == cy and (a, x, y) not in existing
        ),
        key=lambda k: abs(truth[(k[0], k[1])] - truth[(k[0], k[2])]),
    )
    with store.transaction() as s:
        unvoted, created = add_triplet(s, tlist[0].criterion_id, *best)
        assert created
    summ1 = calibrate(store, "crit", alpha_bootstrap=0)
    assert unvoted.id not in {lo_["triplet_id"] for lo_ in summ1["labels"]}
    summ2 = calibrate(store, "crit", alpha_bootstrap=0, derive=True, tau=0.8)
    st2 = {lo_["triplet_id"]: lo_ for lo_ in summ2["labels"]}
    assert st2[unvoted.id]["status"] == "derived"
    assert st2[unvoted.id]["label"] == truth_label(truth, unvoted)
    view = load_run(store, "crit")
    assert view.run.id == summ2["run_id"] and any(g["status"] == "derived" for g in view.gold)


def test_calibrate_cli_json_has_stable_keys(cli, store):
    simulate(store, n_docs=14, n_anchors=3, per_anchor=8, attention_per_anchor=1, seed=1)
    res = cli("calibrate", "crit", "--json", "--tau", "0.85", "--min-votes", "2")
    doc = json.loads(res.stdout)
    for key in (
        "criterion",
        "criterion_version",
        "run_id",
        "params",
        "n_votes",
        "n_items",
        "components",
        "tie_parameter",
        "gold",
        "alpha",
        "kappa",
        "annotators",
        "attention",
        "cant_tell_rate",
        "ill_defined",
        "pair_scores",
        "command",
    ):
        assert key in doc, key
    assert set(doc["gold"]) == {"gold", "uncertain", "contested", "derived"}
    assert set(doc["alpha"]) == {"all", "human", "llm"} and set(doc["alpha"]["all"]) >= {"value", "ci", "n_units"}
    assert doc["pair_scores"] and set(doc["pair_scores"][0]) == {
        "anchor",
        "candidate",
        "score",
        "stderr",
        "component",
        "n_votes",
    }
    assert doc["pair_scores"][0]["anchor"].startswith("d")
    a = doc["annotators"][0]
    assert {"name", "kind", "beta", "n_votes"} <= set(a)
    assert doc["params"]["tau"] == 0.85
    assert doc["command"] == "condsim-annot calibrate crit --tau 0.85 --json"
    # the human-readable summary, and a second run is stored beside the first
    res = cli("calibrate", "crit")
    assert "gold" in res.stdout and "annotators" in res.stdout
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(CalibrationRun)) == 2
    # errors: unknown criterion, criterion without votes
    res = cli("calibrate", "nope", expect_ok=False)
    assert res.exit_code == 1 and "no criterion named 'nope'" in res.output
    cli("criteria", "add", "empty", "-d", "nothing voted")
    res = cli("calibrate", "empty", expect_ok=False)
    assert res.exit_code == 1 and "no active votes" in res.output


def test_calibration_is_deterministic(sqlite_store):
    simulate(sqlite_store, n_docs=14, n_anchors=3, per_anchor=8, attention_per_anchor=1, seed=5)
    a = calibrate(sqlite_store, "crit", bootstrap=0)
    b = calibrate(sqlite_store, "crit", bootstrap=0)
    assert [p["score"] for p in a["pair_scores"]] == [p["score"] for p in b["pair_scores"]]
    assert a["gold"] == b["gold"]
    c = calibrate(sqlite_store, "crit", bootstrap=20, seed=1, model="legacy")
    assert c["params"]["bootstrap"] == 20
    with pytest.raises(CondsimError, match="--bootstrap"):  # the triplet model integrates; it does not resample
        calibrate(sqlite_store, "crit", bootstrap=20)
    assert all(p["stderr"] > 0 for p in c["pair_scores"])


def test_an_lm_judge_asked_in_both_orders_is_one_answer(sqlite_store):
    """The LM judge votes each triplet twice (both presentation orders, supersede=False):
    that is one annotator, not two votes towards --min-votes, and a contradicting pair
    (position effect) is no answer for alpha/kappa."""
    s_ = sqlite_store
    with s_.transaction() as s:
        crit, d = corpus_with_criterion(s, "j", 4)
        judge = get_or_create_annotator(s, "judge", kind="llm")
        h = get_or_create_annotator(s, "h")
        t1, _ = add_triplet(s, crit.id, d[0], d[1], d[2])
        t2, _ = add_triplet(s, crit.id, d[0], d[1], d[3])
        for sw in (False, True):
            record_vote(s, t1.id, judge.id, "first", source="llm", swapped=sw, supersede=False, confidence=0.9)
        record_vote(s, t2.id, judge.id, "first", source="llm", swapped=False, supersede=False)
        record_vote(s, t2.id, judge.id, "second", source="llm", swapped=True, supersede=False)
        record_vote(s, t1.id, h.id, "first", source="tui")
        record_vote(s, t2.id, h.id, "second", source="tui")
    summ = calibrate(s_, "j", min_votes=3, alpha_bootstrap=0)
    st = {lo_["triplet_id"]: lo_ for lo_ in summ["labels"]}
    assert st[t1.id]["n_votes"] == 2 and st[t1.id]["status"] != "gold"  # two annotators < 3
    assert summ["kappa"][0]["n"] == 1  # only t1 has a judge answer; t2's two votes contradict
    assert summ["alpha"]["all"]["n_units"] == 1


def test_position_bias_is_measured(sqlite_store):
    """An annotator who always picks the side shown first: share 1.0, tiny p; others near 0.5."""
    simulate(sqlite_store, n_docs=14, n_anchors=3, per_anchor=10, attention_per_anchor=0, annotators=GOOD, seed=11)
    rng = np.random.default_rng(1)
    with sqlite_store.transaction() as s:
        lazy = get_or_create_annotator(s, "lazy")
        for t in s.scalars(select(Triplet)).all():
            sw = bool(rng.random() < 0.5)
            record_vote(s, t.id, lazy.id, "second" if sw else "first", source="tui", swapped=sw)
    summ = calibrate(sqlite_store, "crit", alpha_bootstrap=0)
    a = {x["name"]: x for x in summ["annotators"]}
    assert a["lazy"]["position_bias"] == 1.0 and a["lazy"]["position_bias_p"] < 1e-6
    assert all(abs(a[n]["position_bias"] - 0.5) < 0.35 for n in ("ann-h1", "ann-h2", "ann-h3"))
    assert a["lazy"]["beta"] < min(a[n]["beta"] for n in ("ann-h1", "ann-h2", "ann-h3"))


def test_plain_maximum_likelihood_without_prior(sqlite_store):
    """--prior 0 with beta off is the plain Bradley-Terry MLE (same as choix, up to a shift);
    items with only can't-tell votes stay out of it."""
    choix = pytest.importorskip("choix")

    with sqlite_store.transaction() as s:
        c = Corpus(name="ml")
        s.add(c)
        s.flush()
        docs = [Document(corpus_id=c.id, ext_id=f"m{i}", text=f"t{i}", content_hash=f"{i:064x}") for i in range(6)]
        s.add_all(docs)
        s.flush()
        crit = Criterion(name="ml", description="d", corpus_id=c.id)
        s.add(crit)
        s.flush()
        d = [x.id for x in docs]
        anns = [get_or_create_annotator(s, f"a{i}") for i in range(3)]
        # one anchor, candidates 1..3; wins (first, second): (1>2) x2, (2>1), (2>3) x2, (3>2), (1>3) x2, (3>1)
        plan = [
            (1, 2, "first", 2),
            (1, 2, "second", 1),
            (2, 3, "first", 2),
            (2, 3, "second", 1),
            (1, 3, "first", 2),
            (1, 3, "second", 1),
        ]
        for x, y, choice, k in plan:
            t, _ = add_triplet(s, crit.id, d[0], d[x], d[y])
            for i in range(k):
                # distinct annotator names, but beta is off (--beta-prior 0): one annotator in effect
                record_vote(s, t.id, anns[i if choice == "first" else 2].id, choice, source="tui")
        t_ct, _ = add_triplet(s, crit.id, d[0], d[4], d[5])
        record_vote(s, t_ct.id, anns[0].id, "cant_tell", source="tui")
    summ = calibrate(sqlite_store, "ml", prior=0, beta_prior=None, alpha_bootstrap=0, model="legacy")
    sc = {p["candidate_id"]: p["score"] for p in summ["pair_scores"]}
    assert set(sc) == {d[1], d[2], d[3]}  # the can't-tell-only pairs are not scored
    data = [(0, 1)] * 2 + [(1, 0)] + [(1, 2)] * 2 + [(2, 1)] + [(0, 2)] * 2 + [(2, 0)]
    ref = choix.opt_pairwise(3, data, alpha=1e-9)
    ours = np.array([sc[d[1]], sc[d[2]], sc[d[3]]])
    assert np.allclose(ours - ours.mean(), ref - ref.mean(), atol=1e-3)


def test_only_cant_tell_votes(sqlite_store, tmp_path):
    """A criterion nobody can judge: no fit, no gold, the triplet flagged, the report still renders."""
    from condsim_annot.exporters.report import write_report

    with sqlite_store.transaction() as s:
        c = Corpus(name="ct")
        s.add(c)
        s.flush()
        docs = [Document(corpus_id=c.id, ext_id=f"c{i}", text=f"t{i}", content_hash=f"{i:064x}") for i in range(3)]
        s.add_all(docs)
        s.flush()
        crit = Criterion(name="ct", description="d", corpus_id=c.id)
        s.add(crit)
        s.flush()
        t, _ = add_triplet(s, crit.id, docs[0].id, docs[1].id, docs[2].id)
        for n in ("h1", "h2"):
            record_vote(s, t.id, get_or_create_annotator(s, n).id, "cant_tell", source="tui")
    summ = calibrate(sqlite_store, "ct")
    assert summ["gold"]["gold"] == 0 and summ["n_items"] == 0 and summ["cant_tell_rate"] == 1.0
    assert [r["triplet_id"] for r in summ["ill_defined"]] == [t.id]
    assert write_report(sqlite_store, "ct", html=str(tmp_path / "r.html"))
    assert "the criterion itself may be ill-defined" in (tmp_path / "r.html").read_text()


def test_a_spammer_on_tie_heavy_disjoint_triplets_is_not_trusted(sqlite_store):
    """Triplets that share no pair give each triplet a free score difference; a joint fit
    could explain a random voter exactly with a huge beta.  Cross-fitted betas must not:
    the spammer ends with the smallest beta, far below the careful annotators."""
    store = sqlite_store
    rng = np.random.default_rng(3)
    with store.transaction() as s:
        crit, docs = corpus_with_criterion(s, "tie-heavy", 360, description="mostly neither candidate is similar")
        crowd = [("careful-1", 0.0), ("careful-2", 0.1), ("hasty", 0.3), ("spammer", 1.0)]
        anns = {n: get_or_create_annotator(s, n, kind="human") for n, _ in crowd}
        for k in range(120):  # disjoint triplets: documents 3k, 3k+1, 3k+2
            a, x, y = (docs[3 * k + i] for i in range(3))
            t, _ = add_triplet(s, crit.id, a, x, y, method="m", strategy="audit")
            true = "tie" if k % 5 else ("first" if k % 2 else "second")  # 80% ties
            for name, noise in crowd:
                choice = str(rng.choice(["first", "second", "tie"])) if rng.random() < noise else true
                record_vote(s, t.id, anns[name].id, choice, source="import")
    summ = calibrate(store, "tie-heavy", min_votes=2)
    beta = {a["name"]: a["beta"] for a in summ["annotators"]}
    assert min(beta, key=beta.get) == "spammer", beta
    assert beta["spammer"] < 0.5 * min(beta["careful-1"], beta["careful-2"]), beta


def test_attention_checks_most_annotators_fail_are_suspect_not_the_annotators(store):
    """Attention checks come from the methods' agreement and can be wrong under a criterion
    the methods capture badly: when most annotators fail them, nobody is flagged and the
    checks stay out of the fit."""
    simulate(store, annotators=GOOD)
    honest = calibrate(store, "crit", write=False)
    assert honest["attention"]["key_suspect"] is False
    with store.transaction() as s:
        for t in s.scalars(select(Triplet).where(Triplet.is_attention_check.is_(True))):
            t.expected = "second" if t.expected == "first" else "first"
    summ = calibrate(store, "crit")
    assert summ["attention"]["key_suspect"] is True
    assert summ["attention"]["failed"] == [] and not any(a["flagged"] for a in summ["annotators"])
    # good annotators are not down-weighted (betas are normalised to a vote-weighted mean of 1; an
    # annotator whose votes stop counting sits near 0.02)
    assert min(a["beta"] for a in summ["annotators"]) > 0.3
