"""Leaderboard: how often each proposer method and each LM judge agrees with the gold labels.

A method's answer on triplet (a; x, y) is the sign of its stored margin
s(a,x) - s(a,y) (proposers' table ``tripletmargin``, else ``Triplet.meta["margins"]``);
a judge's answer is its vote.  Accuracy with a seeded bootstrap 95% CI over the
gold triplets.  Which number is which (``labels`` in the result):

* ``accuracy``: all gold triplets.  Biased: the proposer chose most of them *because* its
  methods disagreed there, so every proposer method looks worse than it is on random triplets.
* ``audit``: the random audit slice only (strategy ``audit``, drawn uniformly from the pools):
  the unbiased estimate, with a wider CI.  (Per-triplet selection probabilities are not
  stored, so the slice is used rather than a reweighting.)

A trained adapter (``condsim-annot train``) is scored only on gold triplets it was not
trained on; ``trained`` lists each stored model's held-out report (anchors never seen in
training), which is the number to compare with the fine-tuned model.
LM judges' own votes helped make the gold labels, so their accuracy is optimistic
when they cast a large share of the votes; ``share_of_votes`` says how large, and
``vs_human`` is their accuracy against the human answer alone.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def _acc_ci(correct: list[float], *, B: int = 1000, seed: int = 0) -> dict:
    n = len(correct)
    if n == 0:
        return {"accuracy": None, "ci": [None, None], "n": 0}
    x = np.asarray(correct, dtype=float)
    rng = np.random.default_rng(seed)
    bs = x[rng.integers(0, n, (B, n))].mean(1) if n > 1 else np.array([x.mean()])
    return {"accuracy": float(x.mean()), "ci": [float(np.percentile(bs, 2.5)), float(np.percentile(bs, 97.5))], "n": n}


def leaderboard(store, criterion: str, *, bootstrap: int = 1000, seed: int = 0, run_id: int | None = None) -> dict:
    from condsim_annot.calibrate.pipeline import load_run

    from .common import method_margins

    view = load_run(store, criterion, run_id=run_id)
    gold = [g for g in view.gold if g["status"] == "gold" and g["label"] in ("first", "second")]
    by_tid = {g["triplet_id"]: g for g in gold}
    margins = method_margins(store, list(by_tid))
    for g in gold:  # fall back to margins carried in the triplet's meta
        if g["triplet_id"] not in margins:
            mm = (g["triplet_meta"] or {}).get("margins") or (g["triplet_meta"] or {}).get("method_margins")
            if isinstance(mm, dict):
                margins[g["triplet_id"]] = {k: float(v) for k, v in mm.items() if isinstance(v, (int, float))}
    trained, seen_in_training = _trained(store, view.criterion.id)
    per_method: dict[str, list[float]] = defaultdict(list)
    per_method_audit: dict[str, list[float]] = defaultdict(list)
    for tid, mm in margins.items():
        g = by_tid.get(tid)
        if g is None:
            continue
        for m, mg in mm.items():
            if tid in seen_in_training.get(m, ()):
                continue  # a trained method is not scored on its own training triplets
            ok = 0.5 if mg == 0 else float((mg > 0) == (g["label"] == "first"))
            per_method[m].append(ok)
            if g["strategy"] == "audit":
                per_method_audit[m].append(ok)
    methods = []
    for m in sorted(per_method):
        r = {"method": m, **_acc_ci(per_method[m], B=bootstrap, seed=seed)}
        r["audit"] = _acc_ci(per_method_audit.get(m, []), B=bootstrap, seed=seed)
        methods.append(r)
    methods.sort(key=lambda r: -(r["accuracy"] or 0))
    # LM judges (and, for comparison, humans) against gold
    total_votes = sum(v["choice"] in ("first", "second", "tie") for v in view.votes) or 1
    per_ann: dict[tuple[str, str], list[float]] = defaultdict(list)
    n_all: dict[tuple[str, str], int] = defaultdict(int)
    conf: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for v in view.votes:
        key = (v["annotator"], v["kind"])
        if v["choice"] in ("first", "second", "tie"):
            n_all[key] += 1
        g = by_tid.get(v["triplet_id"])
        if g is None or v["choice"] == "skip":
            continue
        ok = float(v["choice"] == g["label"])
        per_ann[key].append(ok)
        if v["confidence"] is not None:
            conf[key].append((float(v["confidence"]), ok))
    from .common import human_answers

    human = human_answers(view)
    vs_human: dict[str, list[float]] = defaultdict(list)
    for v in view.votes:
        if v["kind"] == "llm" and v["triplet_id"] in human and v["choice"] != "skip":
            vs_human[v["annotator"]].append(float(v["choice"] == human[v["triplet_id"]]))
    judges, humans = [], []
    for (name, kind), oks in sorted(per_ann.items()):
        r = {"annotator": name, "kind": kind, **_acc_ci(oks, B=bootstrap, seed=seed),
             "share_of_votes": n_all[(name, kind)] / total_votes}
        if conf[(name, kind)]:
            c = np.asarray(conf[(name, kind)])
            r["mean_confidence"] = float(c[:, 0].mean())
        if kind == "llm":
            r["vs_human"] = _acc_ci(vs_human.get(name, []), B=bootstrap, seed=seed)
        (judges if kind == "llm" else humans).append(r)
    judges.sort(key=lambda r: -(r["accuracy"] or 0))
    humans.sort(key=lambda r: -(r["accuracy"] or 0))
    return {"criterion": view.criterion.name, "calibration_run": view.run.id, "n_gold": len(gold),
            "methods": methods, "judges": judges, "humans": humans, "trained": trained, "labels": LABELS}


LABELS = {
    "accuracy": "all gold triplets (proposer-selected where methods disagree: biased against proposer methods)",
    "audit": "random audit slice only (unbiased; wider CI)",
    "trained": "held-out by anchor at training time (anchors never seen in training)",
}


def _trained(store, criterion_id: int) -> tuple[list[dict], dict[str, set]]:
    """The stored trained models' held-out reports, and the triplets the latest adapter was fitted on."""
    from sqlalchemy import select
    from sqlalchemy.exc import DBAPIError

    from condsim_annot.train.tables import TrainedModel

    try:
        with store.session() as s:
            rows = s.execute(select(TrainedModel.id, TrainedModel.kind, TrainedModel.calibration_run_id,
                                    TrainedModel.metrics, TrainedModel.train_triplets, TrainedModel.path,
                                    TrainedModel.created_at)
                             .where(TrainedModel.criterion_id == criterion_id).order_by(TrainedModel.id)).all()
    except DBAPIError:  # the training stage's migration is not applied to this store
        return [], {}
    out, seen = [], {}
    for mid, kind, run_id, metrics, tids, path, created in rows:
        m = metrics or {}
        if kind == "adapter":
            seen["adapter"] = set(tids or [])
        out.append({"model_id": mid, "kind": kind, "calibration_run": run_id, "path": path, "created_at": str(created),
                    "plan": m.get("plan"), "n_held_out": m.get("n_held_out"),
                    "methods": [{"method": r["method"], "all": r["all"], "audit": r["audit"]}
                                for r in m.get("methods", [])]})
    return out, seen
