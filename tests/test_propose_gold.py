"""``--rank gold``: expected new gold per vote (pure maths on arrays, and the ranking it drives). Fast: no store."""

from __future__ import annotations

import numpy as np
import pytest

from condsim_annot.errors import CondsimError
from condsim_annot.propose.calibration import Calibration
from condsim_annot.propose.choose import Picks, select_triplets
from condsim_annot.propose.information import AnswerModel, expected_gold, outcome_probabilities, vote_betas
from condsim_annot.propose.options import ProposeOptions
from condsim_annot.propose.pools import AnchorPool
from condsim_annot.propose.prior import FeaturePrior

BETA, NU = np.array([2.5, 1.2, 0.05]), 0.5  # a good annotator, a fair one, a coin-flipper


def _gold(mu: float, sd: float, tie: float, **kw) -> float:
    return float(expected_gold(np.array([mu]), np.array([sd]), tie, BETA, NU, tau=0.9, **kw)[0])


def test_planted_posteriors_tie_lean_gold():
    settled_tie = _gold(0.0, 0.02, 0.2)  # d known to be ~0: P stays .5 whatever they answer
    likely_tie = _gold(2.0, 1.0, 0.95)  # the spike holds most of the mass: a tie answer never makes a label
    lean = _gold(0.84 * 1.5, 1.5, 0.2)  # the prior leans: P(x closer | slab) = .8
    strong = _gold(4.0, 1.0, 0.2)
    assert settled_tie < 0.01 and likely_tie < 0.01
    assert 0.3 < lean < strong < 1.0, (lean, strong)
    # already gold: nothing new to gain; too few annotators for the gold rule: nothing either
    assert expected_gold(np.array([4.0]), np.array([1.0]), 0.2, BETA, NU, tau=0.9, gold=np.array([True]))[0] == 0
    assert _gold(4.0, 1.0, 0.2, votes=1, min_votes=2) == 0.0
    assert _gold(4.0, 1.0, 0.2, votes=1, min_votes=2, have=1) > 0.0
    # symmetric in the label, monotone in the lean
    assert _gold(-4.0, 1.0, 0.2) == pytest.approx(strong, abs=1e-9)
    with pytest.raises(ValueError, match="votes"):
        _gold(1.0, 1.0, 0.2, votes=6)


def _posterior_label(outcomes: np.ndarray, betas: np.ndarray, mu: float, sd: float, tie: float, tau: float) -> bool:
    """Brute force: the spike-and-slab posterior after these answers, on a fine grid (independent of the code's)."""
    d = np.linspace(mu - 9 * sd, mu + 9 * sd, 20001)
    prior = np.exp(-0.5 * ((d - mu) / sd) ** 2)
    lik, lik0 = np.ones_like(d), 1.0
    for o, b in zip(outcomes, betas, strict=True):
        lik = lik * outcome_probabilities(d, b, NU)[o]
        lik0 *= float(outcome_probabilities(np.zeros(1), b, NU)[o][0])
    slab = prior * lik / prior.sum()
    z = (1 - tie) * slab.sum() + tie * lik0
    return max((1 - tie) * slab[d > 0].sum(), (1 - tie) * slab[d < 0].sum()) / z >= tau


@pytest.mark.parametrize("mu,sd,tie", [(1.2, 1.5, 0.2), (-0.5, 3.0, 0.1), (3.0, 2.0, 0.4)])
def test_expected_gold_matches_monte_carlo(mu, sd, tie):
    """Draw d from the spike and slab, the three annotators' answers from d, and label with the exact posterior:
    the share that ends gold is the function's probability."""
    rng = np.random.default_rng(0)
    betas = vote_betas(BETA, None, 3)
    n = 6000
    d = np.where(rng.random(n) < tie, 0.0, rng.normal(mu, sd, n))
    answers = np.empty((n, 3), dtype=np.int64)
    for k, b in enumerate(betas):
        p = np.stack(outcome_probabilities(d, b, NU), axis=1)  # (n, 3): first, tie, second
        answers[:, k] = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    seqs, counts = np.unique(answers, axis=0, return_counts=True)
    hits = sum(c for s, c in zip(seqs, counts, strict=True) if _posterior_label(s, betas, mu, sd, tie, 0.9))
    mc, se = hits / n, np.sqrt(0.25 / n)
    assert _gold(mu, sd, tie) == pytest.approx(mc, abs=4 * se + 0.01)


def test_vote_betas_are_the_annotators_quantiles():
    assert sorted(vote_betas(BETA, None, 3)) == sorted(BETA.tolist())
    assert vote_betas(BETA, np.array([0.0, 1.0, 0.0]), 2).tolist() == [1.2, 1.2]


