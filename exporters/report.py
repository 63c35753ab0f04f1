"""The agreement report of a criterion's latest calibration run: HTML (one self-contained
file, plots inlined as base64 PNG), JSON (stable keys) and Markdown.

:func:`report_data` computes everything (pure data, stable keys); :func:`.report_html.render_html`
(plots from :mod:`.report_figures`) and :func:`render_md` format it; :func:`write_report` is what
``condsim-annot report`` calls.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .report_figures import figures
from .report_html import _f, render_html

REPORT_VERSION = 1


def _data_version(view) -> dict:
    h = hashlib.sha256()
    for v in sorted(view.votes, key=lambda v: v["id"]):
        h.update(f"{v['id']}:{v['choice']}:{v['annotator']};".encode())
    last = max((v["created_at"] for v in view.votes if v["created_at"] is not None), default=None)
    return {
        "active_votes": len(view.votes),
        "max_vote_id": max((v["id"] for v in view.votes), default=None),
        "last_vote_at": last.isoformat() if last else None,
        "votes_sha256": h.hexdigest()[:16],
        "criterion_version": view.criterion.version,
        "calibration_run": view.run.id,
        "calibrated_at": view.run.created_at.isoformat() if view.run.created_at else None,
    }


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
    return {
        "annotators": names,
        "matrix": [[None if np.isnan(x) else float(x) for x in row] for row in m],
        "n_shared": count.astype(int).tolist(),
    }


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
                bins.append(
                    {
                        "lo": float(edges[k]),
                        "hi": float(edges[k + 1]),
                        "n": int(sel.sum()),
                        "mean_confidence": float(conf[sel].mean()),
                        "accuracy": float(c[sel, 1].mean()),
                    }
                )
        ece = sum(b["n"] * abs(b["mean_confidence"] - b["accuracy"]) for b in bins) / max(len(c), 1)
        out.append(
            {
                "judge": judge,
                "reference": reference,
                "n": len(c),
                "accuracy": float(c[:, 1].mean()),
                "mean_confidence": float(conf.mean()),
                "ece": float(ece),
                "bins": bins,
            }
        )
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


def report_data(store, criterion: str, *, command: str | None = None, run_id: int | None = None) -> dict[str, Any]:
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
        ill.append(
            {
                "triplet_id": r["triplet_id"],
                "cant_tell": r["cant_tell"],
                "votes": r["votes"],
                "anchor": doc(r.get("anchor_id")),
                "first": doc(r.get("first_id")),
                "second": doc(r.get("second_id")),
            }
        )
    scores = [p["score"] for p in view.pairs]
    probs = [g["probability"] for g in view.gold]
    return {
        "report_version": REPORT_VERSION,
        "criterion": {
            "name": view.criterion.name,
            "description": view.criterion.description,
            "version": view.criterion.version,
        },
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
        "score_distribution": {
            "n": len(scores),
            "quantiles": [float(q) for q in np.quantile(scores, [0, 0.1, 0.5, 0.9, 1])] if scores else [],
            "label_probability_quantiles": [float(q) for q in np.quantile(probs, [0, 0.1, 0.5, 0.9, 1])]
            if probs
            else [],
        },
        "_times": sorted((v["created_at"], v["kind"]) for v in view.votes if v["created_at"] is not None),
        "_scores": scores,
        "_probs": probs,
        "_statuses": [g["status"] for g in view.gold],
    }


# --------------------------------------------------------------------------- plots


def _calibration_md(r: dict) -> list[str]:
    cal, m = r.get("calibration") or {}, r.get("model") or {}
    v, ga = cal.get("votes") or {}, cal.get("gold_accuracy") or {}
    lines = ["", "## Calibration (measured)", "", f"- model: {m.get('name')}"]
    if v.get("ece") is not None:
        lines.append(f"- held-out votes: ECE {_f(v['ece'])}, Brier {_f(v['brier'])} over {v['n']} votes")
    if ga.get("expected") is not None:
        lines.append(f"- gold labels' expected accuracy {_f(ga['expected'])}")
    if ga.get("reference_n"):
        lines.append(
            f"- gold vs reference answers: {ga['reference_correct']}/{ga['reference_n']}, "
            f"95% lower bound {_f(ga['lower_95'])} ({ga['reference']})"
        )
    for w in m.get("feature_weights") or []:
        lines.append(f"- method {w['method']}: weight {_f(w['w'])} (sd {_f(w['sd'])})")
    return lines


# --------------------------------------------------------------------------- renderers


def render_md(r: dict) -> str:
    c, g, nv = r["criterion"], r["gold"], r["n_votes"]
    lines = [
        f"# Calibration report: `{c['name']}` (v{c['version']})",
        "",
        c["description"],
        "",
        f"- command: `{r['command'] or '(library call)'}`; "
        f"calibration: `{r['calibration_command'] or '(library call)'}`",
        f"- data version: {r['data_version']['active_votes']} active votes, "
        f"votes sha256 `{r['data_version']['votes_sha256']}`, run {r['data_version']['calibration_run']}",
        f"- labels: **{g.get('gold', 0)} gold**, {g.get('uncertain', 0)} uncertain, "
        f"{g.get('contested', 0)} contested, {g.get('derived', 0)} derived",
        f"- votes: {nv.get('fitted')} fitted, {nv.get('cant_tell')} can't tell, {nv.get('skip')} skipped; "
        f"tie parameter {_f(r['tie_parameter'])}",
        "",
        "## Agreement",
        "",
        "| annotators | alpha | 95% CI | triplets |",
        "|---|---|---|---|",
    ]
    for k, a in r["alpha"].items():
        ci = f"[{_f(a['ci'][0])}, {_f(a['ci'][1])}]" if a.get("ci") and a["ci"][0] is not None else "–"
        lines.append(f"| {k} | {_f(a.get('value'))} | {ci} | {a.get('n_units', 0)} |")
    lines += [
        "",
        "## Annotators",
        "",
        "| annotator | kind | beta | votes | LOO agreement | attention | position bias |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in r["annotators"]:
        att = f"{a['attention_accuracy']:.2f} ({a['attention_n']})" if a["attention_n"] else "–"
        lines.append(
            f"| {a['name']}{' ⚠' if a['flagged'] else ''} | {a['kind']} | {_f(a['beta'], 2)} | {a['n_votes']} | "
            f"{_f(a['loo_agreement'], 2)} | {att} | {_f(a['position_bias'], 2)} |"
        )
    lines += _calibration_md(r)
    if r["attention"].get("key_suspect"):
        lines += ["", "Most annotators fail the attention checks: the checks are suspect and were left out of the fit."]
    elif r["attention"].get("failed"):
        lines += [
            "",
            "Failed attention checks (down-weighted through beta): "
            + ", ".join(f["name"] for f in r["attention"]["failed"]),
        ]
    if r["ill_defined"]:
        lines += ["", f"## Ill-defined triplets ({len(r['ill_defined'])})", ""]
        lines += [
            f"- triplet {t['triplet_id']}: {t['cant_tell']}/{t['votes']} can't tell (anchor {t['anchor']['id']})"
            for t in r["ill_defined"][:50]
        ]
    return "\n".join(lines) + "\n"


def public(r: dict) -> dict:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def write_report(
    store,
    criterion: str,
    *,
    html: str | None = None,
    json_path: str | None = None,
    md: str | None = None,
    command: str | None = None,
) -> list[str]:
    r = report_data(store, criterion, command=command)
    written = []
    if html:
        Path(html).write_text(render_html(r, figures(r)), encoding="utf-8")
        written.append(str(html))
    if json_path:
        Path(json_path).write_text(
            json.dumps(public(r), indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
        )
        written.append(str(json_path))
    if md:
        Path(md).write_text(render_md(r), encoding="utf-8")
        written.append(str(md))
    return written
