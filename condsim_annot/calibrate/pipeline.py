"""Calibration through the store: active votes -> arrays -> fit -> run, pair scores, gold labels.

This module only moves data: :mod:`.load` reads a criterion's votes (and the proposer methods'
scores, the features of the prior), :mod:`.fit_triplet` hands them to :class:`.model.TripletModel`
(default; ``model="legacy"``: :mod:`.legacy`, today's cross-fitted Bradley-Terry), :mod:`.labels`
turns probabilities into gold/contested/uncertain/derived, :mod:`.stats` measures annotators and
agreement, :mod:`.reliability` measures calibration (each held-out vote predicted from the rest)
and :func:`_save` writes the run.  :func:`calibrate` is the entry point (CLI ``calibrate``, the demo);
:func:`.runs.load_run` reads a stored run back.

For ``propose`` and other readers of a run: ``PairScore.score`` / ``stderr`` are each pair's
posterior mean and sd on the run's one global scale (new model; legacy: per component),
``AnnotatorStat.beta`` the discriminations, ``summary["tie_parameter"]`` Davidson's nu (and
``summary["model"]["tie_mass"]`` the prior probability of a true tie);
:func:`.davidson.triplet_vote_probabilities` turns them into P(first), P(second), P(tie).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from sqlalchemy import insert, select
from sqlmodel import col

from ..criteria import get_criterion
from ..db import Store
from ..errors import CondsimError
from ..models import CalibrationRun, Criterion, Document, GoldLabel, utcnow
from .fit_triplet import TripletFit, fit_triplet_model
from .labels import label_triplets, reference_answers, triplet_probabilities
from .legacy import Fit, fit
from .load import (  # noqa: F401
    ATTENTION_FAIL_BELOW,
    FITTED,
    ILL_DEFINED_SHARE,
    KEY_ANNOTATOR,
    Comparisons,
    load_comparisons,
    load_features,
)
from .reliability import clopper_pearson_lower, reliability, threshold_for_accuracy
from .runs import RunView, derived_triplets, latest_run, load_run  # noqa: F401  (re-exported)
from .stats import _annotator_stats, _cohen_kappa, _consensus, krippendorff_alpha, per_coder
from .tables import AnnotatorStat, PairScore

MODELS = ("triplet", "legacy")
AnyFit = Fit | TripletFit


def _check(tau: float, min_votes: int, model: str, target_accuracy: float | None, bootstrap: int = 0) -> None:
    if not 0.5 <= tau <= 1.0:
        raise CondsimError(f"--tau must be in [0.5, 1], not {tau}")
    if min_votes < 0:
        raise CondsimError(f"--min-votes must be >= 0, not {min_votes}")
    if model not in MODELS:
        raise CondsimError(f"--model must be one of {', '.join(MODELS)}, not {model!r}")
    if bootstrap and model == "triplet":
        raise CondsimError(
            "--bootstrap refits the legacy model (--model legacy); the triplet model integrates each "
            "triplet's probability exactly and needs no resampling"
        )
    if target_accuracy is not None and not 0.5 < target_accuracy < 1.0:
        raise CondsimError(f"--target-accuracy must be in (0.5, 1), not {target_accuracy}")


def _fit(
    data: Comparisons,
    feats: np.ndarray,
    methods: list[str],
    *,
    model: str,
    prior: float | None,
    beta_prior: float | None,
    bootstrap: int,
    seed: int,
) -> AnyFit:
    if model == "legacy":
        return fit(
            data, prior_scale=2.0 if prior is None else prior, beta_prior=beta_prior, bootstrap=bootstrap, seed=seed
        )
    if not len(data.winners) and not data.choice_sets:  # nothing comparable: every pair at its prior
        return fit(data, prior_scale=2.0 if prior is None else prior, beta_prior=beta_prior, seed=seed)
    return fit_triplet_model(data, feats, methods, prior_scale=prior, beta_prior=beta_prior, seed=seed)


def _threshold(
    data: Comparisons, probs: dict[int, tuple[float, float]], *, tau: float, min_votes: int, target: float | None
) -> float:
    """``tau``, or with ``target`` the smallest threshold whose voted labels reach that expected accuracy."""
    if target is None:
        return tau
    voters: dict[int, set[int]] = {}
    for v in data.votes:
        if v["choice"] in FITTED:
            voters.setdefault(v["triplet_id"], set()).add(v["ann"])
    conf = [max(p) for t, p in probs.items() if len(voters.get(t, ())) >= max(min_votes, 1)]
    return max(0.5, threshold_for_accuracy(conf, target))


def _annotators(data: Comparisons, fitres: AnyFit, labels: list[dict]) -> tuple[list[dict], list[dict], float]:
    """Per-annotator statistics with beta, the attention-check failures and the median beta."""
    gold_of = {g["triplet_id"]: g["label"] for g in labels if g["status"] == "gold"}
    astats = _annotator_stats(data, gold_of)
    for a in astats:
        a["beta"] = float(fitres.beta[a["index"]]) if len(fitres.beta) > a["index"] else 1.0
    betas = [a["beta"] for a in astats if a["n_fitted"]]
    med_beta = float(np.median(betas)) if betas else 1.0
    failed = []
    for a in astats:
        acc = a["attention_accuracy"]
        a["flagged"] = bool(
            not data.key_suspect and acc is not None and a["attention_n"] >= 2 and acc < ATTENTION_FAIL_BELOW
        )
        if a["flagged"]:
            failed.append(
                {
                    "name": a["name"],
                    "attention_accuracy": acc,
                    "attention_n": a["attention_n"],
                    "beta": a["beta"],
                    "beta_vs_median": a["beta"] / med_beta if med_beta else None,
                }
            )
    return astats, failed, med_beta


def _agreement(data: Comparisons, *, alpha_bootstrap: int, seed: int) -> tuple[dict, list[dict]]:
    """Krippendorff's alpha (all, humans, LM judges) and each LM judge's kappa against the human consensus."""
    kinds = {i: a["kind"] for i, a in enumerate(data.annotators)}
    alpha = {
        "all": krippendorff_alpha(data.votes, bootstrap=alpha_bootstrap, seed=seed),
        "human": krippendorff_alpha(
            data.votes, lambda v: kinds[v["ann"]] == "human", bootstrap=alpha_bootstrap, seed=seed
        ),
        "llm": krippendorff_alpha(data.votes, lambda v: kinds[v["ann"]] == "llm", bootstrap=alpha_bootstrap, seed=seed),
    }
    answers = per_coder(data.votes)
    human_answers: dict[int, list[str]] = {}
    for (an, t), c in answers.items():
        if kinds[an] == "human":
            human_answers.setdefault(t, []).append(c)
    human_cons = {t: _consensus(cs) for t, cs in human_answers.items()}
    kappa = []
    for ai, a in enumerate(data.annotators):
        if a["kind"] != "llm":
            continue
        pairs = [(str(human_cons[t]), c) for (an, t), c in sorted(answers.items()) if an == ai and human_cons.get(t)]
        kappa.append(
            {"judge": a["name"], "kappa": _cohen_kappa([x for x, _ in pairs], [y for _, y in pairs]), "n": len(pairs)}
        )
    return alpha, kappa


def _calibration(data: Comparisons, fitres: AnyFit, probs: dict[int, tuple[float, float]], labels: list[dict]) -> dict:
    """Cross-validated reliability (each held-out vote predicted from the rest; the attention key left
    out) and the accuracy of the model's labels on triplets with a reference answer."""
    out: dict[str, Any] = {"votes": None, "gold_accuracy": None}
    if isinstance(fitres, TripletFit):
        keep = fitres.vote_ann != (-1 if data.key_index is None else data.key_index)
        loo = fitres.model.loo_[keep]
        outcome = fitres.vote_outcome[keep]
        out["votes"] = dict(
            reliability(loo[:, 0], outcome == 0),
            event="vote = first",
            method="each vote predicted from all the others (leave-one-vote-out)",
        )
    ref = reference_answers(data)
    gold = {g["triplet_id"] for g in labels if g["status"] == "gold"}
    conf = [(t, p[0] - p[1]) for t, p in probs.items() if t in ref and t in gold]
    k = sum(("first" if p >= 0 else "second") == ref[t] for t, p in conf)
    out["gold_accuracy"] = {
        "expected": float(np.mean([g["probability"] for g in labels if g["status"] == "gold"])) if gold else None,
        "reference_n": len(conf),
        "reference_correct": int(k),
        "lower_95": clopper_pearson_lower(int(k), len(conf)),
        "reference": "attention checks (obvious by construction) and adjudications; both also entered the fit, "
        "so the bound is optimistic",
    }
    return out


