"""Agreement statistics on arrays (store-free).

Votes are given in long form: ``units`` (the triplet of each vote), ``coders`` (the
annotator) and ``values`` (the answer, any hashable code, e.g. 0 = first, 1 = second,
2 = tie in canonical order).  :func:`reliability_matrix` turns them into the
coders x units matrix (NaN = missing) that Krippendorff's alpha takes.

* :func:`krippendorff_alpha`: alpha (nominal by default) with the ``krippendorff``
  package, and a percentile bootstrap CI over units (seeded).
* :func:`alpha_by_group`: alpha for all coders and for subsets (e.g. humans / LLM judges).
* :func:`cohen_kappa`: Cohen's kappa of two label sequences; :func:`kappa_between`
  for two coders on their shared units.
* :func:`leave_one_out_agreement`: per coder, agreement with the majority of the *other*
  coders on the same unit (units where the others tie are skipped).
* :func:`position_bias`: per coder, share of decisive answers that chose the side shown
  first, with a two-sided binomial test against 1/2.
* :func:`majority_vote` / :func:`win_rate`: the majority-vote baselines (per unit label,
  per item share of wins).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "AlphaResult",
    "reliability_matrix",
    "krippendorff_alpha",
    "alpha_by_group",
    "cohen_kappa",
    "kappa_between",
    "leave_one_out_agreement",
    "position_bias",
    "majority_vote",
    "win_rate",
    "LooAgreement",
    "PositionBias",
]


class AlphaResult(NamedTuple):
    """Krippendorff's alpha: ``alpha`` (NaN when undefined), bootstrap CI, sizes."""

    alpha: float
    low: float
    high: float
    n_units: int  # units with at least two values (pairable)
    n_coders: int
    n_values: int  # pairable values


