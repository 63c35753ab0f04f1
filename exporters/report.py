"""The agreement report of a criterion's latest calibration run: HTML (one self-contained
file, plots inlined as base64 PNG), JSON (stable keys) and Markdown.

:func:`report_data` computes everything (pure data, stable keys); :func:`render_html`,
:func:`render_md` format it; :func:`write_report` is what ``condsim-annot report`` calls.
"""

from __future__ import annotations

import base64
import hashlib
import html as _html
import io
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPORT_VERSION = 1
CRITERION_CANT_TELL_WARN = 0.2  # a criterion with this share of "can't tell" answers is flagged


def _data_version(view) -> dict:
    h = hashlib.sha256()
    for v in sorted(view.votes, key=lambda v: v["id"]):
        h.update(f"{v['id']}:{v['choice']}:{v['annotator']};".encode())
    last = max((v["created_at"] for v in view.votes if v["created_at"] is not None), default=None)
    return {"active_votes": len(view.votes), "max_vote_id": max((v["id"] for v in view.votes), default=None),
            "last_vote_at": last.isoformat() if last else None, "votes_sha256": h.hexdigest()[:16],
            "criterion_version": view.criterion.version, "calibration_run": view.run.id,
            "calibrated_at": view.run.created_at.isoformat() if view.run.created_at else None}


def _agreement_matrix(view) -> dict:
    by_trip: dict[int, dict[str, str]] = defaultdict(dict)
    for v in view.votes:
        if v["choice"] in ("first", "second", "tie"):
            by_trip[v["triplet_id"]][v["annotator"]] = v["choice"]
    names = sorted({v["annotator"] for v in view.votes})
    idx = {n: i for i, n in enumerate(names)}
    agree = np.zeros((len(names), len(names)))
    count = np.zeros((len(names), len(names)))
    for votes in by_trip.values():
        items = list(votes.items())
        for i in range(len(items)):
            for j in range(len(items)):
                a, b = idx[items[i][0]], idx[items[j][0]]
                count[a, b] += 1
                agree[a, b] += items[i][1] == items[j][1]
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(count > 0, agree / np.maximum(count, 1), np.nan)
    return {"annotators": names, "matrix": [[None if np.isnan(x) else float(x) for x in row] for row in m],
            "n_shared": count.astype(int).tolist()}


def _judge_calibration(view, n_bins: int = 5) -> list[dict]:
    from .common import human_answers

    gold = human_answers(view)
    reference = "human"
    if not gold:  # an LM-only project: the model's gold is all there is
        gold = {g["triplet_id"]: g["label"] for g in view.gold if g["status"] == "gold"}
        reference = "gold"
    per: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for v in view.votes:
        if v["kind"] != "llm" or v["confidence"] is None or v["triplet_id"] not in gold or v["choice"] == "skip":
            continue
        per[v["annotator"]].append((float(v["confidence"]), float(v["choice"] == gold[v["triplet_id"]])))
    out = []
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    for judge, pts in sorted(per.items()):
        c = np.asarray(pts)
        conf = np.clip(c[:, 0], 0.5, 1.0)  # a label's stated probability is >= 0.5 by construction
        bins = []
        for k in range(n_bins):
            sel = (conf >= edges[k]) & ((conf < edges[k + 1]) if k < n_bins - 1 else (conf <= edges[k + 1]))
            if sel.any():
                bins.append({"lo": float(edges[k]), "hi": float(edges[k + 1]), "n": int(sel.sum()),
                             "mean_confidence": float(conf[sel].mean()), "accuracy": float(c[sel, 1].mean())})
        ece = sum(b["n"] * abs(b["mean_confidence"] - b["accuracy"]) for b in bins) / max(len(c), 1)
        out.append({"judge": judge, "reference": reference, "n": len(c), "accuracy": float(c[:, 1].mean()), "mean_confidence": float(conf.mean()),
                    "ece": float(ece), "bins": bins})
    return out


def _votes_over_time(view) -> list[dict]:
    days: Counter = Counter()
    for v in view.votes:
        if v["created_at"] is not None:
            days[(v["created_at"].date().isoformat(), v["kind"])] += 1
    return [{"date": d, "kind": k, "n": n} for (d, k), n in sorted(days.items())]


