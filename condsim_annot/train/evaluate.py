"""Honest held-out evaluation: anchor-grouped splits and triplet accuracy with bootstrap CIs.

Triplets of one anchor are correlated (same query, often the same candidates), so every split
keeps an anchor's triplets on one side, and the bootstrap resamples *anchors* (a cluster
bootstrap), not triplets: the CI is the one a new set of anchors would show.

Gold triplets are mostly chosen by the proposer where its methods disagree, which is biased
against those methods; :func:`accuracy_report` therefore gives the accuracy on every held-out
triplet *and* on the random audit slice alone (the unbiased estimate), labelled as such.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ALL_LABEL = "held-out gold (proposer-selected: biased against the proposer's methods)"
AUDIT_LABEL = "held-out audit slice (uniformly random triplets: unbiased)"


def split_by_anchor(
    anchors: Sequence[int] | np.ndarray, test_fraction: float = 0.2, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows): about ``test_fraction`` of the *anchors* go to test, all their triplets with them."""
    a = np.asarray(anchors)
    uniq = np.unique(a)
    if len(uniq) < 2:
        raise ValueError("an anchor-grouped split needs at least 2 distinct anchors")
    rng = np.random.default_rng(seed)
    n_test = min(len(uniq) - 1, max(1, int(round(len(uniq) * test_fraction))))
    test_anchors = rng.permutation(uniq)[:n_test]
    test = np.isin(a, test_anchors)
    return np.flatnonzero(~test), np.flatnonzero(test)


def kfold_by_anchor(
    anchors: Sequence[int] | np.ndarray, k: int = 5, *, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train rows, test rows) folds; each anchor is in exactly one test fold."""
    a = np.asarray(anchors)
    uniq = np.unique(a)
    k = max(2, min(k, len(uniq)))
    order = np.random.default_rng(seed).permutation(uniq).tolist()
    fold_of = dict(zip(order, np.arange(len(uniq)) % k, strict=True))
    f = np.fromiter((fold_of[x] for x in a.tolist()), dtype=np.int64, count=len(a))
    return [(np.flatnonzero(f != i), np.flatnonzero(f == i)) for i in range(k)]


def correct(margins: np.ndarray) -> np.ndarray:
    """1 where the method prefers the gold positive, 0.5 on an exact tie, else 0."""
    m = np.asarray(margins, dtype=np.float64)
    return np.where(m > 0, 1.0, np.where(m < 0, 0.0, 0.5))


def bootstrap_means(values: np.ndarray, groups: np.ndarray, *, B: int = 1000, seed: int = 0) -> np.ndarray:
    """``B`` means of ``values``, each over whole ``groups`` (anchors) drawn with replacement; one group: its mean."""
    values = np.asarray(values, dtype=np.float64)
    uniq, inv = np.unique(np.asarray(groups), return_inverse=True)
    if len(uniq) < 2:
        return np.full(B, values.mean())
    sums = np.bincount(inv, weights=values, minlength=len(uniq))
    counts = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    pick = np.random.default_rng(seed).integers(0, len(uniq), (B, len(uniq)))
    return np.asarray(sums[pick].sum(1) / counts[pick].sum(1), dtype=np.float64)


def cluster_bootstrap(values: np.ndarray, groups: np.ndarray, *, B: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile CI of the mean of ``values``, resampling whole ``groups`` (anchors)."""
    if len(values) == 0:
        return (float("nan"), float("nan"))
    means = bootstrap_means(values, groups, B=B, seed=seed)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def accuracy(ok: np.ndarray, groups: np.ndarray, *, B: int = 1000, seed: int = 0) -> dict:
    """{"accuracy", "ci", "n", "anchors"} for 0/0.5/1 outcomes grouped by anchor."""
    ok = np.asarray(ok, dtype=np.float64)
    if len(ok) == 0:
        return {"accuracy": None, "ci": [None, None], "n": 0, "anchors": 0}
    lo, hi = cluster_bootstrap(ok, groups, B=B, seed=seed)
    return {"accuracy": float(ok.mean()), "ci": [lo, hi], "n": int(len(ok)), "anchors": int(len(np.unique(groups)))}


def accuracy_report(
    margins: np.ndarray,
    anchors: np.ndarray,
    audit: np.ndarray,
    *,
    B: int = 1000,
    seed: int = 0,
    mask: np.ndarray | None = None,
) -> dict:
    """Accuracy of one method on held-out triplets: ``all`` (biased, see module doc) and ``audit`` (unbiased).

    ``mask`` restricts to the triplets the method answered (e.g. an LM judge's)."""
    ok = correct(margins)
    anchors = np.asarray(anchors)
    audit = np.asarray(audit, dtype=bool)
    keep = np.ones(len(ok), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return {
        "all": accuracy(ok[keep], anchors[keep], B=B, seed=seed),
        "audit": accuracy(ok[keep & audit], anchors[keep & audit], B=B, seed=seed),
    }


def paired_difference(ok_a: np.ndarray, ok_b: np.ndarray, groups: np.ndarray, *, B: int = 1000, seed: int = 0) -> dict:
    """{"diff", "ci", "n", "anchors", "p_le_0"}: accuracy of a minus accuracy of b on the *same* triplets, with a
    95% CI from a paired cluster bootstrap (each resample draws anchors and keeps both methods' outcomes on them),
    and the share of resamples where a does not beat b.  The honest test of "a at least matches b": the shared
    luck of the test set cancels, unlike when two separate CIs are compared."""
    d = np.asarray(ok_a, dtype=np.float64) - np.asarray(ok_b, dtype=np.float64)
    if len(d) == 0:
        return {"diff": None, "ci": [None, None], "n": 0, "anchors": 0, "p_le_0": None}
    means = bootstrap_means(d, groups, B=B, seed=seed)  # one resampling for the CI and P(diff <= 0)
    return {
        "diff": float(d.mean()),
        "ci": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
        "n": int(len(d)),
        "anchors": int(len(np.unique(np.asarray(groups)))),
        "p_le_0": float(np.mean(means <= 0)),
    }


def paired_report(
    margins_a: np.ndarray,
    margins_b: np.ndarray,
    anchors: np.ndarray,
    audit: np.ndarray,
    *,
    B: int = 1000,
    seed: int = 0,
    mask: np.ndarray | None = None,
) -> dict:
    """:func:`paired_difference` of two methods' held-out outcomes, on all held-out gold and on the audit slice."""
    a, b = correct(margins_a), correct(margins_b)
    anchors, audit = np.asarray(anchors), np.asarray(audit, dtype=bool)
    keep = np.ones(len(a), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return {
        "all": paired_difference(a[keep], b[keep], anchors[keep], B=B, seed=seed),
        "audit": paired_difference(a[keep & audit], b[keep & audit], anchors[keep & audit], B=B, seed=seed),
    }
