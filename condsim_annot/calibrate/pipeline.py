"""Calibration through the store: active votes -> arrays -> fit -> run, pair scores, gold labels.

The maths lives in :mod:`.bt` (Bradley-Terry/Davidson with per-annotator
discrimination, Luce choices for best-of-k answers) and :mod:`.agreement`; this
module only moves data between the store and those array functions:

* votes that enter the fit: ``first`` / ``second`` / ``tie`` (Davidson ties);
  ``cant_tell`` is counted (ill-defined triplets are flagged) but not fitted;
  ``skip`` is ignored.  Undone and superseded votes never count.
* the k-1 comparisons of one best-of-k answer (same ``Vote.group_id``, same
  annotator, same anchor, one common winner) enter as one Luce choice.
* attention checks with a known answer add that answer as a fixed "key" annotator,
  so an annotator who contradicts the key loses discrimination beta (and the
  summary names them).
* a triplet is *gold* when P(s(a,x) > s(a,y)) >= tau with >= min_votes fitted votes
  and no pending adjudication; an active review vote (source ``review``) resolves an
  adjudication and decides the label.  Otherwise *contested* (votes split or an
  adjudication pending) or *uncertain*.  With ``derive`` the stored triplets nobody
  voted on get labels from the scores, status ``derived``.

:func:`calibrate` is the entry point (CLI ``calibrate``, the demo); :func:`load_run`
reads a stored run back for exports, reports and the leaderboard.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from sqlalchemy import insert, select

from ..db import Store
from ..errors import CondsimError
from ..models import Annotator, CalibrationRun, Criterion, Document, GoldLabel, Triplet, Vote, utcnow
from .tables import AnnotatorStat, PairScore

KEY_ANNOTATOR = "__attention_key__"
KEY_BETA = 4.0
ATTENTION_KEY_REPEATS = 3
ATTENTION_FAIL_BELOW = 0.8
ILL_DEFINED_SHARE = 0.5
DECISIVE = ("first", "second")
FITTED = ("first", "second", "tie")


# --------------------------------------------------------------------------- loading


@dataclass
class Comparisons:
    """One criterion's active votes as arrays over pair items {anchor, candidate}."""

    criterion_id: int
    criterion: str
    criterion_version: int
    items: list[tuple[int, int]] = field(default_factory=list)  # item -> (anchor_id, candidate_id)
    item_of: dict[tuple[int, int], int] = field(default_factory=dict)  # (min, max) doc ids -> item
    triplets: dict[int, dict] = field(default_factory=dict)
    annotators: list[dict] = field(default_factory=list)  # index -> {id, name, kind}
    # pairwise comparisons (winner, loser, tie flag, annotator index, triplet id)
    winners: Any = None
    losers: Any = None
    ties: Any = None
    ann: Any = None
    trip: Any = None
    # Luce choices: (chosen item, tuple of all items offered, annotator index)
    choice_sets: list[tuple[int, tuple[int, ...], int]] = field(default_factory=list)
    choice_trips: list[list[int]] = field(default_factory=list)
    votes: list[dict] = field(default_factory=list)  # every active vote, for statistics
    key_index: Optional[int] = None  # annotator index of the attention key, if any
    key_suspect: bool = False  # most annotators fail the attention checks: the key was left out

    @property
    def n_items(self) -> int:
        return len(self.items)

    def item(self, anchor: int, cand: int) -> int:
        k = (min(anchor, cand), max(anchor, cand))
        i = self.item_of.get(k)
        if i is None:
            i = self.item_of[k] = len(self.items)
            self.items.append((anchor, cand))
        return i


def get_criterion(session, name: str) -> Criterion:
    c = session.scalars(select(Criterion).where(Criterion.name == name)).first()
    if c is None:
        names = session.scalars(select(Criterion.name).order_by(Criterion.name)).all()
        raise CondsimError(f"no criterion named {name!r}" + (f" (known: {', '.join(names)})" if names else " (add one with `condsim-annot criteria add`)"))
    return c