def _leaderboard(store, criterion: str, *, run_id: int) -> dict:
    from .leaderboard import leaderboard

    lb = leaderboard(store, criterion, bootstrap=500, run_id=run_id)
    return {"methods": lb["methods"], "judges": lb["judges"]}


def report_data(store, criterion: str, *, command: Optional[str] = None, run_id: Optional[int] = None) -> dict[str, Any]:
    """Everything in the report, as plain data with stable keys."""
    from condsim_annot.calibrate.pipeline import load_run
    from condsim_annot.db import redact

    view = load_run(store, criterion, run_id=run_id)
    s = view.summary
    d = view.docs

    def doc(i):
        x = d.get(i)
        return {"id": x.ext_id if x else str(i), "text": (x.text[:300] if x else "")}

    ill = []
    for r in s.get("ill_defined", []):
        ill.append({"triplet_id": r["triplet_id"], "cant_tell": r["cant_tell"], "votes": r["votes"],
                    "anchor": doc(r.get("anchor_id")), "first": doc(r.get("first_id")), "second": doc(r.get("second_id"))})
    scores = [p["score"] for p in view.pairs]
    probs = [g["probability"] for g in view.gold]
    return {
        "report_version": REPORT_VERSION,
        "criterion": {"name": view.criterion.name, "description": view.criterion.description, "version": view.criterion.version},
        "store": redact(store.url),
        "command": command,
        "calibration_command": s.get("command"),
        "data_version": _data_version(view),
        "params": s.get("params", {}),
        "n_votes": s.get("n_votes", {}),
        "n_items": s.get("n_items"),
        "components": s.get("components", {}),
        "tie_parameter": s.get("tie_parameter"),
        "model": s.get("model") or {"name": "legacy"},
        "calibration": s.get("calibration") or {},
        "gold": s.get("gold", {}),
        "alpha": s.get("alpha", {}),
        "kappa": s.get("kappa", []),
        "annotators": s.get("annotators", []),
        "attention": s.get("attention", {}),
        "cant_tell_rate": s.get("cant_tell_rate"),
        "ill_defined": ill,
        "agreement_matrix": _agreement_matrix(view),
        "judge_calibration": _judge_calibration(view),
        "votes_over_time": _votes_over_time(view),
        "leaderboard": _leaderboard(store, criterion, run_id=view.run.id),
        "score_distribution": {"n": len(scores), "quantiles": [float(q) for q in np.quantile(scores, [0, .1, .5, .9, 1])] if scores else [],
                               "label_probability_quantiles": [float(q) for q in np.quantile(probs, [0, .1, .5, .9, 1])] if probs else []},
        "_times": sorted((v["created_at"], v["kind"]) for v in view.votes if v["created_at"] is not None),
        "_scores": scores, "_probs": probs, "_statuses": [g["status"] for g in view.gold],
    }


