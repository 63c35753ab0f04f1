"""What one more vote would teach, under the fitted model (pure maths on arrays, no store).

The calibration model (Bradley-Terry with Davidson ties, per-annotator discrimination beta_j)
says that annotator j, shown (a; x, y), answers with::

    h = beta_j * d / 2,  d = s(a, x) - s(a, y)
    P(first) = e^h / Z,  P(second) = e^-h / Z,  P(tie) = nu / Z,  Z = e^h + e^-h + nu

and the calibration run gives s(a, x), s(a, y) as means and standard deviations on one scale.
With ``d ~ N(mean_x - mean_y, sd_x^2 + sd_y^2)`` the *expected information* of one more vote is
the mutual information between the answer Y (first / tie / second) and d (BALD)::

    I = H(E_d[P(Y | d)]) - E_d[H(P(Y | d))]          (bits; Gauss-Hermite over d)

Why this and not "P(x closer) near .5": a settled tie (d known to be ~0) has P(x closer) = .5 yet
teaches nothing (every answer is as expected: I ~ 0), as does a settled order; only a comparison
whose outcome depends on what we do not know yet is worth a vote.  Averaged over annotators
(weights: their share of the votes), because we do not know who answers next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

NODES = 24  # Gauss-Hermite nodes over d
CHUNK = 16384  # comparisons per block (bounds memory at ~CHUNK * NODES * 8 bytes per array)


def entropy2(p: np.ndarray) -> np.ndarray:
    """Binary entropy in bits (0 at p = 0 or 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.nan_to_num(h, nan=0.0)


def _entropy3(p_first: np.ndarray, p_tie: np.ndarray, p_second: np.ndarray) -> np.ndarray:
    out = np.zeros_like(p_first)
    for p in (p_first, p_tie, p_second):
        with np.errstate(divide="ignore", invalid="ignore"):
            out -= np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return out


def outcome_probabilities(d: np.ndarray, beta: float, nu: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(first), P(tie), P(second) of one vote by an annotator with discrimination ``beta`` (stable for any d)."""
    h = 0.5 * beta * np.asarray(d, dtype=np.float64)
    m = np.abs(h)
    e1 = np.exp(-m)  # the losing side relative to the winning one: e^{-|h|} / e^{|h|} = e1^2
    z = 1.0 + e1 * (e1 + nu)
    win, lose, tie = 1.0 / z, e1 * e1 / z, nu * e1 / z
    return np.where(h >= 0, win, lose), tie, np.where(h >= 0, lose, win)


def _weights(beta: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    w = np.ones(len(beta)) if weight is None else np.asarray(weight, dtype=np.float64)
    if w.shape != beta.shape or (w < 0).any() or w.sum() <= 0:
        raise ValueError("annotator weights must be non-negative, one per beta, not all zero")
    return w / w.sum()


def _vote_entropy(h: np.ndarray, nu: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """P(first), P(tie), P(second) and the answer's entropy (nats) at half-margins ``h``, with one exp and one
    log per element: -log P(first) = log Z - h, -log P(second) = log Z + h, -log P(tie) = log Z - log nu."""
    m = np.abs(h)
    e1 = np.exp(-m)
    inner = 1.0 + e1 * (e1 + nu)
    log_z = m + np.log(inner)
    win, lose, tie = 1.0 / inner, e1 * e1 / inner, nu * e1 / inner
    pf, ps = np.where(h >= 0, win, lose), np.where(h >= 0, lose, win)
    ent = log_z - h * (pf - ps) - (tie * np.log(nu) if nu > 0 else 0.0)
    return pf, tie, ps, ent


def expected_information(mean_x: np.ndarray, sd_x: np.ndarray, mean_y: np.ndarray, sd_y: np.ndarray,
                         beta: np.ndarray | float, nu: float, weight: np.ndarray | None = None) -> np.ndarray:
    """Expected information (bits) of one more vote on each comparison s(a, x) vs s(a, y).

    ``beta``: the annotators' discriminations (one or several; ``weight``: how likely each answers next);
    ``nu``: Davidson's tie parameter (0: the model has no ties).  Pairs are taken as independent
    (their covariance is not stored)."""
    mu = np.asarray(mean_x, dtype=np.float64) - np.asarray(mean_y, dtype=np.float64)
    sd = np.sqrt(np.asarray(sd_x, dtype=np.float64) ** 2 + np.asarray(sd_y, dtype=np.float64) ** 2)
    mu, sd = np.broadcast_arrays(np.atleast_1d(mu), np.atleast_1d(sd))
    betas = np.atleast_1d(np.asarray(beta, dtype=np.float64))
    w = _weights(betas, weight)
    nu = max(float(nu), 0.0)
    z, gw = np.polynomial.hermite_e.hermegauss(NODES)
    gw = gw / gw.sum()
    out = np.empty(len(mu))
    for c0 in range(0, len(mu), CHUNK):
        d = mu[c0 : c0 + CHUNK, None] + sd[c0 : c0 + CHUNK, None] * z[None, :]
        info = np.zeros(len(d))
        for b, wj in zip(betas, w, strict=False):
            pf, pt, ps, ent = _vote_entropy((0.5 * b) * d, nu)
            info += wj * (_entropy3(pf @ gw, pt @ gw, ps @ gw) - (ent @ gw) / np.log(2.0))
        out[c0 : c0 + CHUNK] = np.maximum(info, 0.0)
    return out


def order_probability(mean_x: np.ndarray, sd_x: np.ndarray, mean_y: np.ndarray, sd_y: np.ndarray) -> np.ndarray:
    """P(s(a, x) > s(a, y)) = Phi(d / sd) under the model (what ``model_p`` records)."""
    sd = np.sqrt(np.maximum(np.asarray(sd_x) ** 2 + np.asarray(sd_y) ** 2, 1e-12))
    return ndtr((np.asarray(mean_x, dtype=np.float64) - np.asarray(mean_y, dtype=np.float64)) / sd)


def tie_probability(mean_x: np.ndarray, sd_x: np.ndarray, mean_y: np.ndarray, sd_y: np.ndarray,
                    beta: np.ndarray | float, nu: float, weight: np.ndarray | None = None) -> np.ndarray:
    """The model's predictive probability that the next vote is a tie."""
    mu = np.atleast_1d(np.asarray(mean_x, dtype=np.float64) - np.asarray(mean_y, dtype=np.float64))
    sd = np.atleast_1d(np.sqrt(np.asarray(sd_x, dtype=np.float64) ** 2 + np.asarray(sd_y, dtype=np.float64) ** 2))
    betas = np.atleast_1d(np.asarray(beta, dtype=np.float64))
    w = _weights(betas, weight)
    z, gw = np.polynomial.hermite_e.hermegauss(NODES)
    d = mu[:, None] + sd[:, None] * z[None, :]
    return sum(wj * (outcome_probabilities(d, float(b), max(float(nu), 0.0))[1] @ (gw / gw.sum()))
               for b, wj in zip(betas, w, strict=False))


GOLD_GRID = 64  # points of the 1-D grid over d (the slab) in :func:`expected_gold`
GOLD_CHUNK = 1024  # comparisons per block of :func:`expected_gold`


@dataclass
class AnswerModel:
    """How each annotator answers, as the calibration run fitted it (one entry per annotator):
    discrimination ``beta``, Davidson tie parameter ``nu``, ``tie_answer`` = P("tie" | a true tie) (None: the
    Davidson value at d = 0, nu / (2 + nu)), ``lapse`` = P(an answer that ignores d) with ``lapse_tie`` =
    P("tie" | a lapse) (None: no lapse)."""

    beta: np.ndarray
    nu: np.ndarray
    tie_answer: np.ndarray
    lapse: np.ndarray
    lapse_tie: np.ndarray

    @classmethod
    def build(cls, beta: np.ndarray | float, nu: np.ndarray | float, tie_answer: np.ndarray | None = None,
              lapse: np.ndarray | None = None, lapse_tie: np.ndarray | None = None) -> AnswerModel:
        b = np.atleast_1d(np.asarray(beta, dtype=np.float64))
        n = np.maximum(np.broadcast_to(np.asarray(nu, dtype=np.float64), b.shape).astype(np.float64), 0.0)
        t = n / (2.0 + n) if tie_answer is None else np.broadcast_to(np.asarray(tie_answer, dtype=np.float64), b.shape)
        lam = np.zeros(b.shape) if lapse is None else np.broadcast_to(np.asarray(lapse, dtype=np.float64), b.shape)
        kap = (np.full(b.shape, 1 / 3) if lapse_tie is None
               else np.broadcast_to(np.asarray(lapse_tie, dtype=np.float64), b.shape))
        return cls(b, n, np.asarray(t, dtype=np.float64), np.asarray(lam), np.asarray(kap))

    def take(self, idx: np.ndarray) -> AnswerModel:
        return AnswerModel(self.beta[idx], self.nu[idx], self.tie_answer[idx], self.lapse[idx], self.lapse_tie[idx])

    def answers(self, k: int, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P(first), P(tie), P(second) of annotator ``k`` at score differences ``d`` (the slab)."""
        pf, pt, ps = outcome_probabilities(d, float(self.beta[k]), float(self.nu[k]))
        lam, kap = float(self.lapse[k]), float(self.lapse_tie[k])
        if lam > 0:
            side = lam * (1 - kap) / 2
            pf, pt, ps = (1 - lam) * pf + side, (1 - lam) * pt + lam * kap, (1 - lam) * ps + side
        return pf, pt, ps

    def at_tie(self, k: int) -> tuple[float, float, float]:
        """P(first), P(tie), P(second) of annotator ``k`` on a true tie (the spike)."""
        t = float(self.tie_answer[k])
        return (1 - t) / 2, t, (1 - t) / 2


def vote_annotators(beta: np.ndarray | float, weight: np.ndarray | None, votes: int) -> np.ndarray:
    """Who answers the next ``votes`` votes (indexes): distinct annotators, taken at the (i + 1/2) / votes weighted
    quantiles of the betas (with three annotators who each vote on everything: exactly the three)."""
    b = np.atleast_1d(np.asarray(beta, dtype=np.float64))
    w = _weights(b, weight)
    idx = np.flatnonzero(w > 0)
    order = idx[np.argsort(b[idx], kind="stable")]
    q = (np.arange(votes) + 0.5) / max(votes, 1)
    return order[np.minimum(np.searchsorted(np.cumsum(w[order]), q), len(order) - 1)]


def vote_betas(beta: np.ndarray | float, weight: np.ndarray | None, votes: int) -> np.ndarray:
    """The betas of :func:`vote_annotators`."""
    b = np.atleast_1d(np.asarray(beta, dtype=np.float64))
    return b[vote_annotators(b, weight, votes)]


def _outcome_rows(am: AnswerModel, d: np.ndarray) -> np.ndarray:
    """(3^k, *d.shape) likelihood of every answer sequence of the k annotators (first, tie, second each)."""
    lik = np.ones((1, *d.shape))
    for k in range(len(am.beta)):
        lik = (lik[:, None] * np.stack(am.answers(k, d))[None]).reshape(-1, *d.shape)
    return lik


def _tie_rows(am: AnswerModel) -> np.ndarray:
    """(3^k,) likelihood of every answer sequence on a true tie."""
    lik = np.ones(1)
    for k in range(len(am.beta)):
        lik = (lik[:, None] * np.asarray(am.at_tie(k))[None]).ravel()
    return lik


def expected_gold(mean: np.ndarray, sd: np.ndarray, tie: np.ndarray | float, beta: np.ndarray | float,
                  nu: np.ndarray | float, *, tau: float, votes: int = 3, min_votes: int = 2,
                  have: np.ndarray | int = 0, gold: np.ndarray | None = None, weight: np.ndarray | None = None,
                  answers: AnswerModel | None = None) -> np.ndarray:
    """P(gold after ``votes`` more votes); see :func:`gold_outlook` (which also gives E[P(label)])."""
    return gold_outlook(mean, sd, tie, beta, nu, tau=tau, votes=votes, min_votes=min_votes, have=have, gold=gold,
                        weight=weight, answers=answers)[0]


def gold_outlook(mean: np.ndarray, sd: np.ndarray, tie: np.ndarray | float, beta: np.ndarray | float,
                 nu: np.ndarray | float, *, tau: float, votes: int = 3, min_votes: int = 2,
                 have: np.ndarray | int = 0, gold: np.ndarray | None = None, weight: np.ndarray | None = None,
                 answers: AnswerModel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """P(the comparison is gold after ``votes`` more votes): the chance that P(label) >= ``tau`` with at least
    ``min_votes`` distinct annotators, averaged over the answers the model predicts.

    The comparison's belief about d = s(a, x) - s(a, y) is a spike and a slab, as in the calibration model:
    d = 0 exactly (a true tie) with probability ``tie``, else d ~ N(``mean``, ``sd``^2).  Each answer
    sequence of the next ``votes`` annotators (:func:`vote_annotators`) updates it exactly on a grid, each
    annotator answering as the run fitted him (``answers``: his nu, lapse, and on a true tie his own answer
    distribution; without it, Davidson with ``beta`` and ``nu`` everywhere); the label's probability is then the
    slab's mass on one side (a tie answer moves mass to the spike, never to a label).
    A settled tie (mean ~0, or tie ~1) scores ~0, a comparison the prior already leans on scores high;
    ``gold`` (already gold) scores 0.  ``have``: distinct annotators who already voted on it.

    Returns (P(gold), E[P(label)] after the votes): the second orders comparisons where the run's gold rule is
    out of reach of ``votes`` votes (e.g. a large true-tie mass early on), by how sure their label would be."""
    mu = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    mu, s, pi, n0 = np.broadcast_arrays(mu, np.maximum(np.asarray(sd, dtype=np.float64), 1e-6),
                                        np.clip(np.asarray(tie, dtype=np.float64), 0.0, 1.0), np.asarray(have))
    if not 1 <= votes <= 5:
        raise ValueError("votes must be 1 to 5 (3^votes answer sequences are enumerated)")
    am = answers if answers is not None else AnswerModel.build(beta, nu)
    am = am.take(vote_annotators(am.beta, weight, votes))
    z = np.linspace(-6.0, 6.0, GOLD_GRID)
    gz = np.exp(-0.5 * z * z)
    gz /= gz.sum()
    at0 = _tie_rows(am)  # (3^k,) a true tie's answers
    out, conf = np.empty(len(mu)), np.empty(len(mu))
    for c0 in range(0, len(mu), GOLD_CHUNK):
        sl = slice(c0, c0 + GOLD_CHUNK)
        d = mu[sl, None] + s[sl, None] * z[None, :]
        lik = _outcome_rows(am, d)  # (3^k, n, G)
        slab = lik @ gz
        pos = np.einsum("sng,ng->sn", lik, np.where(d > 0, gz, 0.0))
        neg = np.einsum("sng,ng->sn", lik, np.where(d < 0, gz, 0.0))
        total = (1.0 - pi[sl]) * slab + pi[sl] * at0[:, None]  # predictive probability of each sequence
        with np.errstate(divide="ignore", invalid="ignore"):
            p_label = (1.0 - pi[sl]) * np.maximum(pos, neg) / total
        p_label = np.nan_to_num(p_label)
        enough = (n0[sl] + votes) >= min_votes
        out[sl] = np.where(enough, (total * (p_label >= tau)).sum(axis=0), 0.0)
        conf[sl] = (total * p_label).sum(axis=0)
    if gold is not None:
        out = np.where(np.asarray(gold, dtype=bool), 0.0, out)
    return out, conf
