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
small L-BFGS (:func:`.optim.lbfgs`) whose first trial step is the full preconditioned Newton step;
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
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import minimize

from .bt_inputs import _aggregate, _beta_masks, _check_inputs, _start_scores, _worth_aggregating
from .bt_objective import LOG_BETA_BOUNDS, LOG_NU_BOUNDS, _Problem
from .bt_posterior import BootstrapResult, _inv_by_component, _laplace, prob_greater, triplet_items
from .optim import _as_choices, _Choices, components, lbfgs, one_blas_thread, single_blas_thread

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

_EXPORTED = (LOG_BETA_BOUNDS, LOG_NU_BOUNDS, _Choices, _inv_by_component)  # re-exported for callers of bt.*


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
    cov: np.ndarray | None = None
    log_posterior: float = float("nan")


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
        x, nit, conv = lbfgs(f, x0, lo, hi, max_iter=max_iter, tol=tol)
        return x / sc, nit, conv
    has_bounds = prob.nb > 0 or prob.fit_nu
    sb = (
        [
            (float(a) if np.isfinite(a) else None, float(b) if np.isfinite(b) else None)
            for a, b in zip(lo, hi, strict=False)
        ]
        if has_bounds
        else None
    )
    with one_blas_thread():
        r = minimize(
            f,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=sb,
            options={"maxiter": int(max_iter), "gtol": float(tol), "ftol": 1e-13, "maxcor": 20, "maxls": 40},
        )
    conv = bool(r.success) or (np.max(np.abs(r.jac)) <= tol if r.jac is not None else False)
    return r.x / sc, int(r.nit), conv


AGGREGATE = True  # collapse repeated comparisons into counts when that certainly pays (see _worth_aggregating)