def test_feature_prior_predicts_a_fresh_pair_on_the_runs_scale():
    fp = FeaturePrior(["embedding", "bm25"], np.array([1.0, 0.5]), np.array([0.0, 0.5]), np.array([0.5, 10.0]),
                      np.array([0.1, 5.0]), tau=0.8)
    S = np.array([[10.0, 0.6, 0.4], [20.0, 10.0, 0.0]])  # rows: bm25, embedding (the pool's order)
    mu, sd = fp.predict(S, ["bm25", "embedding"])
    z_emb, z_bm25 = np.array([195.0, 95.0, -5.0]), np.array([0.0, -1.88, -1.92])  # standardised as in the fit
    assert mu == pytest.approx(z_emb + 0.5 * z_bm25)
    assert sd == pytest.approx(np.sqrt(0.8**2 + (0.5 * z_bm25) ** 2))  # w's uncertainty adds to tau
    mu1, sd1 = fp.predict(S[1:], ["embedding"])  # a fitted method missing from the committee counts 0
    assert mu1 == pytest.approx(z_emb) and sd1 == pytest.approx([0.8] * 3)


def _pool(cal: Calibration) -> AnchorPool:
    rng = np.random.default_rng(0)
    pos = np.array([10, 11, 12, 13, 14, 15])
    S = rng.normal(size=(2, len(pos)))
    p = AnchorPool(0, pos, ["t"] * len(pos), S, None)
    p.finish(cal)
    return p


def test_gold_ranking_asks_the_leaning_comparison_not_the_tie():
    """Scored pairs: (10, 11) a settled tie, (12, 13) unknown with a true-tie mass, (14, 15) leaning .8 - the
    information ranking asks the unknown one, the gold ranking the leaning one (and says what it expects)."""
    part = {10: (0.0, 0.02, 0), 11: (0.0, 0.02, 0), 12: (0.1, 0.3, 0), 13: (-0.1, 0.3, 0), 14: (1.3, 1.1, 0),
            15: (0.0, 1.1, 0)}
    picks = Picks(attention=0, audit=0, bridge=0, target=1, per_anchor=1, chain=False)
    got = {}
    for rank in ("gold", "information"):
        cal = Calibration(1, 6, 1, {0: part}, beta=BETA, beta_weight=np.ones(3), nu=NU, rank=rank, tie_mass=0.2)
        chosen = select_triplets([_pool(cal)], np.arange(20), set(), {0: 1}, np.array([True, False]), picks,
                                 [], np.random.default_rng(0))
        got[rank] = chosen[0]
    g, i = got["gold"], got["information"]
    assert 14 in (g["x"], g["y"]) and g["strategy"] == "expected-gold" and g["meta"]["expected_gold"] > 0.2
    best = max((_gold(part[x][0] - part[y][0], np.hypot(part[x][1], part[y][1]), 0.2), x, y)
               for x in part for y in part if x < y)
    assert g["meta"]["expected_gold"] == pytest.approx(best[0], abs=1e-3) and {g["x"], g["y"]} == set(best[1:])
    # the information ranking asks an unsure one instead (which may well be a true tie)
    assert i["strategy"] == "uncertainty" and {i["x"], i["y"]} != {g["x"], g["y"]}
    assert abs(i["meta"]["model_p"] - 0.5) < 0.1 < abs(g["meta"]["model_p"] - 0.5)


def test_rank_and_votes_options_are_checked():
    with pytest.raises(CondsimError, match="--rank"):
        ProposeOptions.from_kwargs(budget=3, methods=["bm25"], rank="entropy").validate()
    with pytest.raises(CondsimError, match="--votes"):
        ProposeOptions.from_kwargs(budget=3, methods=["bm25"], votes=9).validate()
    assert ProposeOptions().rank == "gold"


# each annotator as the run fitted him: Davidson nu, a lapse rate with its tie share, and on a true tie his own
# answer distribution (not Davidson's at d = 0)
FITTED = AnswerModel.build(BETA, np.array([0.3, 0.3, 0.3]), tie_answer=np.array([0.8, 0.6, 0.02]),
                           lapse=np.array([0.05, 0.15, 0.6]), lapse_tie=np.array([0.3, 0.1, 0.0]))


