"""Property tests (hypothesis): the fit does not depend on labels or on the order of the sides."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from condsim_annot.calibrate.bt import bradley_terry, triplet_items

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def comparison_data(draw):
    n = draw(st.integers(3, 7))
    m = draw(st.integers(n, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, n, m)
    y = (x + rng.integers(1, n, m)) % n
    ties = rng.random(m) < draw(st.sampled_from([0.0, 0.25]))
    ann = rng.integers(0, draw(st.integers(1, 3)), m)
    return n, x, y, ties, ann, seed


def _fit(n, w, lo_, ties, ann, **kw):
    return bradley_terry(
        w,
        lo_,
        ties=ties,
        annotators=ann,
        n_items=n,
        n_annotators=int(ann.max()) + 1,
        prior_scale=2.0,
        beta_prior=1.0,
        tol=1e-9,
        compute_stderr=False,
        **kw,
    )


@SETTINGS
@given(comparison_data())
def test_relabelling_items_permutes_the_scores(data):
    n, w, lo_, ties, ann, seed = data
    perm = np.random.default_rng(seed + 1).permutation(n)  # item i is called perm[i]
    r = _fit(n, w, lo_, ties, ann)
    rp = _fit(n, perm[w], perm[lo_], ties, ann)
    np.testing.assert_allclose(rp.scores[perm], r.scores, atol=1e-5)
    np.testing.assert_allclose(rp.beta, r.beta, atol=1e-5)
    assert abs(rp.nu - r.nu) < 1e-5


@SETTINGS
@given(comparison_data())
def test_shuffling_comparisons_and_swapping_tie_sides_leaves_the_fit_unchanged(data):
    n, w, lo_, ties, ann, seed = data
    rng = np.random.default_rng(seed + 2)
    order = rng.permutation(len(w))
    flip = ties & (rng.random(len(w)) < 0.5)  # a tie's two items in the other order
    w2 = np.where(flip, lo_, w)[order]
    l2 = np.where(flip, w, lo_)[order]
    r = _fit(n, w, lo_, ties, ann)
    r2 = _fit(n, w2, l2, ties[order], ann[order])
    np.testing.assert_allclose(r2.scores, r.scores, atol=1e-5)
    np.testing.assert_allclose(r2.beta, r.beta, atol=1e-5)


@SETTINGS
@given(st.integers(0, 2**31 - 1))
def test_swapping_x_and_y_of_a_triplet_with_its_outcome_leaves_the_fit_unchanged(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(5, 40))
    anchor = rng.integers(0, 4, m)
    x = (anchor + 1 + rng.integers(0, 3, m)) % 6
    y = (x + 1 + rng.integers(0, 4, m)) % 6
    ok = (y != anchor) & (x != y) & (x != anchor)
    anchor, x, y = anchor[ok], x[ok], y[ok]
    if len(anchor) == 0:
        return
    choice = rng.integers(0, 3, len(anchor))  # 0: x more similar, 1: y, 2: tie

    def fit(a, f, s, c):
        i1, i2, pairs = triplet_items(a, f, s)
        w = np.where(c == 1, i2, i1)
        lo_ = np.where(c == 1, i1, i2)
        r = bradley_terry(w, lo_, ties=c == 2, n_items=len(pairs), prior_scale=1.5, tol=1e-9, compute_stderr=False)
        return {tuple(p): v for p, v in zip(pairs.tolist(), r.scores, strict=False)}

    swap = rng.random(len(anchor)) < 0.5
    x2, y2 = np.where(swap, y, x), np.where(swap, x, y)
    c2 = np.where(swap & (choice < 2), 1 - choice, choice)
    a_ = fit(anchor, x, y, choice)
    b_ = fit(anchor, x2, y2, c2)
    assert a_.keys() == b_.keys()
    for k in a_:
        assert abs(a_[k] - b_[k]) < 1e-5
