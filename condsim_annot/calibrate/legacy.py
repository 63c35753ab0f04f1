"""Today's (pre-feature-prior) calibration fit, kept behind ``calibrate --model legacy`` for comparison.

Annotator betas cross-fitted (each against the scores the *other* annotators' votes imply), then
Bradley-Terry/Davidson/Luce scores with a fixed N(0, prior^2) prior on every pair
(:func:`.bt.bradley_terry`), and each triplet's P(first) from the Laplace cavity times its own
votes' exact likelihood on a grid (:func:`triplet_prob_first`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from ..errors import CondsimError
from . import bt
from .load import KEY_BETA, Comparisons


@dataclass
class Fit:
    scores: np.ndarray
    stderr: np.ndarray
    beta: np.ndarray
    nu: float
    components: np.ndarray
    cov: np.ndarray | None = None  # full posterior covariance of the scores when small enough
    samples: np.ndarray | None = None  # bootstrap score samples (B, n_items)
    engine: str = "bt"
    global_scale: bool = False  # scores compare only inside a component

    def p_first_second(self, data: Comparisons, tids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        p = triplet_prob_first(data, self, tids)
        return p, 1.0 - p

    def prob_greater(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """P(s_i > s_j) under the fit's uncertainty (bootstrap if present, else Laplace)."""
        i = np.asarray(i, dtype=np.int64)
        j = np.asarray(j, dtype=np.int64)
        d = self.scores[i] - self.scores[j]
        if self.samples is not None and len(self.samples) > 1:
            var = np.var(self.samples[:, i] - self.samples[:, j], axis=0, ddof=1)
        elif self.cov is not None:
            var = self.cov[i, i] + self.cov[j, j] - 2 * self.cov[i, j]
        else:
            var = self.stderr[i] ** 2 + self.stderr[j] ** 2
        sd = np.sqrt(np.maximum(var, 1e-12))
        return norm.cdf(d / sd)


def _bt_kwargs(data: Comparisons, *, prior_scale: float | None, beta_prior: float | None) -> dict:
    fixed = None
    if data.key_index is not None:
        fixed = np.full(len(data.annotators), np.nan)
        fixed[data.key_index] = KEY_BETA  # the answer key is trusted, not learned
    return dict(
        ties=data.ties,
        annotators=data.ann,
        n_items=data.n_items,
        n_annotators=max(len(data.annotators), 1),
        choice_sets=[(c, list(o), a) for c, o, a in data.choice_sets] or None,
        prior_scale=prior_scale if prior_scale and prior_scale > 0 else None,
        beta_prior=beta_prior if beta_prior and beta_prior > 0 else None,
        fixed_beta=fixed,
    )


def _fit_bt(data: Comparisons, *, prior_scale: float | None, beta_prior: float | None):
    """The store's fit: annotator betas cross-fitted (:func:`crossfit_betas`), then scores and ties."""
    kw = _bt_kwargs(data, prior_scale=prior_scale, beta_prior=beta_prior)
    betas = crossfit_betas(data, kw) if kw["beta_prior"] else None
    if betas is not None:
        kw = dict(kw, fixed_beta=betas, beta_prior=None)  # pinned: the final fit learns scores and nu only
    return bt.bradley_terry(data.winners, data.losers, **kw)


def _real_annotators(data: Comparisons) -> list[int]:
    """Annotator indexes that cast fitted votes (not the attention key)."""
    used = set(np.unique(data.ann).tolist()) | {a for _, _, a in data.choice_sets}
    return sorted(a for a in used if a != data.key_index)


