"""How much two similarity methods agree, measured on whole kernels of a random sample.

Pure maths on arrays (no store).  Why whole kernels of a *random* sample: scores on
the pairs a proposer selected because the methods disagree there are biased towards
disagreement, so agreement is only meaningful on documents drawn at random.

* :func:`linear_cka`: linear CKA of two n x n similarity kernels (centred alignment).
* :func:`knn_jaccard`: mean Jaccard overlap of each document's k nearest neighbours.
* :class:`LinearMapAgreement`: a ridge map from one embedding space to another, its
  held-out R^2 and the k-NN overlap of held-out documents after translation.
"""

from __future__ import annotations

import numpy as np


def symmetrise(S: np.ndarray) -> np.ndarray:
    """(S + S^T) / 2 in float64: asymmetric scores (BM25, query-vs-document) as a kernel."""
    S = np.asarray(S, dtype=np.float64)
    return (S + S.T) / 2.0


def centre_kernel(K: np.ndarray) -> np.ndarray:
    """H K H with H = I - 11^T/n, without forming H."""
    K = np.asarray(K, dtype=np.float64)
    row = K.mean(axis=0, keepdims=True)
    col = K.mean(axis=1, keepdims=True)
    return K - row - col + K.mean()


def linear_cka(K: np.ndarray, L: np.ndarray) -> float:
    """Centred kernel alignment <HKH, HLH>_F / (||HKH||_F ||HLH||_F) of two n x n kernels (0..1 for PSD kernels)."""
    if K.shape != L.shape or K.shape[0] != K.shape[1]:
        raise ValueError(f"kernels must be square and of one shape, got {K.shape} and {L.shape}")
    Kc, Lc = centre_kernel(symmetrise(K)), centre_kernel(symmetrise(L))
    den = float(np.linalg.norm(Kc) * np.linalg.norm(Lc))
    return float(np.sum(Kc * Lc) / den) if den > 0 else float("nan")


def knn_indices(S: np.ndarray, k: int) -> np.ndarray:
    """Each row's k most similar columns, excluding itself (ties broken by index)."""
    S = np.array(S, dtype=np.float64, copy=True)
    n = S.shape[0]
    if not 0 < k < n:
        raise ValueError(f"k must be between 1 and n-1 = {n - 1}, got {k}")
    np.fill_diagonal(S, -np.inf)
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    return np.sort(part, axis=1)


def knn_jaccard(S1: np.ndarray, S2: np.ndarray, k: int = 10) -> float:
    """Mean over documents of |N1 ∩ N2| / |N1 ∪ N2| for the k-NN sets under two similarity matrices."""
    a, b = knn_indices(S1, k), knn_indices(S2, k)
    return float(np.mean(row_jaccard(a, b)))


def row_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, |a_i ∩ b_i| / |a_i ∪ b_i| of two [n, k] index arrays."""
    inter = np.array([len(np.intersect1d(x, y, assume_unique=True)) for x, y in zip(a, b, strict=True)], dtype=float)
    return inter / (a.shape[1] + b.shape[1] - inter)


class LinearMapAgreement:
    """Ridge map X -> Y fitted on a random split; held-out R^2 and k-NN overlap after translation.

    ``fit(X, Y)`` sets ``r2_heldout_`` (variance-weighted R^2 of Y on held-out rows),
    ``knn_overlap_`` (mean Jaccard@k, for each held-out document, of its neighbours
    among all documents in Y-space found from its translated vector vs from its true Y
    vector), ``knn_overlap_before_`` (the same with X-space neighbours, no translation),
    ``n_train_``, ``n_test_`` and ``alpha_`` (the ridge penalty: given, or chosen on the training rows by
    generalised cross-validation, since with fewer documents than dimensions an unpenalised map overfits).
    """

    def __init__(self, alpha: float | None = None, test_size: float = 0.25, k: int = 10, seed: int = 0):
        self.alpha, self.test_size, self.k, self.seed = alpha, test_size, k, seed

    def fit(self, X: np.ndarray, Y: np.ndarray) -> LinearMapAgreement:
        X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
        n = len(X)
        if len(Y) != n or n < 8:
            raise ValueError("X and Y need the same rows, at least 8")
        perm = np.random.default_rng(self.seed).permutation(n)
        n_test = max(2, int(round(n * self.test_size)))
        te, tr = perm[:n_test], perm[n_test:]
        mx, my = X[tr].mean(0), Y[tr].mean(0)
        Xc, Yc = X[tr] - mx, Y[tr] - my
        U, s, Vt = np.linalg.svd(Xc, full_matrices=False)
        UtY = U.T @ Yc
        self.alpha_ = self.alpha if self.alpha is not None else _gcv_alpha(s, UtY, Yc)
        W = Vt.T @ ((s / (s * s + self.alpha_))[:, None] * UtY)
        pred = (X[te] - mx) @ W + my
        ss_res = float(np.sum((Y[te] - pred) ** 2))
        ss_tot = float(np.sum((Y[te] - Y[te].mean(0)) ** 2))
        self.coef_, self.r2_heldout_ = W, 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
        k = min(self.k, n - 2)
        self.knn_overlap_ = self._overlap(pred, Y, te, k)
        self.knn_overlap_before_ = self._overlap(X[te], X, te, k, Y=Y)
        self.n_train_, self.n_test_ = len(tr), len(te)
        return self

    @staticmethod
    def _overlap(Q: np.ndarray, base: np.ndarray, te: np.ndarray, k: int, Y: np.ndarray | None = None) -> float:
        """Jaccard@k of each held-out row's neighbours from ``Q`` in ``base`` vs from its true Y in Y."""
        Y = base if Y is None else Y
        found = _top_k(_cos(Q, base), te, k)
        truth = _top_k(_cos(Y[te], Y), te, k)
        return float(np.mean(row_jaccard(found, truth)))


def _gcv_alpha(s: np.ndarray, UtY: np.ndarray, Yc: np.ndarray) -> float:
    """The ridge penalty (on a log grid) with the smallest generalised cross-validation error."""
    n = len(Yc)
    resid0 = float(np.sum(Yc * Yc) - np.sum(UtY * UtY))  # the part of Y outside X's column space
    best, best_gcv = 1.0, np.inf
    for alpha in np.logspace(-4, 3, 29):
        f = s * s / (s * s + alpha)
        rss = resid0 + float(np.sum(((1 - f)[:, None] * UtY) ** 2))
        df = float(f.sum())
        gcv = n * rss / max(n - df, 1e-9) ** 2
        if gcv < best_gcv:
            best, best_gcv = float(alpha), gcv
    return best


def _cos(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    An = A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)
    Bn = B / np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-12)
    return An @ Bn.T


def _top_k(S: np.ndarray, self_idx: np.ndarray, k: int) -> np.ndarray:
    S = S.copy()
    S[np.arange(len(self_idx)), self_idx] = -np.inf  # a document is not its own neighbour
    return np.sort(np.argpartition(-S, k - 1, axis=1)[:, :k], axis=1)