# --------------------------------------------------------------------------- plots


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(r: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: dict[str, str] = {}
    # 1. score distribution + label probabilities
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    if r["_scores"]:
        ax[0].hist(r["_scores"], bins=30, color="#4c72b0")
    ax[0].set_title("pair scores s({a, x})"); ax[0].set_xlabel("score (logit scale)"); ax[0].set_ylabel("pairs")
    if r["_probs"]:
        st = np.asarray(r["_statuses"])
        pr = np.asarray(r["_probs"])
        for name, col in (("gold", "#55a868"), ("uncertain", "#dd8452"), ("contested", "#c44e52"), ("derived", "#8172b3")):
            sel = st == name
            if sel.any():
                ax[1].hist(pr[sel], bins=np.linspace(0.5, 1, 21), alpha=0.75, label=f"{name} ({int(sel.sum())})", color=col)
        ax[1].axvline(r["params"].get("tau", 0.9), color="k", ls="--", lw=1)
        ax[1].legend(fontsize=8)
    ax[1].set_title("P(label) per triplet"); ax[1].set_xlabel("probability")
    figs["score_distribution"] = _png(fig)
    anns = r["annotators"]
    # 2. annotator reliability
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.35 * len(anns) + 1)))
    if anns:
        names = [a["name"] + (" (!)" if a["flagged"] else "") for a in anns]
        y = np.arange(len(anns))
        cols = ["#c44e52" if a["flagged"] else ("#8172b3" if a["kind"] == "llm" else "#4c72b0") for a in anns]
        ax.barh(y, [a["beta"] for a in anns], color=cols)
        for yi, a in zip(y, anns):
            txt = f" LOO {a['loo_agreement']:.2f}" if a["loo_agreement"] is not None else ""
            ax.text(a["beta"], yi, txt, va="center", fontsize=8)
        ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("discrimination beta (blue human, purple LM judge, red failed attention checks)")
    ax.set_title("annotator reliability")
    figs["annotator_reliability"] = _png(fig)
    # 3. agreement matrix
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
    figs["agreement_matrix"] = _png(fig)
    # 4. LM-judge reliability diagram
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0.5, 1], [0.5, 1], "k--", lw=1, label="perfect calibration")
    for j in r["judge_calibration"]:
        xs = [b["mean_confidence"] for b in j["bins"]]
        ys = [b["accuracy"] for b in j["bins"]]
        ax.plot(xs, ys, "o-", label=f"{j['judge']} (ECE {j['ece']:.2f}, n={j['n']})")
    if not r["judge_calibration"]:
        ax.text(0.75, 0.5, "no LM-judge votes with a stated\nconfidence on human-answered triplets", ha="center", fontsize=9)
    ax.set_xlim(0.45, 1.02); ax.set_ylim(0, 1.02)
    ax.set_xlabel("stated confidence"); ax.set_ylabel("agreement with the human answer")
    ax.set_title("LM-judge reliability diagram"); ax.legend(fontsize=7, loc="lower right")
    figs["judge_reliability"] = _png(fig)
    # 5. votes over time
    fig, ax = plt.subplots(figsize=(9, 3))
    times = r["_times"]
    if times:
        for kind in sorted({k for _, k in times}):
            ts = [t for t, k in times if k == kind]
            ax.step(ts, np.arange(1, len(ts) + 1), where="post", label=f"{kind} ({len(ts)})")
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.set_ylabel("cumulative active votes"); ax.set_title("votes over time")
    figs["votes_over_time"] = _png(fig)
    # 6. position bias
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
    figs["position_bias"] = _png(fig)
    figs["reliability"] = _reliability_figure(r)
    return figs


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


def _calibration_html(r: dict, figs: dict[str, str]) -> str:
    """The measured calibration, the gold guarantee and the model's feature weights."""
    cal, m = r.get("calibration") or {}, r.get("model") or {}
    v, ga = cal.get("votes") or {}, cal.get("gold_accuracy") or {}
    rows = [["model", _html.escape(str(m.get("name"))) + (" (one global scale)" if m.get("global_scale") else "")]]
    if v.get("ece") is not None:
        rows.append(["held-out votes: ECE / Brier / votes", f"{_f(v['ece'])} / {_f(v['brier'])} / {v['n']}"])
    if ga.get("expected") is not None:
        rows.append(["gold labels' expected accuracy (mean calibrated probability)", _f(ga["expected"])])
    if ga.get("reference_n"):
        rows.append(["gold vs reference answers (Clopper-Pearson 95% lower bound)",
                     f"{ga['reference_correct']} of {ga['reference_n']} right, bound {_f(ga['lower_95'])} "
                     f"<span class='muted'>({_html.escape(ga['reference'])})</span>"])
    rows.append(["gold threshold", f"{_f(r['params'].get('tau'))}" + (
        f" (chosen for target accuracy {_f(r['params']['target_accuracy'])})" if r["params"].get("target_accuracy") else "")])
    out = "<h2>Calibration (measured)</h2>" + _table(None, rows)
    ws = m.get("feature_weights") or []
    if ws:
        out += ("<p>What each proposer method is worth under this criterion, learnt from the votes (weight of its "
                f"standardised score in the pair-score prior; prior sd τ = {_f(m.get('prior_scale'))}):</p>"
                + _table(["method", "weight", "sd"], [[_html.escape(w["method"]), _f(w["w"]), _f(w["sd"])] for w in ws]))
    return out + f"<img alt='reliability diagram' src='{figs['reliability']}'>"


