"""Tests of the pure Bradley-Terry / Davidson / Luce fit (condsim_annot.calibrate.bt)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from scipy.stats import norm, spearmanr

from condsim_annot.calibrate import bt
from condsim_annot.calibrate.agreement import majority_vote, win_rate
from condsim_annot.calibrate.bt import bootstrap, bradley_terry, components, prob_greater, triplet_items
from condsim_annot.calibrate.simulate import simulate_pairwise, simulate_triplets

choix = pytest.importorskip("choix")


def _centre(x):
    x = np.asarray(x, dtype=float)
    return x - x.mean()


# --------------------------------------------------------------------------- against other implementations


def test_same_scores_as_choix_on_tie_free_single_annotator_data():
    sim = simulate_pairwise(40, 1500, seed=11)
    r = bradley_terry(sim.winners, sim.losers, n_items=40, tol=1e-9)
    assert r.converged and r.nu == 0.0 and np.allclose(r.beta, 1.0)
    data = list(zip(sim.winners.tolist(), sim.losers.tolist(), strict=False))
    opt = _centre(choix.opt_pairwise(40, data, alpha=1e-10, tol=1e-12))
    ilsr = _centre(choix.ilsr_pairwise(40, data, alpha=0.0, tol=1e-12, max_iter=5000))
    np.testing.assert_allclose(r.scores, opt, atol=1e-6)
    np.testing.assert_allclose(r.scores, ilsr, atol=1e-6)
    assert abs(r.scores.mean()) < 1e-12  # centred (prior off)


def test_same_luce_scores_as_choix_top1():
    rng = np.random.default_rng(5)
    n = 10
    s = rng.normal(size=n)
    sets, data = [], []
    for _ in range(600):
        offered = rng.choice(n, 4, replace=False)
        p = np.exp(s[offered]) / np.exp(s[offered]).sum()
        c = int(rng.choice(offered, p=p))
        sets.append((c, offered.tolist()))  # alternatives may include the chosen item
        data.append((c, [int(x) for x in offered if x != c]))
    r = bradley_terry([], [], choice_sets=sets, n_items=n, tol=1e-9)
    ref = _centre(choix.ilsr_top1(n, data, alpha=0.0, tol=1e-12, max_iter=10000))
    np.testing.assert_allclose(r.scores, ref, atol=1e-6)
    # the CSR form gives the same fit
    chosen = np.array([c for c, _ in sets])
    indptr = np.arange(0, 4 * len(sets) + 1, 4)
    indices = np.concatenate([o for _, o in sets])
    r2 = bradley_terry([], [], choice_sets=(chosen, indptr, indices), n_items=n, tol=1e-9)
    np.testing.assert_allclose(r2.scores, r.scores, atol=1e-8)


def test_pairwise_luce_set_equals_pairwise_comparison():
    sim = simulate_pairwise(12, 300, seed=2)
    r = bradley_terry(sim.winners, sim.losers, n_items=12, tol=1e-9)
    sets = [(int(w), [int(lo_)]) for w, lo_ in zip(sim.winners, sim.losers, strict=False)]
    r2 = bradley_terry([], [], choice_sets=sets, n_items=12, tol=1e-9)
    np.testing.assert_allclose(r.scores, r2.scores, atol=1e-6)


# --------------------------------------------------------------------------- published numbers


CITATIONS = np.array([714, 33, 320, 284, 730, 425, 813, 276, 498, 68, 1072, 325, 221, 17, 142, 188]).reshape(
    4, 4, order="F"
)  # rows: cited (the winner), columns: citing (the loser); Biometrika, Comm Statist, JASA, JRSS-B


def test_reproduces_bradleyterry2_citations_fit():
    """The journal citation data of the R package BradleyTerry2 (Stigler 1994, Agresti 2002 p448).

    Counts: ``data/citations.R`` of github.com/hturner/BradleyTerry2 (a 4x4 table, cited x citing,
    given column-major: 714, 33, 320, 284, 730, 425, 813, 276, 498, 68, 1072, 325, 221, 17, 142, 188).
    Published fit (Turner & Firth 2012, "Bradley-Terry models in R: the BradleyTerry2 package",
    J. Stat. Softw. 48(9), section 2.1, ``BTm(cbind(win1, win2), journal1, journal2, data =
    citations.sf)``): abilities relative to Biometrika
    Comm Statist -2.9491, JASA -0.4796, JRSS-B 0.2690.
    """
    i, j = np.nonzero(~np.eye(4, dtype=bool))
    r = bradley_terry(i, j, weights=CITATIONS[i, j], n_items=4, tol=1e-9)
    rel = r.scores - r.scores[0]
    np.testing.assert_array_equal(np.round(rel[1:], 4), [-2.9491, -0.4796, 0.2690])
    # the same fit from one row per citation (no weights)
    w = np.repeat(i, CITATIONS[i, j])
    lo_ = np.repeat(j, CITATIONS[i, j])
    r2 = bradley_terry(w, lo_, tol=1e-9)
    np.testing.assert_allclose(r2.scores, r.scores, atol=1e-7)
    assert r2.log_likelihood == pytest.approx(r.log_likelihood, rel=1e-9)


# --------------------------------------------------------------------------- Davidson ties


def test_davidson_two_items_closed_form():
    """Two items, a wins / b losses / t ties: the MLE matches the empirical frequencies.

    P(win) = e^h / (e^h + e^-h + nu) with h = (s1 - s2) / 2, so p_win / p_loss = e^(s1 - s2) and
    p_tie / p_win = nu e^-h: s1 - s2 = log(a / b), nu = t / sqrt(a b).  Laplace: Var(s1 - s2)
    is the inverse Fisher information, computed by hand below.
    """
    a, b, t = 30, 10, 8
    w = np.r_[np.zeros(a + t, dtype=int), np.ones(b, dtype=int)]
    lo_ = 1 - w
    ties = np.r_[np.zeros(a, bool), np.ones(t, bool), np.zeros(b, bool)]
    r = bradley_terry(w, lo_, ties=ties, tol=1e-10)
    d = r.scores[0] - r.scores[1]
    assert d == pytest.approx(math.log(a / b), abs=1e-6)
    assert r.nu == pytest.approx(t / math.sqrt(a * b), rel=1e-5)
    n = a + b + t
    ll = a * math.log(a / n) + b * math.log(b / n) + t * math.log(t / n)
    assert r.log_likelihood == pytest.approx(ll, abs=1e-8)
    # Laplace sd of d (nu fixed): n * (pA + pB - (pA - pB)^2) / 4 is the information in d
    pA, pB = a / n, b / n
    info = n * (pA + pB - (pA - pB) ** 2) / 4
    assert r.stderr[0] == pytest.approx(0.5 / math.sqrt(info), rel=1e-5)


def test_tie_free_two_items_stderr_closed_form():
    r = bradley_terry([0] * 30 + [1] * 10, [1] * 30 + [0] * 10, tol=1e-10)
    p = 0.75
    assert r.stderr[0] == pytest.approx(0.5 / math.sqrt(40 * p * (1 - p)), rel=1e-6)


def test_gradient_matches_finite_differences_full_model():
    """The analytic gradient of the full objective (ties, beta, Luce sets, weights, priors)."""
    rng = np.random.default_rng(3)
    n, A, m = 9, 3, 80
    w = rng.integers(0, n, m)
    lo_ = (w + rng.integers(1, n, m)) % n
    ties = rng.random(m) < 0.2
    ann = rng.integers(0, A, m)
    wt = rng.uniform(0.5, 2.0, m)
    ch = bt._as_choices(
        [(int(c), rng.choice(n, 3, replace=False).tolist(), int(rng.integers(0, A))) for c in rng.integers(0, n, 15)]
    )
    for norm_w in (None, np.array([0.5, 0.3, 0.2])):
        prob = bt._Problem(n, A, w, lo_, ties, ann, wt, ch, 1.5, 0.8, np.ones(A, bool), np.ones(A), True, 0.4)
        prob.norm_w = norm_w
        theta = np.r_[rng.normal(size=n), rng.normal(scale=0.3, size=A), math.log(0.4)]
        num = approx_fprime(theta, lambda x, p=prob: p.value_grad(x)[0], 1e-6)
        _, g = prob.value_grad(theta)
        np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-4)


def test_log_posterior_is_the_hand_derived_davidson_likelihood():
    s = np.array([0.3, -0.2, 0.5])
    beta = np.array([1.0, 2.0])
    w, lo_ = np.array([0, 1, 2, 0]), np.array([1, 2, 0, 2])
    ties = np.array([False, True, False, True])
    ann = np.array([0, 1, 1, 0])
    nu = 0.7
    ll, g = bt.log_posterior(w, lo_, s, beta=beta, nu=nu, ties=ties, annotators=ann)
    hand = 0.0
    for k in range(4):
        pi_w, pi_l = math.exp(beta[ann[k]] * s[w[k]]), math.exp(beta[ann[k]] * s[lo_[k]])
        den = pi_w + pi_l + nu * math.sqrt(pi_w * pi_l)
        hand += math.log((nu * math.sqrt(pi_w * pi_l) if ties[k] else pi_w) / den)
    assert ll == pytest.approx(hand, abs=1e-12)
    num = approx_fprime(s, lambda x: bt.log_posterior(w, lo_, x, beta=beta, nu=nu, ties=ties, annotators=ann)[0], 1e-7)
    np.testing.assert_allclose(g, num, atol=1e-5)


def test_ties_dropped_when_not_fitted():
    sim = simulate_pairwise(20, 800, nu=0.5, seed=4)
    r = bradley_terry(sim.winners, sim.losers, ties=sim.ties, fit_ties=False, tol=1e-9)
    keep = ~sim.ties
    r2 = bradley_terry(sim.winners[keep], sim.losers[keep], n_items=20, tol=1e-9)
    assert r.nu == 0.0
    np.testing.assert_allclose(r.scores, r2.scores, atol=1e-8)
    r3 = bradley_terry(sim.winners, sim.losers, ties=sim.ties)
    assert 0.3 < r3.nu < 0.8


# --------------------------------------------------------------------------- recovery on simulated data


def test_recovers_scores_and_annotators_better_than_majority_vote():
    sim = simulate_triplets(
        150, 12, 24000, n_annotators=20, votes_per_triplet=3, noisy=0.2, adversarial=0.15, nu=0.15, seed=7
    )
    w, lo_, t, a = sim.comparisons()
    full = bradley_terry(
        w, lo_, ties=t, annotators=a, n_items=sim.n_items, n_annotators=20, prior_scale=3.0, beta_prior=1.0
    )
    plain = bradley_terry(w, lo_, ties=t, annotators=a, n_items=sim.n_items, prior_scale=3.0, beta_prior=None)
    wr = win_rate(w, lo_, sim.n_items, ties=t)
    ok = ~np.isnan(wr)
    rho_full = spearmanr(full.scores[ok], sim.true_scores[ok])[0]
    rho_plain = spearmanr(plain.scores[ok], sim.true_scores[ok])[0]
    rho_mv = spearmanr(wr[ok], sim.true_scores[ok])[0]
    # triplet labels: the model's sign vs the majority of the votes, against the true order
    unit = sim.anchor * 10**6 + sim.first * 10**3 + sim.second
    uid, first_idx = np.unique(unit, return_index=True)
    i1, i2 = sim.item_first[first_idx], sim.item_second[first_idx]
    truth = sim.true_scores[i1] > sim.true_scores[i2]
    acc_full = np.mean((full.scores[i1] > full.scores[i2]) == truth)
    _, lab, _ = majority_vote(unit, sim.choice)
    mv_first = np.array([x == 0 if x is not None else None for x in lab], dtype=object)
    decided = np.array([x is not None for x in mv_first])
    acc_mv = np.mean(np.where(decided, mv_first == truth, 0.5).astype(float))  # a coin for undecided
    print(f"\nSpearman: full {rho_full:.3f}  beta=1 {rho_plain:.3f}  majority(win rate) {rho_mv:.3f}")
    print(f"triplet label accuracy: full {acc_full:.3f}  majority vote {acc_mv:.3f}")
    print(
        "beta (true -> fitted):",
        [f"{k[0]}:{tb:+.1f}->{fb:.2f}" for k, tb, fb in zip(sim.kinds, sim.true_beta, full.beta, strict=False)],
    )
    assert rho_full > rho_plain + 0.02 and rho_full > rho_mv + 0.02
    assert acc_full > acc_mv + 0.02
    kinds = sim.kinds
    assert full.beta[kinds == "adversarial"].max() < 0.1  # caught, not trusted
    assert full.beta[kinds == "noisy"].max() < full.beta[kinds == "good"].min()
    assert spearmanr(full.beta[kinds == "good"], sim.true_beta[kinds == "good"])[0] > 0.5
    assert abs(full.nu - sim.nu) < 0.1


def test_plain_fit_recovers_truth_and_stderr_is_calibrated():
    sim = simulate_pairwise(200, 20000, seed=1)
    r = bradley_terry(sim.winners, sim.losers)
    z = (r.scores - _centre(sim.true_scores)) / r.stderr
    assert spearmanr(r.scores, sim.true_scores)[0] > 0.97
    assert 0.8 < np.std(z) < 1.25  # Laplace errors are about right
    assert r.cov is not None and r.cov.shape == (200, 200)
    # the diagonal approximation used for large n is close on a well-mixed graph
    r_big = bradley_terry(sim.winners, sim.losers, exact_limit=10)
    assert r_big.cov is None
    assert np.median(r_big.stderr / r.stderr) == pytest.approx(1.0, abs=0.1)


# --------------------------------------------------------------------------- components, priors


def test_components_and_centring():
    # items 0-2 compared among themselves, 3-4 among themselves, 5 alone
    w = np.array([0, 1, 0, 2, 3, 4, 3])
    lo_ = np.array([1, 2, 2, 0, 4, 3, 4])
    comp = components(6, w, lo_)
    np.testing.assert_array_equal(comp, [0, 0, 0, 1, 1, 2])
    r = bradley_terry(w, lo_, n_items=6)
    np.testing.assert_array_equal(r.components, comp)
    for c in range(3):
        assert abs(r.scores[comp == c].mean()) < 1e-9
    rp = bradley_terry(w, lo_, n_items=6, prior_scale=1.0)
    assert rp.converged and rp.scores[5] == pytest.approx(0.0, abs=1e-8)
    assert np.all(np.isfinite(rp.stderr)) and rp.stderr[5] == pytest.approx(1.0, rel=1e-6)
    # a Luce set joins its members
    comp2 = components(6, w, lo_, choice_sets=[(2, [3, 5])])
    assert len(set(comp2.tolist())) == 1


def test_prior_shrinks_and_makes_separable_data_finite():
    r = bradley_terry([0, 0, 1], [1, 2, 2], prior_scale=1.0)  # a perfect order: no finite MLE
    assert r.converged and np.all(np.abs(r.scores) < 3)
    assert r.scores[0] > r.scores[1] > r.scores[2]


def test_fixed_beta_pins_an_annotator():
    sim = simulate_pairwise(30, 3000, n_annotators=3, noisy=0.34, seed=9)
    fixed = np.array([np.nan, 2.0, np.nan])
    r = bradley_terry(sim.winners, sim.losers, annotators=sim.annotators, fixed_beta=fixed)
    assert r.beta[1] == 2.0
    with pytest.raises(ValueError):
        bradley_terry(sim.winners, sim.losers, annotators=sim.annotators, fixed_beta=[1.0, 2.0])


def test_input_validation():
    with pytest.raises(ValueError):
        bradley_terry([0, 1], [1])
    with pytest.raises(ValueError):
        bradley_terry([0], [0])
    with pytest.raises(ValueError):
        bradley_terry([0], [5], n_items=3)
    with pytest.raises(ValueError):
        bradley_terry([0], [1], annotators=[2], n_annotators=2)
    with pytest.raises(ValueError):
        triplet_items([1], [1], [2])


# --------------------------------------------------------------------------- bootstrap, pairs as items


def test_bootstrap_is_seeded_and_agrees_with_laplace():
    sim = simulate_pairwise(15, 1500, seed=12)
    b1 = bootstrap(sim.winners, sim.losers, n_boot=60, seed=3)
    b2 = bootstrap(sim.winners, sim.losers, n_boot=60, seed=3)
    np.testing.assert_array_equal(b1.samples, b2.samples)
    r = bradley_terry(sim.winners, sim.losers)
    assert np.all(b1.low <= r.scores + 1e-9) and np.all(r.scores <= b1.high + 1e-9)
    assert np.median(b1.stderr / r.stderr) == pytest.approx(1.0, abs=0.25)
    p = prob_greater(r.scores, b1, [0], [1])
    assert 0.0 <= p[0] <= 1.0


def test_triplet_items_and_prob_greater():
    i1, i2, pairs = triplet_items([5, 5, 7, 2], [7, 1, 5, 7], [9, 7, 9, 5])
    np.testing.assert_array_equal(pairs, [[1, 5], [2, 5], [2, 7], [5, 7], [5, 9], [7, 9]])
    np.testing.assert_array_equal(i1, [3, 0, 3, 2])
    np.testing.assert_array_equal(i2, [4, 3, 5, 1])
    # {5, 7} under anchor 5 and anchor 7 is one item
    scores = np.array([0.0, 1.0, 2.0])
    cov = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 4.0]])
    p = prob_greater(scores, cov, [1, 2], [0, 0])
    np.testing.assert_allclose(p, [norm.cdf(1.0 / 1.0), norm.cdf(2.0 / math.sqrt(5.0))])
    p_se = prob_greater(scores, np.sqrt(np.diag(cov)), [1], [0])
    assert p_se[0] == pytest.approx(norm.cdf(1.0 / math.sqrt(2.0)))
    assert prob_greater(scores, np.zeros(3), [0], [0])[0] == 0.5


def test_scipy_lbfgsb_gives_the_same_fit(monkeypatch):
    sim = simulate_pairwise(25, 2000, n_annotators=3, noisy=0.34, nu=0.3, seed=8)
    kw = dict(ties=sim.ties, annotators=sim.annotators, prior_scale=2.0, beta_prior=1.0, tol=1e-8)
    ours = bradley_terry(sim.winners, sim.losers, **kw)
    monkeypatch.setattr(bt, "OPTIMIZER", "L-BFGS-B")
    ref = bradley_terry(sim.winners, sim.losers, **kw)
    assert ours.converged and ref.converged
    np.testing.assert_allclose(ours.scores, ref.scores, atol=1e-5)
    np.testing.assert_allclose(ours.beta, ref.beta, atol=1e-5)
    assert ours.nu == pytest.approx(ref.nu, abs=1e-5)
    assert ours.log_posterior == pytest.approx(ref.log_posterior, abs=1e-7)


# --------------------------------------------------------------------------- fast paths and edge cases


@pytest.mark.parametrize("kind", ["plain", "full", "weighted"])
def test_aggregated_counts_give_the_same_fit_as_raw_comparisons(monkeypatch, kind):
    """Repeated comparisons collapsed into counts (few items, many comparisons) fit exactly as
    the raw comparisons do."""
    if kind == "plain":
        sim = simulate_pairwise(12, 6000, seed=21)
        kw = {}
    else:
        sim = simulate_pairwise(12, 6000, n_annotators=3, noisy=0.34, nu=0.3, seed=21)
        kw = dict(ties=sim.ties, annotators=sim.annotators, prior_scale=2.0)
        if kind == "weighted":
            kw["weights"] = np.random.default_rng(2).uniform(0.5, 2.0, len(sim.winners))
    assert bt._worth_aggregating(12, 1 if kind == "plain" else 3, 6000, kind != "plain")
    agg = bradley_terry(sim.winners, sim.losers, **kw)
    monkeypatch.setattr(bt, "AGGREGATE", False)
    raw = bradley_terry(sim.winners, sim.losers, **kw)
    np.testing.assert_allclose(agg.scores, raw.scores, atol=1e-7)
    np.testing.assert_allclose(agg.beta, raw.beta, atol=1e-7)
    np.testing.assert_allclose(agg.stderr, raw.stderr, rtol=1e-7)
    np.testing.assert_allclose(agg.cov, raw.cov, atol=1e-9)
    assert agg.nu == pytest.approx(raw.nu, abs=1e-8)
    assert agg.log_likelihood == pytest.approx(raw.log_likelihood, rel=1e-10)
    assert agg.log_posterior == pytest.approx(raw.log_posterior, rel=1e-10)


def test_aggregate_rows_expand_to_the_same_comparisons():
    rng = np.random.default_rng(4)
    n, m = 5, 300
    w = rng.integers(0, n, m)
    lo_ = (w + rng.integers(1, n, m)) % n
    tie = rng.random(m) < 0.3
    ann = rng.integers(0, 3, m)
    w2, l2, t2, a2, wt2, cnt = bt._aggregate(n, w, lo_, tie, ann, None)
    assert cnt.sum() == m and np.array_equal(wt2, cnt) and len(w2) < m
    lo, hi = np.minimum(w, lo_), np.maximum(w, lo_)

    def key(w_, l_, t_, a_):
        lo_w, hi_w = np.where(t_, np.minimum(w_, l_), w_), np.where(t_, np.maximum(w_, l_), l_)
        return sorted(zip(lo_w.tolist(), hi_w.tolist(), t_.tolist(), a_.tolist(), strict=True))

    rep = cnt.astype(int)
    assert key(np.repeat(w2, rep), np.repeat(l2, rep), np.repeat(t2, rep), np.repeat(a2, rep)) == key(w, lo_, tie, ann)
    assert np.all(lo[tie] < hi[tie])


def test_fisher_diagonal_in_place_matches_the_direct_formula():
    rng = np.random.default_rng(8)
    n, A, m = 7, 3, 120
    w = rng.integers(0, n, m)
    lo_ = (w + rng.integers(1, n, m)) % n
    ties = rng.random(m) < 0.25
    ann = rng.integers(0, A, m)
    wt = rng.uniform(0.5, 2.0, m)
    for tie_, wt_, nu in ((ties, wt, 0.4), (None, None, 0.0), (ties, None, 0.7)):
        prob = bt._Problem(
            n, A, w, lo_, tie_, ann, wt_, None, 1.5, 0.8, np.ones(A, bool), np.ones(A), tie_ is not None, max(nu, 1e-3)
        )
        theta = np.r_[rng.normal(size=n), rng.normal(scale=0.3, size=A)]
        if tie_ is not None:
            theta = np.r_[theta, math.log(nu)]
        s, lb = theta[:n], theta[n : n + A]
        beta = np.exp(lb)
        z = beta[ann] * (s[w] - s[lo_])
        if tie_ is not None:
            eA, eB, eT = np.exp(z / 2), np.exp(-z / 2), nu
            Z = eA + eB + eT
            pA, pB, pT = eA / Z, eB / Z, eT / Z
            c = 0.25 * (pA + pB - (pA - pB) ** 2)
        else:
            p = 1 / (1 + np.exp(-z))
            c, pT = p * (1 - p), np.zeros(m)
        cw = c * (wt_ if wt_ is not None else 1.0)
        cb = cw * beta[ann] ** 2
        hs = np.bincount(w, cb, minlength=n) + np.bincount(lo_, cb, minlength=n) + 1 / 1.5**2
        hb = np.bincount(ann, cw * z * z, minlength=A) + 1 / 0.8**2
        want = np.r_[hs, hb]
        if tie_ is not None:
            want = np.r_[want, float((pT * (1 - pT) * (wt_ if wt_ is not None else 1.0)).sum())]
        np.testing.assert_allclose(prob.fisher_diag(theta), want, rtol=1e-10)


def test_fit_does_not_depend_on_the_order_of_a_ties_items():
    """A found example: the start (log win ratio) counted a tie as a win of its first item."""
    w = np.array([1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 2, 1, 2, 2, 2, 0, 0, 0, 0])
    lo_ = np.array([0, 0, 2, 2, 0, 2, 2, 0, 2, 0, 2, 0, 2, 2, 2, 1, 0, 0, 1, 1, 1, 1, 2, 1])
    ties = np.array([0, 0, 0, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 1, 0], dtype=bool)
    ann = np.array([0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1])
    kw = dict(ties=ties, annotators=ann, n_items=3, prior_scale=2.0, beta_prior=1.0, tol=1e-9, compute_stderr=False)
    r = bradley_terry(w, lo_, **kw)
    r2 = bradley_terry(np.where(ties, lo_, w), np.where(ties, w, lo_), **kw)
    np.testing.assert_allclose(r2.scores, r.scores, atol=1e-7)
    np.testing.assert_allclose(r2.beta, r.beta, atol=1e-7)


def test_no_comparisons_with_several_annotators():
    r = bradley_terry([], [], n_items=3, n_annotators=2)
    np.testing.assert_array_equal(r.scores, 0.0)
    np.testing.assert_array_equal(r.beta, 1.0)
    r = bradley_terry([], [], n_items=3, n_annotators=2, prior_scale=1.0)
    np.testing.assert_allclose(r.stderr, 1.0)


def test_singular_laplace_hessian_gives_inf_stderr_and_a_warning():
    """Prior off and a component whose comparisons carry no information (its only annotator
    pinned at beta ~ 0): no LinAlgError, inf stderr there, finite elsewhere."""
    with pytest.warns(RuntimeWarning, match="singular in component"):
        r = bradley_terry(
            [0, 1, 2, 3], [1, 0, 3, 2], n_items=4, annotators=[0, 0, 1, 1], fixed_beta=[1e-200, np.nan], prior_scale=0
        )
    comp_bad = r.components[0]
    assert np.all(np.isinf(r.stderr[r.components == comp_bad]))
    assert np.all(np.isfinite(r.stderr[r.components != comp_bad]))
    assert np.all(np.isfinite(r.scores))
