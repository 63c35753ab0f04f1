"""Picking anchors (pure, on arrays): documents with room under the per-anchor cap, fewest existing triplets
first (ties broken by the seed), about ``remaining / per_anchor * 1.15`` of them so triplets spread across
anchors; once calibrated, up to as many again whose scored pairs hold the most valuable comparison."""

from __future__ import annotations

import math

import numpy as np

from ..errors import CondsimError
from .calibration import Calibration


def pick_anchors(used: np.ndarray, per_anchor: int, remaining: int, rng: np.random.Generator,
                 criterion: str) -> tuple[np.ndarray, np.ndarray, int]:
    """``used[pos]`` = existing triplets anchored at each document.  Returns (picked positions, eligible
    positions, how many were wanted)."""
    room = per_anchor - used
    eligible = np.flatnonzero(room > 0)
    if len(eligible) == 0:
        raise CondsimError(
            f"every document already anchors {per_anchor} triplets of {criterion!r}: raise --per-anchor to add more")
    order = np.lexsort((rng.random(len(eligible)), used[eligible]))
    n_anchors = min(len(eligible), int(math.ceil(remaining / per_anchor * 1.15)) + 2)
    return eligible[order[:n_anchors]], eligible, n_anchors


def calibrated_anchors(cal: Calibration, eligible: np.ndarray, used: np.ndarray, taken: set, doc_ids: np.ndarray,
                       n: int, rng: np.random.Generator) -> list[int]:
    """Up to ``n`` eligible anchors with an unasked comparison among their scored partners, the most valuable
    (expected information of a vote; joining components) first."""
    cand = np.asarray([a for a in eligible.tolist() if len(cal.partners.get(a, ())) >= 2], dtype=np.int64)
    val = np.asarray([cal.anchor_value(int(a), taken, doc_ids) for a in cand], dtype=np.float64)
    order = np.lexsort((rng.random(len(cand)), used[cand], -val))
    return [int(cand[q]) for q in order if val[q] > 0][:n]


def all_anchors(picked: np.ndarray, extra: list[int] | None) -> np.ndarray:
    if extra:
        picked = np.union1d(picked, np.asarray(extra, dtype=np.int64))
    return np.sort(picked).astype(np.int64)
