"""The vote model on arrays: Davidson's three outcomes of one triplet vote, and what a pair's scores imply.

A vote on a triplet (a; x, y) by annotator j, with d = s(a, x) - s(a, y) and h = beta_j d / 2::

    P(first) = e^h / Z,   P(second) = e^-h / Z,   P(tie) = nu / Z,   Z = e^h + e^-h + nu

(nu = 0: the logistic Bradley-Terry vote).  These functions are what :class:`.model.TripletModel`
fits and what ``propose`` uses to score "what would one more vote teach" from a stored calibration
run: per-pair posterior means and sds (``PairScore.score`` / ``stderr``), the annotator's beta
(``AnnotatorStat.beta``) and the run's tie parameter (``summary["tie_parameter"]``).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

FIRST, SECOND, TIE = 0, 1, 2
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(24)  # E[f(Z)], Z ~ N(0, 1), as sum(_GH_W * f(_GH_X)) / sqrt(2 pi)
_GH_W = _GH_W / math.sqrt(2.0 * math.pi)

Array = NDArray[np.float64]


def log_z(h: Array, nu: float | Array) -> Array:
    """log(e^h + e^-h + nu), stable for large |h| (``nu`` a number or an array broadcast against ``h``)."""
    a = np.abs(h)
    inner = 1.0 + np.exp(-2.0 * a)
    if np.any(np.asarray(nu) > 0):
        inner = inner + nu * np.exp(-a)
    return np.asarray(a + np.log(inner), dtype=np.float64)


def _log_nu(nu: float | NDArray[np.floating]) -> Array:
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(nu, dtype=np.float64))


def vote_log_lik(h: Array, outcome: NDArray[np.int64], nu: float | Array) -> Array:
    """log P(outcome | h) element-wise (``h``, ``outcome`` and ``nu`` broadcast)."""
    lz = log_z(h, nu)
    own = np.where(outcome == FIRST, h, np.where(outcome == SECOND, -h, _log_nu(nu)))
    return np.asarray(own - lz, dtype=np.float64)


def vote_log_lik_fast(h: NDArray[np.floating], outcome: NDArray[np.int64],
                      nu: float | NDArray[np.floating]) -> NDArray[np.float32]:
    """:func:`vote_log_lik` in float32 for grids (h clipped to +-30: beyond, a cell's mass is < e^-60)."""
    hc = np.clip(h, -30.0, 30.0).astype(np.float32, copy=False)
    e = np.exp(hc)
    z = e + np.reciprocal(e)
    nu32 = np.asarray(nu, dtype=np.float32)
    if np.any(nu32 > 0):
        z += nu32
    lz = np.log(z)
    own = np.where(outcome == FIRST, hc, np.where(outcome == SECOND, -hc, _log_nu(nu32).astype(np.float32)))
    return np.asarray(own - lz, dtype=np.float32)


def vote_probs(h: ArrayLike, nu: float) -> Array:
    """(..., 3) array of P(first), P(second), P(tie) given h = beta d / 2."""
    h = np.asarray(h, dtype=np.float64)
    lz = log_z(h, nu)
    pf = np.exp(h - lz)
    ps = np.exp(-h - lz)
    pt = np.clip(1.0 - pf - ps, 0.0, 1.0) if nu > 0 else np.zeros_like(h)
    return np.stack([pf, ps, pt], axis=-1)


def label_probability(score_first: ArrayLike, sd_first: ArrayLike, score_second: ArrayLike,
                      sd_second: ArrayLike) -> Array:
    """P(s(a, x) > s(a, y)) from two pairs' posterior means and sds (independent Gaussians)."""
    from scipy.stats import norm

    d = np.asarray(score_first, dtype=np.float64) - np.asarray(score_second, dtype=np.float64)
    sd = np.sqrt(np.asarray(sd_first, dtype=np.float64) ** 2 + np.asarray(sd_second, dtype=np.float64) ** 2)
    return np.asarray(norm.cdf(d / np.maximum(sd, 1e-12)), dtype=np.float64)


def triplet_vote_probabilities(score_first: ArrayLike, sd_first: ArrayLike, score_second: ArrayLike,
                               sd_second: ArrayLike, beta: ArrayLike = 1.0, nu: float = 0.0) -> Array:
    """(n, 3): P(first), P(second), P(tie) of the *next* vote on each triplet.

    The pair scores are the stored posterior (mean, sd) on the run's one global scale; the
    difference d ~ N(mean_x - mean_y, sd_x^2 + sd_y^2) is integrated out (24-point Gauss-Hermite),
    the annotator answers with discrimination ``beta`` and tie parameter ``nu``.  With beta = 1
    this is the average annotator (the betas are normalised to a vote-weighted mean of 1)."""
    mu = np.atleast_1d(np.asarray(score_first, dtype=np.float64) - np.asarray(score_second, dtype=np.float64))
    sd = np.atleast_1d(np.sqrt(np.asarray(sd_first, dtype=np.float64) ** 2
                               + np.asarray(sd_second, dtype=np.float64) ** 2))
    b = np.broadcast_to(np.asarray(beta, dtype=np.float64), mu.shape)
    d = mu[:, None] + sd[:, None] * _GH_X[None, :]
    p = vote_probs(0.5 * b[:, None] * d, float(nu))  # (n, 24, 3)
    return np.asarray(np.einsum("ngk,g->nk", p, _GH_W), dtype=np.float64)


def vote_information(score_first: ArrayLike, sd_first: ArrayLike, score_second: ArrayLike, sd_second: ArrayLike,
                     beta: ArrayLike = 1.0, nu: float = 0.0) -> Array:
    """Expected information (nats) one more vote gives about d: the mutual information between the
    vote and d = s_x - s_y under the stored posterior (entropy of the predictive minus the expected
    entropy given d).  Zero for a settled triplet, ties included: a settled tie predicts "tie"."""
    mu = np.atleast_1d(np.asarray(score_first, dtype=np.float64) - np.asarray(score_second, dtype=np.float64))
    sd = np.atleast_1d(np.sqrt(np.asarray(sd_first, dtype=np.float64) ** 2
                               + np.asarray(sd_second, dtype=np.float64) ** 2))
    b = np.broadcast_to(np.asarray(beta, dtype=np.float64), mu.shape)
    d = mu[:, None] + sd[:, None] * _GH_X[None, :]
    p = np.clip(vote_probs(0.5 * b[:, None] * d, float(nu)), 1e-300, 1.0)
    cond_h = -np.einsum("ngk,g->n", p * np.log(p), _GH_W)
    pred = np.clip(np.einsum("ngk,g->nk", p, _GH_W), 1e-300, 1.0)
    return np.asarray(-(pred * np.log(pred)).sum(-1) - cond_h, dtype=np.float64)
