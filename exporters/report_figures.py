"""The report's plots, each a base64 PNG (self-contained HTML: nothing to fetch)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fig_score_distribution(r: dict, plt: Any) -> str:
    """Score distribution + label probabilities."""
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    if r["_scores"]:
        ax[0].hist(r["_scores"], bins=30, color="#4c72b0")
    ax[0].set_title("pair scores s({a, x})")
    ax[0].set_xlabel("score (logit scale)")
    ax[0].set_ylabel("pairs")
    if r["_probs"]:
        st = np.asarray(r["_statuses"])
        pr = np.asarray(r["_probs"])
        for name, col in (
            ("gold", "#55a868"),
            ("uncertain", "#dd8452"),
            ("contested", "#c44e52"),
            ("derived", "#8172b3"),
        ):
            sel = st == name
            if sel.any():
                ax[1].hist(
                    pr[sel], bins=np.linspace(0.5, 1, 21), alpha=0.75, label=f"{name} ({int(sel.sum())})", color=col
                )
        ax[1].axvline(r["params"].get("tau", 0.9), color="k", ls="--", lw=1)
        ax[1].legend(fontsize=8)
    ax[1].set_title("P(label) per triplet")
    ax[1].set_xlabel("probability")
    return _png(fig)


def _fig_annotator_reliability(r: dict, plt: Any) -> str:
    """Annotator reliability."""
    anns = r["annotators"]
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.35 * len(anns) + 1)))
    if anns:
        names = [a["name"] + (" (!)" if a["flagged"] else "") for a in anns]
        y = np.arange(len(anns))
        cols = ["#c44e52" if a["flagged"] else ("#8172b3" if a["kind"] == "llm" else "#4c72b0") for a in anns]
        ax.barh(y, [a["beta"] for a in anns], color=cols)
        for yi, a in zip(y, anns, strict=False):
            txt = f" LOO {a['loo_agreement']:.2f}" if a["loo_agreement"] is not None else ""
            ax.text(a["beta"], yi, txt, va="center", fontsize=8)
        ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("discrimination beta (blue human, purple LM judge, red failed attention checks)")
    ax.set_title("annotator reliability")
    return _png(fig)


def _fig_agreement_matrix(r: dict, plt: Any) -> str:
    """Agreement matrix."""
    am = r["agreement_matrix"]
    n = len(am["annotators"])
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * n + 2), max(3.5, 0.5 * n + 1.5)))
    if n:
        M = np.array([[np.nan if x is None else x for x in row] for row in am["matrix"]], dtype=float)
        im = ax.imshow(M, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(n), am["annotators"], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), am["annotators"], fontsize=8)
        for i in range(n):
            for j in range(n):
                if not np.isnan(M[i, j]) and i != j:
                    ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("pairwise agreement on shared triplets")
    return _png(fig)


def _fig_judge_reliability(r: dict, plt: Any) -> str:
    """LM-judge reliability diagram."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0.5, 1], [0.5, 1], "k--", lw=1, label="perfect calibration")
    for j in r["judge_calibration"]:
        xs = [b["mean_confidence"] for b in j["bins"]]
        ys = [b["accuracy"] for b in j["bins"]]
        ax.plot(xs, ys, "o-", label=f"{j['judge']} (ECE {j['ece']:.2f}, n={j['n']})")
    if not r["judge_calibration"]:
        ax.text(
            0.75, 0.5, "no LM-judge votes with a stated\nconfidence on human-answered triplets", ha="center", fontsize=9
        )
    ax.set_xlim(0.45, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("stated confidence")
    ax.set_ylabel("agreement with the human answer")
    ax.set_title("LM-judge reliability diagram")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def _fig_votes_over_time(r: dict, plt: Any) -> str:
    """Votes over time."""
    fig, ax = plt.subplots(figsize=(9, 3))
    times = r["_times"]
    if times:
        for kind in sorted({k for _, k in times}):
            ts = [t for t, k in times if k == kind]
            ax.step(ts, np.arange(1, len(ts) + 1), where="post", label=f"{kind} ({len(ts)})")
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.set_ylabel("cumulative active votes")
    ax.set_title("votes over time")
    return _png(fig)


def _fig_position_bias(r: dict, plt: Any) -> str:
    """Position bias."""
    anns = r["annotators"]
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.35 * len(anns) + 1)))
    pb = [a for a in anns if a["position_bias"] is not None]
    if pb:
        y = np.arange(len(pb))
        ax.barh(y, [a["position_bias"] for a in pb], color=["#8172b3" if a["kind"] == "llm" else "#4c72b0" for a in pb])
        ax.axvline(0.5, color="k", ls="--", lw=1)
        ax.set_yticks(y, [a["name"] for a in pb], fontsize=8)
        ax.set_xlim(0, 1)
    ax.set_xlabel("share of decisive votes for the candidate shown first (0.5 = no bias)")
    ax.set_title("position bias per annotator")
    return _png(fig)


def _reliability_figure(r: dict) -> str:
    """Reliability diagram of the held-out vote predictions (predicted P(first) against the observed share)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    bins = ((r.get("calibration") or {}).get("votes") or {}).get("bins") or []
    ax.plot([0, 1], [0, 1], color="k", ls="--", lw=1)
    if bins:
        n = np.array([b["n"] for b in bins], dtype=float)
        ax.scatter([b["mean_p"] for b in bins], [b["freq"] for b in bins], s=20 + 200 * n / n.max(), color="#4c72b0")
        ax.plot([b["mean_p"] for b in bins], [b["freq"] for b in bins], color="#4c72b0", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(vote = first), vote held out")
    ax.set_ylabel("observed share of first")
    ax.set_title("reliability (cross-validated)")
    return _png(fig)


def figures(r: dict) -> dict[str, str]:
    """Every plot of the report, by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {
        "score_distribution": _fig_score_distribution(r, plt),
        "annotator_reliability": _fig_annotator_reliability(r, plt),
        "agreement_matrix": _fig_agreement_matrix(r, plt),
        "judge_reliability": _fig_judge_reliability(r, plt),
        "votes_over_time": _fig_votes_over_time(r, plt),
        "position_bias": _fig_position_bias(r, plt),
    }
    figs["reliability"] = _reliability_figure(r)
    return figs
