"""Bradley-Terry / Davidson / Luce fits on arrays (store-free, crowd-kit/choix style).

The model
---------
Each comparison ``k`` says that item ``winners[k]`` beat item ``losers[k]`` (or, with
``ties[k]``, that the two tied), judged by annotator ``j = annotators[k]``::

    h      = beta_j * (s_w - s_l) / 2
    P(win) = exp(h)  / (exp(h) + exp(-h) + nu)          # = sigmoid(beta_j (s_w - s_l)) when nu = 0
    P(tie) = nu      / (exp(h) + exp(-h) + nu)          # Davidson (1970), tie parameter nu >= 0

A best-of-k answer (a Luce choice) says that item ``c`` was chosen among a set ``S``
by annotator ``j``::

    P(c | S) = exp(beta_j s_c) / sum_{y in S} exp(beta_j s_y)

(for ``|S| = 2`` this is the pairwise model without ties).

Estimation is maximum a posteriori with analytic gradients (``np.bincount`` scatter over
the comparison arrays, float64) minimised by L-BFGS in diagonally preconditioned
coordinates: every parameter is scaled by the square root of its Fisher information at the
start point, so the tolerance ``tol`` is roughly "error in units of a standard error" and a
well-mixed comparison graph is solved in about ten iterations.  The default optimiser is a
small L-BFGS (:func:`_lbfgs`) whose first trial step is the full preconditioned Newton step;
``bt.OPTIMIZER = "L-BFGS-B"`` uses ``scipy.optimize``'s L-BFGS-B on the same objective and
scaling instead (same optimum; a few more function evaluations).  The fit runs in two
stages: scores with beta = 1 (and nu fixed), then everything, from there.  All BLAS work runs
on one thread (threadpoolctl): the vectors are small and OpenBLAS threads only spin.  The pass
over the comparisons runs in place in buffers allocated once per fit (one exp and one log per
comparison; fresh temporaries cost more in page faults than the arithmetic), and repeated
comparisons (same items, outcome and annotator) enter once with their count as a weight when
there are at most half as many possible distinct ones as comparisons (``AGGREGATE``).

Choices (documented because they change numbers)
------------------------------------------------
* **Discrimination beta_j >= 0** is fitted as ``log beta_j`` (so it is positive) with a
  Gaussian prior ``N(0, beta_prior^2)`` on ``log beta_j`` and the box
  ``log beta in [-10, 5]``.  A noisy annotator gets a small beta; an adversarial one
  (who answers against the truth) is driven towards beta ~ 0: his votes stop counting,
  they are *not* flipped and used (we do not trust an annotator because he is reliably
  wrong).  ``beta_prior=None`` (or ``fit_beta=False``, or a single annotator) keeps
  beta = 1 for everybody; ``fixed_beta`` pins chosen annotators (e.g. an answer key).
* **Scores prior**: ``prior_scale`` is the standard deviation of a Gaussian prior
  ``N(0, prior_scale^2)`` on every score; it makes the MAP unique even on a
  disconnected comparison graph.  With it off (``None`` or ``0``) the likelihood is
  invariant to a shift of the scores inside each connected component, so the returned
  scores are centred (mean 0) per component; a component where one item wins every
  comparison has no finite maximum-likelihood estimate (the fit then stops at large
  scores, as every unregularised BT fit does): use a prior there.
* **Ties**: with ``fit_ties`` (default) and at least one tie, ``nu`` is fitted by
  maximum likelihood (as ``log nu``, box [-20, 5], no prior); with ``fit_ties=False``
  tied comparisons are left out of the fit (and ``nu`` is reported as 0).
* **Stderr** (Laplace approximation, conditional on the fitted beta and nu): for
  ``n_items <= exact_limit`` (default 1000) the exact inverse of the Hessian of the
  negative log posterior in the scores (its pseudo-inverse on the per-component
  centred subspace when the prior is off; ``BTResult.cov`` holds it); above that the
  inverse of the Hessian's diagonal (``cov`` is None).  The diagonal version ignores
  correlations between scores; on a well-mixed comparison graph it is close to the
  exact marginal, on a chain-like one it is too small.  :func:`bootstrap` over
  comparisons gives intervals without that approximation.
* **Connected components** of the comparison graph (pairwise comparisons and Luce
  sets) are numbered by size, largest first (ties by smallest item).  Scores are
  comparable only inside a component (and, with the prior on, shrunk towards 0 there).

Pairs as items
--------------
For triplet votes (a; x, y) the items are unordered document pairs {a, x}:
:func:`triplet_items` maps the triplets to item ids and returns the pair table, and
:func:`prob_greater` gives P(s_i > s_j) for gold labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import numpy as np
from scipy.optimize import minimize

__all__ = [
    "BTResult",
    "BootstrapResult",
    "bradley_terry",
    "bootstrap",
    "components",
    "triplet_items",
    "prob_greater",
    "log_posterior",
]

LOG_BETA_BOUNDS = (-10.0, 5.0)
LOG_NU_BOUNDS = (-20.0, 5.0)


class BTResult(NamedTuple):
    """Result of :func:`bradley_terry` (a NamedTuple: ``scores, beta, nu, stderr, ...``).

    scores: (n_items,) float64 latent scores (centred per component when the prior is off).
    beta: (n_annotators,) discriminations (all 1 when not fitted).
    nu: Davidson tie parameter (0 when there are no ties or ``fit_ties=False``).
    stderr: (n_items,) Laplace standard errors of the scores.
    n_iter: optimiser iterations (all stages).
    converged: whether the optimiser met ``tol``.
    log_likelihood: data log-likelihood at the estimate (no prior terms).
    components: (n_items,) connected-component label per item (0 = largest).
    cov: (n_items, n_items) posterior covariance of the scores, or None (large n).
    log_posterior: log-likelihood plus log-prior terms (up to constants).
    """

    scores: np.ndarray
    beta: np.ndarray
    nu: float
    stderr: np.ndarray
    n_iter: int
    converged: bool
    log_likelihood: float
    components: np.ndarray
    cov: Optional[np.ndarray] = None
    log_posterior: float = float("nan")


class BootstrapResult(NamedTuple):
    """Result of :func:`bootstrap`: score samples and percentile intervals."""

    samples: np.ndarray  # (n_boot, n_items)
    low: np.ndarray  # (n_items,) lower percentile bound
    high: np.ndarray  # (n_items,) upper percentile bound
    stderr: np.ndarray  # (n_items,) bootstrap standard deviation
    beta_samples: np.ndarray  # (n_boot, n_annotators)
    nu_samples: np.ndarray  # (n_boot,)


def _one_blas_thread():
    """The fit's BLAS calls are dot products and small vector updates: a multi-threaded
    OpenBLAS makes them much slower (its threads spin, worst on a busy machine), so the fit
    runs on one BLAS thread (threadpoolctl, which comes with scikit-learn)."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1, user_api="blas")
    except Exception:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()


