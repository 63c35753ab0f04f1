"""Tests of the store-free triplet model (condsim_annot.calibrate.model) and its pure helpers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from condsim_annot.calibrate.davidson import triplet_vote_probabilities, vote_information, vote_probs
from condsim_annot.calibrate.model import TripletModel
from condsim_annot.calibrate.reliability import (
    clopper_pearson_lower,
    coverage_at_accuracy,
    label_ece,
    reliability,
    threshold_for_accuracy,
)
from condsim_annot.calibrate.simulate import simulate_triplets


def _brute_isolated(k: int, beta: float, sd: float) -> float:
    g = np.linspace(-40, 40, 400_001)
    dens = norm.pdf(g, 0, sd * np.sqrt(2)) / (1 + np.exp(-beta * g)) ** k
    return float((dens * (g > 0)).sum() / dens.sum())


@pytest.mark.parametrize("k, expected", [(1, 0.878), (2, 0.957), (3, 0.983)])
def test_isolated_triplet_is_the_exact_integral(k, expected):
    """k unanimous votes at beta 1.5, prior sd 2 on each pair: the issue's exact numbers (the Gaussian at the
    mode said .791 / .867 / .905)."""
    m = TripletModel(prior_scale=2.0, beta_prior=None, rounds=1, tie_mass=0.0)
    m.fit(np.zeros(k, int), np.ones(k, int), np.zeros(k, int), np.arange(k), n_items=2, fixed_beta=np.full(k, 1.5))
    assert m.p_first_[0] == pytest.approx(_brute_isolated(k, 1.5, 2.0), abs=2e-3)
    assert m.p_first_[0] == pytest.approx(expected, abs=2e-3)
    # the caller's orientation: the same votes given as (second, first) say P(first) = 1 - p
    m2 = TripletModel(prior_scale=2.0, beta_prior=None, rounds=1, tie_mass=0.0)
    m2.fit(np.ones(k, int), np.zeros(k, int), np.ones(k, int), np.arange(k), n_items=2, fixed_beta=np.full(k, 1.5))
    assert m2.predict_label(np.array([1]), np.array([0]))[0] == pytest.approx(1 - m.p_first_[0], abs=1e-6)


def test_shared_pairs_agree_with_brute_force_monte_carlo():
    """Three pairs of one anchor, compared around a cycle (every pair shared by two triplets), split votes:
    the cavity-times-exact-likelihood integral against importance sampling from the prior."""
    first = np.array([0, 0, 0, 1, 1, 2, 0])
    second = np.array([1, 1, 1, 2, 2, 0, 2])
    outcome = np.array([0, 0, 1, 0, 0, 1, 0])
    ann = np.zeros(7, dtype=int)
    tau, beta = 1.5, 1.2
    m = TripletModel(prior_scale=tau, beta_prior=None, rounds=1, grid=80, tie_mass=0.0)
    m.fit(first, second, outcome, ann, n_items=3, fixed_beta=np.array([beta]))
    rng = np.random.default_rng(0)
    s = rng.normal(0, tau, (400_000, 3))
    d = s[:, first] - s[:, second]
    h = 0.5 * beta * d
    logw = np.where(outcome == 0, h, -h) - np.logaddexp(h, -h)
    w = np.exp(logw.sum(1))
    w /= w.sum()
    for i, j, p in zip(m.triplet_first_, m.triplet_second_, m.p_first_, strict=False):
        mc = float(np.sum(w * (s[:, i] > s[:, j])))
        assert p == pytest.approx(mc, abs=0.03)


def _featured_sim(n_pairs: int, n_trip: int, w_true: np.ndarray, tau: float, seed: int, votes: int = 3):
    rng = np.random.default_rng(seed)
    phi = rng.normal(size=(n_pairs, len(w_true)))
    s = phi @ w_true + rng.normal(0, tau, n_pairs)
    i = rng.integers(0, n_pairs, n_trip)
    j = (i + rng.integers(1, n_pairs, n_trip)) % n_pairs
    betas = np.array([1.5, 1.0, 0.6, 0.05])
    f, sec = np.repeat(i, votes), np.repeat(j, votes)
    ann = np.concatenate([rng.permutation(4)[:votes] for _ in range(n_trip)])
    h = 0.5 * betas[ann] * (s[f] - s[sec])
    nu = 0.1
    z = np.exp(h) + np.exp(-h) + nu
    u = rng.random(len(h)) * z
    out = np.where(u < np.exp(h), 0, np.where(u < np.exp(h) + np.exp(-h), 1, 2))
    return phi, s, (f, sec, out, ann), (i, j)


def test_planted_feature_weights_are_recovered_and_calibrated():
    w_true = np.array([1.0, -0.5, 0.0])
    phi, s, votes, (i, j) = _featured_sim(3000, 2500, w_true, 0.7, seed=1)
    m = TripletModel().fit(*votes, n_items=3000, n_annotators=4, features=phi)
    # the scale's unit is the vote-weighted mean annotator: on the best annotator's own scale (beta 1.5 planted)
    # the weights are the planted ones; the useless feature gets ~0
    on_best = m.w_ * m.beta_[0] / 1.5
    assert np.all(np.abs(on_best - w_true) < 0.15), (m.w_, m.beta_)
    assert m.w_[1] / m.w_[0] == pytest.approx(-0.5, abs=0.1) and abs(m.w_[2]) < 4 * m.w_sd_[2] + 0.02
    assert m.beta_[3] < 0.25 * m.beta_[0]  # the near-random annotator hardly counts
    truth = s[m.triplet_first_] > s[m.triplet_second_]
    assert label_ece(m.p_first_, truth) <= 0.05
    # held-out votes: each predicted from all the others
    rel = reliability(m.loo_[:, 0], votes[2] == 0)
    assert rel["ece"] <= 0.03 and rel["n"] == len(votes[0])


def test_an_unvoted_pairs_probability_matches_its_frequency():
    """Triplets nobody voted on get P from the feature prior alone: it must mean what it says."""
    w_true = np.array([0.8, 0.4])
    phi, s, votes, _ = _featured_sim(4000, 1500, w_true, 0.6, seed=2)
    m = TripletModel().fit(*votes, n_items=4000, n_annotators=4, features=phi)
    voted = set(zip(m.triplet_first_.tolist(), m.triplet_second_.tolist(), strict=False))
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 4000, 6000), rng.integers(0, 4000, 6000)
    keep = np.array([x != y and (min(x, y), max(x, y)) not in voted for x, y in zip(a, b, strict=False)])
    a, b = a[keep], b[keep]
    p = m.predict_label(a, b)
    truth = s[a] > s[b]
    assert label_ece(p, truth) <= 0.05
    assert abs(p.mean() - truth.mean()) < 0.03


def test_vote_probabilities_for_propose():
    p = triplet_vote_probabilities([1.0, 0.0, 5.0], [0.5, 0.1, 0.1], [0.0, 0.0, 0.0], [0.5, 0.1, 0.1], beta=1.0, nu=0.4)
    assert np.allclose(p.sum(1), 1.0)
    assert p[0, 0] > p[0, 1] and p[1, 2] > p[0, 2]  # a settled tie predicts "tie" most
    exact = vote_probs(0.5 * 1.0 * 0.0, 0.4)
    assert p[1] == pytest.approx(exact, abs=0.01)
    info = vote_information([0.0, 0.0, 5.0], [2.0, 0.01, 0.01], 0.0, [2.0, 0.01, 0.01], beta=1.0, nu=0.4)
    assert info[0] > 0.05 and info[1] < 1e-3 and info[2] < 1e-3  # uncertain > settled tie, settled win


def test_reliability_helpers():
    rng = np.random.default_rng(0)
    p = rng.random(20_000)
    y = rng.random(20_000) < p
    r = reliability(p, y)
    assert r["ece"] < 0.02 and abs(r["brier"] - np.mean(p * (1 - p))) < 0.01 and len(r["bins"]) == 10
    assert reliability(np.full(1000, 0.9), np.zeros(1000))["ece"] == pytest.approx(0.9)
    assert clopper_pearson_lower(10, 10) == pytest.approx(0.05**0.1, abs=1e-9)
    assert clopper_pearson_lower(0, 5) == 0.0 and clopper_pearson_lower(0, 0) is None
    assert threshold_for_accuracy([0.99, 0.97, 0.9, 0.8, 0.6], 0.95) == 0.9  # mean of .99 .97 .9 = .953
    assert coverage_at_accuracy([0.9, 0.8, 0.7, 0.6], [True, True, False, True], 0.95) == 0.5


def _categorical_sim(n_pairs: int, n_trip: int, seed: int, lapse: tuple[float, ...] = (0.1, 0.3, 0.6)):
    """A categorical criterion: a pair either shares the anchor's category (c = 1) or not; (a; x, y) is a true
    tie when c_x = c_y.  Two method scores are noisy views of c.  Annotators answer the truth, except a share
    ``lapse`` of random answers (first / second / tie alike); on a true tie the truth is "tie".  Three annotators
    a triplet (all of them, or three of more at random)."""
    rng = np.random.default_rng(seed)
    c = (rng.random(n_pairs) < 0.4).astype(float)
    phi = np.stack([c + rng.normal(0, 0.8, n_pairs), c + rng.normal(0, 1.2, n_pairs)], 1)
    phi = (phi - phi.mean(0)) / phi.std(0)
    i = rng.integers(0, n_pairs, n_trip)
    j = (i + rng.integers(1, n_pairs, n_trip)) % n_pairs
    lam = np.array(lapse)
    truth = np.where(c[i] > c[j], 0, np.where(c[i] < c[j], 1, 2))
    f, sec = np.repeat(i, 3), np.repeat(j, 3)
    if len(lam) == 3:
        ann = np.tile(np.arange(3), n_trip)
    else:
        ann = np.stack([rng.permutation(len(lam))[:3] for _ in range(n_trip)]).ravel()
    lapse = lam
    out = np.where(rng.random(len(ann)) < lapse[ann], rng.integers(0, 3, len(ann)), np.repeat(truth, 3))
    return phi, (f, sec, out, ann), (i, j, truth)


def test_true_ties_and_lapses_are_fitted_and_labels_mean_what_they_say():
    """P(label) counts a true tie as wrong (what gold promises): calibrated on a tie-heavy criterion whose
    annotators lapse at random; the tie prior learns that comparisons the methods put far apart are seldom ties;
    the lapse rates are ordered as planted."""
    phi, votes, (i, j, truth) = _categorical_sim(3000, 2500, seed=3)
    m = TripletModel().fit(*votes, n_items=3000, n_annotators=3, features=phi)
    assert m.tie_coef_[1] < 0 and 0.3 < m.tie_mass_ < 0.7, (m.tie_coef_, m.tie_mass_)
    assert m.lapse_[2] > m.lapse_[0], m.lapse_
    p = m.predict_proba(i, j)
    conf = np.maximum(p[:, 0], p[:, 1])
    right = np.where(p[:, 0] >= p[:, 1], 0, 1) == truth
    assert reliability(conf, right)["ece"] <= 0.05
    sure = conf >= 0.9
    assert sure.sum() > 200 and right[sure].mean() >= 0.9
    # the tie prior of a fresh comparison: lower where the methods' scores are far apart
    near, far = m.tie_probability([0], [1]), None
    order = np.argsort(phi @ m.w_)
    far = m.tie_probability(order[-1:], order[:1])
    assert far[0] < near[0] or far[0] < m.tie_mass_


def test_many_tie_answers_make_slab_votes_sign_or_lapse_and_stray_ties_do_not_undercut_answers():
    """CHAMP's annotators (10/30/50/100% random answers, a random answer may be "tie"): once the fit switches to
    true ties, a slab vote is d's sign or a lapse, the lapses from the triplets the others decide.  Before, the
    10% annotator's lapse stayed 0 and his stray "tie" or contrary answers pulled d towards the graded slab's close
    calls: P(first | not a true tie) under-confident (conditional ECE .038 / .058 / .027 on seeds 1-3).  Few tie
    answers (Davidson's ties near d = 0): graded votes kept."""
    phi, votes, (i, j, truth) = _categorical_sim(1500, 1600, seed=2, lapse=(0.1, 0.3, 0.5, 1.0))
    m = TripletModel().fit(*votes, n_items=1500, n_annotators=4, features=phi)
    assert m._sharp > 1 and 0.05 <= m.lapse_[0] <= 0.2 and m.lapse_[3] > 0.8, m.lapse_
    p = m.predict_proba(i, j)
    has = truth != 2
    pc = p[has, 0] / (p[has, 0] + p[has, 1])
    assert label_ece(pc, truth[has] == 0) <= 0.035
    conf = np.maximum(p[:, 0], p[:, 1])
    assert reliability(conf, np.where(p[:, 0] >= p[:, 1], 0, 1) == truth)["ece"] <= 0.03
    # bench/calibration_quality.py's case (a) without features: 4% tie answers, yet the fit switches to true ties
    sim = simulate_triplets(400, 20, 15000, n_annotators=20, noisy=0.2, adversarial=0.1, nu=0.1, seed=0)
    v = (sim.item_first, sim.item_second, sim.choice, sim.annotators)
    few = TripletModel().fit(*v, n_items=sim.n_items, n_annotators=20)
    assert few._spike_mode and few._sharp == 1.0


def test_the_maps_newton_steps_reach_the_optimum_with_the_exact_hessian():
    """The MAP (truncated Newton, :func:`.optim.newton_cg`) stops where L-BFGS run to a tight tolerance does, and
    its Hessian-vector product is the gradient's derivative (finite differences)."""
    from condsim_annot.calibrate.optim import lbfgs

    phi, _, votes, _ = _featured_sim(600, 1200, np.array([1.0, -0.5]), 0.7, seed=3)
    m = TripletModel(rounds=1).fit(*votes, n_items=600, n_annotators=4, features=phi)
    x_map = np.concatenate([m._u, m.w_])
    f0, g0, hd, hv = m._newton_fun(x_map)
    assert np.max(np.abs(g0) / np.sqrt(hd)) <= m.tol
    v = np.random.default_rng(0).normal(size=len(x_map))
    eps = 1e-6
    fd = (m._newton_fun(x_map + eps * v)[1] - m._newton_fun(x_map - eps * v)[1]) / (2 * eps)
    assert np.allclose(hv(v), fd, rtol=1e-5, atol=1e-6)
    assert np.allclose(hd, [hv(np.eye(1, len(x_map), k)[0])[k] for k in range(len(x_map))])
    sc = np.sqrt(hd)
    inf = np.full(len(x_map), np.inf)
    xs, _, ok = lbfgs(
        lambda y: (lambda r: (r[0], r[1] / sc))(m._newton_fun(y / sc)),
        np.zeros_like(x_map),
        -inf,
        inf,
        max_iter=5000,
        tol=1e-7,
    )
    assert ok and np.max(np.abs(xs / sc - x_map) * sc) < 5e-3  # within the MAP's tolerance, in standard errors


def test_grid_vote_probabilities_and_row_sums():
    """The integrals' one-exp Davidson probabilities match :func:`.davidson.vote_log_lik` (h clipped at +-30 as on
    the grids) and the per-triplet sums match a plain scatter-add."""
    from condsim_annot.calibrate.davidson import vote_log_lik
    from condsim_annot.calibrate.integrate import _row_sums, vote_prob

    rng = np.random.default_rng(0)
    k = 3000
    grid = (rng.standard_normal((k, 40)) * 20).astype(np.float32)
    out, b, nu = rng.integers(0, 3, k), rng.exponential(1.0, k) * 2, rng.exponential(0.3, k)
    p = vote_prob(0.5 * b, grid, out, nu)
    ref = vote_log_lik(np.clip(0.5 * b[:, None] * grid.astype(float), -30, 30), out[:, None], nu[:, None])
    assert p.dtype == np.float32 and np.allclose(np.log(p), ref, atol=1e-4)
    rows = np.sort(rng.integers(0, 700, k))
    want = np.zeros((800, 40), dtype=np.float32)
    np.add.at(want, rows, grid)
    assert np.allclose(_row_sums(rows, grid, 800), want, atol=1e-3)


def test_integrals_cache_and_cavity_mixture():
    """The slab evidences kept between calls are those of the current vote model (a changed lapse recomputes
    them), and the cavity's mixture over tau's nodes is the plain log-sum of the Gaussians."""
    from scipy.special import logsumexp

    phi, _, votes, _ = _featured_sim(300, 600, np.array([1.0]), 0.7, seed=4)
    m = TripletModel(rounds=1).fit(*votes, n_items=300, n_annotators=4, features=phi)
    ig = m._integrals()
    t = np.arange(len(m.triplet_first_))
    zs, z0 = ig.evidences(t)
    assert np.array_equal(ig.evidences(t)[0], zs)
    ig.lapse = np.full(4, 0.3)
    zs2 = ig.evidences(t)[0]
    fresh = m._integrals()
    fresh.lapse = np.full(4, 0.3)
    assert not np.allclose(zs2, zs) and np.allclose(zs2, fresh.evidences(t)[0])
    grid, _ = ig._cells(t)
    offs, lw = np.array([-0.5, 0.0, 0.5]), np.log([1 / 6, 2 / 3, 1 / 6])
    ig.tau_off, ig.tau_w = offs, np.exp(lw)
    v = ig.vu[:, None, None] * np.exp(2 * offs)[None, None, :] + ig.vw[:, None, None]
    dens = lw - 0.5 * np.log(2 * np.pi * v) - 0.5 * (grid[..., None] - ig.mu_c[:, None, None]) ** 2 / v
    assert np.allclose(ig._prior(t, grid), logsumexp(dens, axis=-1), atol=2e-4, rtol=1e-5)


def test_cavity_precisions_by_belief_propagation_are_exact_on_a_tree():
    """On a forest of triplets, :func:`.model_data.bp_cavity` gives each triplet's cavity precisions exactly: the
    inverse marginal variance of u_i in the Laplace Hessian with the triplet's own curvature removed (which cuts the
    tree in two).  Holding the neighbours fixed (the Hessian's diagonal) overstates them wherever pairs are shared."""
    from condsim_annot.calibrate.model_data import bp_cavity

    rng = np.random.default_rng(0)
    n = 40
    ti = np.arange(1, n)
    tj = np.array([rng.integers(0, k) for k in range(1, n)])  # each item joined to an earlier one: a tree
    c, p0 = rng.exponential(2.0, n - 1), 0.25
    Pi, Pj = bp_cavity(n, ti, tj, c, p0)
    H = np.diag(np.full(n, p0) + np.bincount(ti, c, minlength=n) + np.bincount(tj, c, minlength=n))
    H[ti, tj] -= c
    H[tj, ti] -= c
    for t in range(n - 1):
        Ht = H.copy()
        i, j = ti[t], tj[t]
        Ht[i, i] -= c[t]
        Ht[j, j] -= c[t]
        Ht[i, j] += c[t]
        Ht[j, i] += c[t]
        cov = np.linalg.inv(Ht)
        assert np.isclose(Pi[t], 1 / cov[i, i], rtol=1e-6) and np.isclose(Pj[t], 1 / cov[j, j], rtol=1e-6)
    diag = np.diag(H)[ti] - c
    assert np.all(Pi <= diag + 1e-12) and np.any(Pi < 0.9 * diag)


def test_tau_recovers_the_planted_scale_where_pairs_are_shared():
    """The scores' prior sd tau, chosen by each triplet's prediction from the others at each candidate tau (the MAP
    redone), recovers the planted scale on a simulation whose pairs occur in several triplets; scaling the cavities
    of one tau (the profile before) put it at 1.32 and 1.46 here."""
    for seed in (0, 2):
        s = simulate_triplets(300, 20, 9000, n_annotators=10, noisy=0, adversarial=0, nu=0.0, seed=seed, good_beta=1.0)
        m = TripletModel().fit(s.item_first, s.item_second, s.choice, s.annotators, n_items=s.n_items, n_annotators=10)
        planted = np.average(s.true_beta, weights=np.bincount(s.annotators, minlength=10))  # the scale's unit: beta
        assert abs(m.tau_ / planted - 1) < 0.15, (seed, m.tau_, planted)


def test_tau_step_where_the_profile_skipped_a_neighbour():
    """The tau profile evaluates uphill from the middle candidate only; where the middle is a dip and the maximum lies
    on the other side, its outer neighbour is -inf and tau moves to the maximum (the parabola gave NaN)."""
    from condsim_annot.calibrate.model import TAU_OFFSETS

    m = TripletModel()
    m.tau_ = 1.0
    m._update_tau((TAU_OFFSETS, np.array([-np.inf, 0.0, -1.0, -0.5, -2.0])))
    assert np.isclose(m.tau_, np.exp(TAU_OFFSETS[1])), m.tau_
    m._update_tau((TAU_OFFSETS, np.array([-3.0, -1.0, 0.0, -1.0, -3.0])))
    assert np.isclose(m.tau_, np.exp(TAU_OFFSETS[1])) and 0 < m.tau_sd_ <= 0.5


def test_the_map_after_the_tau_profile_starts_from_its_nearest_candidate():
    """After the tau profile the next MAP starts from the candidate's MAP nearest the new tau (same betas): it reaches
    the optimum the MAP from 0 reaches, in fewer Newton steps."""
    phi, _, votes, _ = _featured_sim(600, 1500, np.array([1.0, 0.5]), 0.7, seed=5)
    m = TripletModel(rounds=1).fit(*votes, n_items=600, n_annotators=4, features=phi)
    m._integrate(update=True)  # one more update round: the profile leaves a start for the next MAP
    assert m._warm is not None
    it0 = m.n_iter_
    m._map()
    warm_steps, u_warm = m.n_iter_ - it0, m._u.copy()
    m._map()  # from 0: nothing left by a profile
    cold_steps = m.n_iter_ - it0 - warm_steps
    assert warm_steps < cold_steps, (warm_steps, cold_steps)
    assert np.max(np.abs(u_warm - m._u) * np.sqrt(m._Du)) < 5e-3