@single_blas_thread
def bradley_terry(
    winners: Any,
    losers: Any,
    *,
    ties: Any = None,
    annotators: Any = None,
    n_items: int | None = None,
    n_annotators: int | None = None,
    choice_sets: Any = None,
    choice_annotators: Any = None,
    prior_scale: float | None = None,
    beta_prior: float | None = 1.0,
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

    ``winners``/``losers``: int arrays (m,) (for a tie, ``ties[k]``, the two items in either order);
    ``annotators`` (m,) in [0, n_annotators); ``choice_sets``: Luce choices, ``(chosen, alternatives[,
    annotator])`` tuples or a CSR tuple ``(chosen, indptr, indices[, annotators])``; ``prior_scale``: sd of the
    scores' Gaussian prior (None/0: plain ML, centred per component); ``beta_prior``: sd of log beta_j's prior
    (None: beta 1); ``fixed_beta``: (A,) NaN = fitted, a value = pinned; ``fit_ties=False`` drops ties;
    ``weights`` multiply each comparison's log-likelihood; ``tol`` is in standard errors (preconditioned
    gradient); ``exact_limit``: largest n_items with the exact covariance.  Returns :class:`BTResult`.
    With one annotator, no ties and no prior this is the classic maximum-likelihood fit
    (``choix.opt_pairwise`` with ``alpha -> 0``), shifted to mean 0.
    """
    w, lo_, tie, ann, wt, ch, n, A = _check_inputs(
        winners, losers, ties, annotators, weights, choice_sets, choice_annotators, n_items, n_annotators
    )
    comps = components(n, w, lo_, ch)
    w, lo_, tie, ann, wt, cnt, nu_fit = _ties_and_counts(w, lo_, tie, ann, wt, n, A, fit_ties)
    beta0, fixed_mask, fit_mask = _beta_masks(A, ann, ch, fixed_beta, fit_beta, beta_prior)
    prior_on = bool(prior_scale) and float(prior_scale or 0) > 0
    ps = float(prior_scale) if prior_on and prior_scale is not None else None
    if init_scores is not None:
        s0 = np.asarray(init_scores, dtype=np.float64).copy()
    else:
        s0 = _start_scores(n, w, lo_, wt, tie)
        if ps is not None:
            s0 = np.clip(s0, -3 * ps, 3 * ps)
    # fmt: off
    s, lb, lnu, final, n_iter_total, conv = _fit_stages(n, A, w, lo_, tie, ann, wt, ch, ps, s0, beta0, fixed_mask,
                                                        fit_mask, cnt, nu_fit, beta_prior, max_iter=max_iter, tol=tol)
    # fmt: on
    s = np.array(s, dtype=np.float64)
    if not prior_on and n:
        s -= (np.bincount(comps, s) / np.bincount(comps))[comps]
    nlp, _, ll = final.value_grad(final.pack(s, lb, lnu), want_ll=True)
    beta = np.exp(lb)
    nu = float(math.exp(lnu)) if nu_fit else 0.0
    if compute_stderr:
        stderr, cov = _laplace(n, w, lo_, tie, ann, wt, ch, s, beta, nu, ps, comps, exact_limit=exact_limit)
    else:
        stderr, cov = np.full(n, np.nan), None
    return BTResult(
        scores=s,
        beta=beta,
        nu=nu,
        stderr=stderr,
        n_iter=n_iter_total,
        converged=bool(conv),  # fmt: skip
        log_likelihood=float(ll),
        components=comps,
        cov=cov,
        log_posterior=float(-nlp),
    )


def _fit_stages(
    n: int,
    A: int,
    w: np.ndarray,
    lo_: np.ndarray,
    tie: np.ndarray | None,
    ann: np.ndarray,
    wt: np.ndarray | None,
    ch: _Choices | None,
    ps: float | None,
    s0: np.ndarray,
    beta0: np.ndarray,
    fixed_mask: np.ndarray,
    fit_mask: np.ndarray,
    cnt: Any,
    nu_fit: bool,
    beta_prior: float | None,
    *,
    max_iter: int,
    tol: float,
) -> tuple:
    """Stage 1 (scores, beta as given, nu at 0.5) then, when beta or nu is fitted, stage 2 (everything).
    Returns ``(s, log beta, log nu, final problem, iterations, converged)``."""
    do_beta = bool(fit_mask.any())
    nu_start = 0.5 if nu_fit else 0.0
    stage1 = _Problem(
        n, A, w, lo_, tie if nu_fit else None, ann, wt, ch, ps, None, np.zeros(A, dtype=bool), beta0, False, nu_start
    )
    s, n_iter_total, conv = _minimize(
        stage1, s0, max_iter=max_iter, tol=tol if not (do_beta or nu_fit) else max(tol, 1e-2)
    )
    lb = np.log(beta0)
    lnu = math.log(nu_start) if nu_fit else -np.inf
    final = stage1
    if do_beta or nu_fit:
        final = _Problem(
            n, A, w, lo_, tie, ann, wt, ch, ps, beta_prior if do_beta else None, fit_mask, beta0, nu_fit, nu_start
        )
        s, lb, lnu, it, conv = _full_stage(
            final, s, lb, lnu, ann, cnt, ch, do_beta, bool(fixed_mask.any()), max_iter=max_iter, tol=tol
        )
        n_iter_total += it
    return s, lb, lnu, final, n_iter_total, conv


def _ties_and_counts(
    w: np.ndarray,
    lo_: np.ndarray,
    tie: np.ndarray | None,
    ann: np.ndarray,
    wt: np.ndarray | None,
    n: int,
    A: int,
    fit_ties: bool,
) -> tuple:
    """Ties fitted (nu) or dropped; repeated comparisons collapsed into counts when that pays.
    Returns ``(w, lo_, tie, ann, wt, counts, nu_fit)``."""
    nu_fit = False
    if tie is not None:
        if not tie.any():
            tie = None
        elif not fit_ties:
            keep = ~tie
            w, lo_, ann, tie = w[keep], lo_[keep], ann[keep], None
            wt = wt[keep] if wt is not None else None
        else:
            nu_fit = True
    cnt = None
    if AGGREGATE and _worth_aggregating(n, A, len(w), tie is not None):
        w, lo_, tie, ann, wt, cnt = _aggregate(n, w, lo_, tie, ann, wt)
    return w, lo_, tie, ann, wt, cnt, nu_fit


def _full_stage(
    full: _Problem,
    s: np.ndarray,
    lb: np.ndarray,
    lnu: float,
    ann: np.ndarray,
    cnt: Any,
    ch: _Choices | None,
    do_beta: bool,
    any_fixed: bool,
    *,
    max_iter: int,
    tol: float,
) -> tuple:
    """Stage 2: scores, betas and nu together, from the stage-1 scores.  Returns ``(s, lb, lnu, n_iter, conv)``."""
    A = len(lb)
    if do_beta:
        # one-dimensional start for each annotator's log beta (given the stage-1 scores)
        lb = _beta_start(full, s, lb, lnu)
        if not any_fixed:
            # scale: the vote-weighted mean beta of the fitted annotators is 1
            nv = np.bincount(ann, cnt, minlength=A).astype(float)
            if ch is not None:
                nv += np.bincount(ch.ann, minlength=A)
            full.norm_w = nv[full.free_b] / nv[full.free_b].sum()
            # keep beta_j * s as fitted: the normalisation divides beta by a common factor
            lb_norm = full.unpack(full.pack(s, lb, lnu))[1]
            s = s * float(np.exp(lb[full.free_b[0]] - lb_norm[full.free_b[0]]))
            lb = lb_norm
    theta, it, conv = _minimize(full, full.pack(s, lb, lnu), max_iter=max_iter, tol=tol)
    s, lb, lnu = full.unpack(theta)
    return s, lb, lnu, it, conv


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


def log_posterior(
    winners,
    losers,
    scores,
    *,
    beta=None,
    nu=0.0,
    ties=None,
    annotators=None,
    weights=None,
    choice_sets=None,
    prior_scale=None,
    beta_prior=None,
) -> tuple[float, np.ndarray]:
    """Data log-likelihood of given parameters and its gradient in the scores (for checks).

    Returns ``(log_likelihood, d log_likelihood / d scores)``; no prior terms.
    """
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(winners, dtype=np.int64).ravel()
    lo_ = np.asarray(losers, dtype=np.int64).ravel()
    ann = np.zeros(len(w), dtype=np.int64) if annotators is None else np.asarray(annotators, dtype=np.int64)
    ch = _as_choices(choice_sets)
    A = int(max([ann.max() + 1 if len(ann) else 1] + ([ch.ann.max() + 1] if ch is not None else [])))
    b = np.ones(A) if beta is None else np.asarray(beta, dtype=np.float64)
    tie = None if ties is None else np.asarray(ties, dtype=bool)
    wt = None if weights is None else np.asarray(weights, dtype=np.float64)
    prob = _Problem(
        len(s), len(b), w, lo_, tie, ann, wt, ch, None, None, np.zeros(len(b), dtype=bool), b, False, float(nu)
    )
    prob.single_beta = False
    if tie is not None and nu > 0:
        prob.any_tie = True
    nll, g, ll = prob.value_grad(prob.pack(s, np.log(b), prob.log_nu), want_ll=True)
    return ll, -g[: len(s)]


@single_blas_thread
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
    lo_ = np.asarray(losers, dtype=np.int64).ravel()
    m = len(w)
    tie = None if ties is None else np.asarray(ties, dtype=bool).ravel()
    ann = None if annotators is None else np.asarray(annotators, dtype=np.int64).ravel()
    wt = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    ch_list = None
    if choice_sets is not None:
        c = _as_choices(choice_sets)
        if c is not None:
            ends = np.append(c.starts[1:], len(c.member_item))
            ch_list = [
                (int(c.chosen[k]), c.member_item[c.starts[k] : ends[k]].tolist(), int(c.ann[k]))
                for k in range(c.n_sets)
            ]
    fit_kwargs = dict(fit_kwargs)
    fit_kwargs.pop("compute_stderr", None)
    base = bradley_terry(
        w, lo_, ties=tie, annotators=ann, weights=wt, choice_sets=ch_list, compute_stderr=False, **fit_kwargs
    )
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
        r = bradley_terry(
            w[idx],
            lo_[idx],
            ties=None if tie is None else tie[idx],
            annotators=None if ann is None else ann[idx],
            weights=None if wt is None else wt[idx],
            choice_sets=cs,
            init_scores=base.scores,
            compute_stderr=False,
            **fit_kwargs,
        )
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