def _annotator_params(data: Comparisons, fitres: TripletFit) -> list[dict]:
    """What ``propose --rank gold`` needs to predict each annotator's next answers (the attention key left out)."""
    m = fitres.model
    n = np.bincount(fitres.vote_ann, minlength=len(m.beta_)) if len(fitres.vote_ann) else np.zeros(len(m.beta_))
    return [
        {
            "annotator_id": a["id"],
            "n_fitted": int(n[k]),
            "beta": float(m.beta_[k]),
            "nu": float(m.nu_annotator_[k]),
            "tie_answer": float(m.tie_answer_[k]),
            "lapse": float(m.lapse_[k]),
            "lapse_tie": float(m.lapse_tie_[k]),
        }
        for k, a in enumerate(data.annotators)
        if k < len(m.beta_) and k != data.key_index and a.get("id") is not None
    ]


def _model_block(fitres: AnyFit, data: Comparisons | None = None) -> dict:
    if not isinstance(fitres, TripletFit):
        return {"name": "legacy", "global_scale": False}
    m = fitres.model
    return {
        "tie_prior": {
            "intercept": float(m.tie_coef_[0]),
            "slope": float(m.tie_coef_[1]),
            "meaning": "logit P(true tie) = intercept + slope |w . (phi_x - phi_y)| (slope 0: one mass for all)",
        },
        "annotators": _annotator_params(data, fitres) if data is not None else [],
        "name": "triplet",
        "global_scale": True,
        "prior_scale": float(m.tau_),
        "prior_scale_log_sd": m.tau_sd_,
        "tie_mass": float(m.tie_mass_),
        "position_bias": "measured per annotator (share of votes for the side shown first, binomial p), not modelled",
        "feature_weights": [
            {"method": name, "w": float(w), "sd": float(sd)}
            for name, w, sd in zip(fitres.methods, m.w_, m.w_sd_, strict=False)
        ],
        "feature_weights_meaning": "what each proposer method's standardised score is worth under this "
        "criterion, learnt from the votes (logit units of the average annotator)",
        "fit_seconds": float(m.fit_time_),
    }


