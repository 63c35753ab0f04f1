"""2-D projections of a representation: UMAP, t-SNE or PCA, and a kernel as features.

PCA is the default: instant, deterministic, and distances along its axes mean something.
UMAP (umap-learn) shows local neighbourhoods and clusters best, but its numba code is
compiled in every new process (~15 s on 2 cores before the first map) and each map of a
few thousand documents takes seconds; t-SNE (scikit-learn) is slower still.  Inputs above
50 dimensions are first reduced to 50 principal components (standard practice: it removes
noise and makes the neighbour search several times faster).
"""

from __future__ import annotations

import numpy as np

from condsim_annot.errors import CondsimError

PROJECTIONS = ("pca", "umap", "tsne")


def default_projection() -> str:
    return "pca"


def pca(X: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """The first ``dim`` principal components (randomised SVD when that is much cheaper)."""
    from sklearn.decomposition import PCA

    dim = min(dim, X.shape[0], X.shape[1])
    solver = "randomized" if min(X.shape) > 2 * dim else "full"
    return PCA(n_components=dim, svd_solver=solver, random_state=seed).fit_transform(np.asarray(X, dtype=np.float64))


def kernel_features(K: np.ndarray, dim: int = 50, seed: int = 0) -> np.ndarray:
    """Kernel PCA features of a similarity kernel (symmetrised, cosine-normalised, centred): rows whose dot
    products approximate the kernel, so a kernel-only method (BM25) can be projected like an embedding."""
    from sklearn.utils.extmath import randomized_svd

    K = np.asarray(K, dtype=np.float64)
    K = (K + K.T) / 2
    d = np.sqrt(np.maximum(np.diag(K), 1e-12))
    K = K / d[:, None] / d[None, :]
    K = K - K.mean(0, keepdims=True) - K.mean(1, keepdims=True) + K.mean()
    dim = min(dim, len(K) - 1)
    U, s, _ = randomized_svd(K.astype(np.float32), n_components=dim, n_iter=2, random_state=seed)
    return U * np.sqrt(np.maximum(s, 0))


def project(X: np.ndarray, method: str = "umap", seed: int = 0, metric: str = "cosine") -> np.ndarray:
    """[n, 2] coordinates of the rows of X, scaled to unit standard deviation."""
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; expected one of {', '.join(PROJECTIONS)}")
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    if method == "pca" or n < 8:
        xy = pca(X, 2, seed)
    else:
        Z = pca(X, 50, seed) if X.shape[1] > 50 and n > 50 else X
        if method == "umap":
            try:
                import umap
            except ImportError:
                raise CondsimError(
                    "--projection umap needs umap-learn (`pip install umap-learn`); or use --projection pca / tsne"
                ) from None

            xy = umap.UMAP(
                n_neighbors=min(15, n - 1),
                min_dist=0.1,
                metric=metric if Z is X else "euclidean",
                random_state=seed,
                n_jobs=1,
            ).fit_transform(Z)
        else:
            from sklearn.manifold import TSNE

            xy = TSNE(
                n_components=2,
                perplexity=min(30.0, (n - 1) / 3),
                init="pca",
                random_state=seed,
                metric=metric if Z is X else "euclidean",
            ).fit_transform(Z)
    xy = np.asarray(xy, dtype=np.float64)
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    xy = xy - xy.mean(0)
    return xy / max(float(xy.std()), 1e-12)
