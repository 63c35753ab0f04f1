"""The arrays :class:`.model.TripletModel` works on (votes grouped by triplet) and its small numeric helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

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


def _sigmoid(x: F64 | float) -> F64:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64))), dtype=np.float64)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sample_votes(ann: I64, k: int, rng: np.random.Generator) -> I64:
    """Indexes of at most ``k`` votes per annotator (seeded), sorted."""
    perm = rng.permutation(len(ann))
    a = ann[perm]
    order = np.argsort(a, kind="stable")
    a_s = a[order]
    first = np.searchsorted(a_s, a_s, side="left")
    rank = np.arange(len(a_s)) - first
    keep = perm[order[rank < k]]
    return np.sort(keep).astype(np.int64)
