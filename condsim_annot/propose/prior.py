"""The calibration model's prior for a pair nobody has put in a triplet yet: s = w . phi + u, u ~ N(0, tau^2).

``phi`` are the proposer methods' scores standardised as :func:`..calibrate.load.load_features` does (each
method z-scored over the pairs of the run, a pair's scores averaged over its triplets); ``w`` (with its sd)
and ``tau`` are the run's learnt feature weights and prior scale.  With them a pool's fresh comparisons get
a predicted d and P on the run's scale, so ``--rank gold`` can ask what the methods already lean on.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from ..models import Triplet
from .tables import TripletMargin


@dataclass
class FeaturePrior:
    """Per method: weight ``w`` (and its sd), and the mean / sd that standardise its raw scores."""

    names: list[str]
    w: np.ndarray
    w_sd: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    tau: float

    def predict(self, S: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, sd) of s for pool columns ``S`` [M, P] whose rows are the methods ``names`` (a fitted method
        missing from them counts 0, its mean, as in the fit)."""
        P = S.shape[1]
        mu, var = np.zeros(P), np.full(P, self.tau**2)
        for k, name in enumerate(self.names):
            if name in names:
                z = (S[names.index(name)] - self.mean[k]) / self.std[k]
                mu += self.w[k] * z
                var += (self.w_sd[k] * z) ** 2
        return mu, np.sqrt(var)


def _weights(summary: dict) -> tuple[list[str], np.ndarray, np.ndarray, float] | None:
    model = summary.get("model")
    if not isinstance(model, dict) or not model.get("feature_weights"):
        return None
    rows = [r for r in model["feature_weights"] if isinstance(r, dict) and math.isfinite(float(r.get("w", math.nan)))]
    tau = model.get("prior_scale")
    if not rows or not isinstance(tau, (int, float)) or not tau > 0:
        return None
    return ([str(r["method"]) for r in rows], np.asarray([float(r["w"]) for r in rows]),
            np.asarray([float(r.get("sd") or 0.0) for r in rows]), float(tau))


def load_feature_prior(s: Session, criterion_id: int, summary: dict, pairs: set) -> FeaturePrior | None:
    """The run's feature prior, standardised over ``pairs`` (the run's scored pairs, as (lo, hi) document ids);
    None for a run without feature weights (legacy model, or no method margins stored)."""
    got = _weights(summary)
    if got is None:
        return None
    names, w, w_sd, tau = got
    rows = s.execute(select(col(Triplet.anchor_id), col(Triplet.first_id), col(Triplet.second_id),
                            col(TripletMargin.method), col(TripletMargin.score_first), col(TripletMargin.score_second))
                     .join(Triplet, col(Triplet.id) == col(TripletMargin.triplet_id))
                     .where(col(Triplet.criterion_id) == criterion_id)
                     .where(col(TripletMargin.method).in_(names))).all()
    acc: dict[str, dict[tuple[int, int], list[float]]] = defaultdict(lambda: defaultdict(list))
    for a, f, sec, method, sf, ss in rows:
        for x, v in ((f, sf), (sec, ss)):
            key = (min(a, x), max(a, x))
            if v is not None and math.isfinite(v) and key in pairs:
                acc[method][key].append(float(v))
    mean, std = np.zeros(len(names)), np.ones(len(names))
    keep = []
    for k, name in enumerate(names):
        vals = np.asarray([np.mean(v) for v in acc[name].values()])
        if len(vals) >= 2 and vals.std() > 0:
            mean[k], std[k] = vals.mean(), vals.std()
            keep.append(k)
    if not keep:
        return None
    ix = np.asarray(keep)
    return FeaturePrior([names[k] for k in keep], w[ix], w_sd[ix], mean[ix], std[ix], tau)