def _single_blas_thread(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _one_blas_thread():
            return fn(*args, **kwargs)

    return wrapper


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


def _as_choices(choice_sets: Any, choice_annotators: Any = None) -> Optional[_Choices]:
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
        sets = [(int(chosen[k]), indices[indptr[k] : indptr[k + 1]].tolist()) for k in range(len(chosen))]
        if anns is not None:
            sets = [(c, o, int(a)) for (c, o), a in zip(sets, anns)]
    else:
        sets = list(choice_sets)
    if not sets:
        return None
    items, set_of, chosen_flag, ann, chosen = [], [], [], [], []
    starts = []
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
        chosen.append(c)
    return _Choices(
        member_item=np.asarray(items, dtype=np.int64),
        member_set=np.asarray(set_of, dtype=np.int64),
        is_chosen=np.asarray(chosen_flag, dtype=np.float64),
        starts=np.asarray(starts, dtype=np.int64),
        ann=np.asarray(ann, dtype=np.int64),
        chosen=np.asarray(chosen, dtype=np.int64),
    )


def components(n_items: int, winners: Any = (), losers: Any = (), choice_sets: Any = None) -> np.ndarray:
    """Connected components of the comparison graph, numbered by size (0 = largest).

    Edges: every pairwise comparison (ties included) and, for a Luce set, the chosen item
    with every alternative.  Ties in size are ordered by the smallest item in the component.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    w = np.asarray(winners, dtype=np.int64).ravel()
    l = np.asarray(losers, dtype=np.int64).ravel()
    ch = choice_sets if isinstance(choice_sets, _Choices) else _as_choices(choice_sets)
    if ch is not None:
        w = np.concatenate([w, ch.chosen[ch.member_set]])
        l = np.concatenate([l, ch.member_item])
    if n_items == 0:
        return np.zeros(0, dtype=np.int64)
    g = coo_matrix((np.ones(len(w), dtype=np.int8), (w, l)), shape=(n_items, n_items)).tocsr()
    n_comp, lab = connected_components(g, directed=False)
    sizes = np.bincount(lab, minlength=n_comp)
    first = np.full(n_comp, n_items, dtype=np.int64)
    np.minimum.at(first, lab, np.arange(n_items))
    order = np.lexsort((first, -sizes))
    remap = np.empty(n_comp, dtype=np.int64)
    remap[order] = np.arange(n_comp)
    return remap[lab]


# --------------------------------------------------------------------------- objective


def _e1_zr(e, g, nu_):
    """In place: ``e`` = |h| -> e1 = exp(-|h|); ``g`` <- Zr = 1 + e1 (e1 + nu) (Davidson's normaliser / e^|h|)."""
    np.negative(e, out=e)
    np.exp(e, out=e)
    if nu_:
        np.add(e, nu_, out=g)
        np.multiply(g, e, out=g)
    else:
        np.multiply(e, e, out=g)
    np.add(g, 1.0, out=g)


class _Problem:
    """Negative log posterior and gradient on arrays; parameters theta = (s, log beta_free, log nu)."""

    def __init__(self, n, A, w, l, tie, ann, wt, ch, prior_scale, beta_prior, fit_beta_mask, beta_fixed, fit_nu,
                 nu_fixed):
        self.n, self.A = n, A
        self.w, self.l, self.tie, self.ann, self.wt = w, l, tie, ann, wt
        self.ch = ch
        self.prec_s = 1.0 / prior_scale**2 if prior_scale else 0.0
        self.prec_b = 1.0 / beta_prior**2 if beta_prior else 0.0
        self.free_b = np.flatnonzero(fit_beta_mask)
        self.log_beta = np.log(beta_fixed)  # starting / fixed values
        self.fit_nu = fit_nu
        self.log_nu = math.log(nu_fixed) if nu_fixed > 0 else -np.inf
        self.any_tie = tie is not None
        self.tie_f = tie.astype(np.float64) if tie is not None else None
        self.nb = len(self.free_b)
        self.norm_w = None  # vote shares: normalise sum_j w_j beta_j = 1 over the free annotators
        self.dim = n + self.nb + (1 if fit_nu else 0)
        self.single_beta = bool(self.nb == 0 and np.all(beta_fixed == 1.0))  # every beta pinned at 1
        if ch is not None:
            self.set_of = ch.member_set
        self.plain = bool(self.single_beta and not self.any_tie and wt is None and ch is None and not fit_nu)

    def unpack(self, theta):
        s = theta[: self.n]
        lb = self.log_beta.copy()
        if self.nb:
            phi = theta[self.n : self.n + self.nb]
            if self.norm_w is not None:
                mx = phi.max()
                phi = phi - (mx + math.log(float(np.dot(self.norm_w, np.exp(phi - mx)))))
            lb[self.free_b] = phi
        lnu = theta[-1] if self.fit_nu else self.log_nu
        return s, lb, lnu

    def pack(self, s, lb, lnu):
        parts = [np.asarray(s, dtype=np.float64)]
        if self.nb:
            parts.append(lb[self.free_b])
        if self.fit_nu:
            parts.append(np.array([lnu]))
        return np.concatenate(parts)

    def _plain(self, s):
        """Fast path: one annotator, beta = 1, no ties, no weights, no Luce sets (in-place buffers)."""
        m = len(self.w)
        if m == 0:
            return 0.0, np.zeros(self.n)
        if not hasattr(self, "_buf"):
            B = 256  # sum log(1 + e) as the log of products of B factors in [1, 2] (no overflow)
            pad = -m % B
            self._buf = (np.empty(m), np.empty(m), np.ones(m + pad), B)
        d, t, u, B = self._buf
        np.take(s, self.w, out=d)
        np.take(s, self.l, out=t)
        np.subtract(d, t, out=d)
        np.abs(d, out=t)
        relu = 0.5 * (float(t.sum()) - float(d.sum()))  # sum max(-d, 0)
        np.negative(t, out=t)
        np.exp(t, out=t)  # e = exp(-|d|)
        np.add(t, 1.0, out=u[:m])
        nll = relu + float(np.log(np.multiply.reduce(u.reshape(-1, B), axis=1)).sum())
        # q = 1 - sigmoid(d) = e/(1+e) if d >= 0 else 1/(1+e)
        np.divide(t, u[:m], out=t)
        np.subtract(0.5, t, out=t)
        np.copysign(t, d, out=t)
        np.subtract(0.5, t, out=t)
        gs = np.bincount(self.l, t, minlength=self.n)
        gs -= np.bincount(self.w, t, minlength=self.n)
        return nll, gs

    def value_grad(self, theta, *, want_ll=False):
        if self.plain:
            nll, gs = self._plain(theta)
            ll = -nll
            if self.prec_s:
                nll += 0.5 * self.prec_s * float(theta @ theta)
                gs += self.prec_s * theta
            return (nll, gs, ll) if want_ll else (nll, gs)
        s, lb, lnu = self.unpack(theta)
        n, A = self.n, self.A
        gs = np.zeros(n)
        glb = np.zeros(max(A, 1))
        glnu = 0.0
        nll = 0.0
        beta = np.exp(lb)
        if len(self.w):
            nll_p, glnu = self._pairwise(s, beta, lnu, gs, glb)
            nll += nll_p
        ch = self.ch
        if ch is not None:
            bset = beta[ch.ann]
            bm = bset[self.set_of]
            u = bm * s[ch.member_item]
            mx = np.maximum.reduceat(u, ch.starts)
            e = np.exp(u - mx[self.set_of])
            Zs = np.add.reduceat(e, ch.starts)
            lse = mx + np.log(Zs)
            nll += float((lse - u[ch.starts]).sum())
            p = e / Zs[self.set_of]
            du = p - ch.is_chosen  # d nll / du
            gs += np.bincount(ch.member_item, du * bm, minlength=n)
            if self.nb:
                glb += np.bincount(ch.ann[self.set_of], du * u, minlength=len(glb))
        ll = -nll
        if self.prec_s:
            nll += 0.5 * self.prec_s * float(s @ s)
            gs += self.prec_s * s
        parts = [gs]
        if self.nb:
            lbf = lb[self.free_b]
            nll += 0.5 * self.prec_b * float(lbf @ lbf)
            gphi = glb[self.free_b] + self.prec_b * lbf
            if self.norm_w is not None:
                gphi = gphi - gphi.sum() * (self.norm_w * np.exp(lbf))
            parts.append(gphi)
        if self.fit_nu:
            parts.append(np.array([glnu]))
        g = np.concatenate(parts) if len(parts) > 1 else gs
        if want_ll:
            return nll, g, ll
        return nll, g

    def _work(self, k):
        """``k`` scratch arrays of the comparisons' length, allocated once per problem: the
        pass over the comparisons runs in place (fresh 8 MB temporaries per evaluation cost
        more in page faults than the arithmetic)."""
        ws = self.__dict__.setdefault("_ws", [])
        while len(ws) < k:
            ws.append(np.empty(len(self.w)))
        return ws

    def _pair_consts(self, davidson):
        """Per-comparison constants of the pairwise pass (cached): float win indicator, the same
        times the weight, the weighted number of ties.  Without Davidson's term (nu = 0) a tie
        counts as a win of ``winners[k]``."""
        pcs = self.__dict__.setdefault("_pc", {})
        if davidson not in pcs:
            wt = self.wt
            if davidson and self.tie is not None:
                win = (~self.tie).astype(np.float64)
                ntie = float(np.dot(wt, self.tie_f)) if wt is not None else float(self.tie_f.sum())
            else:
                win, ntie = np.ones(len(self.w)), 0.0
            win_w = win * wt if wt is not None else win
            pcs[davidson] = (win, win_w, ntie)
        return pcs[davidson]

    def _half_margin(self, s, beta, d, tmp, bb):
        """h = beta (s_w - s_l) / 2 per comparison, into ``d`` (``tmp``, ``bb``: scratch)."""
        np.take(s, self.w, out=d)
        np.take(s, self.l, out=tmp)
        np.subtract(d, tmp, out=d)
        if not self.single_beta:
            np.take(0.5 * beta, self.ann, out=bb)
            np.multiply(d, bb, out=d)
        else:
            np.multiply(d, 0.5, out=d)

    def _pairwise(self, s, beta, lnu, gs, glb, want_s=True):
        """Pairwise comparisons' negative log-likelihood; adds d/ds into ``gs`` and d/d log beta
        into ``glb`` (when beta is fitted); returns ``(nll, d nll / d log nu)``.

        In terms of h = beta (s_w - s_l) / 2: a win has nll = |h| - h + log Zr, a tie
        |h| - log nu + log Zr, with Zr = 1 + e1 (e1 + nu), e1 = exp(-|h|) (Davidson; nu = 0
        is the logistic model); d nll / dh = sign(h) (1 - e1^2) / Zr - [win] and
        d nll / d log nu = nu e1 / Zr - [tie].  One exp and one log per comparison."""
        n, wt = self.n, self.wt
        d, e, r, g, bb = self._work(5)[:5]
        davidson = self.any_tie and lnu > -np.inf
        win, win_w, ntie = self._pair_consts(davidson)
        self._half_margin(s, beta, d, e, bb)  # d = h
        nu_ = math.exp(lnu) if davidson else 0.0
        np.abs(d, out=e)
        nll = float(np.dot(wt, e)) if wt is not None else float(e.sum())
        nll -= float(np.dot(win_w, d))
        _e1_zr(e, g, nu_)  # e = e1, g = Zr
        np.log(g, out=r)
        nll += float(np.dot(wt, r)) if wt is not None else float(r.sum())
        np.reciprocal(g, out=g)  # 1 / Zr
        glnu = 0.0
        if davidson:
            nll -= lnu * ntie
            if self.fit_nu:
                np.multiply(e, g, out=r)  # pT / nu
                glnu = nu_ * (float(np.dot(wt, r)) if wt is not None else float(r.sum())) - ntie
        np.multiply(e, e, out=r)
        np.subtract(1.0, r, out=r)
        np.multiply(r, g, out=r)
        np.copysign(r, d, out=r)  # pA - pB
        np.subtract(r, win, out=r)  # d nll / dh
        if wt is not None:
            np.multiply(r, wt, out=r)
        if self.nb:
            np.multiply(r, d, out=g)  # d nll / d log beta = dh * h
            glb += np.bincount(self.ann, g, minlength=len(glb))
        if not want_s:
            return nll, glnu
        if not self.single_beta:
            np.multiply(r, bb, out=r)
        else:
            np.multiply(r, 0.5, out=r)
        gs += np.bincount(self.w, r, minlength=n)
        gs -= np.bincount(self.l, r, minlength=n)
        return nll, glnu

    def fisher_diag(self, theta):
        """Diagonal of the expected Hessian of the negative log posterior (for preconditioning)."""
        s, lb, lnu = self.unpack(theta)
        n = self.n
        beta = np.exp(lb)
        hs = np.zeros(n)
        hb = np.zeros(max(self.A, 1))
        hnu = 0.0
        if len(self.w):
            hnu = self._pair_fisher(s, beta, lnu, hs, hb)
        ch = self.ch
        if ch is not None:
            bm = beta[ch.ann][self.set_of]
            u = bm * s[ch.member_item]
            mx = np.maximum.reduceat(u, ch.starts)
            e = np.exp(u - mx[self.set_of])
            p = e / np.add.reduceat(e, ch.starts)[self.set_of]
            hs += np.bincount(ch.member_item, bm**2 * p * (1 - p), minlength=n)
            if self.nb:
                mu = np.add.reduceat(p * u, ch.starts)[self.set_of]
                hb += np.bincount(ch.ann[self.set_of], p * (u - mu) ** 2, minlength=len(hb))
        hs += self.prec_s
        parts = [hs]
        if self.nb:
            parts.append(hb[self.free_b] + self.prec_b)
        if self.fit_nu:
            parts.append(np.array([hnu]))
        return np.concatenate(parts)

    def _pair_fisher(self, s, beta, lnu, hs, hb, want_s=True):
        """Pairwise part of :meth:`fisher_diag` (in place, like :meth:`_pairwise`): adds the
        scores' diagonal into ``hs`` and log beta's into ``hb``; returns log nu's.

        With z = 2h = beta (s_w - s_l): the information in z is
        c = (pA + pB - (pA - pB)^2) / 4, pA + pB = (1 + e1^2) / Zr, |pA - pB| = (1 - e1^2) / Zr."""
        n, wt = self.n, self.wt
        d, e, r, g, bb = self._work(5)[:5]
        self._half_margin(s, beta, d, e, bb)  # d = h
        davidson = self.any_tie and lnu > -np.inf
        nu_ = math.exp(lnu) if davidson else 0.0
        np.abs(d, out=e)
        _e1_zr(e, g, nu_)  # e = e1, g = Zr
        np.reciprocal(g, out=g)  # 1 / Zr
        hnu = 0.0
        if davidson:
            t = self._work(6)[5]
            np.multiply(e, g, out=r)
            np.multiply(r, nu_, out=r)  # pT
            np.subtract(1.0, r, out=t)
            np.multiply(t, r, out=t)
            hnu = float(np.dot(wt, t)) if wt is not None else float(t.sum())
        np.multiply(e, e, out=e)  # e1^2
        np.subtract(1.0, e, out=r)
        np.multiply(r, g, out=r)
        np.multiply(r, r, out=r)  # (pA - pB)^2
        np.add(e, 1.0, out=e)
        np.multiply(e, g, out=e)  # pA + pB
        np.subtract(e, r, out=e)
        np.multiply(e, 0.25, out=e)  # c
        if wt is not None:
            np.multiply(e, wt, out=e)
        if self.nb:
            np.multiply(d, d, out=r)
            np.multiply(r, e, out=r)
            hb += 4.0 * np.bincount(self.ann, r, minlength=len(hb))  # c z^2
        if not want_s:
            return hnu
        if not self.single_beta:
            np.multiply(bb, bb, out=bb)
            np.multiply(e, bb, out=e)
            np.multiply(e, 4.0, out=e)  # c beta^2
        hs += np.bincount(self.w, e, minlength=n)
        hs += np.bincount(self.l, e, minlength=n)
        return hnu

    def bounds(self):
        b = [(None, None)] * self.n
        b += [LOG_BETA_BOUNDS] * self.nb
        if self.fit_nu:
            b += [LOG_NU_BOUNDS]
        return b




def _lbfgs(fg, x, lo, hi, *, max_iter: int, tol: float, memory: int = 20):
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
        # two-loop recursion (in place)
        q = g.copy() if fr is None else np.where(fr, g, 0.0)
        al = []
        for s_, y_, r_ in zip(reversed(S), reversed(Y), reversed(R)):
            a_ = r_ * float(s_ @ q)
            al.append(a_)
            np.multiply(y_, a_, out=tmp)
            q -= tmp
        gamma = float(S[-1] @ Y[-1]) / float(Y[-1] @ Y[-1]) if S else 1.0
        q *= gamma
        for s_, y_, r_, a_ in zip(S, Y, R, reversed(al)):
            b_ = r_ * float(y_ @ q)
            np.multiply(s_, a_ - b_, out=tmp)
            q += tmp
        if fr is not None:
            q[~fr] = 0.0
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


OPTIMIZER = "lbfgs"  # "lbfgs" (ours, above) or "L-BFGS-B" (scipy); same objective and scaling


def _minimize(prob: _Problem, theta0: np.ndarray, *, max_iter: int, tol: float):
    """Minimise in coordinates scaled by sqrt(Fisher diagonal) at theta0 (see OPTIMIZER)."""
    D = prob.fisher_diag(theta0)
    D = np.where(D > 1e-12, D, 1.0)
    sc = np.sqrt(D)

    def f(x):
        v, g = prob.value_grad(x / sc)
        return v, g / sc

    bounds = prob.bounds()
    lo = np.array([b[0] if b[0] is not None else -np.inf for b in bounds]) * sc
    hi = np.array([b[1] if b[1] is not None else np.inf for b in bounds]) * sc
    x0 = np.clip(theta0 * sc, lo, hi)
    if OPTIMIZER == "lbfgs":
        x, nit, conv = _lbfgs(f, x0, lo, hi, max_iter=max_iter, tol=tol)
        return x / sc, nit, conv
    has_bounds = prob.nb > 0 or prob.fit_nu
    sb = list(zip(np.where(np.isfinite(lo), lo, None), np.where(np.isfinite(hi), hi, None))) if has_bounds else None
    with _one_blas_thread():
        r = minimize(f, x0, jac=True, method="L-BFGS-B", bounds=sb,
                     options={"maxiter": int(max_iter), "gtol": float(tol), "ftol": 1e-13, "maxcor": 20,
                              "maxls": 40})
    conv = bool(r.success) or (np.max(np.abs(r.jac)) <= tol if r.jac is not None else False)
    return r.x / sc, int(r.nit), conv


def _start_scores(n, w, l, wt, tie=None):
    """Log win ratio per item (a cheap, good start on a well-mixed graph).  A tie counts half
    a win and half a loss for each of its items (so the start, like the fit, does not depend on
    the order in which a tie's two items are given)."""
    if len(w) == 0:
        return np.zeros(n)
    ww = wt if wt is not None else None
    if tie is not None and tie.any():
        ww = (np.where(tie, 0.5, 1.0) * (wt if wt is not None else 1.0))
        half = np.where(tie, 0.5 * (wt if wt is not None else 1.0), 0.0)
        wins = np.bincount(w, ww, minlength=n) + np.bincount(l, half, minlength=n)
        losses = np.bincount(l, ww, minlength=n) + np.bincount(w, half, minlength=n)
    else:
        wins = np.bincount(w, ww, minlength=n)
        losses = np.bincount(l, ww, minlength=n)
    s0 = np.log((wins + 0.5) / (losses + 0.5))
    return s0


AGGREGATE = True  # collapse repeated comparisons into counts when that certainly pays (see _worth_aggregating)


def _worth_aggregating(n, A, m, any_tie):
    """Aggregate when there are at most m/2 possible distinct comparisons (ordered item pair,
    annotator, tie or not): then at least half of the comparisons are repeats, checked without
    sorting anything.  (1M random comparisons on 10k items are nearly all distinct: no gain.)"""
    return m > 0 and n * (n - 1) * max(A, 1) * (2 if any_tie else 1) * 2 <= m


def _aggregate(n, w, l, tie, ann, wt):
    """Collapse identical comparisons (winner, loser, tie, annotator) into one weighted by the
    count (times their weights).  A tie's two items are put in a fixed order (its likelihood
    is symmetric).  Returns ``(w, l, tie, ann, weights, counts)``."""
    if tie is not None:
        lo, hi = np.minimum(w, l), np.maximum(w, l)
        w, l = np.where(tie, lo, w), np.where(tie, hi, l)
    key = ((ann * 2 + (tie if tie is not None else 0)) * n + w) * n + l
    uk, inv = np.unique(key, return_inverse=True)
    inv = inv.ravel()
    counts = np.bincount(inv, minlength=len(uk)).astype(np.float64)
    weights = np.bincount(inv, wt, minlength=len(uk)) if wt is not None else counts
    rest, l2 = np.divmod(uk, n)
    rest, w2 = np.divmod(rest, n)
    ann2, t2 = np.divmod(rest, 2)
    return w2, l2, (t2.astype(bool) if tie is not None else None), ann2, weights, counts


# --------------------------------------------------------------------------- public API


@_single_blas_thread
def bradley_terry(
    winners: Any,
    losers: Any,
    *,
    ties: Any = None,
    annotators: Any = None,
    n_items: Optional[int] = None,
    n_annotators: Optional[int] = None,
    choice_sets: Any = None,
    choice_annotators: Any = None,
    prior_scale: Optional[float] = None,
    beta_prior: Optional[float] = 1.0,
    fit_beta: bool = True,
    fit_ties: bool = True,
    fixed_beta: Any = None,
    weights: Any = None,
    init_scores: Any = None,
    max_iter: int = 1000,
    tol: float = 1e-5,
    compute_stderr: bool = True,
    exact_limit: int = 1000,
) -> BTResult:
    """Fit a Bradley-Terry model (Davidson ties, per-annotator beta, Luce choices) by MAP.

    Args:
        winners, losers: int arrays (m,), the item that won / lost each comparison; for a
            tie (``ties[k]``) just the two items, in either order.
        ties: optional bool array (m,), the comparison was a tie.
        annotators: optional int array (m,) in ``[0, n_annotators)``; default all 0.
        n_items: number of items (default ``max(item) + 1``).
        n_annotators: number of annotators (default ``max(annotator) + 1``).
        choice_sets: optional Luce (best-of-k) choices: a sequence of ``(chosen,
            alternatives)`` or ``(chosen, alternatives, annotator)``, or a CSR tuple
            ``(chosen, indptr, indices[, annotators])`` of arrays.
        choice_annotators: optional int array, annotator per choice set (overrides the tuple's).
        prior_scale: sd of the Gaussian prior on scores; None/0 = no prior (plain ML,
            scores centred per connected component).
        beta_prior: sd of the Gaussian prior on log beta_j; None = beta fixed to 1.
        fit_beta: fit beta_j (needs ``beta_prior`` and more than one annotator).
        fit_ties: fit Davidson's nu when there are ties; False drops tied comparisons.
        fixed_beta: optional float array (n_annotators,), NaN = fitted, a value = pinned.
        weights: optional float array (m,) multiplying each pairwise comparison's log-likelihood.
        init_scores: optional start (e.g. a previous fit).
        max_iter: L-BFGS-B iterations per stage.
        tol: stopping tolerance on the preconditioned gradient (~ error in standard errors).
        compute_stderr: compute Laplace standard errors (and ``cov`` for small n).
        exact_limit: largest n_items for which the exact covariance is computed.

    Returns:
        :class:`BTResult` ``(scores, beta, nu, stderr, n_iter, converged, log_likelihood,
        components, cov, log_posterior)``.

    With one annotator, no ties, no prior this is the classic maximum-likelihood
    Bradley-Terry fit (``choix.opt_pairwise`` with ``alpha -> 0``), shifted to mean 0.
    """
    w = np.asarray(winners, dtype=np.int64).ravel()
    l = np.asarray(losers, dtype=np.int64).ravel()
    if w.shape != l.shape:
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
        cand = [w.max() + 1 if m else 0, l.max() + 1 if m else 0]
        if ch is not None:
            cand.append(ch.member_item.max() + 1)
        n_items = int(max(cand))
    n = int(n_items)
    for arr in (w, l) + ((ch.member_item,) if ch is not None else ()):
        if len(arr) and (arr.min() < 0 or arr.max() >= n):
            raise ValueError("item index out of range [0, n_items)")
    if m and np.any(w == l):
        raise ValueError("an item cannot be compared with itself")
    if n_annotators is None:
        cand = [ann.max() + 1 if m else 1]
        if ch is not None:
            cand.append(ch.ann.max() + 1)
        n_annotators = int(max(cand))
    A = max(int(n_annotators), 1)
    if (m and (ann.min() < 0 or ann.max() >= A)) or (ch is not None and (ch.ann.min() < 0 or ch.ann.max() >= A)):
        raise ValueError("annotator index out of range [0, n_annotators)")

    comps = components(n, w, l, ch)

    # ties: fitted (nu) or dropped
    nu_fit = False
    if tie is not None:
        if not tie.any():
            tie = None
        elif not fit_ties:
            keep = ~tie
            w, l, ann, tie = w[keep], l[keep], ann[keep], None
            wt = wt[keep] if wt is not None else None
        else:
            nu_fit = True
    # repeated comparisons (same items, outcome and annotator) enter once, weighted by their count
    cnt = None
    if AGGREGATE and _worth_aggregating(n, A, len(w), tie is not None):
        w, l, tie, ann, wt, cnt = _aggregate(n, w, l, tie, ann, wt)

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
    do_beta = bool(do_beta and fit_mask.any())  # e.g. no comparisons: nothing to fit beta from
    prior_on = bool(prior_scale) and prior_scale > 0

    if init_scores is not None:
        s0 = np.asarray(init_scores, dtype=np.float64).copy()
    else:
        s0 = _start_scores(n, w, l, wt, tie)
        if prior_on:
            s0 = np.clip(s0, -3 * prior_scale, 3 * prior_scale)

    n_iter_total = 0
    conv = True
    # stage 1: scores only (beta as given, nu fixed at a moderate value) — a fast start
    nu_start = 0.5 if nu_fit else 0.0
    stage1 = _Problem(n, A, w, l, tie if nu_fit else None, ann, wt, ch, prior_scale if prior_on else None,
                      None, np.zeros(A, dtype=bool), beta0, False, nu_start)
    theta, it, c1 = _minimize(stage1, s0, max_iter=max_iter, tol=tol if not (do_beta or nu_fit) else max(tol, 1e-2))
    n_iter_total += it
    conv = c1
    s = theta
    lb = np.log(beta0)
    lnu = math.log(nu_start) if nu_fit else -np.inf
    final = stage1
    if do_beta or nu_fit:
        full = _Problem(n, A, w, l, tie, ann, wt, ch, prior_scale if prior_on else None,
                        beta_prior if do_beta else None, fit_mask, beta0, nu_fit, nu_start)
        if do_beta:
            # one-dimensional start for each annotator's log beta (given the stage-1 scores)
            lb = _beta_start(full, s, lb, lnu)
            if not fixed_mask.any():
                # scale: the vote-weighted mean beta of the fitted annotators is 1
                nv = np.bincount(ann, cnt, minlength=A).astype(float)
                if ch is not None:
                    nv += np.bincount(ch.ann, minlength=A)
                full.norm_w = nv[full.free_b] / nv[full.free_b].sum()
                # keep beta_j * s as fitted: the normalisation divides beta by a common factor
                lb_norm = full.unpack(full.pack(s, lb, lnu))[1]
                s = s * float(np.exp(lb[full.free_b[0]] - lb_norm[full.free_b[0]]))
                lb = lb_norm
        theta0 = full.pack(s, lb, lnu)
        theta, it, conv = _minimize(full, theta0, max_iter=max_iter, tol=tol)
        n_iter_total += it
        s, lb, lnu = full.unpack(theta)
        final = full
    s = np.array(s, dtype=np.float64)
    if not prior_on and n:
        s -= (np.bincount(comps, s) / np.bincount(comps))[comps]
    theta = final.pack(s, lb, lnu)
    nlp, _, ll = final.value_grad(theta, want_ll=True)
    beta = np.exp(lb)
    nu = float(math.exp(lnu)) if nu_fit else 0.0

    if compute_stderr:
        stderr, cov = _laplace(n, w, l, tie, ann, wt, ch, s, beta, nu, prior_scale if prior_on else None, comps,
                               exact_limit=exact_limit)
    else:
        stderr, cov = np.full(n, np.nan), None
    return BTResult(scores=s, beta=beta, nu=nu, stderr=stderr, n_iter=n_iter_total, converged=bool(conv),
                    log_likelihood=float(ll), components=comps, cov=cov, log_posterior=float(-nlp))


def _beta_start(prob: _Problem, s, lb, lnu):
    """A few Newton steps per annotator on log beta with the scores fixed (vectorised over annotators)."""
    lb = lb.copy()
    free = prob.free_b
    if not len(free):
        return lb
    # pairwise comparisons only: the per-annotator sums without the scores' scatter
    fast = prob.ch is None and prob.norm_w is None and len(prob.w) > 0
    for _ in range(8):
        if fast:
            beta = np.exp(lb)
            glb, hball = np.zeros(len(lb)), np.zeros(len(lb))
            prob._pairwise(s, beta, lnu, None, glb, want_s=False)
            prob._pair_fisher(s, beta, lnu, None, hball, want_s=False)
            gb = glb[free] + prob.prec_b * lb[free]
            hb = hball[free] + prob.prec_b
        else:
            theta = prob.pack(s, lb, lnu)
            _, g = prob.value_grad(theta)
            h = prob.fisher_diag(theta)
            gb = g[prob.n : prob.n + prob.nb]
            hb = h[prob.n : prob.n + prob.nb]
        step = np.clip(-gb / np.maximum(hb, 1e-9), -2.0, 2.0)
        lb[free] = np.clip(lb[free] + step, *LOG_BETA_BOUNDS)
        if np.max(np.abs(step)) < 1e-3:
            break
    return lb


def log_posterior(winners, losers, scores, *, beta=None, nu=0.0, ties=None, annotators=None, weights=None,
                  choice_sets=None, prior_scale=None, beta_prior=None) -> tuple[float, np.ndarray]:
    """Data log-likelihood of given parameters and its gradient in the scores (for checks).

    Returns ``(log_likelihood, d log_likelihood / d scores)``; no prior terms.
    """
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(winners, dtype=np.int64).ravel()
    l = np.asarray(losers, dtype=np.int64).ravel()
    ann = np.zeros(len(w), dtype=np.int64) if annotators is None else np.asarray(annotators, dtype=np.int64)
    ch = _as_choices(choice_sets)
    A = int(max([ann.max() + 1 if len(ann) else 1] + ([ch.ann.max() + 1] if ch is not None else [])))
    b = np.ones(A) if beta is None else np.asarray(beta, dtype=np.float64)
    tie = None if ties is None else np.asarray(ties, dtype=bool)
    wt = None if weights is None else np.asarray(weights, dtype=np.float64)
    prob = _Problem(len(s), len(b), w, l, tie, ann, wt, ch, None, None, np.zeros(len(b), dtype=bool), b, False,
                    float(nu))
    prob.single_beta = False
    if tie is not None and nu > 0:
        prob.any_tie = True
    nll, g, ll = prob.value_grad(prob.pack(s, np.log(b), prob.log_nu), want_ll=True)
    return ll, -g[: len(s)]


def _laplace(n, w, l, tie, ann, wt, ch, s, beta, nu, prior_scale, comps, *, exact_limit):
    """Laplace standard errors of the scores (beta, nu fixed); exact covariance for small n."""
    prec = 1.0 / prior_scale**2 if prior_scale else 0.0
    bb = beta[ann] if len(ann) else np.zeros(0)
    d = s[w] - s[l]
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
        H += (np.bincount(w * n + w, c, minlength=n * n) + np.bincount(l * n + l, c, minlength=n * n)
              - np.bincount(w * n + l, c, minlength=n * n) - np.bincount(l * n + w, c, minlength=n * n)).reshape(n, n)
        if ch is not None:
            for k in range(ch.n_sets):
                a = ch.starts[k]
                b_ = ch.starts[k + 1] if k + 1 < ch.n_sets else len(ch.member_item)
                it = ch.member_item[a:b_]
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
    diag = np.bincount(w, c, minlength=n) + np.bincount(l, c, minlength=n)
    if ch is not None:
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
    import warnings

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
    warnings.warn(f"Laplace standard errors: the Hessian of the scores is singular in component(s) {bad} "
                  f"({int(np.isin(comps, bad).sum())} items): their scores are not identified by the comparisons "
                  "(no finite maximum-likelihood estimate, or no information in them); stderr is inf there. "
                  "Use a prior on the scores (prior_scale).", RuntimeWarning, stacklevel=4)
    return cov


@_single_blas_thread
def bootstrap(
    winners: Any,
    losers: Any,
    *,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    ties: Any = None,
    annotators: Any = None,
    weights: Any = None,
    choice_sets: Any = None,
    **fit_kwargs: Any,
) -> BootstrapResult:
    """Nonparametric bootstrap over comparisons (and, separately, over Luce sets).

    Every replicate resamples the comparisons with replacement (``np.random.default_rng(seed)``,
    so it is reproducible), refits with :func:`bradley_terry` (same keyword arguments, warm
    started from the full fit, no stderr) and collects the scores.  With the prior off the
    replicate's scores are centred per component of the *full* graph.  Returns percentile
    intervals at ``level``.
    """
    w = np.asarray(winners, dtype=np.int64).ravel()
    l = np.asarray(losers, dtype=np.int64).ravel()
    m = len(w)
    tie = None if ties is None else np.asarray(ties, dtype=bool).ravel()
    ann = None if annotators is None else np.asarray(annotators, dtype=np.int64).ravel()
    wt = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    ch_list = None
    if choice_sets is not None:
        c = _as_choices(choice_sets)
        if c is not None:
            ends = np.append(c.starts[1:], len(c.member_item))
            ch_list = [(int(c.chosen[k]), c.member_item[c.starts[k]:ends[k]].tolist(), int(c.ann[k]))
                       for k in range(c.n_sets)]
    fit_kwargs = dict(fit_kwargs)
    fit_kwargs.pop("compute_stderr", None)
    base = bradley_terry(w, l, ties=tie, annotators=ann, weights=wt, choice_sets=ch_list, compute_stderr=False,
                         **fit_kwargs)
    n = len(base.scores)
    fit_kwargs.setdefault("n_items", n)
    fit_kwargs.setdefault("n_annotators", len(base.beta))
    fit_kwargs.pop("init_scores", None)
    prior_on = bool(fit_kwargs.get("prior_scale"))
    comps = base.components
    rng = np.random.default_rng(seed)
    samples = np.empty((n_boot, n))
    bsamp = np.empty((n_boot, len(base.beta)))
    nusamp = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, m, m) if m else np.zeros(0, dtype=np.int64)
        cs = None
        if ch_list:
            sidx = rng.integers(0, len(ch_list), len(ch_list))
            cs = [ch_list[i] for i in sidx]
        r = bradley_terry(w[idx], l[idx], ties=None if tie is None else tie[idx],
                          annotators=None if ann is None else ann[idx], weights=None if wt is None else wt[idx],
                          choice_sets=cs, init_scores=base.scores, compute_stderr=False, **fit_kwargs)
        sc = r.scores
        if not prior_on:
            sc = sc - (np.bincount(comps, sc) / np.bincount(comps))[comps]
        samples[b] = sc
        bsamp[b] = r.beta
        nusamp[b] = r.nu
    a = (1 - level) / 2
    lo, hi = np.quantile(samples, [a, 1 - a], axis=0) if n_boot else (np.full(n, np.nan), np.full(n, np.nan))
    sd = samples.std(axis=0, ddof=1) if n_boot > 1 else np.full(n, np.nan)
    return BootstrapResult(samples=samples, low=lo, high=hi, stderr=sd, beta_samples=bsamp, nu_samples=nusamp)


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
