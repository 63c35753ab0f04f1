"""Per-annotator statistics and agreement over one criterion's votes (plain Python over vote dicts)."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable

import numpy as np

from . import agreement
from .load import DECISIVE, FITTED, Comparisons, _is_attention_answer


def _consensus(choices: list[str]) -> str | None:
    c = Counter(x for x in choices if x in FITTED)
    if not c:
        return None
    (top, n), *rest = c.most_common()
    if rest and rest[0][1] == n:
        return None
    return top


def per_coder(votes: list[dict]) -> dict[tuple[int, int], str]:
    """One answer per (annotator, triplet): an LM judge asked in both presentation orders
    leaves two votes; they count as one answer when they agree and as none when they
    contradict each other (a position effect, not a preference)."""
    acc: dict[tuple[int, int], list[str]] = defaultdict(list)
    for v in votes:
        if v["choice"] in FITTED:
            acc[(v["ann"], v["triplet_id"])].append(v["choice"])
    out = {}
    for k, cs in acc.items():
        c = _consensus(cs)
        if c is not None:
            out[k] = c
    return out


def krippendorff_alpha(
    votes: list[dict], ann_filter: Callable[[dict], bool] | None = None, *, bootstrap: int = 200, seed: int = 0
) -> dict:
    """Nominal alpha over triplets (canonical first/second/tie), with a bootstrap CI over triplets."""
    code = {"first": 0.0, "second": 1.0, "tie": 2.0}
    answers = per_coder([v for v in votes if ann_filter is None or ann_filter(v)])
    anns = sorted({a for a, _ in answers})
    trips = sorted({t for _, t in answers})
    out = {"value": None, "ci": [None, None], "n_units": 0, "n_annotators": len(anns)}
    if len(anns) < 2 or not trips:
        return out
    ai = {a: i for i, a in enumerate(anns)}
    ti = {t: i for i, t in enumerate(trips)}
    X = np.full((len(anns), len(trips)), np.nan)
    for (a, t), c in answers.items():
        X[ai[a], ti[t]] = code[c]
    r = agreement.krippendorff_alpha(X, level="nominal", bootstrap=bootstrap if X.shape[1] >= 5 else 0, seed=seed)
    val, lo, hi, n_units = r.alpha, r.low, r.high, r.n_units

    def clean(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    out.update({"value": clean(val), "ci": [clean(lo), clean(hi)], "n_units": int(n_units)})
    return out


def _cohen_kappa(x: list[str], y: list[str]) -> float | None:
    if len(x) < 2:
        return None
    k = float(agreement.cohen_kappa(x, y))
    return None if math.isnan(k) else k


def _annotator_stats(data: Comparisons, gold_of: dict[int, str]) -> list[dict]:
    by_trip: dict[int, list[dict]] = defaultdict(list)
    for v in data.votes:
        by_trip[v["triplet_id"]].append(v)
    by_ann: dict[int, list[dict]] = defaultdict(list)
    for v in data.votes:
        by_ann[v["ann"]].append(v)
    stats = []
    for ai, a in enumerate(data.annotators):
        if ai == data.key_index:
            continue
        mine = by_ann.get(ai, [])
        fitted = [v for v in mine if v["choice"] in FITTED]
        decisive = [v for v in mine if v["choice"] in DECISIVE]
        att = [v for v in mine if _is_attention_answer(data, v)]
        att_ok = sum(v["choice"] == data.triplets[v["triplet_id"]]["expected"] for v in att)
        loo_n = loo_ok = 0
        for v in fitted:
            others = [o["choice"] for o in by_trip[v["triplet_id"]] if o["ann"] != ai]
            c = _consensus(others)
            if c is not None:
                loo_n += 1
                loo_ok += c == v["choice"]
        g_n = g_ok = 0
        for v in decisive:
            g = gold_of.get(v["triplet_id"])
            if g:
                g_n += 1
                g_ok += g == v["choice"]
        shown_a = sum((v["choice"] == "first") != v["swapped"] for v in decisive)
        pb_p = None
        if decisive:
            pb_p = float(
                agreement.position_bias([(v["choice"] == "first") != v["swapped"] for v in decisive]).p_value[0]
            )
        lat = [v["latency_ms"] for v in mine if v["latency_ms"] is not None]
        stats.append(
            {
                "name": a["name"],
                "kind": a["kind"],
                "annotator_id": a["id"],
                "index": ai,
                "n_votes": len(mine),
                "n_fitted": len(fitted),
                "n_cant_tell": sum(v["choice"] == "cant_tell" for v in mine),
                "n_skip": sum(v["choice"] == "skip" for v in mine),
                "attention_n": len(att),
                "attention_correct": att_ok,
                "attention_accuracy": (att_ok / len(att)) if att else None,
                "loo_agreement": (loo_ok / loo_n) if loo_n else None,
                "gold_agreement": (g_ok / g_n) if g_n else None,
                "position_bias": (shown_a / len(decisive)) if decisive else None,
                "position_bias_p": pb_p,
                "median_latency_ms": float(statistics.median(lat)) if lat else None,
            }
        )
    return stats