def _answers(k: int, d: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """(n, 3) first / tie / second of fitted annotator k: the slab's answers, or his answers on a true tie."""
    slab = np.stack(FITTED.answers(k, d), axis=1)
    spike = np.broadcast_to(np.asarray(FITTED.at_tie(k)), slab.shape)
    return np.where(tie[:, None], spike, slab)


def _posterior_fitted(outcomes: np.ndarray, mu: float, sd: float, tie: float, tau: float) -> bool:
    d = np.linspace(mu - 9 * sd, mu + 9 * sd, 20001)
    prior = np.exp(-0.5 * ((d - mu) / sd) ** 2)
    lik, lik0 = np.ones_like(d), 1.0
    for k, o in enumerate(outcomes):
        lik = lik * _answers(k, d, np.zeros(len(d), dtype=bool))[:, o]
        lik0 *= FITTED.at_tie(k)[o]
    slab = prior * lik / prior.sum()
    z = (1 - tie) * slab.sum() + tie * lik0
    return max((1 - tie) * slab[d > 0].sum(), (1 - tie) * slab[d < 0].sum()) / z >= tau


@pytest.mark.parametrize("mu,sd,tie", [(1.5, 1.5, 0.3), (3.0, 2.0, 0.6)])
def test_expected_gold_uses_each_annotators_fitted_answers(mu, sd, tie):
    """Answers drawn from the fitted answer model (lapses; a true tie answered with the annotator's own tie
    share): the share of comparisons that end gold is what the outlook says - and not what Davidson's tie at
    d = 0 would say (the coin-flipper never answers "tie", whatever nu claims)."""
    rng = np.random.default_rng(1)
    n = 6000
    is_tie = rng.random(n) < tie
    d = np.where(is_tie, 0.0, rng.normal(mu, sd, n))
    answers = np.empty((n, 3), dtype=np.int64)
    for k in range(3):
        p = _answers(k, d, is_tie)
        answers[:, k] = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    # FITTED.answers returns (first, tie, second); _posterior_fitted indexes the same order
    seqs, counts = np.unique(answers, axis=0, return_counts=True)
    hits = sum(c for q, c in zip(seqs, counts, strict=True) if _posterior_fitted(q, mu, sd, tie, 0.9))
    mc, se = hits / n, np.sqrt(0.25 / n)
    got = float(expected_gold(np.array([mu]), np.array([sd]), tie, BETA, 0.3, tau=0.9, answers=FITTED)[0])
    assert got == pytest.approx(mc, abs=4 * se + 0.01)
    davidson = float(expected_gold(np.array([mu]), np.array([sd]), tie, BETA, 0.3, tau=0.9)[0])
    assert abs(davidson - got) > 0.02, (davidson, got)


def test_gold_ranking_asks_what_the_methods_separate_first():
    """Four comparisons the fit sees alike (the same fitted d and sd, hence the same P and expected gold): the one
    the methods' learnt combination separates most (the feature prior's |w . dphi|) is asked first, as it is the
    least likely true tie - which a run whose tie prior has no slope yet cannot say.  Without the feature prior's
    lean the committee breaks the tie, and it prefers where the methods are close."""
    fp = FeaturePrior(["m"], np.array([1.0]), np.array([0.0]), np.array([0.0]), np.array([1.0]), tau=1.0)
    part = {10: (0.5, 1.0, 0), 11: (0.0, 1.0, 0), 12: (0.5, 1.0, 0), 13: (0.0, 1.0, 0)}
    S = np.array([[0.1, 0.0, 3.0, -3.0]])  # one method: 10 vs 11 close, 12 vs 13 far apart
    cal = Calibration(1, 4, 1, {0: part}, beta=BETA, beta_weight=np.ones(3), nu=NU, rank="gold", tie_mass=0.6,
                      prior=fp)
    pool = AnchorPool(0, np.array([10, 11, 12, 13]), ["t"] * 4, S, None)
    pool.finish(cal, ["m"])
    picks = Picks(attention=0, audit=0, bridge=0, target=1, per_anchor=1, chain=False)
    chosen = select_triplets([pool], np.arange(20), set(), {0: 1}, np.array([True]), picks, [],
                             np.random.default_rng(0))
    assert {chosen[0]["x"], chosen[0]["y"]} == {12, 13}
    i, j = np.array([0, 2, 0, 1]), np.array([1, 3, 3, 2])  # (10, 11), (12, 13), (10, 13), (11, 12): d = .5 each
    f = pool.features(i, j, np.array([True]))
    lean = np.abs(2 * f["model_p"] - 1)
    assert np.allclose(lean, lean[0]) and np.allclose(f["expected_gold"], f["expected_gold"][0])
    assert f["priority"][1] > f["priority"][2] > f["priority"][0]
