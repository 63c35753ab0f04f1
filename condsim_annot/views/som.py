"""A small batch self-organising map (Kohonen) in numpy: documents on a grid of cells.

Why batch: each epoch assigns every document to its best-matching cell and moves each
cell to the neighbourhood-weighted mean of the documents near it on the grid.  That is
deterministic given the start, needs no learning rate, and is a handful of matrix
products per epoch (a few thousand documents take well under a second).
"""

from __future__ import annotations

import numpy as np


class SelfOrganizingMap:
    """``SelfOrganizingMap(rows, cols).fit(X)``: ``weights_`` [rows*cols, dim], ``bmu_`` (cell per row of X),
    ``representative_`` (per cell, the row of X closest to it, -1 when the cell is empty), ``quantization_error_``.

    Cells are numbered row-major (cell = r * cols + c).  Started from the data's first two
    principal components (so the grid is oriented like a PCA plot), the neighbourhood
    radius shrinks from ``sigma0`` (default: half the larger side) to ``sigma_end``.
    """

    def __init__(
        self,
        rows: int = 10,
        cols: int = 10,
        n_epochs: int = 30,
        sigma0: float | None = None,
        sigma_end: float = 0.6,
        seed: int = 0,
    ):
        self.rows, self.cols, self.n_epochs, self.sigma0, self.sigma_end, self.seed = (
            rows,
            cols,
            n_epochs,
            sigma0,
            sigma_end,
            seed,
        )

    def _grid(self) -> np.ndarray:
        r, c = np.divmod(np.arange(self.rows * self.cols), self.cols)
        return np.stack([r, c], axis=1).astype(np.float64)

    def _init(self, X: np.ndarray) -> np.ndarray:
        mu = X.mean(0)
        sub = X[:: max(1, len(X) // 1000)] - mu  # the principal plane of a systematic subsample is enough
        _u, s, vt = np.linalg.svd(sub, full_matrices=False)
        sd = s[:2] / np.sqrt(max(len(sub) - 1, 1))
        g = self._grid()
        gr = (g[:, 0] / max(self.rows - 1, 1) - 0.5) * 2
        gc = (g[:, 1] / max(self.cols - 1, 1) - 0.5) * 2
        W = mu + np.outer(gr, vt[0] * sd[0] * 2) + (np.outer(gc, vt[1] * sd[1] * 2) if len(sd) > 1 else 0)
        return W + np.random.default_rng(self.seed).normal(0, 1e-6, W.shape)

    def _bmu(self, X: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d2 = (X * X).sum(1)[:, None] - 2 * X @ W.T + (W * W).sum(1)[None, :]
        b = np.argmin(d2, axis=1)
        return b, np.maximum(d2[np.arange(len(X)), b], 0)

    def fit(self, X: np.ndarray) -> SelfOrganizingMap:
        X = np.asarray(X, dtype=np.float64)
        if len(X) < 2:
            raise ValueError("a self-organising map needs at least 2 documents")
        g = self._grid()
        G2 = ((g[:, None, :] - g[None, :, :]) ** 2).sum(-1)
        W = self._init(X)
        s0 = self.sigma0 or max(self.rows, self.cols) / 2.0
        for e in range(self.n_epochs):
            sigma = s0 * (self.sigma_end / s0) ** (e / max(self.n_epochs - 1, 1))
            b, _ = self._bmu(X, W)
            H = np.exp(-G2 / (2 * sigma * sigma))
            counts = np.bincount(b, minlength=len(W)).astype(np.float64)
            sums = np.zeros_like(W)
            np.add.at(sums, b, X)
            num, den = H @ sums, H @ counts
            ok = den > 1e-12
            W[ok] = num[ok] / den[ok, None]
        self.weights_ = W
        self.bmu_, d2 = self._bmu(X, W)
        self.quantization_error_ = float(np.mean(np.sqrt(d2)))
        rep = np.full(len(W), -1, dtype=np.int64)
        best = np.full(len(W), np.inf)
        for i, (cell, dist) in enumerate(zip(self.bmu_, d2, strict=False)):
            if dist < best[cell]:
                best[cell], rep[cell] = dist, i
        self.representative_ = rep
        return self


def grid_shape(n: int, max_side: int = 12) -> tuple[int, int]:
    """A grid of about one cell per 3-5 documents for small corpora, capped for readability."""
    side = int(np.clip(np.ceil(np.sqrt(n / 3.0)), 3, max_side))
    return side, side
