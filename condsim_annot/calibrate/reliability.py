"""Calibration measured, not assumed: reliability of predicted probabilities, and a certified accuracy.

* :func:`reliability`: expected calibration error (10 equal-width bins), Brier score and the
  reliability diagram of probabilities ``p`` against 0/1 outcomes ``y`` (in :func:`calibrate
  <.pipeline.calibrate>`: each held-out vote predicted from all the others, ``TripletModel.loo_``).
* :func:`clopper_pearson_lower`: exact one-sided lower confidence bound of a binomial proportion.
* :func:`threshold_for_accuracy`: the smallest probability threshold whose labels' expected
  accuracy (the mean of their calibrated probabilities) reaches a target: the most gold at that
  accuracy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def reliability(p: ArrayLike, y: ArrayLike, *, bins: int = 10) -> dict[str, Any]:
    """ECE, Brier and the diagram (per bin: range, count, mean prediction, observed frequency)."""
    pa = np.asarray(p, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(pa)
    pa, ya = pa[ok], ya[ok]
    if not len(pa):
        return {"ece": None, "brier": None, "n": 0, "bins": []}
    k = np.minimum((pa * bins).astype(np.int64), bins - 1)
    n = np.bincount(k, minlength=bins)
    sp = np.bincount(k, pa, minlength=bins)
    sy = np.bincount(k, ya, minlength=bins)
    ece = float(np.sum(np.abs(sp - sy)) / len(pa))
    diagram = [{"lo": b / bins, "hi": (b + 1) / bins, "n": int(n[b]), "mean_p": float(sp[b] / n[b]),
                "freq": float(sy[b] / n[b])} for b in range(bins) if n[b]]
    return {"ece": ece, "brier": float(np.mean((pa - ya) ** 2)), "n": int(len(pa)), "bins": diagram}


def label_ece(p_first: ArrayLike, truth_first: ArrayLike, *, bins: int = 10) -> float:
    """ECE of the label confidence max(p, 1 - p) against "the label is right" (bins over [.5, 1])."""
    p = np.asarray(p_first, dtype=np.float64)
    t = np.asarray(truth_first, dtype=bool)
    conf = np.maximum(p, 1 - p)
    right = (p >= 0.5) == t
    k = np.minimum(((conf - 0.5) * 2 * bins).astype(np.int64), bins - 1)
    sc = np.bincount(k, conf, minlength=bins)
    sr = np.bincount(k, right, minlength=bins)
    return float(np.sum(np.abs(sc - sr)) / max(len(p), 1))


def coverage_at_accuracy(p_first: ArrayLike, truth_first: ArrayLike, target: float = 0.95) -> float:
    """Largest share of triplets that, ranked by confidence, can be labelled at accuracy >= target."""
    p = np.asarray(p_first, dtype=np.float64)
    conf = np.maximum(p, 1 - p)
    right = (p >= 0.5) == np.asarray(truth_first, dtype=bool)
    o = np.argsort(-conf, kind="stable")
    acc = np.cumsum(right[o]) / np.arange(1, len(o) + 1)
    ok = np.flatnonzero(acc >= target)
    return float((ok.max() + 1) / len(p)) if len(ok) else 0.0


def clopper_pearson_lower(k: int, n: int, level: float = 0.95) -> float | None:
    """One-sided exact lower bound for a proportion with ``k`` successes in ``n`` trials."""
    from scipy.stats import beta

    if n <= 0:
        return None
    return 0.0 if k <= 0 else float(beta.ppf(1 - level, k, n - k + 1))


def threshold_for_accuracy(prob: ArrayLike, target: float) -> float:
    """Smallest t such that labels with probability >= t have mean probability >= ``target``
    (1.0 when even the most confident label falls short)."""
    p = np.sort(np.asarray(prob, dtype=np.float64))[::-1]
    if not len(p):
        return float(target)
    mean = np.cumsum(p) / np.arange(1, len(p) + 1)
    ok = np.flatnonzero(mean >= target)
    return float(p[ok.max()]) if len(ok) else 1.0