def load_comparisons(session, criterion: Criterion, *, attention_key: bool = True) -> Comparisons:
    data = Comparisons(criterion.id, criterion.name, criterion.version)
    trows = session.execute(
        select(Triplet.id, Triplet.anchor_id, Triplet.first_id, Triplet.second_id, Triplet.method, Triplet.strategy,
               Triplet.is_attention_check, Triplet.expected, Triplet.meta)
        .where(Triplet.criterion_id == criterion.id).order_by(Triplet.id)
    ).all()
    for tid, a, f, sec, method, strategy, att, exp, meta in trows:
        data.triplets[tid] = {
            "id": tid, "anchor": a, "first": f, "second": sec, "method": method, "strategy": strategy,
            "attention": bool(att), "expected": exp, "meta": meta or {},
            "i_first": data.item(a, f), "i_second": data.item(a, sec),
        }
    vrows = session.execute(
        select(Vote.id, Vote.triplet_id, Vote.annotator_id, Vote.choice, Vote.swapped, Vote.latency_ms, Vote.confidence,
               Vote.source, Vote.group_id, Vote.created_at, Annotator.name, Annotator.kind)
        .join(Triplet, Triplet.id == Vote.triplet_id).join(Annotator, Annotator.id == Vote.annotator_id)
        .where(Triplet.criterion_id == criterion.id, Vote.state == "active").order_by(Vote.id)
    ).all()
    ann_idx: dict[int, int] = {}
    for vid, tid, aid, choice, swapped, lat, conf, source, gid, created, aname, akind in vrows:
        if aid not in ann_idx:
            ann_idx[aid] = len(data.annotators)
            data.annotators.append({"id": aid, "name": aname, "kind": akind})
        data.votes.append({"id": vid, "triplet_id": tid, "ann": ann_idx[aid], "choice": choice, "swapped": bool(swapped),
                           "latency_ms": lat, "confidence": conf, "source": source, "group_id": gid, "created_at": created})
    # best-of-k groups -> Luce choices when they are one consistent answer
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for v in data.votes:
        if v["group_id"] and v["choice"] in DECISIVE:
            groups[(v["group_id"], v["ann"])].append(v)
    in_luce: set[int] = set()
    for (gid, a), vs in groups.items():
        if len(vs) < 2:
            continue
        anchors = {data.triplets[v["triplet_id"]]["anchor"] for v in vs}
        winners, offered = set(), set()
        for v in vs:
            t = data.triplets[v["triplet_id"]]
            w, l = (t["i_first"], t["i_second"]) if v["choice"] == "first" else (t["i_second"], t["i_first"])
            winners.add(w)
            offered.update((w, l))
        if len(anchors) != 1 or len(winners) != 1 or len(offered) != len(vs) + 1:
            continue  # a ranking or an inconsistent group: keep its votes as plain comparisons
        chosen = next(iter(winners))
        data.choice_sets.append((chosen, tuple(sorted(offered)), a))
        data.choice_trips.append([v["triplet_id"] for v in vs])
        in_luce.update(v["id"] for v in vs)
    W, L, T, A, TR = [], [], [], [], []
    for v in data.votes:
        if v["choice"] not in FITTED or v["id"] in in_luce:
            continue
        t = data.triplets[v["triplet_id"]]
        if v["choice"] == "second":
            W.append(t["i_second"]); L.append(t["i_first"])
        else:
            W.append(t["i_first"]); L.append(t["i_second"])
        T.append(v["choice"] == "tie"); A.append(v["ann"]); TR.append(t["id"])
    data.key_suspect = attention_key and attention_key_suspect(data)
    if attention_key and not data.key_suspect:
        keyed = [t for t in data.triplets.values() if t["attention"] and t["expected"] in DECISIVE]
        if keyed:
            data.key_index = len(data.annotators)
            data.annotators.append({"id": None, "name": KEY_ANNOTATOR, "kind": "key"})
            for t in keyed:
                w, l = (t["i_first"], t["i_second"]) if t["expected"] == "first" else (t["i_second"], t["i_first"])
                for _ in range(ATTENTION_KEY_REPEATS):
                    W.append(w); L.append(l); T.append(False); A.append(data.key_index); TR.append(t["id"])
    data.winners = np.asarray(W, dtype=np.int64)
    data.losers = np.asarray(L, dtype=np.int64)
    data.ties = np.asarray(T, dtype=bool)
    data.ann = np.asarray(A, dtype=np.int64)
    data.trip = np.asarray(TR, dtype=np.int64)
    return data


# --------------------------------------------------------------------------- fitting (adapter)


