"""Shared numerics of the calibration fits: one BLAS thread, Luce choice sets, graph components, L-BFGS.

Store-free helpers used by :mod:`.bt` (the Bradley-Terry/Davidson/Luce fit) and :mod:`.model`
(the triplet model).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from threadpoolctl import threadpool_limits

F = TypeVar("F", bound=Callable[..., Any])


def one_blas_thread() -> Any:
    """The fit's BLAS calls are dot products and small vector updates: a multi-threaded
    OpenBLAS makes them much slower (its threads spin, worst on a busy machine), so the fit
    runs on one BLAS thread (threadpoolctl, which comes with scikit-learn)."""
    return threadpool_limits(1, user_api="blas")


def single_blas_thread(fn: F) -> F:
    """Decorator: run ``fn`` on one BLAS thread (:func:`one_blas_thread`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_blas_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------- input handling


@dataclass
class _Choices:
    """Luce choice sets, flattened: members sorted by set."""

    member_item: np.ndarray  # (M,) item of each member
    member_set: np.ndarray  # (M,) set of each member
    is_chosen: np.ndarray  # (M,) float 1.0 for the chosen member
    starts: np.ndarray  # (S,) first member index of each set
    ann: np.ndarray  # (S,) annotator of each set
    chosen: np.ndarray  # (S,) chosen item

    @property
    def n_sets(self) -> int:
        return len(self.starts)


def _as_choices(choice_sets: Any, choice_annotators: Any = None) -> _Choices | None:
    """Normalise Luce choices.

    Accepted forms: a sequence of ``(chosen, alternatives)`` or
    ``(chosen, alternatives, annotator)`` tuples (``alternatives`` may or may not contain
    ``chosen``; duplicates are dropped), or a CSR-like tuple ``(chosen, indptr, indices)``
    / ``(chosen, indptr, indices, annotators)`` of arrays where set ``k`` offers
    ``indices[indptr[k]:indptr[k+1]]``.
    """
    if choice_sets is None:
        return None
    if isinstance(choice_sets, tuple) and len(choice_sets) in (3, 4) and all(
        isinstance(x, np.ndarray) for x in choice_sets
    ):
        chosen = np.asarray(choice_sets[0], dtype=np.int64)
        indptr = np.asarray(choice_sets[1], dtype=np.int64)
        indices = np.asarray(choice_sets[2], dtype=np.int64)
        anns = np.asarray(choice_sets[3], dtype=np.int64) if len(choice_sets) == 4 else None
        sets: list[Any] = [(int(chosen[k]), indices[indptr[k] : indptr[k + 1]].tolist()) for k in range(len(chosen))]
        if anns is not None:
            sets = [(c, o, int(a)) for (c, o), a in zip(sets, anns, strict=False)]
    else:
        sets = list(choice_sets)
    if not sets:
        return None
    items: list[int] = []
    set_of: list[int] = []
    chosen_flag: list[float] = []
    ann: list[int] = []
    chosen_l: list[int] = []
    starts: list[int] = []
    for k, entry in enumerate(sets):
        c = int(entry[0])
        alts = [int(x) for x in entry[1]]
        a = int(entry[2]) if len(entry) > 2 and entry[2] is not None else 0
        if choice_annotators is not None:
            a = int(choice_annotators[k])
        members = [c] + sorted(set(alts) - {c})
        starts.append(len(items))
        items.extend(members)
        set_of.extend([k] * len(members))
        chosen_flag.extend([1.0] + [0.0] * (len(members) - 1))
        ann.append(a)
        chosen_l.append(c)
    return _Choices(
        member_item=np.asarray(items, dtype=np.int64),
        member_set=np.asarray(set_of, dtype=np.int64),
        is_chosen=np.asarray(chosen_flag, dtype=np.float64),
        starts=np.asarray(starts, dtype=np.int64),
        ann=np.asarray(ann, dtype=np.int64),
        chosen=np.asarray(chosen_l, dtype=np.int64),
    )


def components(n_items: int, winners: Any = (), losers: Any = (), choice_sets: Any = None) -> np.ndarray:
    """Connected components of the comparison graph, numbered by size (0 = largest).

    Edges: every pairwise comparison (ties included) and, for a Luce set, the chosen item
    with every alternative.  Ties in size are ordered by the smallest item in the component.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    w = np.asarray(winners, dtype=np.int64).ravel()
    lo_ = np.asarray(losers, dtype=np.int64).ravel()
    ch = choice_sets if isinstance(choice_sets, _Choices) else _as_choices(choice_sets)
    if ch is not None:
        w = np.concatenate([w, ch.chosen[ch.member_set]])
        lo_ = np.concatenate([lo_, ch.member_item])
    if n_items == 0:
        return np.zeros(0, dtype=np.int64)
    g = coo_matrix((np.ones(len(w), dtype=np.int8), (w, lo_)), shape=(n_items, n_items)).tocsr()
    n_comp, lab = connected_components(g, directed=False)
    sizes = np.bincount(lab, minlength=n_comp)
    first = np.full(n_comp, n_items, dtype=np.int64)
    np.minimum.at(first, lab, np.arange(n_items))
    order = np.lexsort((first, -sizes))
    remap = np.empty(n_comp, dtype=np.int64)
    remap[order] = np.arange(n_comp)
    return remap[lab]



def lbfgs(fg, x, lo, hi, *, max_iter: int, tol: float, memory: int = 20):
    """Limited-memory BFGS with a projected backtracking (Armijo) line search.

    Meant for well-scaled coordinates (Hessian ~ identity): the first trial step is the full
    step ``-g`` (scipy's L-BFGS-B starts with a unit-length step and spends several function
    evaluations growing it).  Box bounds ``lo``/``hi`` are enforced by projection (they are
    rarely active here: only log beta and log nu have them).  Stops when max|g| <= tol (or no
    further decrease is possible within rounding).  Returns (x, n_iter, converged).
    """
    f, g = fg(x)
    S: list = []
    Y: list = []
    R: list = []  # 1 / (y @ s)
    n_iter = 0
    bounded = bool(np.any(np.isfinite(lo)) or np.any(np.isfinite(hi)))
    tmp = np.empty_like(x)

    def free(x_, g_):
        if not bounded:
            return None
        return ~(((x_ <= lo) & (g_ > 0)) | ((x_ >= hi) & (g_ < 0)))

    def gmax(g_, fr):
        return float(np.max(np.abs(g_ if fr is None else g_[fr]), initial=0.0))

    for n_iter in range(1, max_iter + 1):
        fr = free(x, g)
        if not gmax(g, fr) > tol:
            return x, n_iter - 1, True
        q = _two_loop(g, S, Y, R, fr, tmp)
        d = np.negative(q, out=q)
        if float(g @ d) >= 0:  # not a descent direction: restart from the gradient
            S.clear()
            Y.clear()
            R.clear()
            d = -g if fr is None else -np.where(fr, g, 0.0)
        step = 1.0
        ok = False
        for _ in range(40):
            xn = x + step * d
            if bounded:
                np.clip(xn, lo, hi, out=xn)
            dx = xn - x
            gd = float(g @ dx)
            if gd >= 0:
                break
            fn, gn = fg(xn)
            if fn <= f + 1e-4 * gd or (fn <= f + 1e-13 * abs(f) and np.max(np.abs(gn)) < np.max(np.abs(g))):
                ok = True
                break
            # quadratic interpolation, safeguarded
            denom = 2.0 * (fn - f - gd)
            t_ = -gd / denom if denom > 0 else 0.5
            step *= min(0.5, max(0.1, t_))
        if not ok:
            return x, n_iter, bool(not gmax(g, free(x, g)) > tol)
        s_, y_ = xn - x, gn - g
        sy = float(s_ @ y_)
        if sy > 1e-12 * float(y_ @ y_):
            S.append(s_)
            Y.append(y_)
            R.append(1.0 / sy)
            if len(S) > memory:
                S.pop(0)
                Y.pop(0)
                R.pop(0)
        x, f, g = xn, fn, gn
    return x, n_iter, bool(not gmax(g, free(x, g)) > tol)


def _two_loop(g: np.ndarray, S: list, Y: list, R: list, fr: np.ndarray | None, tmp: np.ndarray) -> np.ndarray:
    """L-BFGS two-loop recursion: the quasi-Newton direction's negative, H g (free coordinates only)."""
    q = g.copy() if fr is None else np.where(fr, g, 0.0)
    al = []
    for s_, y_, r_ in zip(reversed(S), reversed(Y), reversed(R), strict=False):
        a_ = r_ * float(s_ @ q)
        al.append(a_)
        np.multiply(y_, a_, out=tmp)
        q -= tmp
    gamma = float(S[-1] @ Y[-1]) / float(Y[-1] @ Y[-1]) if S else 1.0
    q *= gamma
    for s_, y_, r_, a_ in zip(S, Y, R, reversed(al), strict=False):
        b_ = r_ * float(y_ @ q)
        np.multiply(s_, a_ - b_, out=tmp)
        q += tmp
    if fr is not None:
        q[~fr] = 0.0
    return q


def newton_cg(fun, x, scale, *, max_iter: int, tol: float, max_cg: int = 500):
    """Truncated Newton for a smooth convex objective: preconditioned conjugate gradients on H p = -g, then
    a backtracking (Armijo) line search from the full step.

    ``fun(x)`` returns (f, g, diag, hvp): the value, the gradient, the Hessian's diagonal (the Jacobi
    preconditioner) and a function v -> H v.  Stops when max|g / scale| <= tol (the test :func:`lbfgs`
    applies in scaled coordinates; ``scale`` None: sqrt of the diagonal at the start).  Worth it where H v is
    much cheaper than ``fun`` (the triplet model's MAP: a product runs over triplets, ``fun`` over votes with
    an exp and a log each): a warm start far from the optimum took L-BFGS 120 evaluations, Newton about 20.
    CG stops at a residual of min(.1, gmax) gmax (superlinear near the optimum).  Returns (x, n_iter, converged).
    """
    f, g, hd, hv = fun(x)
    scale = np.sqrt(hd) if scale is None else scale
    for it in range(max_iter):
        gmax = float(np.max(np.abs(g / scale), initial=0.0))
        if gmax <= tol:
            return x, it, True
        p = _pcg(hv, -g, hd, scale, max(0.2 * tol, min(0.1, gmax) * gmax), max_cg)
        gd = float(g @ p)
        if gd >= 0:  # not a descent direction (rounding): the preconditioned gradient
            p = -g / hd
            gd = float(g @ p)
        step, ok = 1.0, False
        for _ in range(40):
            fn, gn, hdn, hvn = fun(x + step * p)
            if fn <= f + 1e-4 * step * gd or (fn <= f + 1e-13 * abs(f) and np.max(np.abs(gn)) < np.max(np.abs(g))):
                ok = True
                break
            denom = 2.0 * (fn - f - step * gd)  # quadratic interpolation, safeguarded
            step *= min(0.5, max(0.1, -step * gd / denom if denom > 0 else 0.5))
        if not ok:
            return x, it + 1, bool(gmax <= tol)
        x, f, g, hd, hv = x + step * p, fn, gn, hdn, hvn
    return x, max_iter, bool(np.max(np.abs(g / scale), initial=0.0) <= tol)


def _pcg(hv, b, hd, scale, target: float, max_iter: int) -> np.ndarray:
    """Preconditioned CG for H p = b (diagonal preconditioner ``hd``), until max|residual / scale| <= target."""
    p = np.zeros_like(b)
    r = b.copy()
    z = r / hd
    s = z.copy()
    rz = float(r @ z)
    for _ in range(max_iter):
        if not np.max(np.abs(r / scale), initial=0.0) > target:
            break
        hs = hv(s)
        shs = float(s @ hs)
        if shs <= 0:  # H not positive on s (rounding): stop with what we have
            break
        a = rz / shs
        p += a * s
        r -= a * hs
        np.divide(r, hd, out=z)
        rz_new = float(r @ z)
        s = z + (rz_new / rz) * s
        rz = rz_new
    return p


_lbfgs = lbfgs
_one_blas_thread = one_blas_thread
_single_blas_thread = single_blas_thread
