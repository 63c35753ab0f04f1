"""Posterior summaries of a Bradley-Terry fit: Laplace standard errors, pairs as items, P(s_i > s_j)."""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np


class BootstrapResult(NamedTuple):
    """Result of :func:`bootstrap`: score samples and percentile intervals."""

    samples: np.ndarray  # (n_boot, n_items)
    low: np.ndarray  # (n_items,) lower percentile bound
    high: np.ndarray  # (n_items,) upper percentile bound
    stderr: np.ndarray  # (n_items,) bootstrap standard deviation
    beta_samples: np.ndarray  # (n_boot, n_annotators)
    nu_samples: np.ndarray  # (n_boot,)


def _laplace(n, w, lo_, tie, ann, wt, ch, s, beta, nu, prior_scale, comps, *, exact_limit):
    """Laplace standard errors of the scores (beta, nu fixed); exact covariance for small n."""
    prec = 1.0 / prior_scale**2 if prior_scale else 0.0
    bb = beta[ann] if len(ann) else np.zeros(0)
    d = s[w] - s[lo_]
    h = 0.5 * bb * d
    if tie is not None and nu > 0:
        m = np.maximum(np.abs(h), math.log(nu))
        eA, eB, eT = np.exp(h - m), np.exp(-h - m), nu * np.exp(-m)
        Z = eA + eB + eT
        pA, pB = eA / Z, eB / Z
        c = 0.25 * (pA + pB - (pA - pB) ** 2) * bb**2
    else:
        p = 1.0 / (1.0 + np.exp(-2 * h))
        c = p * (1 - p) * bb**2
    if wt is not None:
        c = c * wt
    p_m = bm = None
    if ch is not None:
        bm = beta[ch.ann][ch.member_set]
        u = bm * s[ch.member_item]
        mx = np.maximum.reduceat(u, ch.starts)
        e = np.exp(u - mx[ch.member_set])
        p_m = e / np.add.reduceat(e, ch.starts)[ch.member_set]
    if n <= exact_limit:
        H = np.zeros((n, n))
        H += (
            np.bincount(w * n + w, c, minlength=n * n)
            + np.bincount(lo_ * n + lo_, c, minlength=n * n)
            - np.bincount(w * n + lo_, c, minlength=n * n)
            - np.bincount(lo_ * n + w, c, minlength=n * n)
        ).reshape(n, n)
        if ch is not None:
            for k in range(ch.n_sets):
                a = ch.starts[k]
                b_ = ch.starts[k + 1] if k + 1 < ch.n_sets else len(ch.member_item)
                it = ch.member_item[a:b_]
                assert p_m is not None
                pk = p_m[a:b_]
                Hk = (beta[ch.ann[k]] ** 2) * (np.diag(pk) - np.outer(pk, pk))
                H[np.ix_(it, it)] += Hk
        if prec:
            M = H + prec * np.eye(n)
            P = None
        else:
            # pseudo-inverse on the per-component centred subspace: (H + P)^-1 - P,
            # P the projector onto the component indicators
            sizes = np.bincount(comps)
            P = (comps[:, None] == comps[None, :]) / sizes[comps][:, None]
            M = H + P
        try:
            cov = np.linalg.inv(M)
        except np.linalg.LinAlgError:
            cov = _inv_by_component(M, comps)
        if P is not None:
            cov -= P
        cov = 0.5 * (cov + cov.T)
        se = np.sqrt(np.maximum(np.diag(cov), 0.0))
        se[np.isnan(np.diag(cov))] = np.inf
        return se, cov
    diag = np.bincount(w, c, minlength=n) + np.bincount(lo_, c, minlength=n)
    if ch is not None and bm is not None and p_m is not None:
        diag += np.bincount(ch.member_item, bm**2 * p_m * (1 - p_m), minlength=n)
    diag = diag + prec
    with np.errstate(divide="ignore"):
        se = np.where(diag > 0, 1.0 / np.sqrt(np.maximum(diag, 1e-300)), np.inf)
    return se, None


