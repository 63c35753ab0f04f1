"""Gold, contested, uncertain and derived labels from a fit's triplet probabilities (plain Python).

A triplet is *gold* when P(label) >= tau with >= min_votes distinct annotators and no pending
adjudication; an active review vote resolves an adjudication and decides the label.  Otherwise
*contested* (votes split or adjudication pending) or *uncertain*.  With ``derive`` the stored
triplets nobody voted on get labels from the model, status ``derived`` (flagged, never gold).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Protocol

import numpy as np

from .load import DECISIVE, FITTED, Comparisons
from .stats import _consensus


class FitLike(Protocol):
    components: np.ndarray
    global_scale: bool

    def p_first_second(self, data: Comparisons, tids: list[int]) -> tuple[np.ndarray, np.ndarray]: ...


def triplet_probabilities(data: Comparisons, fitres: FitLike) -> dict[int, tuple[float, float]]:
    """(P(s(a, first) > s(a, second)), P(s(a, first) < s(a, second))) of every stored triplet."""
    tids = list(data.triplets)
    pf, ps = fitres.p_first_second(data, tids)
    return {t: (float(a), float(b)) for t, a, b in zip(tids, pf, ps, strict=True)}


def _status(
    tri: dict, vs: list[dict], p: tuple[float, float], fitres: FitLike, *, tau: float, min_votes: int, derive: bool
) -> tuple[str | None, str, float, int] | None:
    """(label, status, probability of the label, distinct annotators) of one triplet, or None (no label)."""
    fitted = [v for v in vs if v["choice"] in FITTED and v["source"] != "review"]
    reviews = [v for v in vs if v["source"] == "review" and v["choice"] in FITTED]
    n_fit = len({v["ann"] for v in fitted} | {v["ann"] for v in reviews})  # distinct annotators
    label: str | None = "first" if p[0] >= p[1] else "second"
    prob = max(p)
    pending = bool(tri["meta"].get("needs_adjudication") or tri["meta"].get("adjudication") == "pending")
    mine: dict[int, list[str]] = defaultdict(list)
    for v in fitted:
        mine[v["ann"]].append(v["choice"])
    cnt = Counter(_consensus(cs) for cs in mine.values())
    split = cnt["first"] > 0 and cnt["second"] > 0
    adjudicated = [v for v in vs if v["source"] == "review" and v["choice"] != "skip"]
    if adjudicated:  # the latest adjudication decides
        r = adjudicated[-1]["choice"]
        if r in DECISIVE:
            return r, "gold", (p[0] if r == "first" else p[1]), n_fit
        return None, "uncertain", prob, n_fit  # a tie or "can't tell": resolved, no preference to export
    if n_fit == 0:
        same = fitres.global_scale or fitres.components[tri["i_first"]] == fitres.components[tri["i_second"]]
        if not derive or prob < tau or not same:
            return None
        return label, "derived", prob, 0
    if pending:
        return label, "contested", prob, n_fit
    if prob >= tau and n_fit >= min_votes:
        return label, "gold", prob, n_fit
    return label, ("contested" if split else "uncertain"), prob, n_fit


def label_triplets(
    data: Comparisons,
    probs: dict[int, tuple[float, float]],
    fitres: FitLike,
    *,
    tau: float,
    min_votes: int,
    derive: bool,
) -> list[dict[str, Any]]:
    """One label row per triplet that gets a status (see the module docstring)."""
    by_trip: dict[int, list[dict]] = defaultdict(list)
    for v in data.votes:
        by_trip[v["triplet_id"]].append(v)
    out = []
    for t, p in probs.items():
        res = _status(data.triplets[t], by_trip.get(t, []), p, fitres, tau=tau, min_votes=min_votes, derive=derive)
        if res is None:
            continue
        label, status, prob, n_fit = res
        out.append(
            {
                "triplet_id": t,
                "label": label,
                "probability": float(prob),
                "n_votes": n_fit,
                "status": status,
                "p_first": p[0],
                "p_second": p[1],
            }
        )
    return out


def reference_answers(data: Comparisons) -> dict[int, str]:
    """Triplets with a reference answer: the latest decisive adjudication, else an attention check's key."""
    ref: dict[int, str] = {}
    for t in data.triplets.values():
        if t["attention"] and t["expected"] in DECISIVE and not data.key_suspect:
            ref[t["id"]] = t["expected"]
    for v in data.votes:
        if v["source"] == "review" and v["choice"] in DECISIVE:
            ref[v["triplet_id"]] = v["choice"]
    return ref
