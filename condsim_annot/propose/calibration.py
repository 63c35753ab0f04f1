"""The criterion's latest calibration run, as the proposer needs it (read from the store, then plain arrays).

Read: every pair score s({a, x}) with its standard error and component (``pairscore``), the
annotators' discriminations beta (``annotatorstat``, weighted by their fitted votes), Davidson's
tie parameter (the run's summary ``tie_parameter``, or ``nu`` in its parameters), and for ``--rank gold``
the gold rule (params ``tau``, ``min_votes``), the true-tie mass (``model.tie_mass``) and the feature
prior that predicts pairs nobody asked yet (:mod:`.prior`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtr
from sqlalchemy import select
from sqlmodel import col

from ..calibrate.tables import AnnotatorStat, PairScore
from ..db import Store
from ..models import CalibrationRun
from ..store_api import canonical
from .information import AnswerModel, expected_information, gold_outlook, order_probability
from .prior import FeaturePrior, load_feature_prior

BRIDGE_BONUS = 0.25  # a comparison across components of the comparison graph counts as v + 0.25 (1 - v)
LEAN_WEIGHT = 0.25  # rank "gold": + 0.25 x the lean (:meth:`Calibration._lean`), ordering what gold cannot reach yet


@dataclass
class Calibration:
    """The fitted model: pair scores by document position, annotators' betas and the tie parameter."""

    run_id: int
    n_pairs: int  # scored pairs among this corpus' documents
    n_components: int
    partners: dict  # document position -> {partner position: (score, stderr, component)}
    across: bool = True  # fitted with a prior: scores of different components share one scale
    beta: np.ndarray = field(default_factory=lambda: np.ones(1))
    beta_weight: np.ndarray = field(default_factory=lambda: np.ones(1))
    nu: float = 0.0
    prior_sd: float = 2.0
    typical_sd: float = 0.0  # median standard error of the scored pairs (0: use prior_sd)
    rank: str = "information"  # "gold": expected new gold per vote (:func:`.information.expected_gold`)
    gold_tau: float = 0.9  # the run's gold rule: P(label) >= gold_tau with >= min_votes annotators
    min_votes: int = 2
    tie_mass: float = 0.0  # prior probability that a comparison is a true tie
    votes: int = 3  # votes each new triplet will get
    prior: FeaturePrior | None = None  # predicts pairs nobody asked yet (rank "gold")
    answers: AnswerModel | None = None  # each annotator's fitted answers (nu, lapse, on a true tie); rank "gold"
    tie_coef: tuple[float, float] | None = None  # logit P(true tie) = a + b |prior d| (the run's tie prior)
    _scale: float = field(default=0.0, repr=False)

    def info(self) -> dict:
        return {"run_id": self.run_id, "pairs": self.n_pairs, "components": self.n_components,
                "across_components": self.across, "tie_parameter": round(self.nu, 4),
                "betas": [round(float(b), 3) for b in self.beta], "rank": self.rank,
                **({"gold_tau": self.gold_tau, "min_votes": self.min_votes, "tie_mass": round(self.tie_mass, 4),
                    "votes": self.votes, "feature_prior": self.prior.names if self.prior else []}
                   if self.rank == "gold" else {})}

    def unknown_information(self) -> float:
        """The scale of ``value``: the information of a vote on a comparison of two typical scored pairs with
        equal means (the most a vote teaches about what the fit has seen), so the model's most open comparisons
        score ~1 and outrank the committee's, settled ones ~0 and fall below them."""
        if not self._scale:
            sd = self.typical_sd or self.prior_sd
            zero, s = np.zeros(1), np.full(1, sd)
            self._scale = max(float(expected_information(zero, s, zero, s, self.beta, self.nu,
                                                         self.beta_weight)[0]), 1e-9)
        return self._scale

    def tie_prior(self, prior_d: np.ndarray | None, n: int) -> np.ndarray:
        """Each comparison's prior probability of a true tie: the run's tie prior at the feature prior's |d|
        (``prior_d``: w . (phi_x - phi_y), NaN where unknown), else its one mass."""
        out = np.full(n, self.tie_mass)
        if self.tie_coef is None or prior_d is None or self.tie_coef[1] == 0.0:
            return out
        g = np.abs(np.asarray(prior_d, dtype=np.float64))
        ok = np.isfinite(g)
        out[ok] = 1.0 / (1.0 + np.exp(-(self.tie_coef[0] + self.tie_coef[1] * g[ok])))
        return out

    def comparisons(self, si: np.ndarray, sj: np.ndarray, sei: np.ndarray, sej: np.ndarray, ci: np.ndarray,
                    cj: np.ndarray, prior_d: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The model on comparisons s_i vs s_j: ``p`` = P(s_i > s_j), ``info`` = expected information of one more
        vote (bits), ``cross`` = different components, ``defined`` = the fit puts them on one scale, ``value`` =
        what the ranking uses: info relative to :meth:`unknown_information` (not capped: the most open comparison
        must still outrank a merely open one), 1 where the fit cannot compare them, plus a bonus for joining
        components."""
        ci, cj = np.asarray(ci), np.asarray(cj)
        cross = (ci != cj) & (ci >= 0) & (cj >= 0)  # component -1: a pair only the feature prior predicts
        defined = np.ones_like(cross) if self.across else ~cross
        p = np.where(defined, order_probability(si, sei, sj, sej), np.nan)
        if self.rank == "gold":
            return self._gold(si, sj, sei, sej, p, cross, defined, self.tie_prior(prior_d, len(p)), prior_d)
        info = expected_information(si, sei, sj, sej, self.beta, self.nu, self.beta_weight)
        rel = np.where(defined, info / self.unknown_information(), 1.0)
        value = np.where(cross, rel + BRIDGE_BONUS * np.maximum(1.0 - rel, 0.0), rel)
        return {"p": p, "info": np.where(defined, info, np.nan), "cross": cross, "defined": defined, "value": value}

    def _gold(self, si: np.ndarray, sj: np.ndarray, sei: np.ndarray, sej: np.ndarray, p: np.ndarray,
              cross: np.ndarray, defined: np.ndarray, tie: np.ndarray,
              prior_d: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``value`` = (expected new gold + :data:`LEAN_WEIGHT` x (1 - P(true tie)) x the lean) per vote.  The lean
        (:meth:`_lean`) orders comparisons while the gold rule is out of reach of a few votes (early runs find many
        true ties: a large tie mass); it is also what the spike cannot say, that a comparison the methods lean on
        is seldom a tie.  No bridge bonus: a bridge is worth its gold too."""
        d, sd = np.asarray(si) - np.asarray(sj), np.sqrt(np.asarray(sei) ** 2 + np.asarray(sej) ** 2)
        gain = gold_outlook(d, sd, tie, self.beta, self.nu, tau=self.gold_tau, votes=self.votes,
                            min_votes=self.min_votes, weight=self.beta_weight, answers=self.answers)[0]
        gain = np.where(defined, gain, 0.0)
        # the lean of the label's probability, true-tie mass included
        lean = np.where(defined, (1.0 - tie) * self._lean(p, prior_d), 0.0)
        value = (gain + LEAN_WEIGHT * lean) / max(self.votes, 1)
        return {"p": p, "info": np.full(len(value), np.nan), "gold": gain, "cross": cross, "defined": defined,
                "value": value}

    def _lean(self, p: np.ndarray, prior_d: np.ndarray | None) -> np.ndarray:
        """How far a comparison leans: where the feature prior predicts it, how far the methods' learnt combination
        separates the two pairs, 2 Phi(|w . dphi| / (sqrt 2 tau)) - 1 (the prior's P(one pair above the other) for
        a fresh comparison, read at its mean, not shrunk by the weights' uncertainty); else |2 P - 1|.

        Why not |2 P - 1| everywhere: the comparisons the methods separate widely are the ones least often true ties
        (bench/active_loop.py, seed 0: 14-24% ties among the top 80 by |w . dphi| against 36-39% by |2 P - 1| and
        55% in the pools), and P(label) shrinks them by the weights' sd, which grows with |phi|.  The run's tie prior
        says so only once it has fitted a slope on |w . dphi|, which needs votes on such comparisons: asking them
        is how the next run learns it."""
        base = np.abs(2.0 * np.nan_to_num(p, nan=0.5) - 1.0)
        if prior_d is None or self.prior is None:
            return base
        g = np.asarray(prior_d, dtype=np.float64)
        ok = np.isfinite(g)
        return np.where(ok, 2.0 * ndtr(np.abs(np.where(ok, g, 0.0)) / (math.sqrt(2.0) * self.prior.tau)) - 1.0, base)

    def anchor_value(self, a: int, taken: set, doc_ids: np.ndarray) -> float:
        """The largest ``value`` of a not-yet-asked comparison (a; x, y) among a's scored partners."""
        part = self.partners.get(a)
        if not part or len(part) < 2:
            return 0.0
        xs = list(part)
        v = np.asarray([part[x] for x in xs])
        iu, ju = np.triu_indices(len(xs), 1)
        u = self.comparisons(v[iu, 0], v[ju, 0], v[iu, 1], v[ju, 1], v[iu, 2], v[ju, 2])["value"]
        anchor = int(doc_ids[a])
        for q in np.argsort(-u):
            x, y = int(doc_ids[xs[iu[q]]]), int(doc_ids[xs[ju[q]]])
            if canonical(anchor, x, y)[:3] not in taken:
                return float(u[q])
        return 0.0


def _betas(rows: list[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
    beta = np.asarray([float(b) for b, n in rows if b is not None and math.isfinite(b) and (n or 0) > 0])
    weight = np.asarray([float(n) for b, n in rows if b is not None and math.isfinite(b) and (n or 0) > 0])
    if not len(beta):
        return np.ones(1), np.ones(1)
    return np.maximum(beta, 0.0), weight


def _tie_parameter(params: dict, summary: dict) -> float:
    for src, key in ((summary, "tie_parameter"), (params, "nu"), (summary, "nu")):
        v = src.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0:
            return float(v)
    return 0.0


def load_calibration(store: Store, criterion_id: int, pos_of: dict[int, int], rank: str = "information",
                     votes: int = 3) -> Calibration | None:
    """The latest calibration run of the criterion, or None (no run, or no pair of this corpus scored).
    ``rank``: what ranks comparisons ("gold" or "information", see :class:`.options.ProposeOptions`);
    ``votes``: how many votes each new triplet will get."""
    with store.session() as s:
        q = (select(col(CalibrationRun.id), col(CalibrationRun.params), col(CalibrationRun.summary))
             .where(col(CalibrationRun.criterion_id) == criterion_id).order_by(col(CalibrationRun.id).desc()).limit(1))
        run = s.execute(q).first()
        if run is None:
            return None
        run_id, params, summary = run
        rows = s.execute(select(col(PairScore.anchor_id), col(PairScore.candidate_id), col(PairScore.score),
                                col(PairScore.stderr), col(PairScore.component))
                         .where(col(PairScore.calibration_run_id) == run_id)).all()
        stats = s.execute(select(col(AnnotatorStat.beta), col(AnnotatorStat.n_fitted))
                          .where(col(AnnotatorStat.calibration_run_id) == run_id)).all()
        fp = (load_feature_prior(s, criterion_id, summary or {}, {(min(a, c), max(a, c)) for a, c, *_ in rows})
              if rank == "gold" else None)
    partners: dict[int, dict[int, tuple]] = defaultdict(dict)
    comps = set()
    n = 0
    ses = []
    for a, c, score, se, comp in rows:
        pa, pc = pos_of.get(int(a)), pos_of.get(int(c))
        if pa is None or pc is None or score is None or not math.isfinite(score):
            continue
        v = (float(score), float(se or 0.0), int(comp))
        partners[pa][pc] = v  # the pair is unordered: usable with either document as anchor
        partners[pc][pa] = v
        comps.add(int(comp))
        ses.append(v[1])
        n += 1
    if not n:
        return None
    params, summary = params or {}, summary or {}
    across, prior_sd = _scale(params, summary)
    beta, weight = _betas([tuple(r) for r in stats])
    cal = Calibration(int(run_id), n, len(comps), dict(partners), across=across, beta=beta, beta_weight=weight,
                      nu=_tie_parameter(params, summary), prior_sd=prior_sd, typical_sd=float(np.median(ses)),
                      rank=rank, votes=votes, prior=fp)
    if rank == "gold":
        _gold_rule(cal, params, summary)
    return cal


def _gold_rule(cal: Calibration, params: dict, summary: dict) -> None:
    """The run's gold rule (``tau`` used, ``min_votes``) and its true-tie mass (``model.tie_mass``)."""
    tau, mv = params.get("tau"), params.get("min_votes")
    if isinstance(tau, (int, float)) and 0.5 <= tau <= 1:
        cal.gold_tau = float(tau)
    if isinstance(mv, int) and mv >= 0:
        cal.min_votes = mv
    model = summary.get("model")
    block: dict = model if isinstance(model, dict) else {}
    tm = block.get("tie_mass")
    if isinstance(tm, (int, float)) and 0 <= tm < 1:
        cal.tie_mass = float(tm)
    tp = block.get("tie_prior")
    if isinstance(tp, dict) and all(isinstance(tp.get(k), (int, float)) for k in ("intercept", "slope")):
        cal.tie_coef = (float(tp["intercept"]), float(tp["slope"]))
    rows = [r for r in block.get("annotators") or [] if isinstance(r, dict) and (r.get("n_fitted") or 0) > 0]
    keys = ("beta", "nu", "tie_answer", "lapse", "lapse_tie")
    rows = [r for r in rows if all(isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) for k in keys)]
    if rows:  # who answers next, and how: the fitted annotators, weighted by their votes
        cal.beta = np.maximum(np.asarray([float(r["beta"]) for r in rows]), 0.0)
        cal.beta_weight = np.asarray([float(r["n_fitted"]) for r in rows])
        cal.answers = AnswerModel.build(cal.beta, *(np.asarray([float(r[k]) for r in rows]) for k in keys[1:]))


def _scale(params: dict, summary: dict) -> tuple[bool, float]:
    """(one scale across components?, the prior sd of a pair nobody voted on).  The triplet model says so in its
    summary (``model.global_scale``, ``model.prior_scale``); a legacy fit has one scale unless its prior was
    switched off (``prior`` 0; None meant the default 2)."""
    model = summary.get("model")
    block: dict = model if isinstance(model, dict) else {}
    prior = params.get("prior", 2.0)
    across = bool(block.get("global_scale")) or prior is None or bool(prior)
    sd = block.get("prior_scale") if isinstance(block.get("prior_scale"), (int, float)) else prior
    return across, float(sd) if sd and math.isfinite(float(sd)) and float(sd) > 0 else 2.0