def crossfit_betas(data: Comparisons, kw: dict) -> np.ndarray | None:
    """Each annotator's beta, measured against the scores the *other* annotators' votes imply.

    Why not fit beta jointly with the scores?  Real triplets rarely share pairs, so each
    triplet has nearly a free score difference of its own; a joint fit can then make any
    annotator an "oracle" (tiny differences, huge beta) that explains even random votes
    exactly, at the others' small expense — on tie-heavy data a pure spammer came out as
    the most reliable annotator.  Cross-fitting removes that: for annotator j the scores
    are fitted without j's votes (every beta 1, the attention key pinned), and beta_j is
    the one-dimensional MAP of j's votes (pairwise, ties, best-of-k) given those scores,
    with the same log-normal prior.  An annotator nobody overlaps with gets the prior
    (beta 1).  Returns the full beta vector (None with fewer than two annotators).
    """
    real = _real_annotators(data)
    if len(real) < 2:
        return None
    prior = float(kw["beta_prior"])
    A = max(len(data.annotators), 1)
    base_fixed = np.ones(A)
    if data.key_index is not None:
        base_fixed[data.key_index] = KEY_BETA
    betas = base_fixed.copy()
    for j in real:
        keep = data.ann != j
        sets = [(c, list(o), a) for c, o, a in data.choice_sets if a != j]
        others = bt.bradley_terry(
            data.winners[keep],
            data.losers[keep],
            ties=data.ties[keep],
            annotators=data.ann[keep],
            n_items=data.n_items,
            # always with a prior: the others alone may have no finite maximum-likelihood fit
            n_annotators=A,
            choice_sets=sets or None,
            prior_scale=kw["prior_scale"] or 2.0,
            beta_prior=None,
            fixed_beta=base_fixed,
            compute_stderr=False,
        )
        s, nu = others.scores, float(others.nu)
        mine = ~keep
        tie = data.ties[mine]
        if nu <= 0 and tie.any():
            nu = 0.5  # the others never tied: j's ties still need a tie parameter
        mine_kw = dict(
            ties=tie if tie.any() else None,
            annotators=np.zeros(int(mine.sum()), dtype=np.int64),
            nu=nu,
            choice_sets=[(c, list(o), 0) for c, o, a in data.choice_sets if a == j] or None,
        )

        def neg_log_post(lb: float, mine: np.ndarray = mine, s: np.ndarray = s, mine_kw: dict = mine_kw) -> float:
            ll, _ = bt.log_posterior(data.winners[mine], data.losers[mine], s, beta=np.array([np.exp(lb)]), **mine_kw)
            return -ll + 0.5 * (lb / prior) ** 2

        res = minimize_scalar(neg_log_post, bounds=(-8.0, 5.0), method="bounded", options={"xatol": 1e-4})
        betas[j] = float(np.exp(res.x))
    return betas


def fit(
    data: Comparisons,
    *,
    prior_scale: float | None = 2.0,
    beta_prior: float | None = 1.0,
    bootstrap: int = 0,
    seed: int = 0,
) -> Fit:
    """Fit one criterion's comparisons with :func:`.bt.bradley_terry`; ``bootstrap`` > 1 adds
    refits over resampled votes (:func:`.bt.bootstrap`)."""
    members = [i for _, o, _ in data.choice_sets for i in o]
    used = np.unique(np.concatenate([data.winners, data.losers, np.asarray(members, dtype=np.int64)]))
    if len(used) == 0:  # nothing comparable (e.g. only can't-tell votes): everything at its prior
        sd0 = float(prior_scale) if prior_scale and prior_scale > 0 else 1e6
        n = data.n_items
        return Fit(
            scores=np.zeros(n),
            stderr=np.full(n, sd0),
            beta=np.ones(max(len(data.annotators), 1)),
            nu=0.0,
            components=np.arange(n, dtype=np.int64),
            cov=np.eye(n) * sd0**2 if n <= 4000 else None,
            engine="none",
        )
    if len(used) < data.n_items:
        # items nobody compared (triplets with only can't-tell/skip votes, or none) stay out of
        # the fit: their posterior is the prior (or, with the prior off, unknown)
        return _expand(
            fit(_compact(data, used), prior_scale=prior_scale, beta_prior=beta_prior, bootstrap=bootstrap, seed=seed),
            used,
            data.n_items,
            prior_scale,
        )
    try:
        res = _fit_bt(data, prior_scale=prior_scale, beta_prior=beta_prior)
    except np.linalg.LinAlgError:
        if prior_scale:
            raise
        raise CondsimError(
            "the plain maximum-likelihood fit (--prior 0) has no finite solution for these votes "
            "(some pair wins or loses all its comparisons): use a prior, e.g. --prior 2"
        ) from None
    if not (np.all(np.isfinite(res.scores)) and np.all(np.isfinite(res.stderr))):
        raise CondsimError(
            "the fit did not converge to finite scores" + (": use a prior, e.g. --prior 2" if not prior_scale else "")
        )
    out = Fit(
        scores=np.asarray(res.scores, dtype=float),
        stderr=np.asarray(res.stderr, dtype=float),
        beta=np.asarray(res.beta, dtype=float),
        nu=float(res.nu),
        components=np.asarray(res.components),
        cov=res.cov,
        engine="bt",
    )
    if bootstrap and bootstrap > 1:
        out.samples = _bootstrap(data, out, bootstrap, seed=seed, prior_scale=prior_scale, beta_prior=beta_prior)
        out.stderr = out.samples.std(axis=0, ddof=1)
    return out


