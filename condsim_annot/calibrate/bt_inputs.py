"""Input handling of :func:`.bt.bradley_terry`: checked arrays, start scores, repeated comparisons as counts."""

from __future__ import annotations

from typing import Any

import numpy as np

from .optim import _as_choices, _Choices


def _start_scores(n, w, lo_, wt, tie=None):
    """Log win ratio per item (a cheap, good start on a well-mixed graph).  A tie counts half
    a win and half a loss for each of its items (so the start, like the fit, does not depend on
    the order in which a tie's two items are given)."""
    if len(w) == 0:
        return np.zeros(n)
    ww = wt if wt is not None else None
    if tie is not None and tie.any():
        ww = np.where(tie, 0.5, 1.0) * (wt if wt is not None else 1.0)
        half = np.where(tie, 0.5 * (wt if wt is not None else 1.0), 0.0)
        wins = np.bincount(w, ww, minlength=n) + np.bincount(lo_, half, minlength=n)
        losses = np.bincount(lo_, ww, minlength=n) + np.bincount(w, half, minlength=n)
    else:
        wins = np.bincount(w, ww, minlength=n)
        losses = np.bincount(lo_, ww, minlength=n)
    s0 = np.log((wins + 0.5) / (losses + 0.5))
    return s0


def _worth_aggregating(n, A, m, any_tie):
    """Aggregate when there are at most m/2 possible distinct comparisons (ordered item pair,
    annotator, tie or not): then at least half of the comparisons are repeats, checked without
    sorting anything.  (1M random comparisons on 10k items are nearly all distinct: no gain.)"""
    return m > 0 and n * (n - 1) * max(A, 1) * (2 if any_tie else 1) * 2 <= m


def _aggregate(n, w, lo_, tie, ann, wt):
    """Collapse identical comparisons (winner, loser, tie, annotator) into one weighted by the
    count (times their weights).  A tie's two items are put in a fixed order (its likelihood
    is symmetric).  Returns ``(w, lo_, tie, ann, weights, counts)``."""
    if tie is not None:
        lo, hi = np.minimum(w, lo_), np.maximum(w, lo_)
        w, lo_ = np.where(tie, lo, w), np.where(tie, hi, lo_)
    key = ((ann * 2 + (tie if tie is not None else 0)) * n + w) * n + lo_
    uk, inv = np.unique(key, return_inverse=True)
    inv = inv.ravel()
    counts = np.bincount(inv, minlength=len(uk)).astype(np.float64)
    weights = np.bincount(inv, wt, minlength=len(uk)) if wt is not None else counts
    rest, l2 = np.divmod(uk, n)
    rest, w2 = np.divmod(rest, n)
    ann2, t2 = np.divmod(rest, 2)
    return w2, l2, (t2.astype(bool) if tie is not None else None), ann2, weights, counts


# --------------------------------------------------------------------------- public API


def _check_inputs(
    winners: Any,
    losers: Any,
    ties: Any,
    annotators: Any,
    weights: Any,
    choice_sets: Any,
    choice_annotators: Any,
    n_items: int | None,
    n_annotators: int | None,
) -> tuple:
    """Arrays of :func:`bradley_terry`'s arguments, checked:
    ``(w, lo_, tie, ann, wt, choices, n, A)`` (lo_: the losers)."""
    w = np.asarray(winners, dtype=np.int64).ravel()
    lo_ = np.asarray(losers, dtype=np.int64).ravel()
    if w.shape != lo_.shape:
        raise ValueError("winners and losers must have the same length")
    m = len(w)
    tie = None if ties is None else np.asarray(ties, dtype=bool).ravel()
    if tie is not None and tie.shape != w.shape:
        raise ValueError("ties must have the same length as winners")
    ann = np.zeros(m, dtype=np.int64) if annotators is None else np.asarray(annotators, dtype=np.int64).ravel()
    if ann.shape != w.shape:
        raise ValueError("annotators must have the same length as winners")
    wt = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if wt is not None and wt.shape != w.shape:
        raise ValueError("weights must have the same length as winners")
    ch = _as_choices(choice_sets, choice_annotators)
    if n_items is None:
        cand = [w.max() + 1 if m else 0, lo_.max() + 1 if m else 0]
        if ch is not None:
            cand.append(ch.member_item.max() + 1)
        n_items = int(max(cand))
    n = int(n_items)
    for arr in (w, lo_) + ((ch.member_item,) if ch is not None else ()):
        if len(arr) and (arr.min() < 0 or arr.max() >= n):
            raise ValueError("item index out of range [0, n_items)")
    if m and np.any(w == lo_):
        raise ValueError("an item cannot be compared with itself")
    if n_annotators is None:
        cand = [ann.max() + 1 if m else 1]
        if ch is not None:
            cand.append(ch.ann.max() + 1)
        n_annotators = int(max(cand))
    A = max(int(n_annotators), 1)
    if (m and (ann.min() < 0 or ann.max() >= A)) or (ch is not None and (ch.ann.min() < 0 or ch.ann.max() >= A)):
        raise ValueError("annotator index out of range [0, n_annotators)")
    return w, lo_, tie, ann, wt, ch, n, A


def _beta_masks(
    A: int, ann: np.ndarray, ch: _Choices | None, fixed_beta: Any, fit_beta: bool, beta_prior: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start betas (pinned ones at their value), the pinned mask and the mask of fitted betas."""
    beta0 = np.ones(A)
    fixed_mask = np.zeros(A, dtype=bool)
    if fixed_beta is not None:
        fb = np.asarray(fixed_beta, dtype=np.float64).ravel()
        if fb.shape != (A,):
            raise ValueError("fixed_beta must have one value (or NaN) per annotator")
        fixed_mask = ~np.isnan(fb)
        if np.any(fb[fixed_mask] <= 0):
            raise ValueError("fixed_beta values must be > 0")
        beta0[fixed_mask] = fb[fixed_mask]
    used = np.zeros(A, dtype=bool)
    used[np.unique(ann)] = True
    if ch is not None:
        used[np.unique(ch.ann)] = True
    do_beta = bool(fit_beta and beta_prior is not None and beta_prior > 0 and (A > 1 or fixed_mask.any()))
    fit_mask = (~fixed_mask) & used if do_beta else np.zeros(A, dtype=bool)
    return beta0, fixed_mask, fit_mask
