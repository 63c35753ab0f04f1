"""Simulated comparison data with known truth (for tests and ``bench/calibrate.py``).

All generators are seeded (``np.random.default_rng(seed)``) and return plain arrays in
the layout :func:`condsim_annot.calibrate.bt.bradley_terry` takes.  Annotator kinds:

* ``good``: discrimination ``beta`` (default 1.5),
* ``noisy``: small discrimination (default 0.2),
* ``adversarial``: negative discrimination (default -1.0): answers against the truth,
* optionally a ``position_bias`` per annotator: with that probability the answer is
  simply the side shown first (A), whatever the items.

Ties follow Davidson's model with tie parameter ``nu``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PairwiseSim", "TripletSim", "annotator_betas", "simulate_pairwise", "simulate_triplets"]


@dataclass
class PairwiseSim:
    winners: np.ndarray  # (m,) item that won (or first item of a tie)
    losers: np.ndarray  # (m,)
    ties: np.ndarray  # (m,) bool
    annotators: np.ndarray  # (m,) int
    true_scores: np.ndarray  # (n_items,)
    true_beta: np.ndarray  # (n_annotators,) (negative = adversarial)
    kinds: np.ndarray  # (n_annotators,) str: good | noisy | adversarial
    nu: float
    left: np.ndarray  # (m,) item shown first (side A)
    right: np.ndarray  # (m,) item shown second (side B)

    @property
    def n_items(self) -> int:
        return len(self.true_scores)

    @property
    def n_annotators(self) -> int:
        return len(self.true_beta)


@dataclass
class TripletSim:
    anchor: np.ndarray  # (m,) document ids
    first: np.ndarray  # (m,) canonical first candidate (first < second)
    second: np.ndarray  # (m,)
    choice: np.ndarray  # (m,) int: 0 = first more similar, 1 = second, 2 = tie
    annotators: np.ndarray  # (m,)
    swapped: np.ndarray  # (m,) bool: canonical second shown as A
    item_first: np.ndarray  # (m,) item id of {anchor, first}
    item_second: np.ndarray  # (m,) item id of {anchor, second}
    pairs: np.ndarray  # (n_items, 2) document pair of each item
    true_scores: np.ndarray  # (n_items,)
    true_beta: np.ndarray
    kinds: np.ndarray
    nu: float

    @property
    def n_items(self) -> int:
        return len(self.true_scores)

    @property
    def n_annotators(self) -> int:
        return len(self.true_beta)

    def comparisons(self):
        """(winners, losers, ties, annotators) over items, for :func:`bt.bradley_terry`."""
        f, s = self.item_first, self.item_second
        first_wins = self.choice != 1
        w = np.where(first_wins, f, s)
        lo_ = np.where(first_wins, s, f)
        return w, lo_, self.choice == 2, self.annotators


def annotator_betas(n_annotators: int, *, noisy: float = 0.0, adversarial: float = 0.0, good_beta: float = 1.5,
                    noisy_beta: float = 0.2, adversarial_beta: float = -1.0, seed: int = 0):
    """Discriminations and kinds for ``n_annotators`` (fractions ``noisy`` / ``adversarial``).

    Good annotators get ``good_beta * U(0.6, 1.4)``; returns ``(beta, kinds)``."""
    rng = np.random.default_rng(seed)
    n_noisy = int(round(noisy * n_annotators))
    n_adv = int(round(adversarial * n_annotators))
    kinds = np.array(["good"] * n_annotators, dtype=object)
    perm = rng.permutation(n_annotators)
    kinds[perm[:n_noisy]] = "noisy"
    kinds[perm[n_noisy : n_noisy + n_adv]] = "adversarial"
    beta = good_beta * rng.uniform(0.6, 1.4, n_annotators)
    beta[kinds == "noisy"] = noisy_beta
    beta[kinds == "adversarial"] = adversarial_beta
    return beta, kinds.astype(str)


def _davidson(rng, z, nu):
    """Outcome per comparison with h = z/2: 0 = left wins, 1 = right wins, 2 = tie."""
    h = 0.5 * z
    m = np.maximum(np.abs(h), np.log(nu) if nu > 0 else -np.inf)
    eA, eB = np.exp(h - m), np.exp(-h - m)
    eT = nu * np.exp(-m) if nu > 0 else np.zeros_like(h)
    Z = eA + eB + eT
    u = rng.random(len(z)) * Z
    return np.where(u < eA, 0, np.where(u < eA + eB, 1, 2))


def simulate_pairwise(n_items: int, n_comparisons: int, *, n_annotators: int = 1, noisy: float = 0.0,
                      adversarial: float = 0.0, nu: float = 0.0, score_sd: float = 1.0,
                      position_bias: np.ndarray | None = None, seed: int = 0, **beta_kw) -> PairwiseSim:
    """Pairwise comparisons of uniformly random distinct item pairs.

    With ``n_annotators == 1`` and no noisy/adversarial share the single annotator has
    beta = 1 (the plain Bradley-Terry model)."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0.0, score_sd, n_items)
    if n_annotators == 1 and not noisy and not adversarial and not beta_kw:
        beta, kinds = np.ones(1), np.array(["good"])
    else:
        beta, kinds = annotator_betas(n_annotators, noisy=noisy, adversarial=adversarial, seed=seed + 1, **beta_kw)
    x = rng.integers(0, n_items, n_comparisons)
    y = (x + rng.integers(1, n_items, n_comparisons)) % n_items
    ann = rng.integers(0, n_annotators, n_comparisons)
    out = _davidson(rng, beta[ann] * (s[x] - s[y]), nu)
    if position_bias is not None:
        pb = np.asarray(position_bias, dtype=float)[ann]
        out = np.where(rng.random(n_comparisons) < pb, 0, out)
    w = np.where(out == 1, y, x)
    lo_ = np.where(out == 1, x, y)
    return PairwiseSim(winners=w, losers=lo_, ties=out == 2, annotators=ann, true_scores=s, true_beta=beta,
                       kinds=kinds, nu=nu, left=x, right=y)