def _compact(data: Comparisons, used: np.ndarray) -> Comparisons:
    remap = np.full(data.n_items, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    items = [data.items[i] for i in used.tolist()]
    return Comparisons(
        data.criterion_id,
        data.criterion,
        data.criterion_version,
        items=items,
        item_of={(min(a, c), max(a, c)): k for k, (a, c) in enumerate(items)},
        triplets={},
        annotators=data.annotators,
        winners=remap[data.winners],
        losers=remap[data.losers],
        ties=data.ties,
        ann=data.ann,
        trip=data.trip,
        choice_sets=[(int(remap[c]), tuple(int(remap[i]) for i in o), a) for c, o, a in data.choice_sets],
        key_index=data.key_index,
    )


def _expand(f: Fit, used: np.ndarray, n: int, prior_scale: float | None) -> Fit:
    """A fit on the compared items, extended to all items (the others at their prior)."""
    sd0 = float(prior_scale) if prior_scale and prior_scale > 0 else 1e6
    scores = np.zeros(n)
    scores[used] = f.scores
    stderr = np.full(n, sd0)
    stderr[used] = f.stderr
    comps = np.empty(n, dtype=np.int64)
    comps[used] = f.components
    unused = np.setdiff1d(np.arange(n), used)
    comps[unused] = (f.components.max() + 1 if len(f.components) else 0) + np.arange(len(unused))
    cov = None
    if f.cov is not None:
        cov = np.zeros((n, n))
        cov[np.ix_(used, used)] = f.cov
        cov[unused, unused] = sd0**2
    samples = None
    if f.samples is not None:
        samples = np.zeros((len(f.samples), n))
        samples[:, used] = f.samples
    return Fit(
        scores=scores, stderr=stderr, beta=f.beta, nu=f.nu, components=comps, cov=cov, samples=samples, engine=f.engine
    )


def _bootstrap(
    data: Comparisons, base: Fit, B: int, *, seed: int, prior_scale: float | None, beta_prior: float | None
) -> np.ndarray:
    """Scores refitted on votes resampled with replacement (seeded): :func:`.bt.bootstrap`."""
    kw = _bt_kwargs(data, prior_scale=prior_scale, beta_prior=beta_prior)
    return bt.bootstrap(data.winners, data.losers, n_boot=B, seed=seed, **kw).samples


def triplet_prob_first(data: Comparisons, fitres: Fit, tids: list[int]) -> np.ndarray:
    """P(s(a, first) > s(a, second)) for each triplet, under the fit and its uncertainty.

    A plain Laplace (Gaussian) posterior is badly skewed for the typical triplet with a
    few unanimous votes: the likelihood is flat on the winning side, so the curvature
    at the mode says almost nothing about the sign.  So the triplet's own votes enter
    exactly: the Gaussian posterior of d = s_first - s_second with those votes'
    curvature removed (the "cavity", i.e. everything else the fit knows) times their
    exact Davidson likelihood, integrated on a grid.  With bootstrap samples the
    bootstrap distribution is used instead.
    """
    i1 = np.array([data.triplets[t]["i_first"] for t in tids], dtype=np.int64)
    i2 = np.array([data.triplets[t]["i_second"] for t in tids], dtype=np.int64)
    if fitres.samples is not None and len(fitres.samples) > 1:
        return fitres.prob_greater(i1, i2)
    m_all = fitres.scores[i1] - fitres.scores[i2]
    if fitres.cov is not None:
        v_all = fitres.cov[i1, i1] + fitres.cov[i2, i2] - 2 * fitres.cov[i1, i2]
    else:
        v_all = fitres.stderr[i1] ** 2 + fitres.stderr[i2] ** 2
    v_all = np.maximum(v_all, 1e-9)
    nu = max(float(fitres.nu), 0.0)
    lnu = math.log(nu) if nu > 0 else -50.0
    pos = {t: n for n, t in enumerate(tids)}
    ks = np.asarray([k for k, t in enumerate(data.trip.tolist()) if t in pos], dtype=np.int64)
    out = norm.cdf(m_all / np.sqrt(v_all))  # triplets without votes of their own: the Gaussian posterior
    if len(ks) == 0:
        return out
    kt = np.asarray([pos[t] for t in data.trip[ks].tolist()], dtype=np.int64)
    order = np.argsort(kt, kind="stable")
    ks, kt = ks[order], kt[order]
    b = fitres.beta[data.ann[ks]]
    sign = np.where(data.winners[ks] == i1[kt], 1.0, -1.0)  # +1: the vote favours first
    tie = data.ties[ks]

    def parts(h):
        logZ = np.logaddexp(h, -h)
        if nu > 0:
            logZ = np.logaddexp(logZ, lnu)
        return logZ, np.exp(h - logZ), np.exp(-h - logZ)

    # slope and curvature of each triplet's own votes at the Laplace mode m
    h0 = b * sign * m_all[kt] / 2
    _, pA, pB = parts(h0)
    half = b * sign / 2
    g = np.bincount(kt, half * (np.where(tie, 0.0, 1.0) - (pA - pB)), minlength=len(tids))
    c = np.bincount(kt, (b / 2) ** 2 * (pA + pB - (pA - pB) ** 2), minlength=len(tids))
    lam = 1.0 / v_all
    lam_c = np.maximum(np.maximum(lam - c, 0.05 * lam), 1e-6)
    mu_c = m_all - g / lam_c
    sd_c = 1.0 / np.sqrt(lam_c)
    lo = np.minimum(mu_c, m_all) - 8 * sd_c
    hi = np.maximum(mu_c, m_all) + 8 * sd_c
    G = 801
    u = np.linspace(0.0, 1.0, G)
    has = np.unique(kt)
    starts = np.searchsorted(kt, has)
    ends = np.append(starts[1:], len(kt))
    block = max(1, 4_000_000 // G)  # comparisons per block (memory bound)
    i = 0
    while i < len(has):
        j = i
        while j < len(has) and ends[j] - starts[i] <= block or j == i:
            j += 1
        rows = has[i:j]
        sl = slice(starts[i], ends[j - 1])
        grid = lo[rows, None] + (hi[rows] - lo[rows])[:, None] * u[None, :]  # (R, G)
        local = np.searchsorted(rows, kt[sl])
        h = (b[sl] * sign[sl])[:, None] * grid[local] / 2
        logZ, _, _ = parts(h)
        ll = np.where(tie[sl][:, None], lnu - logZ, h - logZ)
        LL = np.add.reduceat(ll, starts[i:j] - starts[i], axis=0)
        lw = -0.5 * ((grid - mu_c[rows, None]) / sd_c[rows, None]) ** 2 + LL
        w = np.exp(lw - lw.max(axis=1, keepdims=True))
        out[rows] = (w * (grid > 0)).sum(1) / w.sum(1)
        i = j
    return out