def _calibration_md(r: dict) -> list[str]:
    cal, m = r.get("calibration") or {}, r.get("model") or {}
    v, ga = cal.get("votes") or {}, cal.get("gold_accuracy") or {}
    lines = ["", "## Calibration (measured)", "", f"- model: {m.get('name')}"]
    if v.get("ece") is not None:
        lines.append(f"- held-out votes: ECE {_f(v['ece'])}, Brier {_f(v['brier'])} over {v['n']} votes")
    if ga.get("expected") is not None:
        lines.append(f"- gold labels' expected accuracy {_f(ga['expected'])}")
    if ga.get("reference_n"):
        lines.append(f"- gold vs reference answers: {ga['reference_correct']}/{ga['reference_n']}, "
                     f"95% lower bound {_f(ga['lower_95'])} ({ga['reference']})")
    for w in m.get("feature_weights") or []:
        lines.append(f"- method {w['method']}: weight {_f(w['w'])} (sd {_f(w['sd'])})")
    return lines


# --------------------------------------------------------------------------- renderers

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}table{border-collapse:collapse;font-size:.9em;margin:.6em 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f5f5f5}code,pre{background:#f5f5f5;padding:2px 4px}
img{max-width:100%}.flag{color:#c44e52;font-weight:bold}.muted{color:#777}.grid{display:flex;flex-wrap:wrap;gap:12px}"""


def _f(x, nd=3):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return _html.escape(str(x))


def _table(headers: Optional[list[str]], rows: list[list[Any]]) -> str:
    head = ("<thead><tr>" + "".join(f"<th>{_html.escape(c)}</th>" for c in headers) + "</tr></thead>") if headers else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def render_html(r: dict, figs: dict[str, str]) -> str:
    e = _html.escape
    c = r["criterion"]
    nv = r["n_votes"]
    g = r["gold"]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>condsim-annot report: {e(c['name'])}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>Calibration report: <code>{e(c['name'])}</code> (v{c['version']})</h1><p>{e(c['description'])}</p>"]
    dv = r["data_version"]
    parts.append("<h2>Provenance</h2>" + _table(None, [
        ["report command", f"<code>{e(r['command'] or '(library call)')}</code>"],
        ["calibration command", f"<code>{e(r['calibration_command'] or '(library call)')}</code>"],
        ["calibration run", f"{dv['calibration_run']} at {e(str(dv['calibrated_at']))}"],
        ["data version", f"{dv['active_votes']} active votes, last vote id {dv['max_vote_id']} at {e(str(dv['last_vote_at']))}, votes sha256 <code>{dv['votes_sha256']}</code>"],
        ["store", f"<code>{e(r['store'])}</code>"],
        ["parameters", f"<code>{e(json.dumps(r['params'], sort_keys=True))}</code>"],
    ]))
    parts.append("<h2>Summary</h2>" + _table(["quantity", "value"], [
        ["votes (active / fitted / best-of-k choices / ties)", f"{nv.get('active')} / {nv.get('fitted')} / {nv.get('luce_choices')} / {nv.get('tie')}"],
        ["can't tell / skipped", f"{nv.get('cant_tell')} / {nv.get('skip')} (can't-tell rate {_f(r['cant_tell_rate'])})"],
        ["pair items / components", f"{r['n_items']} / {r['components'].get('count')} (largest {r['components'].get('largest')})"],
        ["tie parameter ν", _f(r["tie_parameter"])],
        ["labels", f"<b>{g.get('gold', 0)} gold</b>, {g.get('uncertain', 0)} uncertain, {g.get('contested', 0)} contested, {g.get('derived', 0)} derived"],
    ]))
    arows = []
    for k, a in r["alpha"].items():
        ci = f"[{_f(a['ci'][0])}, {_f(a['ci'][1])}]" if a.get("ci") and a["ci"][0] is not None else "–"
        arows.append([k, _f(a.get("value")), ci, a.get("n_units", 0), a.get("n_annotators", 0)])
    parts.append("<h2>Agreement</h2><p>Krippendorff's alpha (nominal, canonical first/second/tie; 95% bootstrap CI over triplets)</p>"
                 + _table(["annotators", "alpha", "95% CI", "triplets", "annotators"], arows))
    if r["kappa"]:
        parts.append("<p>Cohen's kappa: human consensus vs each LM judge</p>"
                     + _table(["judge", "kappa", "n"], [[e(k["judge"]), _f(k["kappa"]), k["n"]] for k in r["kappa"]]))
    parts.append(f"<img alt='agreement matrix' src='{figs['agreement_matrix']}'>")
    parts.append("<h2>Annotators</h2>")
    rows = []
    for a in r["annotators"]:
        att = f"{a['attention_accuracy']:.2f} ({a['attention_n']})" if a["attention_n"] else "–"
        name = f"<span class='flag'>{e(a['name'])} ⚠</span>" if a["flagged"] else e(a["name"])
        rows.append([name, a["kind"], _f(a["beta"], 2), a["n_votes"], a["n_cant_tell"], _f(a["loo_agreement"], 2),
                     _f(a["gold_agreement"], 2), att,
                     _f(a["position_bias"], 2) + (f" <span class='flag'>(p={a['position_bias_p']:.3f})</span>"
                                                  if (a.get("position_bias_p") is not None and a["position_bias_p"] < 0.01) else ""),
                     _f(a["median_latency_ms"], 0)])
    parts.append(_table(["annotator", "kind", "β", "votes", "can't tell", "LOO agreement", "gold agreement", "attention", "position bias", "median latency ms"], rows))
    failed = r["attention"].get("failed", [])
    if r["attention"].get("key_suspect"):
        parts.append("<p class='flag'>Most annotators fail the attention checks, so the checks' expected answers "
                     "are suspect (they come from the proposer methods' agreement): they were left out of the fit "
                     "and nobody is down-weighted for them.</p>")
    elif failed:
        parts.append("<p class='flag'>Failed attention checks (accuracy below "
                     f"{r['attention'].get('threshold')}): down-weighted through β</p>"
                     + _table(["annotator", "attention accuracy", "checks", "β", "β / median β"],
                              [[e(f["name"]), _f(f["attention_accuracy"], 2), f["attention_n"], _f(f["beta"], 2), _f(f["beta_vs_median"], 2)] for f in failed]))
    else:
        parts.append("<p class='muted'>No annotator failed the attention checks.</p>")
    parts.append(f"<img alt='annotator reliability' src='{figs['annotator_reliability']}'>")
    parts.append(f"<img alt='position bias' src='{figs['position_bias']}'>")
    parts.append(_calibration_html(r, figs))
    parts.append("<h2>Scores and labels</h2>" + f"<img alt='score distribution' src='{figs['score_distribution']}'>")
    parts.append("<h2>LM-judge calibration</h2><p>Stated confidence (label probability) against agreement with the "
                 "human answer (majority of human votes, adjudications decide; the model's gold only where no human voted "
                 "at all).</p>" + f"<img alt='LM-judge reliability diagram' src='{figs['judge_reliability']}'>")
    if r["judge_calibration"]:
        parts.append(_table(["judge", "n", "accuracy", "mean confidence", "ECE"],
                            [[e(j["judge"]), j["n"], _f(j["accuracy"]), _f(j["mean_confidence"]), _f(j["ece"])] for j in r["judge_calibration"]]))
    lb = r["leaderboard"]
    parts.append("<h2>Leaderboard on gold triplets</h2>")
    if lb["methods"] or lb["judges"]:
        def ci(x):
            return f"[{_f(x['ci'][0])}, {_f(x['ci'][1])}]" if x["ci"][0] is not None else "–"

        rows = [[e(m["method"]), "proposer method", _f(m["accuracy"]), ci(m), m["n"],
                 f"{_f(m['audit']['accuracy'])} (n={m['audit']['n']})"] for m in lb["methods"]]
        rows += [[e(j["annotator"]), "LM judge", _f(j["accuracy"]), ci(j), j["n"], "–"] for j in lb["judges"]]
        parts.append(_table(["who", "kind", "accuracy", "95% bootstrap CI", "gold triplets", "on the audit slice"], rows))
    else:
        parts.append("<p class='muted'>No proposer margins or LM-judge votes on gold triplets.</p>")
    parts.append("<h2>Votes over time</h2>" + f"<img alt='votes over time' src='{figs['votes_over_time']}'>")
    parts.append("<h2>Ill-defined triplets</h2>")
    if (r["cant_tell_rate"] or 0) >= CRITERION_CANT_TELL_WARN:
        parts.append(f"<p class='flag'>{r['cant_tell_rate']:.0%} of all answers under this criterion are \"can't tell\": "
                     "the criterion itself may be ill-defined; consider rewording it (criteria edit).</p>")
    if r["ill_defined"]:
        parts.append(f"<p>{len(r['ill_defined'])} triplet(s) where most annotators answered \"can't tell\": "
                     "reword the criterion or drop them.</p>" + _table(
            ["triplet", "can't tell / votes", "anchor", "first", "second"],
            [[t["triplet_id"], f"{t['cant_tell']} / {t['votes']}"] + [f"<b>{e(t[k]['id'])}</b>: {e(t[k]['text'][:160])}" for k in ("anchor", "first", "second")]
             for t in r["ill_defined"][:50]]))
    else:
        parts.append("<p class='muted'>None flagged.</p>")
    parts.append("<p class='muted'>Made by condsim-annot; this file is self-contained (no external resources).</p></body></html>")
    return "".join(parts)


def render_md(r: dict) -> str:
    c, g, nv = r["criterion"], r["gold"], r["n_votes"]
    lines = [f"# Calibration report: `{c['name']}` (v{c['version']})", "", c["description"], "",
             f"- command: `{r['command'] or '(library call)'}`; calibration: `{r['calibration_command'] or '(library call)'}`",
             f"- data version: {r['data_version']['active_votes']} active votes, votes sha256 `{r['data_version']['votes_sha256']}`, run {r['data_version']['calibration_run']}",
             f"- labels: **{g.get('gold', 0)} gold**, {g.get('uncertain', 0)} uncertain, {g.get('contested', 0)} contested, {g.get('derived', 0)} derived",
             f"- votes: {nv.get('fitted')} fitted, {nv.get('cant_tell')} can't tell, {nv.get('skip')} skipped; tie parameter {_f(r['tie_parameter'])}",
             "", "## Agreement", "", "| annotators | alpha | 95% CI | triplets |", "|---|---|---|---|"]
    for k, a in r["alpha"].items():
        ci = f"[{_f(a['ci'][0])}, {_f(a['ci'][1])}]" if a.get("ci") and a["ci"][0] is not None else "–"
        lines.append(f"| {k} | {_f(a.get('value'))} | {ci} | {a.get('n_units', 0)} |")
    lines += ["", "## Annotators", "", "| annotator | kind | beta | votes | LOO agreement | attention | position bias |", "|---|---|---|---|---|---|---|"]
    for a in r["annotators"]:
        att = f"{a['attention_accuracy']:.2f} ({a['attention_n']})" if a["attention_n"] else "–"
        lines.append(f"| {a['name']}{' ⚠' if a['flagged'] else ''} | {a['kind']} | {_f(a['beta'], 2)} | {a['n_votes']} | {_f(a['loo_agreement'], 2)} | {att} | {_f(a['position_bias'], 2)} |")
    lines += _calibration_md(r)
    if r["attention"].get("key_suspect"):
        lines += ["", "Most annotators fail the attention checks: the checks are suspect and were left out of the fit."]
    elif r["attention"].get("failed"):
        lines += ["", "Failed attention checks (down-weighted through beta): " + ", ".join(f["name"] for f in r["attention"]["failed"])]
    if r["ill_defined"]:
        lines += ["", f"## Ill-defined triplets ({len(r['ill_defined'])})", ""]
        lines += [f"- triplet {t['triplet_id']}: {t['cant_tell']}/{t['votes']} can't tell (anchor {t['anchor']['id']})" for t in r["ill_defined"][:50]]
    return "\n".join(lines) + "\n"


def public(r: dict) -> dict:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def write_report(store, criterion: str, *, html: Optional[str] = None, json_path: Optional[str] = None, md: Optional[str] = None,
                 command: Optional[str] = None) -> list[str]:
    r = report_data(store, criterion, command=command)
    written = []
    if html:
        Path(html).write_text(render_html(r, _figures(r)), encoding="utf-8")
        written.append(str(html))
    if json_path:
        Path(json_path).write_text(json.dumps(public(r), indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
        written.append(str(json_path))
    if md:
        Path(md).write_text(render_md(r), encoding="utf-8")
        written.append(str(md))
    return written
