"""The store's votes -> :class:`.model.TripletModel` arrays and back (no maths here).

Pairwise votes keep their triplet's orientation (outcome 0 first, 1 second, 2 tie); a best-of-k
answer enters as its k-1 comparisons (chosen against each alternative: slightly more weight than
one Luce choice, documented); the attention key is an annotator with a pinned beta.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .load import KEY_BETA, Comparisons
from .model import TripletModel


@dataclass
class TripletFit:
    """What the pipeline needs from a fit (new model): one global scale for every pair."""

    scores: np.ndarray
    stderr: np.ndarray
    beta: np.ndarray
    nu: float
    components: np.ndarray
    model: TripletModel
    methods: list[str] = field(default_factory=list)
    vote_outcome: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    vote_ann: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    engine: str = "triplet"
    global_scale: bool = True

    def p_first_second(self, data: Comparisons, tids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """P(first is more similar), P(second is): their sum falls short of 1 by P(true tie)."""
        i1 = np.array([data.triplets[t]["i_first"] for t in tids], dtype=np.int64)
        i2 = np.array([data.triplets[t]["i_second"] for t in tids], dtype=np.int64)
        if not len(tids):
            return np.zeros(0), np.zeros(0)
        p = self.model.predict_proba(i1, i2)
        return p[:, 0], p[:, 1]


def vote_arrays(data: Comparisons) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(first item, second item, outcome, annotator) of every fitted vote, key included."""
    f, s, o, a = [], [], [], []
    for w, _lo, tie, ann, tid in zip(
        data.winners.tolist(),
        data.losers.tolist(),
        data.ties.tolist(),
        data.ann.tolist(),
        data.trip.tolist(),
        strict=False,
    ):
        t = data.triplets[tid]
        f.append(t["i_first"])
        s.append(t["i_second"])
        o.append(2 if tie else (0 if w == t["i_first"] else 1))
        a.append(ann)
    for (chosen, _, ann), trips in zip(data.choice_sets, data.choice_trips, strict=False):
        for tid in trips:
            t = data.triplets[tid]
            f.append(t["i_first"])
            s.append(t["i_second"])
            o.append(0 if chosen == t["i_first"] else 1)
            a.append(ann)
    as_i = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return as_i(f), as_i(s), as_i(o), as_i(a)


def fit_triplet_model(
    data: Comparisons,
    features: np.ndarray,
    methods: list[str],
    *,
    prior_scale: float | None,
    beta_prior: float | None,
    seed: int = 0,
) -> TripletFit:
    """Fit :class:`.model.TripletModel` to one criterion's comparisons (every stored pair an item)."""
    f, s, o, a = vote_arrays(data)
    A = max(len(data.annotators), 1)
    fixed = np.full(A, np.nan)
    if data.key_index is not None:
        fixed[data.key_index] = KEY_BETA  # the answer key is trusted, not learned
    model = TripletModel(
        prior_scale=prior_scale if prior_scale and prior_scale > 0 else None,
        beta_prior=beta_prior if beta_prior and beta_prior > 0 else None,
        seed=seed,
    )
    model.fit(f, s, o, a, n_items=data.n_items, n_annotators=A, features=features, fixed_beta=fixed)
    return TripletFit(
        scores=model.scores_,
        stderr=model.stderr_,
        beta=model.beta_,
        nu=float(model.nu_),
        components=model.components_,
        model=model,
        methods=methods,
        vote_outcome=o,
        vote_ann=a,
    )