def _inv_by_component(M, comps):
    """Inverse of the block-diagonal (by component) Laplace matrix ``M`` when it is singular:
    a component whose block is singular has scores the data do not determine (no finite
    maximum-likelihood estimate, or comparisons that carry no information, e.g. an annotator
    pinned at beta ~ 0) and the prior is off: its covariance is NaN (stderr inf), with a
    warning, instead of a LinAlgError."""

    n = len(M)
    cov = np.zeros((n, n))
    bad = []
    for c in range(int(comps.max()) + 1 if n else 0):
        idx = np.flatnonzero(comps == c)
        blk = np.ix_(idx, idx)
        try:
            cov[blk] = np.linalg.inv(M[blk])
        except np.linalg.LinAlgError:
            cov[blk] = np.nan
            bad.append(c)
    warnings.warn(
        f"Laplace standard errors: the Hessian of the scores is singular in component(s) {bad} "
        f"({int(np.isin(comps, bad).sum())} items): their scores are not identified by the comparisons "
        "(no finite maximum-likelihood estimate, or no information in them); stderr is inf there. "
        "Use a prior on the scores (prior_scale).",
        RuntimeWarning,
        stacklevel=4,
    )
    return cov


# --------------------------------------------------------------------------- pairs as items


def triplet_items(anchor: Any, first: Any, second: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map triplets (a; x, y) to items {a, x} and {a, y} (unordered document pairs).

    Returns ``(item_first, item_second, pairs)``: int arrays (m,) with the item ids of
    {anchor, first} and {anchor, second}, and the pair table (n_items, 2) of document
    ids ``(min, max)`` sorted lexicographically; item ``k`` is ``pairs[k]``.  The same
    unordered pair under two anchors ({a, x} with anchor a and with anchor x) is one item:
    that is what connects the anchors' comparison graphs.
    """
    a = np.asarray(anchor, dtype=np.int64).ravel()
    x = np.asarray(first, dtype=np.int64).ravel()
    y = np.asarray(second, dtype=np.int64).ravel()
    if not (a.shape == x.shape == y.shape):
        raise ValueError("anchor, first, second must have the same length")
    if np.any(a == x) or np.any(a == y) or np.any(x == y):
        raise ValueError("a triplet needs three distinct documents")
    lo = np.concatenate([np.minimum(a, x), np.minimum(a, y)])
    hi = np.concatenate([np.maximum(a, x), np.maximum(a, y)])
    pairs_all = np.stack([lo, hi], axis=1)
    pairs, inv = np.unique(pairs_all, axis=0, return_inverse=True)
    inv = inv.ravel()
    m = len(a)
    return inv[:m].astype(np.int64), inv[m:].astype(np.int64), pairs.reshape(-1, 2)


def prob_greater(scores: Any, uncertainty: Any, i: Any, j: Any) -> np.ndarray:
    """P(s_i > s_j) under a Gaussian posterior.

    ``uncertainty`` is either the standard errors (n_items,) (scores then treated as
    independent) or a covariance matrix (n_items, n_items) (uses var_i + var_j - 2 cov_ij),
    or a :class:`BootstrapResult`-like (B, n_items) sample matrix with more rows than... no:
    pass bootstrap samples as ``uncertainty=BootstrapResult`` to use the empirical share.
    """
    from scipy.stats import norm

    s = np.asarray(scores, dtype=np.float64)
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    if isinstance(uncertainty, BootstrapResult):
        smp = uncertainty.samples
        return (smp[:, i] > smp[:, j]).mean(axis=0) + 0.5 * (smp[:, i] == smp[:, j]).mean(axis=0)
    u = np.asarray(uncertainty, dtype=np.float64)
    d = s[i] - s[j]
    if u.ndim == 2:
        var = u[i, i] + u[j, j] - 2 * u[i, j]
    else:
        var = u[i] ** 2 + u[j] ** 2
    sd = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, d / np.where(sd > 0, sd, 1.0), np.sign(d) * np.inf)
    out = norm.cdf(z)
    return np.where((sd == 0) & (d == 0), 0.5, out)