def simulate_triplets(n_docs: int, n_candidates: int, n_votes: int, *, n_annotators: int = 50,
                      votes_per_triplet: int = 3, noisy: float = 0.2, adversarial: float = 0.1, nu: float = 0.1,
                      position_bias: np.ndarray | None = None, seed: int = 0, **beta_kw) -> TripletSim:
    """Triplet votes (a; x, y) over pair-items {a, x}.

    Every document is an anchor with ``n_candidates`` random candidates (so about
    ``n_docs * n_candidates`` pair-items; a pair {a, x} where x is also an anchor with a
    among its candidates is one item, which connects the anchors).  Triplets draw an
    anchor and two of its candidates; each triplet gets ``votes_per_triplet`` votes from
    distinct random annotators, ``n_votes`` votes in all.
    """
    from .bt import triplet_items

    rng = np.random.default_rng(seed)
    cand = np.stack([rng.choice(n_docs - 1, n_candidates, replace=False) for _ in range(n_docs)])
    cand = cand + (cand >= np.arange(n_docs)[:, None])  # skip the anchor itself
    n_trip = -(-n_votes // votes_per_triplet)
    a = rng.integers(0, n_docs, n_trip)
    i = rng.integers(0, n_candidates, n_trip)
    j = (i + rng.integers(1, n_candidates, n_trip)) % n_candidates
    x, y = cand[a, i], cand[a, j]
    first, second = np.minimum(x, y), np.maximum(x, y)
    # repeat each triplet votes_per_triplet times
    a = np.repeat(a, votes_per_triplet)[:n_votes]
    first = np.repeat(first, votes_per_triplet)[:n_votes]
    second = np.repeat(second, votes_per_triplet)[:n_votes]
    m = len(a)
    # distinct annotators within a triplet: offset from a random start
    start = np.repeat(rng.integers(0, n_annotators, n_trip), votes_per_triplet)[:m]
    k = np.tile(np.arange(votes_per_triplet), n_trip)[:m]
    ann = (start + k * max(1, n_annotators // votes_per_triplet)) % n_annotators
    it1, it2, pairs = triplet_items(a, first, second)
    s = rng.normal(0.0, 1.0, len(pairs))
    beta, kinds = annotator_betas(n_annotators, noisy=noisy, adversarial=adversarial, seed=seed + 1, **beta_kw)
    swapped = rng.random(m) < 0.5
    out = _davidson(rng, beta[ann] * (s[it1] - s[it2]), nu)  # 0 first, 1 second, 2 tie
    if position_bias is not None:
        pb = np.asarray(position_bias, dtype=float)[ann]
        shown_a = np.where(swapped, 1, 0)  # canonical side shown as A
        out = np.where(rng.random(m) < pb, shown_a, out)
    return TripletSim(anchor=a, first=first, second=second, choice=out, annotators=ann, swapped=swapped,
                      item_first=it1, item_second=it2, pairs=pairs, true_scores=s, true_beta=beta, kinds=kinds,
                      nu=nu)