def _ill_defined(data: Comparisons) -> list[dict]:
    by_trip: dict[int, list[dict]] = {}
    for v in data.votes:
        by_trip.setdefault(v["triplet_id"], []).append(v)
    ill = []
    for t, vs in by_trip.items():
        ct = sum(v["choice"] == "cant_tell" for v in vs)
        judged = sum(v["choice"] != "skip" for v in vs)
        if ct >= 2 and judged and ct / judged >= ILL_DEFINED_SHARE:
            tri = data.triplets[t]
            ill.append(
                {
                    "triplet_id": t,
                    "cant_tell": ct,
                    "votes": judged,
                    "anchor_id": tri["anchor"],
                    "first_id": tri["first"],
                    "second_id": tri["second"],
                }
            )
    return sorted(ill, key=lambda r: (-r["cant_tell"], r["triplet_id"]))


def _voted_items(data: Comparisons) -> tuple[set[int], np.ndarray]:
    """Items that took part in the fit, and each item's number of real (non-key) comparisons."""
    voted = set(data.winners.tolist()) | set(data.losers.tolist()) | {i for _, o, _ in data.choice_sets for i in o}
    real = data.ann != (-1 if data.key_index is None else data.key_index)
    luce = np.asarray([i for _, o, _ in data.choice_sets for i in o], dtype=np.int64)
    counts = (
        np.bincount(np.concatenate([data.winners[real], data.losers[real], luce]), minlength=data.n_items)
        if data.n_items
        else np.zeros(0, dtype=np.int64)
    )
    return voted, counts


def _n_votes(data: Comparisons) -> dict[str, int]:
    n_key = 0 if data.key_index is None else int((data.ann == data.key_index).sum())
    return {
        "active": len(data.votes),
        "fitted": int(sum(v["choice"] in FITTED for v in data.votes)),
        "pairwise": int(len(data.winners) - n_key),
        "luce_choices": len(data.choice_sets),
        "tie": int(sum(v["choice"] == "tie" for v in data.votes)),
        "cant_tell": int(sum(v["choice"] == "cant_tell" for v in data.votes)),
        "skip": int(sum(v["choice"] == "skip" for v in data.votes)),
    }