def reliability_matrix(units: Any, coders: Any, values: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Long-form votes to a coders x units float matrix (NaN = missing).

    Values are coded 0..K-1 in sorted order of the distinct values (returned as the last
    element); a coder's repeated value for the same unit keeps the last one.
    Returns ``(matrix, unit_ids, coder_ids, value_codes)``.
    """
    u = np.asarray(units)
    c = np.asarray(coders)
    v = np.asarray(values)
    uid, ui = np.unique(u, return_inverse=True)
    cid, ci = np.unique(c, return_inverse=True)
    vals, vi = np.unique(v, return_inverse=True)
    M = np.full((len(cid), len(uid)), np.nan)
    M[ci.ravel(), ui.ravel()] = vi.ravel().astype(float)
    return M, uid, cid, list(vals)


def _alpha_nominal(M: np.ndarray) -> tuple[float, int, int]:
    """Alpha of a coders x units matrix, nominal, via ``krippendorff``; (alpha, n_units, n_values)."""
    import krippendorff

    present = ~np.isnan(M)
    pairable = present.sum(0) >= 2
    Mp = M[:, pairable]
    n_values = int((~np.isnan(Mp)).sum())
    if Mp.shape[1] == 0:
        return float("nan"), 0, 0
    vals = np.unique(Mp[~np.isnan(Mp)])
    if len(vals) < 2:
        # one value everywhere: observed = expected = 0 disagreement; alpha undefined (reported 1: perfect)
        return 1.0, int(pairable.sum()), n_values
    return float(krippendorff.alpha(reliability_data=Mp, level_of_measurement="nominal")), int(pairable.sum()), n_values


def _alpha_any(M: np.ndarray, level: str) -> float:
    import krippendorff

    pairable = (~np.isnan(M)).sum(0) >= 2
    Mp = M[:, pairable]
    if Mp.shape[1] == 0:
        return float("nan")
    if len(np.unique(Mp[~np.isnan(Mp)])) < 2:
        return 1.0
    return float(krippendorff.alpha(reliability_data=Mp, level_of_measurement=level))  # type: ignore[arg-type]


def krippendorff_alpha(reliability_data: Any, *, level: str = "nominal", bootstrap: int = 0, seed: int = 0,
                       ci: float = 0.95) -> AlphaResult:
    """Krippendorff's alpha of a coders x units matrix (NaN = missing value).

    ``level`` is passed to ``krippendorff.alpha`` (nominal, ordinal, interval, ratio).
    With ``bootstrap > 0`` the CI is the percentile interval of alpha over units resampled
    with replacement (``np.random.default_rng(seed)``); replicates where alpha is undefined
    are dropped.  Returns :class:`AlphaResult` (a tuple: ``result[0]`` is alpha).
    """
    M = np.asarray(reliability_data, dtype=float)
    if M.ndim != 2:
        raise ValueError("reliability_data must be a 2-D coders x units array")
    pairable = (~np.isnan(M)).sum(0) >= 2
    Mp = M[:, pairable]
    n_units = int(pairable.sum())
    n_values = int((~np.isnan(Mp)).sum())
    n_coders = int((~np.isnan(Mp)).any(1).sum())
    a = _alpha_any(Mp, level) if level != "nominal" else _alpha_nominal(Mp)[0]
    lo = hi = float("nan")
    if bootstrap and n_units >= 2:
        rng = np.random.default_rng(seed)
        reps = []
        for _ in range(int(bootstrap)):
            R = Mp[:, rng.integers(0, n_units, n_units)]
            try:
                r = _alpha_any(R, level)
            except ValueError:  # a degenerate resample (krippendorff raises on one value)
                continue
            if not math.isnan(r):
                reps.append(r)
        if reps:
            q = (1 - ci) / 2
            lo, hi = (float(x) for x in np.quantile(reps, [q, 1 - q]))
    return AlphaResult(alpha=float(a), low=lo, high=hi, n_units=n_units, n_coders=n_coders, n_values=n_values)


def alpha_by_group(units: Any, coders: Any, values: Any, groups: Mapping[str, Any] | None = None, *,
                   coder_kind: Mapping[Hashable, str] | None = None, bootstrap: int = 0, seed: int = 0,
                   level: str = "nominal") -> dict[str, AlphaResult]:
    """Alpha for all coders and for subsets of coders.

    ``groups`` maps a name to the coder ids in it; or ``coder_kind`` maps coder id ->
    kind (e.g. ``"human"`` / ``"llm"``) and gives one group per kind.  Always includes
    ``"all"``.  Groups with fewer than two coders give alpha NaN.
    """
    u = np.asarray(units)
    c = np.asarray(coders)
    v = np.asarray(values)
    M, uid, cid, _ = reliability_matrix(u, c, v)
    sel: dict[str, Any] = {"all": list(cid)}
    if coder_kind is not None:
        for kind in sorted(set(coder_kind.values())):
            sel[kind] = [k for k, kk in coder_kind.items() if kk == kind]
    if groups:
        sel.update({k: list(g) for k, g in groups.items()})
    out: dict[str, AlphaResult] = {}
    index = {x: i for i, x in enumerate(cid.tolist())}
    for name, members in sel.items():
        rows = [index[m] for m in members if m in index]
        if len(rows) < 2:
            out[name] = AlphaResult(float("nan"), float("nan"), float("nan"), 0, len(rows), 0)
            continue
        out[name] = krippendorff_alpha(M[rows], level=level, bootstrap=bootstrap, seed=seed)
    return out


def cohen_kappa(a: Any, b: Any, labels: Sequence | None = None) -> float:
    """Cohen's kappa of two equally long label sequences (NaN when undefined).

    kappa = (p_o - p_e) / (1 - p_e), p_e from the two marginals; ``labels`` restricts
    the categories (pairs with another label are dropped).  Both raters always giving the
    same single label: p_e = 1, kappa NaN.
    """
    x = np.asarray(a)
    y = np.asarray(b)
    if x.shape != y.shape:
        raise ValueError("a and b must have the same length")
    if labels is not None:
        keep = np.isin(x, labels) & np.isin(y, labels)
        x, y = x[keep], y[keep]
    if len(x) == 0:
        return float("nan")
    cats, inv = np.unique(np.concatenate([x, y]), return_inverse=True)
    inv = inv.ravel()
    xi, yi = inv[: len(x)], inv[len(x) :]
    k = len(cats)
    C = np.zeros((k, k))
    np.add.at(C, (xi, yi), 1.0)
    C /= C.sum()
    po = float(np.trace(C))
    pe = float(C.sum(1) @ C.sum(0))
    if pe >= 1.0:
        return float("nan")
    return (po - pe) / (1.0 - pe)


def kappa_between(units: Any, coders: Any, values: Any, coder_a: Hashable, coder_b: Hashable) -> tuple[float, int]:
    """Cohen's kappa of two coders on the units both answered; returns ``(kappa, n_shared)``."""
    u = np.asarray(units)
    c = np.asarray(coders)
    v = np.asarray(values)
    da = {uu: vv for uu, cc, vv in zip(u.tolist(), c.tolist(), v.tolist(), strict=False) if cc == coder_a}
    db = {uu: vv for uu, cc, vv in zip(u.tolist(), c.tolist(), v.tolist(), strict=False) if cc == coder_b}
    shared = sorted(set(da) & set(db), key=str)
    if not shared:
        return float("nan"), 0
    return cohen_kappa([da[k] for k in shared], [db[k] for k in shared]), len(shared)


def majority_vote(units: Any, values: Any, *, weights: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Majority label per unit (the baseline aggregation).

    Returns ``(unit_ids, label, share)``; ``label`` is the most frequent (weighted) value,
    or ``None`` (object array) / NaN when the top two tie; ``share`` is its vote share.
    """
    u = np.asarray(units)
    v = np.asarray(values)
    uid, ui = np.unique(u, return_inverse=True)
    vals, vi = np.unique(v, return_inverse=True)
    ui, vi = ui.ravel(), vi.ravel()
    wt = np.ones(len(u)) if weights is None else np.asarray(weights, dtype=float)
    C = np.zeros((len(uid), len(vals)))
    np.add.at(C, (ui, vi), wt)
    top = C.argmax(1)
    srt = np.sort(C, axis=1)
    tie = (srt[:, -1] == srt[:, -2]) if len(vals) > 1 else np.zeros(len(uid), dtype=bool)
    share = srt[:, -1] / np.maximum(C.sum(1), 1e-300)
    label = vals[top].astype(object)
    label[tie] = None
    return uid, label, share


def win_rate(winners: Any, losers: Any, n_items: int | None = None, *, ties: Any = None) -> np.ndarray:
    """Share of comparisons each item won (ties count 1/2; NaN for uncompared items).

    The majority-vote score baseline (Borda-like) against which BT is compared."""
    w = np.asarray(winners, dtype=np.int64)
    lo_ = np.asarray(losers, dtype=np.int64)
    n = int(n_items if n_items is not None else max(w.max(initial=-1), lo_.max(initial=-1)) + 1)
    t = np.zeros(len(w), dtype=bool) if ties is None else np.asarray(ties, dtype=bool)
    won = np.bincount(w, np.where(t, 0.5, 1.0), minlength=n) + np.bincount(lo_, np.where(t, 0.5, 0.0), minlength=n)
    games = np.bincount(w, minlength=n) + np.bincount(lo_, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(games > 0, won / np.maximum(games, 1), np.nan)


class LooAgreement(NamedTuple):
    coder_ids: np.ndarray
    agreement: np.ndarray  # share of the coder's answers equal to the others' majority (NaN if none)
    n: np.ndarray  # units counted for each coder


def leave_one_out_agreement(units: Any, coders: Any, values: Any) -> LooAgreement:
    """Per coder: agreement with the majority answer of the *other* coders on the same unit.

    A unit counts for coder j when at least one other coder answered it and the others'
    majority is unique (no tie at the top)."""
    M, uid, cid, _ = reliability_matrix(units, coders, values)
    present = ~np.isnan(M)
    K = int(np.nanmax(M)) + 1 if present.any() else 0
    counts = np.zeros((K, M.shape[1]))
    for k in range(K):
        counts[k] = (M == k).sum(0)
    agree = np.zeros(len(cid))
    n = np.zeros(len(cid), dtype=np.int64)
    for j in range(len(cid)):
        mine = present[j]
        others = counts.copy()
        vj = np.where(mine, M[j], 0).astype(int)
        others[vj[mine], np.flatnonzero(mine)] -= 1
        tot = others.sum(0)
        srt = np.sort(others, axis=0)
        unique_top = (srt[-1] > srt[-2]) if K > 1 else (srt[-1] > 0)
        ok = mine & (tot > 0) & unique_top
        maj = others.argmax(0)
        n[j] = int(ok.sum())
        agree[j] = float((maj[ok] == vj[ok]).mean()) if n[j] else float("nan")
    return LooAgreement(coder_ids=cid, agreement=agree, n=n)


class PositionBias(NamedTuple):
    coder_ids: np.ndarray
    share_first_shown: np.ndarray  # share of decisive answers choosing the side shown first (A)
    n: np.ndarray
    p_value: np.ndarray  # two-sided binomial test against 1/2


def position_bias(chose_first_shown: Any, coders: Any = None) -> PositionBias:
    """How often each coder's decisive answer follows the side presented first.

    ``chose_first_shown``: bool per decisive vote (ties / skips left out by the caller),
    True when the chosen item was the one shown first (side A).  An unbiased coder on
    randomly ordered pairs is near 0.5; the p-value is a two-sided exact binomial test.
    """
    from scipy.stats import binomtest

    x = np.asarray(chose_first_shown, dtype=bool)
    c = np.zeros(len(x), dtype=np.int64) if coders is None else np.asarray(coders)
    cid, ci = np.unique(c, return_inverse=True)
    ci = ci.ravel()
    k = np.bincount(ci, x.astype(float), minlength=len(cid)).astype(np.int64)
    n = np.bincount(ci, minlength=len(cid)).astype(np.int64)
    share = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    p = np.array([binomtest(int(kk), int(nn), 0.5).pvalue if nn else np.nan for kk, nn in zip(k, n, strict=False)])
    return PositionBias(coder_ids=cid, share_first_shown=share, n=n, p_value=p)
