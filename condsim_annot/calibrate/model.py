"""TripletModel: calibrated triplet labels from crowd votes, one estimator on arrays (crowd-kit/choix style).

The model
---------
Items are unordered document pairs {a, x}; a vote on the triplet (a; x, y) compares items
i = {a, x} and j = {a, y} through d = s_i - s_j (:mod:`.davidson`: Davidson ties, discrimination
beta_j per annotator, beta >= 0 so an adversary's votes stop counting, they are not flipped)::

    s_i = w . phi_i + u_i,    u_i ~ N(0, tau^2),    w ~ N(0, 3^2),    log beta_j ~ N(0, 1)

``phi_i`` are features of the pair (the proposer methods' standardised scores under the
criterion: embedding cosine, BM25, ...).  ``w`` ("what each method is worth under this
criterion, learnt from the votes") and ``tau`` pool every triplet onto one global scale; a pair
nobody voted on still has a prior N(w . phi_i, tau^2).  The scale's unit: the vote-weighted mean
beta of the fitted annotators is 1 (pinned annotators, e.g. an answer key, are left out of it).

How it is fitted (``fit``)
--------------------------
1. MAP of (u, w) given beta, nu, tau (truncated Newton, tolerance in Fisher-scaled coordinates); its diagonal Hessian
   gives each triplet a *cavity*: what everything except the triplet's own votes says about d
   (for a triplet whose pairs occur nowhere else this is exactly the prior N(w . dphi, 2 tau^2)).
2. Each triplet's posterior of d is the cavity times its votes' exact Davidson likelihood,
   integrated on a grid (one dimension: exact for isolated triplets, expectation-propagation-like
   where pairs are shared), mixed over tau's posterior (3 nodes) and, per vote, over beta_j's
   posterior (3 nodes) - the uncertainty of beta and of the prior scale is carried.
   A point mass at d = 0 (a true tie: neither candidate is more similar) has prior weight
   sigmoid(a + b |w . dphi_t|) per triplet (``tie_coef_`` = (a, b), empirical Bayes: a comparison the
   methods put far apart is seldom a true tie; b = 0 and one mass ``tie_mass_`` unless the votes ask for
   a true-tie mass >= .1 and the slope earns its keep) and its own answer distribution per annotator
   (``tie_answer_``: P("tie" | true tie)); P(first) + P(second) = 1 - P(true tie).
   Each vote is Davidson's with probability 1 - lapse_j, else a *lapse* that ignores d (``lapse_``,
   ``lapse_tie_`` = P("tie" | a lapse), a side at random otherwise): annotators who are wrong at a
   constant rate (a share of random answers) are not mistaken for ones who only err on close calls.
   Ties near d = 0 (Davidson) and true ties (the spike) are hard to tell apart from three votes per
   triplet; from round 2 on the fit switches to true ties for good - Davidson's nu then held at
   ``spike_nu``, the slab's tie answers being lapses - when the Davidson fit itself asks for a true-tie
   mass >= .1 or the switch has the larger marginal likelihood (left free, nu grew round after round and
   took the true ties' mass); a fit with >= 15% tie answers gets one more round for that question and, at the
   switch, sign votes: a slab vote is d's sign or a lapse, lapses from triplets the others decide (``_sign_votes``).
3. beta_j, nu and the lapses maximise the leave-one-vote-out predictive likelihood of the votes (each
   vote predicted from the cavity without it: an annotator cannot become an "oracle" by explaining
   his own votes; lapse, its tie share and a factor on beta jointly on a grid, then beta by Newton);
   tau maximises the votes' leave-one-triplet-out evidence (each triplet's votes predicted from the rest, with the
   same integrals): at each candidate tau the MAP is redone and the cavities come from belief propagation.
   Steps 1-3 alternate for ``rounds``; then a final MAP and integration.

Results (attributes, after ``fit``): ``scores_``/``stderr_`` (posterior mean and sd of every
pair on the one scale), ``beta_``/``beta_sd_`` (log scale sd), ``nu_``/``nu_annotator_``, ``lapse_``,
``lapse_tie_``, ``tie_answer_``, ``tie_mass_``/``tie_coef_``, ``tau_``, ``w_``/``w_sd_``,
``components_``, per triplet ``triplet_first_``/``triplet_second_``/``p_first_`` (P(s_i > s_j)),
per vote ``loo_`` (n_votes, 3): the held-out predictive P(first, second, tie) of each vote, the
input of cross-validated reliability (:mod:`.reliability`).  ``predict_label`` gives
P(s_i > s_j) for any item pairs, voted or not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import model_data
from .davidson import FIRST, SECOND, TIE
from .integrate import NU_MAX, Loo, TripletIntegrals
from .model_data import _Data, _logit, _prepare, _sample_votes, _ScoreHessian, _sigmoid, _VoteTerms
from .optim import components, newton_cg, one_blas_thread

__all__ = ["TripletModel"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
_Q3 = (np.array([-math.sqrt(3.0), 0.0, math.sqrt(3.0)]), np.array([1 / 6, 2 / 3, 1 / 6]))  # Gauss-Hermite, 3 nodes
LOG_BETA_BOUNDS = (-6.0, 3.0)
SPIKE_NU_PRIOR_SD = 0.0
MANY_TIES = 0.15  # share of tie answers from which a fit spends one more round on the true-tie question
SPIKE_MODE_MIN_MASS = 0.1  # a true-tie mass the Davidson slab could not absorb: the criterion has true ties
TAU_OFFSETS = np.linspace(-0.8, 0.8, 5)  # each round's tau candidates, tau x exp(offset)
TAU_MAP_TOL = 1e-2  # the candidates' MAPs to a hundredth of a standard error
SPIKE_SHARPNESS = 100.0  # spike mode: the integrals' betas x this, a slab vote is d's sign or a lapse


class TripletModel:
    """Calibrated P(s(a, x) > s(a, y)) from triplet votes; see the module docstring.

    Args:
        prior_scale: tau, the sd of the pair scores around the feature prior; None = empirical Bayes.
        beta_prior: sd of the N(0, sd^2) prior on log beta_j; None = every beta 1 (not fitted).
        fit_ties: fit Davidson's nu from tie votes (False: tie votes are left out).
        feature_sd: sd of the N(0, sd^2) prior on each feature weight.
        grid: points of each triplet's one-dimensional integral.
        rounds: alternations of MAP, integration and beta/nu/tau updates.
        max_votes_per_annotator: votes per annotator used to update beta (a seeded sample).
        max_loo_votes: votes whose held-out predictive ``loo_`` is computed (a seeded sample; the rest NaN).
        seed: seed of that sample.
        tie_mass: prior probability that a triplet is a true tie (d exactly 0: neither candidate is more
            similar, e.g. both or neither share the anchor's topic); None = empirical Bayes, 0 = none.
        lapse: fit each annotator's lapse rate (answers that ignore d: a side at random or "tie"), with
            the fitted betas.
        spike_nu: Davidson's nu while the model has a true-tie spike and lapses (the slab's ties are then
            lapses); None = nu fitted per annotator in any case.
    """

    def __init__(
        self,
        *,
        prior_scale: float | None = None,
        beta_prior: float | None = 1.0,
        fit_ties: bool = True,
        feature_sd: float = 3.0,
        grid: int = 32,
        rounds: int = 2,
        max_votes_per_annotator: int = 1000,
        max_loo_votes: int = 100_000,
        seed: int = 0,
        tol: float = 1e-3,
        tie_mass: float | None = None,
        lapse: bool = True,
        spike_nu: float | None = 0.3,
    ) -> None:
        self.lapse = lapse
        self.spike_nu = spike_nu
        self.max_loo_votes = max_loo_votes
        self.tie_mass = tie_mass
        self.prior_scale = prior_scale
        self.beta_prior = beta_prior
        self.fit_ties = fit_ties
        self.feature_sd = feature_sd
        self.grid = grid
        self.rounds = rounds
        self.max_votes_per_annotator = max_votes_per_annotator
        self.seed = seed
        self.tol = tol

    # ------------------------------------------------------------------ public
    def fit(
        self,
        first: ArrayLike,
        second: ArrayLike,
        outcome: ArrayLike,
        annotators: ArrayLike | None = None,
        *,
        n_items: int | None = None,
        n_annotators: int | None = None,
        features: ArrayLike | None = None,
        fixed_beta: ArrayLike | None = None,
    ) -> TripletModel:
        """Fit on votes: ``first``/``second`` item of each vote's two pairs, ``outcome`` 0 first / 1 second /
        2 tie, ``annotators`` index per vote; ``features`` (n_items, F); ``fixed_beta`` (A,) NaN = fitted."""
        t0 = time.perf_counter()
        checked = model_data._validate(
            first, second, outcome, annotators, n_items, n_annotators, features, fixed_beta, self.fit_ties
        )
        with one_blas_thread():  # small vector work: OpenBLAS threads only spin
            return self._fit(checked, t0)

    def _fit(self, checked: model_data.Checked, t0: float) -> TripletModel:
        f, s, o, a, n, A, phi, fixed = checked
        self.n_features_ = phi.shape[1]
        d = _prepare(f, s, o, a, n, A, phi)
        self._d = d
        self._init_params(d, fixed)
        self._round = 0
        # many tie answers: true ties are likely, and the choice between them and Davidson's ties (made by marginal
        # likelihood from round 2 on, :meth:`_choose_spike_mode`) gets one more round of fitted betas and lapses
        many_ties = len(d.out) and float(np.mean(d.out == TIE)) >= MANY_TIES and self.tie_mass is None
        rounds = self.rounds + (1 if many_ties and self.lapse and self.spike_nu is not None else 0)
        for r in range(rounds):
            self._round = r
            self._map()
            self._integrate(update=True)
        if self._spike_mode and self._switched == self._round:  # the switch came last: one round in the new mode
            self._map()
            self._integrate(update=True)
        self._map()
        self._integrate(update=False)
        self._finish(d)
        self.fit_time_ = time.perf_counter() - t0
        return self

    def predict_proba(self, first: ArrayLike, second: ArrayLike) -> F64:
        """(n, 3) P(s_first > s_second), P(s_first < s_second), P(true tie) for item pairs: the exact triplet
        posterior where the pair of items was voted on as a triplet, else the Gaussian posterior of the two
        pairs (w's uncertainty shared) with the tie mass."""
        from scipy.stats import norm

        f = np.asarray(first, dtype=np.int64).ravel()
        s = np.asarray(second, dtype=np.int64).ravel()
        d = self._d
        mean = self.scores_[f] - self.scores_[s]
        shared = np.einsum("kf,fg,kg->k", d.phi[f], self.w_cov_, d.phi[s]) if self.n_features_ else 0.0
        var = np.maximum(self.stderr_[f] ** 2 + self.stderr_[s] ** 2 - 2 * shared, 1e-12)
        pi = self.tie_probability(f, s)
        pf = (1 - pi) * norm.cdf(mean / np.sqrt(var))
        ps = (1 - pi) - pf
        if len(d.ti):
            key = np.minimum(f, s) * d.n + np.maximum(f, s)
            tkey = d.ti * d.n + d.tj
            pos = np.minimum(np.searchsorted(tkey, key), len(tkey) - 1)
            hit = tkey[pos] == key
            a, b = self.p_first_[pos], self.p_second_[pos]
            pf = np.where(hit, np.where(f < s, a, b), pf)
            ps = np.where(hit, np.where(f < s, b, a), ps)
        return np.stack([pf, ps, np.clip(1 - pf - ps, 0.0, 1.0)], axis=1)

    def tie_probability(self, first: ArrayLike, second: ArrayLike) -> F64:
        """Prior probability that the comparison of item pairs ``first`` vs ``second`` is a true tie (before
        its own votes): sigmoid(a + b |w . (phi_first - phi_second)|), ``tie_coef_`` = (a, b)."""
        f = np.asarray(first, dtype=np.int64).ravel()
        s = np.asarray(second, dtype=np.int64).ravel()
        a, b = self.tie_coef_
        if b == 0.0:
            return np.full(len(f), float(self.tie_mass_))
        return np.asarray(_sigmoid(a + b * self._tie_feature(self._d.phi[f] - self._d.phi[s])), dtype=np.float64)

    def predict_label(self, first: ArrayLike, second: ArrayLike) -> F64:
        """P(s_first > s_second) for item pairs (:meth:`predict_proba`'s first column)."""
        return np.asarray(self.predict_proba(first, second)[:, 0], dtype=np.float64)

    # ------------------------------------------------------------------ set-up
    def _init_params(self, d: _Data, fixed: F64) -> None:
        self._fixed = ~np.isnan(fixed)
        self.beta_ = np.where(self._fixed, fixed, 1.0)
        self.beta_sd_ = np.zeros(d.A)
        used = np.zeros(d.A, dtype=bool)
        used[np.unique(d.ann)] = True
        free = used & ~self._fixed
        self._free = free if (self.beta_prior and free.sum() > 1) else np.zeros(d.A, dtype=bool)
        ties = float(np.mean(d.out == TIE)) if len(d.out) else 0.0
        self._nu_data = min(max(2 * ties / max(1e-9, 1 - ties), 0.05), NU_MAX) if ties > 0 else 0.0
        # once the votes ask for a true-tie spike (and lapses are fitted), the slab's tie answers are lapses:
        # Davidson's nu is then held small, so that the slab near d = 0 does not mimic the spike (the two are not
        # identifiable from a few votes per triplet: nu grew round after round and took the true ties' mass)
        self._spike_mode, self._switched, self._sharp = False, -1, 1.0
        self.nu_ = self._nu_data
        self.nu_annotator_ = np.full(d.A, self.nu_)
        # P("tie" | a true tie) per annotator, started at the annotator's share of tie answers
        n_tie = np.bincount(d.ann, d.out == TIE, minlength=d.A)
        self.tie_answer_ = (n_tie + 1.0) / (np.bincount(d.ann, minlength=d.A) + 3.0)
        self.tau_ = float(self.prior_scale) if self.prior_scale else 1.5
        self._tau_nodes = (np.zeros(1), np.ones(1))  # log-scale offsets and weights of tau's posterior
        self.tau_sd_ = 0.0
        self._u = np.zeros(d.n)
        self.w_ = np.zeros(d.phi.shape[1])
        self.n_iter_ = 0
        self._sample_cache: tuple[I64, I64, I64] | None = None
        self._hess: _ScoreHessian | None = None
        self._warm: tuple[F64, NDArray[np.floating], float] | None = None  # a start for the next MAP
        self.tie_mass_ = (0.1 if self.tie_mass is None else float(self.tie_mass)) if len(d.out) else 0.0
        self.tie_coef_ = (_logit(self.tie_mass_), 0.0)  # logit P(true tie) = a + b |w . dphi|
        self.lapse_ = np.zeros(d.A)  # P(an answer that ignores d) per annotator
        self.lapse_tie_ = np.full(d.A, 1 / 3)  # P("tie" | a lapse)

    # ------------------------------------------------------------------ step 1: MAP of (u, w)
    def _vote_consts(self) -> None:
        """Per-vote constants of the current beta and nu (the MAP's passes reuse them, :class:`._VoteTerms`)."""
        d = self._d
        nu_v = self.nu_annotator_[d.ann]
        sgn = np.where(d.out == FIRST, 1.0, np.where(d.out == SECOND, -1.0, 0.0))
        tie = d.out == TIE
        lnu_ties = float(np.log(nu_v[tie]).sum()) if tie.any() else 0.0
        # the MAP only centres the cavities: Davidson with each annotator's beta shrunk by his lapse, (1 - lapse)
        # beta, the mixture's slope at d = 0 (the exact lapse likelihood is in the integrals); the mixture itself
        # in the MAP's objective cost three times the L-BFGS iterations at 1M votes
        half_b = 0.5 * (self.beta_ * (1.0 - self.lapse_))[d.ann]
        self._terms = _VoteTerms(d.vt, half_b, nu_v, sgn, lnu_ties)

    def _dt(self, u: F64, w: F64) -> F64:
        """d of every triplet at (u, w)."""
        d = self._d
        return u[d.ti] - u[d.tj] + (d.dphi @ w if d.dphi.shape[1] else 0.0)

    def _newton_fun(self, x: F64) -> tuple[float, F64, F64, Callable[[F64], F64]]:
        """The MAP's negative log posterior at x = (u, w), its gradient, Hessian diagonal and Hessian-vector
        product (:func:`.optim.newton_cg`): H = J' diag(c_t) J + prior, J the triplets' design (u_i - u_j, dphi_t)."""
        d = self._d
        n, T = d.n, len(d.ti)
        u, w = x[:n], x[n:]
        ll, r, c = self._terms(self._dt(u, w))
        rt = np.bincount(d.vt, r, minlength=T)
        ct = np.asarray(np.bincount(d.vt, c, minlength=T), dtype=np.float64)
        pu, pw = 1 / self.tau_**2, 1 / self.feature_sd**2
        gu = np.bincount(d.ti, rt, minlength=n) - np.bincount(d.tj, rt, minlength=n) + u * pu
        g = np.concatenate([gu, d.dphi.T @ rt + w * pw])
        nll = -ll + 0.5 * float(u @ u) * pu + 0.5 * float(w @ w) * pw
        hu = np.bincount(d.ti, ct, minlength=n) + np.bincount(d.tj, ct, minlength=n) + pu
        assert self._hess is not None
        huu = self._hess.matrix(hu, ct)  # the score block; with w: H_uw = B' diag(c) dphi, H_ww = dphi' diag(c) dphi
        cphi = d.dphi * ct[:, None]
        huw = np.asarray(self._hess.bt @ cphi)
        hww = d.dphi.T @ cphi + np.eye(d.dphi.shape[1]) * pw
        hd = np.concatenate([hu, np.diag(hww)])

        def hv(v: F64) -> F64:
            vu, vw = v[:n], v[n:]
            if not len(vw):
                return np.asarray(huu @ vu, dtype=np.float64)
            return np.concatenate([huu @ vu + huw @ vw, huw.T @ vu + hww @ vw])

        return nll, g, hd, hv

    def _map(self) -> None:
        """MAP of (u, w) by truncated Newton from 0, scaled by the Hessian's diagonal there (tolerance ``tol`` in
        standard errors).  From 0, not from the last round's MAP: where the round changed the betas, the old
        scores sit where the votes' likelihood is flat and Newton overshoots (1M votes: 18 evaluations against 8)."""
        d = self._d
        self._vote_consts()
        if self._hess is None:
            self._hess = _ScoreHessian(d.n, d.ti, d.tj)
        x0 = np.zeros(d.n + len(self.w_))
        scale = np.sqrt(self._newton_fun(x0)[2])  # the tolerance's units: standard errors at 0
        if self._warm is not None:  # the tau profile's MAP nearest the new tau, at this round's betas: 2-3 steps away
            x0, Du, t = self._warm
            x0 = x0.copy()
            x0[: d.n] *= Du / (Du - t**-2 + self.tau_**-2)
            self._warm = None
        x, it, _ = newton_cg(self._newton_fun, x0, scale, max_iter=200, tol=self.tol)
        self.n_iter_ += it
        self._u, self.w_ = x[: d.n], x[d.n :]
        self._laplace()

    def _laplace(self, bp: bool = False) -> None:
        """Diagonal precision of u, w's covariance, each triplet's cavity of d (``bp``: the cavity precisions by
        belief propagation, :func:`.model_data.bp_cavity`, not with the neighbours held fixed)."""
        d = self._d
        T = len(d.ti)
        u, w = self._u, self.w_
        dt = self._dt(u, w)
        _, r, c = self._terms(dt)
        ct = np.bincount(d.vt, c, minlength=T)
        gt = -np.bincount(d.vt, r, minlength=T)  # d loglik / d d of each triplet's own votes
        self._Du = np.bincount(d.ti, ct, minlength=d.n) + np.bincount(d.tj, ct, minlength=d.n) + 1 / self.tau_**2
        if bp:
            Pi, Pj = model_data.bp_cavity(d.n, d.ti, d.tj, np.asarray(ct, dtype=np.float64), 1 / self.tau_**2)
        else:
            Pi = np.maximum(self._Du[d.ti] - ct, 1 / self.tau_**2)
            Pj = np.maximum(self._Du[d.tj] - ct, 1 / self.tau_**2)
        vu = 1 / Pi + 1 / Pj
        F = d.dphi.shape[1]
        if F:
            # w's information: each triplet's votes measure d_t = w . dphi_t + (u_i - u_j) with precision c_t,
            # the rest of d_t varying by vu: information c_t / (1 + c_t vu) per triplet (exact for isolated ones)
            info = ct / (1.0 + ct * vu)
            H = (d.dphi * info[:, None]).T @ d.dphi + np.eye(F) / self.feature_sd**2
            self.w_cov_ = np.linalg.inv(0.5 * (H + H.T))
        else:
            self.w_cov_ = np.zeros((0, 0))
        vw = np.einsum("tf,fg,tg->t", d.dphi, self.w_cov_, d.dphi) if F else np.zeros(T)
        self._cav = (dt - gt * vu, vu, vw, dt, Pi, Pj)

    # ------------------------------------------------------------------ step 2-3: integrals and updates
    def _integrals(self, nu: F64 | None = None, tau_nodes: tuple[F64, F64] | None = None) -> TripletIntegrals:
        return TripletIntegrals(
            self._d,
            self._cav,
            self.beta_ * self._sharp,
            self.beta_sd_,
            self.nu_annotator_ if nu is None else nu,
            self._tau_nodes if tau_nodes is None else tau_nodes,
            self.grid,
            self._tie_prior(),
            self.tie_answer_,
            self.lapse_,
            self.lapse_tie_,
        )

    def _choose_spike_mode(self, ig: TripletIntegrals, tsub: I64) -> TripletIntegrals:
        """From round 2 on (fitted betas): keep Davidson's nu per annotator (ties near d = 0), or switch to true ties
        with lapses (nu held at ``spike_nu``) when the Davidson fit itself asks for a true-tie mass >= .1 or the
        switch gives the votes a larger marginal likelihood, each at its best tie mass.  The switch is for good."""
        if self._spike_mode or self.spike_nu is None or not self.lapse or self.nu_ <= 0 or self._round < 1:
            return ig
        if float(np.mean(self._d.out == TIE)) < MANY_TIES and self.tie_mass_ < SPIKE_MODE_MIN_MASS:
            return ig  # few tie answers and little true-tie mass: not worth the question (two more passes)
        alt = self._integrals(np.full(self._d.A, float(self.spike_nu)))
        grid, lml = alt.tie_mass_profile(tsub)
        grid1, lml1 = ig.tie_mass_profile(tsub)
        asks = float(grid1[int(np.argmax(lml1))]) >= SPIKE_MODE_MIN_MASS  # Davidson's slab itself wants true ties
        if float(grid[int(np.argmax(lml))]) < SPIKE_MODE_MIN_MASS or (lml.max() <= lml1.max() and not asks):
            return ig
        self._spike_mode, self._switched = True, self._round
        self.nu_ = float(self.spike_nu)
        self.nu_annotator_ = np.full(self._d.A, self.nu_)
        return self._sign_votes(alt) if float(np.mean(self._d.out == TIE)) >= MANY_TIES else alt

    def _sign_votes(self, alt: TripletIntegrals) -> TripletIntegrals:
        """At a switch with many tie answers: the slab's votes are d's sign or a lapse (betas x ``SPIKE_SHARPNESS``,
        lapses from the triplets the others decide, :meth:`.TripletIntegrals.lapse_moments`), for good.  A graded
        slab's close calls made an answerable triplet with one stray "tie" or contrary answer a near coin flip, and the
        held-out grid kept an accurate annotator's lapse at 0.  Few tie answers (< ``MANY_TIES``): the slab's ties
        are more likely close calls, and sign votes would send them to the spike (case (a) without features)."""
        sharp = self._integrals(np.asarray(alt.nu, dtype=np.float64))
        sharp.beta = sharp.beta * SPIKE_SHARPNESS
        loo = sharp.loo_cavities(self._samples()[1])
        lam, kap = sharp.lapse_moments(loo, alt.lapse, alt.lapse_tie)
        self.lapse_, self.lapse_tie_ = np.asarray(lam, dtype=np.float64), np.asarray(kap, dtype=np.float64)
        sharp.lapse, sharp.lapse_tie = self.lapse_, self.lapse_tie_
        self._sharp = SPIKE_SHARPNESS
        return sharp

    def _integrate(self, *, update: bool) -> None:
        ig = self._integrals()
        if update:
            tsub, sub, tsub_tau = self._samples()
            if self.tie_mass is None:  # empirical Bayes first: the updates below use it
                ig = self._choose_spike_mode(ig, tsub)
                self._fit_tie_prior(ig, tsub)
                ig.tie_mass = self._tie_prior()
                if self.tie_mass_ > 0:
                    self.tie_answer_ = ig.theta = ig.tie_answer_update(tsub, ig.tie_mass)
            loo = ig.loo_cavities(sub)
            c = 1.0
            if self._free.any() and self.beta_prior:
                if self.lapse:  # lapse with beta jointly (a grid), then beta's Newton from there
                    lam, kap, mult = ig.update_lapse(loo, self._free)
                    if self._sharp > 1:  # sign-or-lapse votes: the lapses from the triplets the others decide
                        lam, kap = ig.lapse_moments(loo, lam, kap)
                    self.lapse_ = np.asarray(lam, dtype=np.float64)
                    self.lapse_tie_ = np.asarray(kap, dtype=np.float64)
                    ig.lapse, ig.lapse_tie = self.lapse_, self.lapse_tie_
                    self.beta_ = self.beta_ * mult
                c = self._update_beta(ig, loo, sub)
            if self.nu_ > 0 and not self._spike_mode:
                self.nu_annotator_ = ig.update_nu(loo, self.beta_ * c)
            elif self.nu_ > 0 and SPIKE_NU_PRIOR_SD:  # spike mode: nu_j fitted, shrunk towards spike_nu
                self.nu_annotator_ = ig.update_nu(loo, self.beta_ * c, SPIKE_NU_PRIOR_SD, math.log(self.nu_))
                n_a = np.bincount(self._d.ann, minlength=self._d.A)
                self.nu_ = float(np.exp(np.dot(n_a, np.log(self.nu_annotator_)) / max(n_a.sum(), 1)))
            if not self.prior_scale:
                self._update_tau(self._tau_profile(tsub_tau))
            return
        ig.marginal_beta = True
        m = len(self._d.vt)
        want = np.zeros(m, dtype=bool)
        want[np.random.default_rng(self.seed).permutation(m)[: self.max_loo_votes]] = True
        *self._post, self.loo_ = ig.posterior_all(want)

    def _samples(self) -> tuple[I64, I64, I64]:
        """The seeded samples of every update round (drawn once: the same seed gave the same ones each round):
        triplets for the tie prior, votes per annotator for beta, nu and the lapses, triplets for tau."""
        if self._sample_cache is None:
            rng = np.random.default_rng(self.seed)
            T = len(self._d.ti)
            tsub = np.sort(rng.permutation(T)[:40_000]) if self.tie_mass is None else np.zeros(0, dtype=np.int64)
            sub = _sample_votes(self._d.ann, self.max_votes_per_annotator, rng)
            tau = np.sort(rng.permutation(T)[:40_000]) if not self.prior_scale else np.zeros(0, dtype=np.int64)
            self._sample_cache = (tsub, sub, tau)
        return self._sample_cache

    def _tie_feature(self, dphi: F64) -> F64:
        """What the tie prior reads: |w . (phi_i - phi_j)|, how far apart the methods put the two pairs (in the
        logit units of d); 0 without features."""
        if not dphi.shape[1]:
            return np.zeros(len(dphi))
        return np.asarray(np.abs(dphi @ self.w_), dtype=np.float64)

    def _tie_prior(self) -> float | F64:
        """Each triplet's prior probability of a true tie: sigmoid(a + b g_t) (:meth:`_fit_tie_prior`), or the one
        mass for all (fixed ``tie_mass``, or a fit that found no slope)."""
        a, b = self.tie_coef_
        if b == 0.0:
            return self.tie_mass_
        return np.asarray(_sigmoid(a + b * self._tie_feature(self._d.dphi)), dtype=np.float64)

    def _fit_tie_prior(self, ig: object, tsub: I64) -> None:
        """Empirical Bayes of the true-tie prior.  First one mass for all triplets (grid, Beta(1, 3) prior: none
        unless the votes ask for it); then, with features, logit P(tie) = a + b g_t (g_t = :meth:`_tie_feature`):
        a comparison the methods put far apart is seldom a true tie.  The slope is kept only where it raises the
        votes' marginal likelihood by more than 2 (EM on the spike's responsibilities, IRLS steps)."""
        from .integrate import TripletIntegrals

        assert isinstance(ig, TripletIntegrals)
        grid, lml = ig.tie_mass_profile(tsub)
        k = int(np.argmax(lml))
        self.tie_mass_, self.tie_coef_ = float(grid[k]), (_logit(float(grid[k])), 0.0)
        if self.tie_mass_ < SPIKE_MODE_MIN_MASS or not self.n_features_:
            return  # a few true ties at most (Davidson's ties near d = 0 look alike): one mass
        zs, z0 = ig.evidences(tsub)
        coef = model_data.tie_slope(zs, z0, self._tie_feature(self._d.dphi[tsub]), self.tie_coef_[0])
        if coef is not None:
            self.tie_coef_ = coef
            self.tie_mass_ = float(np.mean(self._tie_prior()))

    def _update_beta(self, ig: object, loo: Loo, sub: I64) -> float:
        from .integrate import beta_newton

        d = self._d
        lb, curv = beta_newton(
            loo,
            d.out[sub],
            d.ann[sub],
            np.log(self.beta_),
            self._free,
            self.nu_annotator_,
            float(self.beta_prior or 1.0),
            self.tie_answer_,
            lapse=self.lapse_,
            lapse_tie=self.lapse_tie_,
        )
        n_all = np.bincount(d.ann, minlength=d.A).astype(float)
        n_sub = np.maximum(np.bincount(d.ann[sub], minlength=d.A).astype(float), 1.0)
        info = np.maximum((-curv - 1 / float(self.beta_prior or 1.0) ** 2) * n_all / n_sub, 0.0)
        info += 1 / float(self.beta_prior or 1.0) ** 2
        beta = self.beta_.copy()
        beta[self._free] = np.exp(lb[self._free])
        # the scale's unit: vote-weighted mean beta of the fitted annotators = 1
        c = float(np.dot(n_all[self._free], beta[self._free]) / n_all[self._free].sum())
        beta[self._free] /= c
        self.beta_ = beta
        self.beta_sd_ = np.where(self._free, 1 / np.sqrt(info), 0.0)
        self._u *= c
        self.w_ = self.w_ * c
        if not self.prior_scale:
            self.tau_ *= c
        return c

    def _tau_profile(self, tids: I64) -> tuple[F64, F64]:
        """Leave-one-triplet-out log evidence of the votes of ``tids`` at tau x exp(``TAU_OFFSETS``), uphill from 0: at
        each candidate the MAP again and the cavities by belief propagation.  Scaling the variance of one tau's cavities
        (before) missed that a shared pair's cavity mean grows with tau and kept a triplet's own votes in its cavity."""
        d = self._d
        saved = (self._u, self.w_, self._cav, self._Du, self.w_cov_, self.tau_)
        tau0 = self.tau_
        self._vote_consts()  # this round's betas, nu and lapses
        lml = np.full(len(TAU_OFFSETS), -np.inf)
        mid = len(TAU_OFFSETS) // 2
        xs = {mid: (np.zeros(d.n + len(self.w_)), self._Du, tau0)}  # the first MAP from 0 (as :meth:`_map`), then
        # each from its neighbour's

        def at(k: int, start: tuple[F64, NDArray[np.floating], float]) -> None:
            self.tau_ = tau0 * math.exp(float(TAU_OFFSETS[k]))
            x = start[0].copy()  # each score moved as its Gaussian message would: a warm start a few steps closer
            x[: d.n] *= start[1] / (start[1] - start[2] ** -2 + self.tau_**-2)
            x, it, _ = newton_cg(self._newton_fun, x, None, max_iter=50, tol=TAU_MAP_TOL)
            self.n_iter_ += it
            self._u, self.w_ = x[: d.n], x[d.n :]
            self._laplace(bp=True)
            xs[k] = (x, self._Du, self.tau_)
            lml[k] = self._integrals(tau_nodes=(np.zeros(1), np.ones(1))).log_evidence(tids)

        for k in (mid, mid + 1, mid - 1):
            at(k, xs[mid])
        step = 1 if lml[mid + 1] > lml[mid] else (-1 if lml[mid - 1] > lml[mid] else 0)
        k = mid + step
        while step and 0 <= k + step < len(TAU_OFFSETS) and lml[k] > lml[k - step]:  # uphill, to the maximum
            at(k + step, xs[k])
            k += step
        self._u, self.w_, self._cav, self._Du, self.w_cov_, self.tau_ = saved
        self._warm = xs[int(np.argmax(lml))]
        return TAU_OFFSETS, lml

    def _update_tau(self, profile: tuple[NDArray[np.floating], NDArray[np.floating]]) -> None:
        step, sd = model_data.profile_step(*profile)
        self.tau_ = float(np.clip(self.tau_ * math.exp(step), 1e-3, 50.0))
        self.tau_sd_ = float(min(sd, 0.5))
        self._tau_nodes = (_Q3[0] * self.tau_sd_, _Q3[1])

    def _finish(self, d: _Data) -> None:
        p_first, p_second, mean_d, var_d = self._post
        self.triplet_first_, self.triplet_second_ = d.ti, d.tj
        self.p_first_ = p_first
        self.p_second_ = p_second
        phi_w = d.phi @ self.w_ if d.phi.shape[1] else np.zeros(d.n)
        scores = phi_w + self._u
        var = 1 / self._Du + (np.einsum("nf,fg,ng->n", d.phi, self.w_cov_, d.phi) if d.phi.shape[1] else 0.0)
        # pairs that occur in one triplet only: mean and sd from that triplet's exact posterior of d
        cnt = np.bincount(np.concatenate([d.ti, d.tj]), minlength=d.n)
        _, _, _, dt, Pi, Pj = self._cav
        for items, P, other, sign in ((d.ti, Pi, Pj, 1.0), (d.tj, Pj, Pi, -1.0)):
            only = cnt[items] == 1
            vi, vo = 1 / P, 1 / other
            k = sign * vi / (vi + vo)
            mean_i = scores[items] + k * (mean_d - dt)
            var_i = vi * (1 - abs(k)) + k**2 * var_d
            scores[items[only]] = mean_i[only]
            var[items[only]] = var_i[only] + var[items[only]] - 1 / self._Du[items[only]]
        self.scores_ = scores
        self.stderr_ = np.sqrt(np.maximum(var, 0.0))
        self.w_sd_ = np.sqrt(np.diag(self.w_cov_)) if d.phi.shape[1] else np.zeros(0)
        self.components_ = components(d.n, d.ti, d.tj)
        self.log_marginal_ = float(self._post_lml) if hasattr(self, "_post_lml") else float("nan")
        loo = np.where(d.flip[:, None], self.loo_[:, [1, 0, 2]], self.loo_)  # the caller's orientation
        inv = np.empty_like(d.order)
        inv[d.order] = np.arange(len(d.order))
        self.loo_ = loo[inv]  # and vote order