ANNOTATOR_KEYS = (
    "name",
    "kind",
    "beta",
    "n_votes",
    "n_fitted",
    "n_cant_tell",
    "n_skip",
    "attention_n",
    "attention_accuracy",
    "loo_agreement",
    "gold_agreement",
    "position_bias",
    "position_bias_p",
    "median_latency_ms",
    "flagged",
)


def _summary(
    crit: Criterion,
    data: Comparisons,
    fitres: AnyFit,
    labels: list[dict],
    astats: list[dict],
    failed: list[dict],
    med_beta: float,
    params: dict,
    command: str | None,
    agreement: tuple[dict, list[dict]],
    calibration: dict,
) -> dict[str, Any]:
    voted, _ = _voted_items(data)
    comp_sizes = Counter(int(fitres.components[i]) for i in voted)
    gold_counts = Counter(g["status"] for g in labels)
    n_ct = sum(v["choice"] == "cant_tell" for v in data.votes)
    n_judged = sum(v["choice"] != "skip" for v in data.votes)
    return {
        "criterion": crit.name,
        "criterion_version": crit.version,
        "run_id": None,
        "command": command,
        "params": params,
        "n_votes": _n_votes(data),
        "n_items": len(voted),
        "n_triplets": len(data.triplets),
        "components": {
            "count": len(comp_sizes),
            "largest": max(comp_sizes.values()) if comp_sizes else 0,
            "sizes": sorted(comp_sizes.values(), reverse=True)[:20],
        },
        "tie_parameter": float(fitres.nu),
        "model": _model_block(fitres, data),
        "calibration": calibration,
        "gold": {k: int(gold_counts.get(k, 0)) for k in ("gold", "uncertain", "contested", "derived")},
        "alpha": agreement[0],
        "kappa": agreement[1],
        "annotators": [{k: a[k] for k in ANNOTATOR_KEYS} for a in astats],
        "attention": {
            "failed": failed,
            "threshold": ATTENTION_FAIL_BELOW,
            "median_beta": med_beta,
            "key_suspect": data.key_suspect,
        },
        "cant_tell_rate": (n_ct / n_judged) if n_judged else 0.0,
        "ill_defined": _ill_defined(data),
    }


def _pair_rows(data: Comparisons, fitres: AnyFit) -> list[dict]:
    """Pair scores to store: the voted pairs (legacy: only those), and with the new model every stored pair
    (an unvoted pair's score is its feature prior, on the same scale)."""
    voted, counts = _voted_items(data)
    items = range(data.n_items) if isinstance(fitres, TripletFit) else sorted(voted)
    return [
        {
            "item": i,
            "anchor_id": data.items[i][0],
            "candidate_id": data.items[i][1],
            "score": float(fitres.scores[i]),
            "stderr": float(fitres.stderr[i]),
            "component": int(fitres.components[i]),
            "n_votes": int(counts[i]),
        }
        for i in items
    ]


def _save(
    store: Store,
    crit: Criterion,
    summary: dict,
    params: dict,
    data: Comparisons,
    pair_rows: list[dict],
    astats: list[dict],
    labels: list[dict],
) -> None:
    """One transaction: the run, its pair scores, annotator statistics and labels."""
    with store.transaction() as s:
        run = CalibrationRun(criterion_id=crit.id, params=params, summary=None, n_votes=len(data.votes))
        s.add(run)
        s.flush()
        summary["run_id"] = run.id
        run.summary = dict(summary)
        s.add(run)
        now = utcnow()
        if pair_rows:
            s.execute(
                insert(PairScore),
                [
                    {
                        "calibration_run_id": run.id,
                        "criterion_id": crit.id,
                        "anchor_id": r["anchor_id"],
                        "candidate_id": r["candidate_id"],
                        "score": r["score"],
                        "stderr": r["stderr"],
                        "component": r["component"],
                        "n_votes": r["n_votes"],
                        "created_at": now,
                    }
                    for r in pair_rows
                ],
            )
        stat_keys = (
            "beta",
            "n_votes",
            "n_fitted",
            "n_cant_tell",
            "n_skip",
            "attention_n",
            "attention_correct",
            "loo_agreement",
            "gold_agreement",
            "position_bias",
            "median_latency_ms",
        )
        if astats:
            s.execute(
                insert(AnnotatorStat),
                [
                    dict(
                        {k: a[k] for k in stat_keys},
                        calibration_run_id=run.id,
                        annotator_id=a["annotator_id"],
                        created_at=now,
                    )
                    for a in astats
                ],
            )
        if labels:
            s.execute(
                insert(GoldLabel),
                [
                    {
                        "calibration_run_id": run.id,
                        "criterion_id": crit.id,
                        "triplet_id": g["triplet_id"],
                        "label": g["label"],
                        "probability": g["probability"],
                        "n_votes": g["n_votes"],
                        "status": g["status"],
                        "created_at": now,
                    }
                    for g in labels
                ],
            )