@dataclass
class Fit:
    scores: np.ndarray
    stderr: np.ndarray
    beta: np.ndarray
    nu: float
    components: np.ndarray
    cov: Optional[np.ndarray] = None  # full posterior covariance of the scores when small enough
    samples: Optional[np.ndarray] = None  # bootstrap score samples (B, n_items)
    engine: str = "bt"

    def prob_greater(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """P(s_i > s_j) under the fit's uncertainty (bootstrap if present, else Laplace)."""
        from scipy.stats import norm

        i = np.asarray(i, dtype=np.int64)
        j = np.asarray(j, dtype=np.int64)
        d = self.scores[i] - self.scores[j]
        if self.samples is not None and len(self.samples) > 1:
            var = np.var(self.samples[:, i] - self.samples[:, j], axis=0, ddof=1)
        elif self.cov is not None:
            var = self.cov[i, i] + self.cov[j, j] - 2 * self.cov[i, j]
        else:
            var = self.stderr[i] ** 2 + self.stderr[j] ** 2
        sd = np.sqrt(np.maximum(var, 1e-12))
        return norm.cdf(d / sd)


def _bt_kwargs(data: Comparisons, *, prior_scale: Optional[float], beta_prior: Optional[float]) -> dict:
    fixed = None
    if data.key_index is not None:
        fixed = np.full(len(data.annotators), np.nan)
        fixed[data.key_index] = KEY_BETA  # the answer key is trusted, not learned
    return dict(ties=data.ties, annotators=data.ann, n_items=data.n_items, n_annotators=max(len(data.annotators), 1),
                choice_sets=[(c, list(o), a) for c, o, a in data.choice_sets] or None,
                prior_scale=prior_scale if prior_scale and prior_scale > 0 else None,
                beta_prior=beta_prior if beta_prior and beta_prior > 0 else None, fixed_beta=fixed)


def _fit_bt(data: Comparisons, *, prior_scale: Optional[float], beta_prior: Optional[float]):
    """The store's fit: annotator betas cross-fitted (:func:`crossfit_betas`), then scores and ties."""
    from . import bt

    kw = _bt_kwargs(data, prior_scale=prior_scale, beta_prior=beta_prior)
    betas = crossfit_betas(data, kw) if kw["beta_prior"] else None
    if betas is not None:
        kw = dict(kw, fixed_beta=betas, beta_prior=None)  # pinned: the final fit learns scores and nu only
    return bt.bradley_terry(data.winners, data.losers, **kw)


def _real_annotators(data: Comparisons) -> list[int]:
    """Annotator indexes that cast fitted votes (not the attention key)."""
    used = set(np.unique(data.ann).tolist()) | {a for _, _, a in data.choice_sets}
    return sorted(a for a in used if a != data.key_index)


def crossfit_betas(data: Comparisons, kw: dict) -> Optional[np.ndarray]:
    """Each annotator's beta, measured against the scores the *other* annotators' votes imply.

    Why not fit beta jointly with the scores?  Real triplets rarely share pairs, so each
    triplet has nearly a free score difference of its own; a joint fit can then make any
    annotator an "oracle" (tiny differences, huge beta) that explains even random votes
    exactly, at the others' small expense — on tie-heavy data a pure spammer came out as
    the most reliable annotator.  Cross-fitting removes that: for annotator j the scores
    are fitted without j's votes (every beta 1, the attention key pinned), and beta_j is
    the one-dimensional MAP of j's votes (pairwise, ties, best-of-k) given those scores,
    with the same log-normal prior.  An annotator nobody overlaps with gets the prior
    (beta 1).  Returns the full beta vector (None with fewer than two annotators).
    """
    from scipy.optimize import minimize_scalar

    from . import bt

    real = _real_annotators(data)
    if len(real) < 2:
        return None
    prior = float(kw["beta_prior"])
    A = max(len(data.annotators), 1)
    base_fixed = np.ones(A)
    if data.key_index is not None:
        base_fixed[data.key_index] = KEY_BETA
    betas = base_fixed.copy()
    for j in real:
        keep = data.ann != j
        sets = [(c, list(o), a) for c, o, a in data.choice_sets if a != j]
        others = bt.bradley_terry(
            data.winners[keep], data.losers[keep], ties=data.ties[keep], annotators=data.ann[keep], n_items=data.n_items,
            # always with a prior: the others alone may have no finite maximum-likelihood fit
            n_annotators=A, choice_sets=sets or None, prior_scale=kw["prior_scale"] or 2.0, beta_prior=None,
            fixed_beta=base_fixed, compute_stderr=False)
        s, nu = others.scores, float(others.nu)
        mine = ~keep
        tie = data.ties[mine]
        if nu <= 0 and tie.any():
            nu = 0.5  # the others never tied: j's ties still need a tie parameter
        mine_kw = dict(ties=tie if tie.any() else None, annotators=np.zeros(int(mine.sum()), dtype=np.int64), nu=nu,
                       choice_sets=[(c, list(o), 0) for c, o, a in data.choice_sets if a == j] or None)

        def neg_log_post(lb: float) -> float:
            ll, _ = bt.log_posterior(data.winners[mine], data.losers[mine], s, beta=np.array([np.exp(lb)]), **mine_kw)
            return -ll + 0.5 * (lb / prior) ** 2

        res = minimize_scalar(neg_log_post, bounds=(-8.0, 5.0), method="bounded", options={"xatol": 1e-4})
        betas[j] = float(np.exp(res.x))
    return betas


def fit(data: Comparisons, *, prior_scale: Optional[float] = 2.0, beta_prior: Optional[float] = 1.0, bootstrap: int = 0,
        seed: int = 0) -> Fit:
    """Fit one criterion's comparisons with :func:`.bt.bradley_terry`; ``bootstrap`` > 1 adds
    refits over resampled votes (:func:`.bt.bootstrap`)."""
    members = [i for _, o, _ in data.choice_sets for i in o]
    used = np.unique(np.concatenate([data.winners, data.losers, np.asarray(members, dtype=np.int64)]))
    if len(used) == 0:  # nothing comparable (e.g. only can't-tell votes): everything at its prior
        sd0 = float(prior_scale) if prior_scale and prior_scale > 0 else 1e6
        n = data.n_items
        return Fit(scores=np.zeros(n), stderr=np.full(n, sd0), beta=np.ones(max(len(data.annotators), 1)), nu=0.0,
                   components=np.arange(n, dtype=np.int64), cov=np.eye(n) * sd0 ** 2 if n <= 4000 else None, engine="none")
    if len(used) < data.n_items:
        # items nobody compared (triplets with only can't-tell/skip votes, or none) stay out of
        # the fit: their posterior is the prior (or, with the prior off, unknown)
        return _expand(fit(_compact(data, used), prior_scale=prior_scale, beta_prior=beta_prior, bootstrap=bootstrap,
                           seed=seed), used, data.n_items, prior_scale)
    try:
        res = _fit_bt(data, prior_scale=prior_scale, beta_prior=beta_prior)
    except np.linalg.LinAlgError:
        if prior_scale:
            raise
        raise CondsimError("the plain maximum-likelihood fit (--prior 0) has no finite solution for these votes "
                           "(some pair wins or loses all its comparisons): use a prior, e.g. --prior 2") from None
    if not (np.all(np.isfinite(res.scores)) and np.all(np.isfinite(res.stderr))):
        raise CondsimError("the fit did not converge to finite scores" + (": use a prior, e.g. --prior 2" if not prior_scale else ""))
    out = Fit(scores=np.asarray(res.scores, dtype=float), stderr=np.asarray(res.stderr, dtype=float),
              beta=np.asarray(res.beta, dtype=float), nu=float(res.nu), components=np.asarray(res.components),
              cov=res.cov, engine="bt")
    if bootstrap and bootstrap > 1:
        out.samples = _bootstrap(data, out, bootstrap, seed=seed, prior_scale=prior_scale, beta_prior=beta_prior)
        out.stderr = out.samples.std(axis=0, ddof=1)
    return out


def _compact(data: Comparisons, used: np.ndarray) -> Comparisons:
    remap = np.full(data.n_items, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    items = [data.items[i] for i in used.tolist()]
    return Comparisons(data.criterion_id, data.criterion, data.criterion_version, items=items,
                       item_of={(min(a, c), max(a, c)): k for k, (a, c) in enumerate(items)}, triplets={},
                       annotators=data.annotators, winners=remap[data.winners], losers=remap[data.losers], ties=data.ties,
                       ann=data.ann, trip=data.trip,
                       choice_sets=[(int(remap[c]), tuple(int(remap[i]) for i in o), a) for c, o, a in data.choice_sets],
                       key_index=data.key_index)


def _expand(f: Fit, used: np.ndarray, n: int, prior_scale: Optional[float]) -> Fit:
    """A fit on the compared items, extended to all items (the others at their prior)."""
    sd0 = float(prior_scale) if prior_scale and prior_scale > 0 else 1e6
    scores = np.zeros(n)
    scores[used] = f.scores
    stderr = np.full(n, sd0)
    stderr[used] = f.stderr
    comps = np.empty(n, dtype=np.int64)
    comps[used] = f.components
    unused = np.setdiff1d(np.arange(n), used)
    comps[unused] = (f.components.max() + 1 if len(f.components) else 0) + np.arange(len(unused))
    cov = None
    if f.cov is not None:
        cov = np.zeros((n, n))
        cov[np.ix_(used, used)] = f.cov
        cov[unused, unused] = sd0 ** 2
    samples = None
    if f.samples is not None:
        samples = np.zeros((len(f.samples), n))
        samples[:, used] = f.samples
    return Fit(scores=scores, stderr=stderr, beta=f.beta, nu=f.nu, components=comps, cov=cov, samples=samples, engine=f.engine)


def _bootstrap(data: Comparisons, base: Fit, B: int, *, seed: int, prior_scale: Optional[float],
               beta_prior: Optional[float]) -> np.ndarray:
    """Scores refitted on votes resampled with replacement (seeded): :func:`.bt.bootstrap`."""
    from . import bt

    kw = _bt_kwargs(data, prior_scale=prior_scale, beta_prior=beta_prior)
    return bt.bootstrap(data.winners, data.losers, n_boot=B, seed=seed, **kw).samples


# --------------------------------------------------------------------------- statistics


def _consensus(choices: list[str]) -> Optional[str]:
    c = Counter(x for x in choices if x in FITTED)
    if not c:
        return None
    (top, n), *rest = c.most_common()
    if rest and rest[0][1] == n:
        return None
    return top


def per_coder(votes: list[dict]) -> dict[tuple[int, int], str]:
    """One answer per (annotator, triplet): an LM judge asked in both presentation orders
    leaves two votes; they count as one answer when they agree and as none when they
    contradict each other (a position effect, not a preference)."""
    acc: dict[tuple[int, int], list[str]] = defaultdict(list)
    for v in votes:
        if v["choice"] in FITTED:
            acc[(v["ann"], v["triplet_id"])].append(v["choice"])
    out = {}
    for k, cs in acc.items():
        c = _consensus(cs)
        if c is not None:
            out[k] = c
    return out


def krippendorff_alpha(votes: list[dict], ann_filter=None, *, bootstrap: int = 200, seed: int = 0) -> dict:
    """Nominal alpha over triplets (canonical first/second/tie), with a bootstrap CI over triplets."""
    code = {"first": 0.0, "second": 1.0, "tie": 2.0}
    answers = per_coder([v for v in votes if ann_filter is None or ann_filter(v)])
    anns = sorted({a for a, _ in answers})
    trips = sorted({t for _, t in answers})
    out = {"value": None, "ci": [None, None], "n_units": 0, "n_annotators": len(anns)}
    if len(anns) < 2 or not trips:
        return out
    ai = {a: i for i, a in enumerate(anns)}
    ti = {t: i for i, t in enumerate(trips)}
    X = np.full((len(anns), len(trips)), np.nan)
    for (a, t), c in answers.items():
        X[ai[a], ti[t]] = code[c]
    try:
        from .agreement import krippendorff_alpha as _alpha

        r = _alpha(X, level="nominal", bootstrap=bootstrap if X.shape[1] >= 5 else 0, seed=seed)
        val, lo, hi, n_units = r.alpha, r.low, r.high, r.n_units
    except ImportError:  # pragma: no cover - agreement module absent
        import krippendorff

        P = X[:, (~np.isnan(X)).sum(0) >= 2]
        n_units = P.shape[1]
        vals = P[~np.isnan(P)]
        val = float("nan") if n_units == 0 else (1.0 if len(np.unique(vals)) < 2 else
                                                 float(krippendorff.alpha(reliability_data=P, level_of_measurement="nominal")))
        lo = hi = float("nan")

    def clean(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    out.update({"value": clean(val), "ci": [clean(lo), clean(hi)], "n_units": int(n_units)})
    return out


def _cohen_kappa(x: list[str], y: list[str]) -> Optional[float]:
    if len(x) < 2:
        return None
    from .agreement import cohen_kappa

    k = float(cohen_kappa(x, y))
    return None if math.isnan(k) else k


def _annotator_stats(data: Comparisons, gold_of: dict[int, str]) -> list[dict]:
    by_trip: dict[int, list[dict]] = defaultdict(list)
    for v in data.votes:
        by_trip[v["triplet_id"]].append(v)
    by_ann: dict[int, list[dict]] = defaultdict(list)
    for v in data.votes:
        by_ann[v["ann"]].append(v)
    stats = []
    for ai, a in enumerate(data.annotators):
        if ai == data.key_index:
            continue
        mine = by_ann.get(ai, [])
        fitted = [v for v in mine if v["choice"] in FITTED]
        decisive = [v for v in mine if v["choice"] in DECISIVE]
        att = [v for v in mine if _is_attention_answer(data, v)]
        att_ok = sum(v["choice"] == data.triplets[v["triplet_id"]]["expected"] for v in att)
        loo_n = loo_ok = 0
        for v in fitted:
            others = [o["choice"] for o in by_trip[v["triplet_id"]] if o["ann"] != ai]
            c = _consensus(others)
            if c is not None:
                loo_n += 1
                loo_ok += c == v["choice"]
        g_n = g_ok = 0
        for v in decisive:
            g = gold_of.get(v["triplet_id"])
            if g:
                g_n += 1
                g_ok += g == v["choice"]
        shown_a = sum((v["choice"] == "first") != v["swapped"] for v in decisive)
        pb_p = None
        if decisive:
            from .agreement import position_bias

            pb_p = float(position_bias([(v["choice"] == "first") != v["swapped"] for v in decisive]).p_value[0])
        lat = [v["latency_ms"] for v in mine if v["latency_ms"] is not None]
        stats.append({
            "name": a["name"], "kind": a["kind"], "annotator_id": a["id"], "index": ai,
            "n_votes": len(mine), "n_fitted": len(fitted),
            "n_cant_tell": sum(v["choice"] == "cant_tell" for v in mine), "n_skip": sum(v["choice"] == "skip" for v in mine),
            "attention_n": len(att), "attention_correct": att_ok,
            "attention_accuracy": (att_ok / len(att)) if att else None,
            "loo_agreement": (loo_ok / loo_n) if loo_n else None,
            "gold_agreement": (g_ok / g_n) if g_n else None,
            "position_bias": (shown_a / len(decisive)) if decisive else None,
            "position_bias_p": pb_p,
            "median_latency_ms": float(statistics.median(lat)) if lat else None,
        })
    return stats


# --------------------------------------------------------------------------- the run


def triplet_prob_first(data: Comparisons, fitres: Fit, tids: list[int]) -> np.ndarray:
    """P(s(a, first) > s(a, second)) for each triplet, under the fit and its uncertainty.

    A plain Laplace (Gaussian) posterior is badly skewed for the typical triplet with a
    few unanimous votes: the likelihood is flat on the winning side, so the curvature
    at the mode says almost nothing about the sign.  So the triplet's own votes enter
    exactly: the Gaussian posterior of d = s_first - s_second with those votes'
    curvature removed (the "cavity", i.e. everything else the fit knows) times their
    exact Davidson likelihood, integrated on a grid.  With bootstrap samples the
    bootstrap distribution is used instead.
    """
    i1 = np.array([data.triplets[t]["i_first"] for t in tids], dtype=np.int64)
    i2 = np.array([data.triplets[t]["i_second"] for t in tids], dtype=np.int64)
    if fitres.samples is not None and len(fitres.samples) > 1:
        return fitres.prob_greater(i1, i2)
    m_all = fitres.scores[i1] - fitres.scores[i2]
    if fitres.cov is not None:
        v_all = fitres.cov[i1, i1] + fitres.cov[i2, i2] - 2 * fitres.cov[i1, i2]
    else:
        v_all = fitres.stderr[i1] ** 2 + fitres.stderr[i2] ** 2
    v_all = np.maximum(v_all, 1e-9)
    from scipy.stats import norm

    nu = max(float(fitres.nu), 0.0)
    lnu = math.log(nu) if nu > 0 else -50.0
    pos = {t: n for n, t in enumerate(tids)}
    ks = np.asarray([k for k, t in enumerate(data.trip.tolist()) if t in pos], dtype=np.int64)
    out = norm.cdf(m_all / np.sqrt(v_all))  # triplets without votes of their own: the Gaussian posterior
    if len(ks) == 0:
        return out
    kt = np.asarray([pos[t] for t in data.trip[ks].tolist()], dtype=np.int64)
    order = np.argsort(kt, kind="stable")
    ks, kt = ks[order], kt[order]
    b = fitres.beta[data.ann[ks]]
    sign = np.where(data.winners[ks] == i1[kt], 1.0, -1.0)  # +1: the vote favours first
    tie = data.ties[ks]

    def parts(h):
        logZ = np.logaddexp(h, -h)
        if nu > 0:
            logZ = np.logaddexp(logZ, lnu)
        return logZ, np.exp(h - logZ), np.exp(-h - logZ)

    # slope and curvature of each triplet's own votes at the Laplace mode m
    h0 = b * sign * m_all[kt] / 2
    _, pA, pB = parts(h0)
    half = b * sign / 2
    g = np.bincount(kt, half * (np.where(tie, 0.0, 1.0) - (pA - pB)), minlength=len(tids))
    c = np.bincount(kt, (b / 2) ** 2 * (pA + pB - (pA - pB) ** 2), minlength=len(tids))
    lam = 1.0 / v_all
    lam_c = np.maximum(np.maximum(lam - c, 0.05 * lam), 1e-6)
    mu_c = m_all - g / lam_c
    sd_c = 1.0 / np.sqrt(lam_c)
    lo = np.minimum(mu_c, m_all) - 8 * sd_c
    hi = np.maximum(mu_c, m_all) + 8 * sd_c
    G = 801
    u = np.linspace(0.0, 1.0, G)
    has = np.unique(kt)
    starts = np.searchsorted(kt, has)
    ends = np.append(starts[1:], len(kt))
    block = max(1, 4_000_000 // G)  # comparisons per block (memory bound)
    i = 0
    while i < len(has):
        j = i
        while j < len(has) and ends[j] - starts[i] <= block or j == i:
            j += 1
        rows = has[i:j]
        sl = slice(starts[i], ends[j - 1])
        grid = lo[rows, None] + (hi[rows] - lo[rows])[:, None] * u[None, :]  # (R, G)
        local = np.searchsorted(rows, kt[sl])
        h = (b[sl] * sign[sl])[:, None] * grid[local] / 2
        logZ, _, _ = parts(h)
        ll = np.where(tie[sl][:, None], lnu - logZ, h - logZ)
        LL = np.add.reduceat(ll, starts[i:j] - starts[i], axis=0)
        lw = -0.5 * ((grid - mu_c[rows, None]) / sd_c[rows, None]) ** 2 + LL
        w = np.exp(lw - lw.max(axis=1, keepdims=True))
        out[rows] = (w * (grid > 0)).sum(1) / w.sum(1)
        i = j
    return out


def _label_triplets(data: Comparisons, fitres: Fit, *, tau: float, min_votes: int, derive: bool) -> list[dict]:
    by_trip: dict[int, list[dict]] = defaultdict(list)
    for v in data.votes:
        by_trip[v["triplet_id"]].append(v)
    tids = list(data.triplets)
    if not tids:
        return []
    p_first = triplet_prob_first(data, fitres, tids)
    out = []
    for t, p in zip(tids, p_first):
        tri = data.triplets[t]
        vs = by_trip.get(t, [])
        fitted = [v for v in vs if v["choice"] in FITTED and v["source"] != "review"]
        reviews = [v for v in vs if v["source"] == "review" and v["choice"] in FITTED]
        n_fit = len({v["ann"] for v in fitted} | {v["ann"] for v in reviews})  # distinct annotators
        p = float(p)
        label = "first" if p >= 0.5 else "second"
        prob = max(p, 1 - p)
        pending = bool(tri["meta"].get("needs_adjudication") or tri["meta"].get("adjudication") == "pending")
        mine: dict[int, list[str]] = defaultdict(list)
        for v in fitted:
            mine[v["ann"]].append(v["choice"])
        cnt = Counter(_consensus(cs) for cs in mine.values())
        split = cnt["first"] > 0 and cnt["second"] > 0
        adjudicated = [v for v in vs if v["source"] == "review" and v["choice"] != "skip"]
        if adjudicated:  # the latest adjudication decides
            r = adjudicated[-1]["choice"]
            if r in DECISIVE:
                label, status = r, "gold"
                prob = p if r == "first" else 1 - p
            else:  # adjudicated as a tie or as "can't tell": resolved, but no preference to export
                label, status = None, "uncertain"
        elif n_fit == 0:
            if not derive or prob < tau or fitres.components[tri["i_first"]] != fitres.components[tri["i_second"]]:
                continue
            status = "derived"
        elif pending:
            status = "contested"
        elif prob >= tau and n_fit >= min_votes:
            status = "gold"
        elif split:
            status = "contested"
        else:
            status = "uncertain"
        out.append({"triplet_id": t, "label": label,
                    "probability": float(prob), "n_votes": n_fit, "status": status, "p_first": p})
    return out


def _is_attention_answer(data: Comparisons, v: dict) -> bool:
    """The vote answers an attention check with a known answer (skips do not count)."""
    t = data.triplets[v["triplet_id"]]
    return bool(t["attention"] and t["expected"] in DECISIVE and v["choice"] != "skip")


def attention_key_suspect(data: Comparisons) -> bool:
    """True when most annotators fail the attention checks: then the checks are suspect, not them.

    Attention checks are triplets every proposer method found obvious; under a criterion
    the methods capture badly (e.g. proof technique vs embeddings) their "expected"
    answers can be wrong.  When the median annotator (among those with two or more
    checks, at least two of them) scores below the threshold, the checks are left out
    of the fit and nobody is flagged; the report says so."""
    per: dict[int, list[bool]] = defaultdict(list)
    for v in data.votes:
        if _is_attention_answer(data, v):
            per[v["ann"]].append(v["choice"] == data.triplets[v["triplet_id"]]["expected"])
    accs = [sum(x) / len(x) for x in per.values() if len(x) >= 2]
    return len(accs) >= 2 and statistics.median(accs) < ATTENTION_FAIL_BELOW


def calibrate(store: Store, criterion: str, *, tau: float = 0.9, min_votes: int = 2, prior: float = 2.0,
              beta_prior: Optional[float] = 1.0, bootstrap: int = 0, derive: bool = False, seed: int = 0,
              alpha_bootstrap: int = 200, command: Optional[str] = None, write: bool = True) -> dict:
    """Fit one criterion, store the run (pair scores, annotator stats, gold labels), return its summary.

    The summary's keys are stable (``calibrate --json`` prints it); ``pair_scores``
    is included in the returned dict but not in ``CalibrationRun.summary`` (it lives
    in the ``pairscore`` table)."""
    if not 0.5 <= tau <= 1.0:
        raise CondsimError(f"--tau must be in [0.5, 1], not {tau}")
    if min_votes < 0:
        raise CondsimError(f"--min-votes must be >= 0, not {min_votes}")
    with store.session() as s:
        crit = get_criterion(s, criterion)
        data = load_comparisons(s, crit)
    if not data.votes:
        raise CondsimError(f"criterion {criterion!r} has no active votes yet: collect some (tui, argilla, llm judge) or `votes import FILE.csv`")
    key_suspect = data.key_suspect  # then the checks' expected answers, not the annotators, are wrong
    fitres = fit(data, prior_scale=prior, beta_prior=beta_prior, bootstrap=bootstrap, seed=seed)
    labels = _label_triplets(data, fitres, tau=tau, min_votes=min_votes, derive=derive)
    gold_of = {g["triplet_id"]: g["label"] for g in labels if g["status"] == "gold"}
    astats = _annotator_stats(data, gold_of)
    for a in astats:
        a["beta"] = float(fitres.beta[a["index"]]) if len(fitres.beta) > a["index"] else 1.0
    betas = [a["beta"] for a in astats if a["n_fitted"]]
    med_beta = float(np.median(betas)) if betas else 1.0
    failed = []
    for a in astats:
        acc = a["attention_accuracy"]
        a["flagged"] = bool(not key_suspect and acc is not None and a["attention_n"] >= 2 and acc < ATTENTION_FAIL_BELOW)
        if a["flagged"]:
            failed.append({"name": a["name"], "attention_accuracy": acc, "attention_n": a["attention_n"], "beta": a["beta"],
                           "beta_vs_median": a["beta"] / med_beta if med_beta else None})
    # agreement
    kinds = {i: a["kind"] for i, a in enumerate(data.annotators)}
    real = [v for v in data.votes]
    alpha = {
        "all": krippendorff_alpha(real, bootstrap=alpha_bootstrap, seed=seed),
        "human": krippendorff_alpha(real, lambda v: kinds[v["ann"]] == "human", bootstrap=alpha_bootstrap, seed=seed),
        "llm": krippendorff_alpha(real, lambda v: kinds[v["ann"]] == "llm", bootstrap=alpha_bootstrap, seed=seed),
    }
    kappa = []
    by_trip: dict[int, list[dict]] = defaultdict(list)
    for v in data.votes:
        by_trip[v["triplet_id"]].append(v)
    answers = per_coder(data.votes)
    human_answers: dict[int, list[str]] = defaultdict(list)
    for (an, t), c in answers.items():
        if kinds[an] == "human":
            human_answers[t].append(c)
    human_cons = {t: _consensus(cs) for t, cs in human_answers.items()}
    for ai, a in enumerate(data.annotators):
        if a["kind"] != "llm":
            continue
        xs, ys = [], []
        for (an, t), c in sorted(answers.items()):
            if an == ai and human_cons.get(t):
                xs.append(human_cons[t]); ys.append(c)
        kappa.append({"judge": a["name"], "kappa": _cohen_kappa(xs, ys), "n": len(xs)})
    # ill-defined triplets and criterion
    ill = []
    for t, vs in by_trip.items():
        ct = sum(v["choice"] == "cant_tell" for v in vs)
        judged = sum(v["choice"] != "skip" for v in vs)
        if ct >= 2 and judged and ct / judged >= ILL_DEFINED_SHARE:
            ill.append({"triplet_id": t, "cant_tell": ct, "votes": judged})
    n_ct = sum(v["choice"] == "cant_tell" for v in data.votes)
    n_judged = sum(v["choice"] != "skip" for v in data.votes)
    comps = fitres.components
    voted_items = set(data.winners.tolist()) | set(data.losers.tolist()) | {i for _, o, _ in data.choice_sets for i in o}
    comp_sizes = Counter(int(comps[i]) for i in voted_items)
    gold_counts = Counter(g["status"] for g in labels)
    real_cmp = data.ann != (-1 if data.key_index is None else data.key_index)  # the attention key is not a vote
    item_votes = np.bincount(np.concatenate([data.winners[real_cmp], data.losers[real_cmp],
                                             np.asarray([i for _, o, _ in data.choice_sets for i in o], dtype=np.int64)]),
                             minlength=data.n_items) if data.n_items else np.zeros(0)
    params = {"tau": tau, "min_votes": min_votes, "prior": prior, "beta_prior": beta_prior, "bootstrap": bootstrap,
              "derive": derive, "seed": seed, "engine": fitres.engine}
    summary: dict[str, Any] = {
        "criterion": crit.name,
        "criterion_version": crit.version,
        "run_id": None,
        "command": command,
        "params": params,
        "n_votes": {
            "active": len(data.votes),
            "fitted": int(sum(v["choice"] in FITTED for v in data.votes)),
            "pairwise": int(len(data.winners) - (0 if data.key_index is None else int((data.ann == data.key_index).sum()))),
            "luce_choices": len(data.choice_sets),
            "tie": int(sum(v["choice"] == "tie" for v in data.votes)),
            "cant_tell": n_ct,
            "skip": int(sum(v["choice"] == "skip" for v in data.votes)),
        },
        "n_items": len(voted_items),
        "n_triplets": len(data.triplets),
        "components": {"count": len(comp_sizes), "largest": max(comp_sizes.values()) if comp_sizes else 0,
                       "sizes": sorted(comp_sizes.values(), reverse=True)[:20]},
        "tie_parameter": float(fitres.nu),
        "gold": {k: int(gold_counts.get(k, 0)) for k in ("gold", "uncertain", "contested", "derived")},
        "alpha": alpha,
        "kappa": kappa,
        "annotators": [{k: a[k] for k in ("name", "kind", "beta", "n_votes", "n_fitted", "n_cant_tell", "n_skip", "attention_n",
                                          "attention_accuracy", "loo_agreement", "gold_agreement", "position_bias",
                                          "position_bias_p", "median_latency_ms", "flagged")} for a in astats],
        "attention": {"failed": failed, "threshold": ATTENTION_FAIL_BELOW, "median_beta": med_beta,
                      "key_suspect": key_suspect},
        "cant_tell_rate": (n_ct / n_judged) if n_judged else 0.0,
        "ill_defined": sorted(ill, key=lambda r: (-r["cant_tell"], r["triplet_id"])),
    }
    # pair scores: only items that took part in the fit (others sit at the prior)
    pair_rows = []
    for i in sorted(voted_items):
        anc, cand = data.items[i]
        pair_rows.append({"item": i, "anchor_id": anc, "candidate_id": cand, "score": float(fitres.scores[i]),
                          "stderr": float(fitres.stderr[i]), "component": int(comps[i]), "n_votes": int(item_votes[i])})
    with store.session() as s:
        docs = {d: e for d, e in s.execute(select(Document.id, Document.ext_id).where(Document.id.in_(
            list({r["anchor_id"] for r in pair_rows} | {r["candidate_id"] for r in pair_rows}) or [-1]))).all()}
    for ill_row in summary["ill_defined"]:
        t = data.triplets[ill_row["triplet_id"]]
        ill_row.update({"anchor_id": t["anchor"], "first_id": t["first"], "second_id": t["second"]})
    if write:
        with store.transaction() as s:
            run = CalibrationRun(criterion_id=crit.id, params=params, summary=None, n_votes=len(data.votes))
            s.add(run)
            s.flush()
            summary["run_id"] = run.id
            run.summary = dict(summary)
            s.add(run)
            now = utcnow()
            if pair_rows:
                s.execute(insert(PairScore), [
                    {"calibration_run_id": run.id, "criterion_id": crit.id, "anchor_id": r["anchor_id"], "candidate_id": r["candidate_id"],
                     "score": r["score"], "stderr": r["stderr"], "component": r["component"], "n_votes": r["n_votes"], "created_at": now}
                    for r in pair_rows])
            if astats:
                s.execute(insert(AnnotatorStat), [
                    {"calibration_run_id": run.id, "annotator_id": a["annotator_id"], "beta": a["beta"], "n_votes": a["n_votes"],
                     "n_fitted": a["n_fitted"], "n_cant_tell": a["n_cant_tell"], "n_skip": a["n_skip"], "attention_n": a["attention_n"],
                     "attention_correct": a["attention_correct"], "loo_agreement": a["loo_agreement"], "gold_agreement": a["gold_agreement"],
                     "position_bias": a["position_bias"], "median_latency_ms": a["median_latency_ms"], "created_at": now}
                    for a in astats])
            if labels:
                s.execute(insert(GoldLabel), [
                    {"calibration_run_id": run.id, "criterion_id": crit.id, "triplet_id": g["triplet_id"], "label": g["label"],
                     "probability": g["probability"], "n_votes": g["n_votes"], "status": g["status"], "created_at": now}
                    for g in labels])
    summary["pair_scores"] = [{"anchor": docs.get(r["anchor_id"]), "candidate": docs.get(r["candidate_id"]),
                               "anchor_id": r["anchor_id"], "candidate_id": r["candidate_id"], "score": r["score"],
                               "stderr": r["stderr"], "component": r["component"], "n_votes": r["n_votes"]} for r in pair_rows]
    summary["labels"] = labels
    return summary


# --------------------------------------------------------------------------- reading a run back


@dataclass
class RunView:
    criterion: Criterion
    run: CalibrationRun
    summary: dict
    gold: list[dict]  # one per labelled triplet: triplet fields + label, probability, status, n_votes, votes...
    pairs: list[dict]
    docs: dict[int, Document]
    votes: list[dict]  # active votes of the criterion (with annotator name/kind, triplet fields)


def latest_run(session, criterion_id: int) -> Optional[CalibrationRun]:
    return session.scalars(select(CalibrationRun).where(CalibrationRun.criterion_id == criterion_id)
                           .order_by(CalibrationRun.id.desc())).first()


def load_run(store: Store, criterion: str, *, run_id: Optional[int] = None) -> RunView:
    """The latest (or given) calibration run of a criterion with everything exports and reports need."""
    with store.session() as s:
        crit = get_criterion(s, criterion)
        run = s.get(CalibrationRun, run_id) if run_id else latest_run(s, crit.id)
        if run is None or run.criterion_id != crit.id:
            raise CondsimError(f"criterion {criterion!r} has no calibration run yet: run `condsim-annot calibrate {criterion}` first")
        gl = s.execute(
            select(GoldLabel, Triplet).join(Triplet, Triplet.id == GoldLabel.triplet_id)
            .where(GoldLabel.calibration_run_id == run.id).order_by(GoldLabel.triplet_id)
        ).all()
        pairs = s.scalars(select(PairScore).where(PairScore.calibration_run_id == run.id).order_by(PairScore.id)).all()
        vrows = s.execute(
            select(Vote, Annotator.name, Annotator.kind, Triplet)
            .join(Triplet, Triplet.id == Vote.triplet_id).join(Annotator, Annotator.id == Vote.annotator_id)
            .where(Triplet.criterion_id == crit.id, Vote.state == "active").order_by(Vote.id)
        ).all()
        ids = set()
        for g, t in gl:
            ids.update((t.anchor_id, t.first_id, t.second_id))
        for p in pairs:
            ids.update((p.anchor_id, p.candidate_id))
        for _, _, _, t in vrows:
            ids.update((t.anchor_id, t.first_id, t.second_id))
        from ..store_api import documents_by_id

        docs = documents_by_id(s, ids)
    votes_by_trip: dict[int, list[dict]] = defaultdict(list)
    votes = []
    for v, an, ak, t in vrows:
        d = {"id": v.id, "triplet_id": v.triplet_id, "annotator": an, "kind": ak, "choice": v.choice, "swapped": v.swapped,
             "latency_ms": v.latency_ms, "confidence": v.confidence, "source": v.source, "group_id": v.group_id,
             "created_at": v.created_at, "anchor_id": t.anchor_id, "first_id": t.first_id, "second_id": t.second_id,
             "is_attention_check": t.is_attention_check, "expected": t.expected, "meta": v.meta}
        votes.append(d)
        votes_by_trip[v.triplet_id].append(d)
    gold = []
    for g, t in gl:
        vs = votes_by_trip.get(t.id, [])
        gold.append({
            "triplet_id": t.id, "anchor_id": t.anchor_id, "first_id": t.first_id, "second_id": t.second_id,
            "label": g.label, "probability": g.probability, "status": g.status, "n_votes": g.n_votes,
            "method": t.method, "strategy": t.strategy, "proposal_run": t.proposal_run, "triplet_meta": t.meta or {},
            "is_attention_check": t.is_attention_check,
            "annotators": sorted({v["annotator"] for v in vs if v["choice"] in FITTED}),
        })
    pr = [{"anchor_id": p.anchor_id, "candidate_id": p.candidate_id, "score": p.score, "stderr": p.stderr,
           "component": p.component, "n_votes": p.n_votes} for p in pairs]
    return RunView(criterion=crit, run=run, summary=dict(run.summary or {}), gold=gold, pairs=pr, docs=docs, votes=votes)


def derived_triplets(view: RunView, *, min_confidence: float = 0.9, limit_per_anchor: int = 200) -> list[dict]:
    """Labels for (anchor; x, y) nobody voted on, by transitivity through the pair scores.

    Only pairs asked under the same anchor and in the same component; probability from
    the stored stderr (independence assumed, so conservative for correlated scores)."""
    from scipy.stats import norm

    voted = {(g["anchor_id"], min(g["first_id"], g["second_id"]), max(g["first_id"], g["second_id"])) for g in view.gold}
    by_anchor: dict[int, list[dict]] = defaultdict(list)
    for p in view.pairs:
        by_anchor[p["anchor_id"]].append(p)
    out = []
    for anc, ps in by_anchor.items():
        ps = sorted(ps, key=lambda p: -p["score"])
        n = 0
        for i in range(len(ps)):
            for j in range(i + 1, len(ps)):
                x, y = ps[i], ps[j]
                if x["component"] != y["component"]:
                    continue
                f, sec = sorted((x["candidate_id"], y["candidate_id"]))
                if (anc, f, sec) in voted:
                    continue
                sd = math.sqrt(x["stderr"] ** 2 + y["stderr"] ** 2) or 1e-9
                p = float(norm.cdf((x["score"] - y["score"]) / sd))
                if p < min_confidence:
                    continue
                out.append({"triplet_id": None, "anchor_id": anc, "first_id": f, "second_id": sec,
                            "label": "first" if x["candidate_id"] == f else "second", "probability": p, "status": "derived",
                            "n_votes": 0, "method": "derived", "strategy": None, "proposal_run": None, "triplet_meta": {},
                            "is_attention_check": False, "annotators": []})
                n += 1
                if n >= limit_per_anchor:
                    break
            if n >= limit_per_anchor:
                break
    return out
