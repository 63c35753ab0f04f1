"""The arrays :class:`.model.TripletModel` works on (votes grouped by triplet) and its small numeric helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .davidson import TIE

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass
class _Data:
    """Votes grouped by triplet (a triplet = one ordered item pair i, j)."""

    n: int
    ti: I64  # (T,) item i of each triplet
    tj: I64  # (T,) item j
    vt: I64  # (m,) triplet of each vote, sorted
    out: I64  # (m,) outcome relative to (i, j)
    ann: I64  # (m,) annotator
    order: I64  # (m,) position of each sorted vote in the caller's arrays
    flip: NDArray[np.bool_]  # (m,) the caller gave the vote's items as (j, i)
    starts: I64  # (T + 1,) vote range of each triplet
    dphi: F64  # (T, F) phi_i - phi_j
    phi: F64  # (n, F)
    A: int


def _prepare(first: I64, second: I64, outcome: I64, ann: I64, n: int, A: int, phi: F64) -> _Data:
    lo, hi = np.minimum(first, second), np.maximum(first, second)
    flip = first > second
    out = np.where(flip & (outcome != TIE), 1 - outcome, outcome)
    key = lo * n + hi
    uk, vt = np.unique(key, return_inverse=True)
    vt = vt.ravel().astype(np.int64)
    ti, tj = (uk // n).astype(np.int64), (uk % n).astype(np.int64)
    order = np.argsort(vt, kind="stable").astype(np.int64)
    vt_s = vt[order]
    starts = np.searchsorted(vt_s, np.arange(len(uk) + 1)).astype(np.int64)
    return _Data(
        n=n,
        ti=ti,
        tj=tj,
        vt=vt_s,
        out=out[order].astype(np.int64),
        ann=ann[order],
        order=order,
        flip=flip[order],
        starts=starts,
        dphi=phi[ti] - phi[tj],
        phi=phi,
        A=A,
    )


class _VoteTerms:
    """The MAP's per-vote Davidson terms at fixed beta and nu (d nll / d d and its curvature), computed in five
    vote-sized buffers allocated once per MAP: a fresh 1M-vote temporary per operation cost more in page
    faults than the arithmetic.  With e = exp(-|h|), z = 1 + e^2 + nu e: log Z = |h| + log z, pF - pS =
    sign(h)(1 - e^2)/z, pF + pS = (1 + e^2)/z: one exp and one log per vote."""

    def __init__(self, vt: I64, half_b: F64, nu_v: F64, sgn: F64, lnu_ties: float) -> None:
        self.vt, self.half_b, self.nu_v, self.sgn, self.lnu_ties = vt, half_b, nu_v, sgn, lnu_ties
        self.half_b2 = half_b * half_b
        self._buf = [np.empty(len(vt)) for _ in range(5)]

    def __call__(self, dt: F64, want_c: bool = True) -> tuple[float, F64, F64]:
        """(log-likelihood, r, c) for the triplets' d ``dt``: r = d nll / d d per vote, c its curvature (zeros
        unless ``want_c``).  r and c are buffers, valid until the next call."""
        h, a, e, z, q = self._buf
        np.take(dt, self.vt, out=h)
        h *= self.half_b
        np.abs(h, out=a)
        np.negative(a, out=e)
        np.exp(e, out=e)
        np.multiply(self.nu_v, e, out=z)
        z += 1.0
        e *= e  # e^2 from here on
        z += e
        ll = float(h @ self.sgn) + self.lnu_ties - float(a.sum())
        np.log(z, out=a)
        ll -= float(a.sum())
        np.subtract(1.0, e, out=q)
        q /= z
        np.copysign(q, h, out=q)  # pF - pS
        if want_c:
            np.add(1.0, e, out=a)
            a /= z
            np.multiply(q, q, out=z)
            a -= z
            a *= self.half_b2
        else:
            a.fill(0.0)
        np.subtract(q, self.sgn, out=h)
        h *= self.half_b
        return ll, h, a


class _ScoreHessian:
    """The sparsity pattern of the MAP Hessian's score block, B' diag(c_t) B + diag (B: +1 at item i, -1 at item j
    of each triplet), fixed for a fit: one entry per item and two per triplet, filled per Newton step by three
    scatters.  A product with it is a third of the cost of gathering, weighting and scattering over the triplets
    (the CG steps of :func:`.optim.newton_cg` are mostly such products)."""

    def __init__(self, n: int, ti: I64, tj: I64) -> None:
        T = len(ti)
        rows = np.concatenate([np.arange(n), ti, tj])
        cols = np.concatenate([np.arange(n), tj, ti])
        order = np.lexsort((cols, rows))
        self.n = n
        self.indices = cols[order].astype(np.int32 if n < 2**31 else np.int64)
        self.indptr = np.searchsorted(rows[order], np.arange(n + 1)).astype(self.indices.dtype)
        pos = np.empty(n + 2 * T, dtype=np.int64)
        pos[order] = np.arange(n + 2 * T)
        self.diag, self.ij, self.ji = pos[:n], pos[n : n + T], pos[n + T :]
        from scipy.sparse import csr_matrix

        t2 = np.concatenate([np.arange(T), np.arange(T)])
        sign = np.concatenate([np.ones(T), -np.ones(T)])
        self.bt = csr_matrix((sign, (np.concatenate([ti, tj]), t2)), shape=(n, T))  # B', for H_uw = B' diag(c) dphi

    def matrix(self, diag: NDArray[np.floating], ct: NDArray[np.floating]) -> Any:
        """The (n, n) CSR matrix with ``diag`` on the diagonal and -c_t at (i_t, j_t) and (j_t, i_t)."""
        from scipy.sparse import csr_matrix

        data = np.empty(len(self.indices))
        data[self.diag] = diag
        data[self.ij] = -ct
        data[self.ji] = -ct
        return csr_matrix((data, self.indices, self.indptr), shape=(self.n, self.n))


def _sigmoid(x: F64 | float) -> F64:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64))), dtype=np.float64)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sample_votes(ann: I64, k: int, rng: np.random.Generator) -> I64:
    """Indexes of at most ``k`` votes per annotator (seeded), sorted."""
    perm = rng.permutation(len(ann))
    a = ann[perm]
    # a stable sort of small integers is a radix sort (10x faster at 1M votes); the order is the same
    order = np.argsort(a.astype(np.int16) if len(a) and a.max() < 2**15 else a, kind="stable")
    a_s = a[order]
    first = np.searchsorted(a_s, a_s, side="left")
    rank = np.arange(len(a_s)) - first
    keep = perm[order[rank < k]]
    return np.sort(keep).astype(np.int64)


def bp_cavity(n: int, ti: I64, tj: I64, c: F64, p0: float, *, iters: int = 30, tol: float = 1e-4) -> tuple[F64, F64]:
    """Each triplet's two cavity precisions, of u_i and of u_j without the triplet's own votes, by Gaussian belief
    propagation on the comparison graph (the Laplace Hessian: prior precision ``p0`` per item, curvature ``c`` per
    triplet): an item's precision is p0 plus, from each of its other triplets, c P / (c + P), P the other item's
    cavity precision.  Exact where the triplets form a forest, the usual approximation with cycles.  Holding the
    neighbours fixed (a message c: the start) overstates the precision where pairs are shared, so that a triplet's
    own votes stay partly in its cavity."""
    mi, mj = c.astype(np.float64), c.astype(np.float64)
    for _ in range(iters):
        P = p0 + np.bincount(ti, mi, minlength=n) + np.bincount(tj, mj, minlength=n)
        pi_, pj_ = P[ti] - mi, P[tj] - mj
        ni, nj = c * pj_ / (c + pj_), c * pi_ / (c + pi_)
        done = not len(c) or max(float(np.max(np.abs(ni - mi))), float(np.max(np.abs(nj - mj)))) <= tol * p0
        mi, mj = ni, nj
        if done:
            break
    P = p0 + np.bincount(ti, mi, minlength=n) + np.bincount(tj, mj, minlength=n)
    return np.maximum(P[ti] - mi, p0), np.maximum(P[tj] - mj, p0)


#: first, second, outcome, annotator per vote; n_items, n_annotators; features (n_items, F); fixed betas (A,)
Checked = tuple[I64, I64, I64, I64, int, int, F64, F64]


def _validate(
    first: ArrayLike,
    second: ArrayLike,
    outcome: ArrayLike,
    annotators: ArrayLike | None,
    n_items: int | None,
    n_annotators: int | None,
    features: ArrayLike | None,
    fixed_beta: ArrayLike | None,
    fit_ties: bool,
) -> Checked:
    f = np.asarray(first, dtype=np.int64).ravel()
    s = np.asarray(second, dtype=np.int64).ravel()
    o = np.asarray(outcome, dtype=np.int64).ravel()
    m = len(f)
    a = np.zeros(m, dtype=np.int64) if annotators is None else np.asarray(annotators, dtype=np.int64).ravel()
    if not (len(s) == len(o) == len(a) == m):
        raise ValueError("first, second, outcome and annotators must have the same length")
    if m and (np.any(f == s) or o.min() < 0 or o.max() > 2):
        raise ValueError("a vote compares two different items, with outcome 0, 1 or 2")
    n = int(n_items if n_items is not None else (max(f.max(), s.max()) + 1 if m else 0))
    A = int(n_annotators if n_annotators is not None else (a.max() + 1 if m else 1))
    if m and (min(f.min(), s.min()) < 0 or max(f.max(), s.max()) >= n or a.min() < 0 or a.max() >= A):
        raise ValueError("item or annotator index out of range")
    if not fit_ties and m:
        keep = o != TIE
        f, s, o, a = f[keep], s[keep], o[keep], a[keep]
    phi = np.zeros((n, 0)) if features is None else np.asarray(features, dtype=np.float64)
    if phi.ndim != 2 or phi.shape[0] != n or not np.all(np.isfinite(phi)):
        raise ValueError("features must be a finite (n_items, n_features) array")
    fixed = np.full(A, np.nan) if fixed_beta is None else np.asarray(fixed_beta, dtype=np.float64).ravel()
    if fixed.shape != (A,) or np.any(fixed[~np.isnan(fixed)] <= 0):
        raise ValueError("fixed_beta must have one value > 0 (or NaN) per annotator")
    return f, s, o, a, n, A, phi, fixed


def profile_step(offs: NDArray[np.floating], lml: NDArray[np.floating]) -> tuple[float, float]:
    """(step, sd) on the log scale from a profile's values ``lml`` at evenly spaced ``offs``: the vertex of the
    parabola through the maximum and its neighbours, and its curvature's sd (.3 by default); the maximum itself at
    an edge, or where a neighbour was not evaluated (-inf: the tau profile goes uphill from the middle only)."""
    k = int(np.argmax(lml))
    if not (0 < k < len(offs) - 1 and np.all(np.isfinite(lml[k - 1 : k + 2]))):
        return float(offs[k]), 0.3
    y0, y1, y2 = lml[k - 1], lml[k], lml[k + 1]
    h = offs[1] - offs[0]
    curv = (y0 - 2 * y1 + y2) / h**2
    if curv >= 0:
        return 0.0, 0.3
    return float(offs[k] - (y2 - y0) / (2 * h) / curv), float(1 / math.sqrt(-curv))


def tie_slope(zs: NDArray[np.floating], z0: NDArray[np.floating], g: F64, a0: float) -> tuple[float, float] | None:
    """logit P(true tie) = a + b g from each triplet's slab and spike log evidences ``zs``, ``z0`` (EM on the spike's
    responsibilities, IRLS steps, from (``a0``, 0)); None unless it raises the marginal likelihood by more than 2."""
    gm = float(np.median(g))
    X = np.stack([np.ones(len(g) + 2), np.concatenate([g, [gm, gm]])], 1)
    coef = np.array([a0, 0.0])

    def loglik(c: F64) -> float:
        pi = _sigmoid(c[0] + c[1] * g)
        return float(np.logaddexp(np.log1p(-pi) + zs, np.log(pi) + z0).sum() + 2.0 * np.log1p(-np.mean(pi)))

    base = loglik(coef)
    for _ in range(30):  # EM: responsibilities, then a weighted logistic fit to them
        pi = _sigmoid(coef[0] + coef[1] * g)
        r = np.concatenate([_sigmoid(np.log(pi) + z0 - np.log1p(-pi) - zs), [0.0, 0.0]])
        for _ in range(3):
            q = _sigmoid(X @ coef)
            H = (X * (q * (1 - q))[:, None]).T @ X + np.diag([1e-6, 1e-2])
            coef = coef + np.linalg.solve(H, X.T @ (r - q) - np.array([0.0, 1e-2]) * coef)
            coef = np.clip(coef, [-12.0, -20.0], [12.0, 20.0])
    return (float(coef[0]), float(coef[1])) if loglik(coef) > base + 2.0 else None