def calibrate(
    store: Store,
    criterion: str,
    *,
    tau: float = 0.9,
    min_votes: int = 2,
    prior: float | None = None,
    beta_prior: float | None = 1.0,
    bootstrap: int = 0,
    derive: bool = False,
    seed: int = 0,
    alpha_bootstrap: int = 200,
    command: str | None = None,
    write: bool = True,
    model: str = "triplet",
    target_accuracy: float | None = None,
) -> dict:
    """Fit one criterion, store the run (pair scores, annotator stats, gold labels), return its summary.

    ``model``: "triplet" (:class:`.model.TripletModel`, default) or "legacy"; ``prior``: the sd of the
    pair scores around their prior (None: empirical Bayes; legacy: 2); ``target_accuracy``: choose the
    gold threshold so that the gold labels' expected accuracy reaches it (overrides ``tau``).
    The summary's keys are stable (``calibrate --json`` prints it); ``pair_scores`` and ``labels`` are
    in the returned dict, not in ``CalibrationRun.summary``."""
    _check(tau, min_votes, model, target_accuracy, bootstrap)
    with store.session() as s:
        crit = get_criterion(s, criterion)
        data = load_comparisons(s, crit)
        feats, methods = load_features(s, data) if model == "triplet" else (np.zeros((data.n_items, 0)), [])
    if not data.votes:
        raise CondsimError(
            f"criterion {criterion!r} has no active votes yet: collect some (tui, argilla, llm judge) "
            "or `votes import FILE.csv`"
        )
    fitres = _fit(data, feats, methods, model=model, prior=prior, beta_prior=beta_prior, bootstrap=bootstrap, seed=seed)
    probs = triplet_probabilities(data, fitres)
    tau_used = _threshold(data, probs, tau=tau, min_votes=min_votes, target=target_accuracy)
    labels = label_triplets(data, probs, fitres, tau=tau_used, min_votes=min_votes, derive=derive)
    astats, failed, med_beta = _annotators(data, fitres, labels)
    params = {
        "tau": tau_used,
        "tau_requested": tau,
        "target_accuracy": target_accuracy,
        "min_votes": min_votes,
        "prior": prior,
        "beta_prior": beta_prior,
        "bootstrap": bootstrap,
        "derive": derive,
        "seed": seed,
        "engine": fitres.engine,
        "model": model,
    }
    summary = _summary(
        crit,
        data,
        fitres,
        labels,
        astats,
        failed,
        med_beta,
        params,
        command,
        _agreement(data, alpha_bootstrap=alpha_bootstrap, seed=seed),
        _calibration(data, fitres, probs, labels),
    )
    pair_rows = _pair_rows(data, fitres)
    if write:
        _save(store, crit, summary, params, data, pair_rows, astats, labels)
    summary["pair_scores"] = _with_ext_ids(store, pair_rows)
    summary["labels"] = labels
    return summary


def _with_ext_ids(store: Store, pair_rows: list[dict]) -> list[dict]:
    """The pair rows of the summary, with the documents' external ids."""
    with store.session() as s:
        ids = list({r["anchor_id"] for r in pair_rows} | {r["candidate_id"] for r in pair_rows}) or [-1]
        docs = dict(s.execute(select(col(Document.id), col(Document.ext_id)).where(col(Document.id).in_(ids))).all())
    return [
        dict(
            {k: r[k] for k in ("anchor_id", "candidate_id", "score", "stderr", "component", "n_votes")},
            anchor=docs.get(r["anchor_id"]),
            candidate=docs.get(r["candidate_id"]),
        )
        for r in pair_rows
    ]
