"""Tests of the agreement statistics (condsim_annot.calibrate.agreement)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from condsim_annot.calibrate.agreement import (
    alpha_by_group,
    cohen_kappa,
    kappa_between,
    krippendorff_alpha,
    leave_one_out_agreement,
    majority_vote,
    position_bias,
    reliability_matrix,
    win_rate,
)
from condsim_annot.calibrate.simulate import simulate_triplets

NAN = np.nan

# Krippendorff, K. (2011). Computing Krippendorff's Alpha-Reliability. Annenberg School for
# Communication, University of Pennsylvania, https://repository.upenn.edu/asc_papers/43 ,
# section C ("nominal data, any number of observers, missing data"): 4 observers x 12 units,
# published alpha (nominal) = 0.743.
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
        [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
    ]
)


def _alpha_by_hand(M):
    """Nominal alpha from the coincidence matrix, as in Krippendorff (2011) section C."""
    vals = np.unique(M[~np.isnan(M)])
    o = np.zeros((len(vals), len(vals)))
    for u in range(M.shape[1]):
        col = M[:, u][~np.isnan(M[:, u])]
        mu = len(col)
        if mu < 2:
            continue
        for a in range(mu):
            for b in range(mu):
                if a != b:
                    o[np.searchsorted(vals, col[a]), np.searchsorted(vals, col[b])] += 1.0 / (mu - 1)
    n_c = o.sum(1)
    n = n_c.sum()
    d_o = o.sum() - np.trace(o)  # observed disagreements (off-diagonal coincidences)
    return 1.0 - (n - 1) * d_o / (n * n - (n_c**2).sum())


def test_krippendorff_worked_example_published_digits():
    r = krippendorff_alpha(KRIPPENDORFF_2011)
    assert round(r.alpha, 3) == 0.743
    assert r.alpha == pytest.approx(_alpha_by_hand(KRIPPENDORFF_2011), abs=1e-12)
    assert r.n_units == 11  # unit 12 has one value: not pairable
    assert r.n_values == 40 and r.n_coders == 4
    assert r[0] == r.alpha  # tuple access (the pipeline uses result[0])


def test_alpha_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    sim = simulate_triplets(
        60, 8, 3000, n_annotators=8, votes_per_triplet=3, noisy=0.25, adversarial=0.0, nu=0.1, seed=2
    )
    unit = sim.anchor * 10**6 + sim.first * 10**3 + sim.second
    M, _, _, codes = reliability_matrix(unit, sim.annotators, sim.choice)
    assert codes == [0, 1, 2]
    a1 = krippendorff_alpha(M, bootstrap=200, seed=4)
    a2 = krippendorff_alpha(M, bootstrap=200, seed=4)
    assert a1 == a2
    assert a1.low < a1.alpha < a1.high
    assert a1.high - a1.low < 0.2
    assert a1.alpha == pytest.approx(_alpha_by_hand(M[:, (~np.isnan(M)).sum(0) >= 2]), abs=1e-9)


def test_alpha_by_group_humans_and_llm():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    units, coders, values = [], [], []
    for c, err in [("h1", 0.05), ("h2", 0.05), ("h3", 0.1), ("llm1", 0.45), ("llm2", 0.45)]:
        flip = rng.random(200) < err
        units += list(range(200))
        coders += [c] * 200
        values += list(np.where(flip, 1 - truth, truth))
    kinds = {"h1": "human", "h2": "human", "h3": "human", "llm1": "llm", "llm2": "llm"}
    out = alpha_by_group(units, coders, values, coder_kind=kinds)
    assert set(out) == {"all", "human", "llm"}
    assert out["human"].alpha > 0.7 > out["all"].alpha > out["llm"].alpha
    assert out["human"].n_coders == 3
    solo = alpha_by_group(units, coders, values, groups={"one": ["h1"]})
    assert math.isnan(solo["one"].alpha)


def test_cohen_kappa_textbook_and_sklearn():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o = 0.7, p_e = 0.5, kappa = 0.4
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    y[:150] = x[:150]
    assert cohen_kappa(x, y) == pytest.approx(cohen_kappa_score(x, y), abs=1e-12)
    assert math.isnan(cohen_kappa([1, 1], [1, 1]))
    k, n = kappa_between([1, 2, 3, 1, 2, 3], ["a", "a", "a", "b", "b", "b"], [0, 1, 1, 0, 1, 0], "a", "b")
    assert n == 3 and k == pytest.approx(cohen_kappa([0, 1, 1], [0, 1, 0]))


def test_leave_one_out_agreement():
    # unit 1: a, b, c all say 0; unit 2: a says 1, b and c say 0; unit 3: a 0, b 1 (others tie for c)
    units = [1, 1, 1, 2, 2, 2, 3, 3, 3]
    coders = ["a", "b", "c", "a", "b", "c", "a", "b", "c"]
    values = [0, 0, 0, 1, 0, 0, 0, 1, 2]
    r = leave_one_out_agreement(units, coders, values)
    assert r.coder_ids.tolist() == ["a", "b", "c"]
    # a: unit 1 agrees, unit 2 disagrees (others 0, 0), unit 3 skipped (others 1, 2 tie);
    # b and c: only unit 1 counts (the others tie on units 2 and 3)
    assert r.n.tolist() == [2, 1, 1]
    np.testing.assert_allclose(r.agreement, [0.5, 1.0, 1.0])


def test_position_bias_detects_a_biased_annotator():
    pb = np.zeros(10)
    pb[3] = 0.6
    sim = simulate_triplets(
        80, 10, 8000, n_annotators=10, votes_per_triplet=2, noisy=0.0, adversarial=0.0, nu=0.0, position_bias=pb, seed=5
    )
    chose_first_shown = (sim.choice == 0) != sim.swapped  # first chosen and shown as A, or second and swapped
    r = position_bias(chose_first_shown, sim.annotators)
    assert r.share_first_shown[3] > 0.7 and r.p_value[3] < 1e-6
    others = np.delete(np.arange(10), 3)
    assert np.all(np.abs(r.share_first_shown[others] - 0.5) < 0.07)


def test_majority_vote_and_win_rate():
    uid, label, share = majority_vote([1, 1, 1, 2, 2], ["x", "y", "x", "x", "y"])
    assert uid.tolist() == [1, 2]
    assert label[0] == "x" and label[1] is None
    assert share[0] == pytest.approx(2 / 3)
    wr = win_rate([0, 0, 1], [1, 2, 2], 4, ties=[False, True, False])
    np.testing.assert_allclose(wr[:3], [0.75, 0.5, 0.25])
    assert math.isnan(wr[3])
