"""The report as one self-contained HTML file (tables, and plots inlined as base64 PNG)."""

from __future__ import annotations

import html as _html
import json
from typing import Any

CRITERION_CANT_TELL_WARN = 0.2  # a criterion with this share of "can't tell" answers is flagged

CSS = (
    "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;"
    "margin:24px auto;padding:0 16px;color:#222}"
    "h1{font-size:1.6em}"
    "h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}"
    "table{border-collapse:collapse;font-size:.9em;margin:.6em 0}"
    "td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}"
    "th{background:#f5f5f5}"
    "code,pre{background:#f5f5f5;padding:2px 4px}"
    "img{max-width:100%}"
    ".flag{color:#c44e52;font-weight:bold}"
    ".muted{color:#777}"
    ".grid{display:flex;flex-wrap:wrap;gap:12px}"
)


def _f(x, nd=3):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return _html.escape(str(x))


def _table(headers: list[str] | None, rows: list[list[Any]]) -> str:
    head = (
        ("<thead><tr>" + "".join(f"<th>{_html.escape(c)}</th>" for c in headers) + "</tr></thead>") if headers else ""
    )
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


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
        rows.append(
            [
                "gold vs reference answers (Clopper-Pearson 95% lower bound)",
                f"{ga['reference_correct']} of {ga['reference_n']} right, bound {_f(ga['lower_95'])} "
                f"<span class='muted'>({_html.escape(ga['reference'])})</span>",
            ]
        )
    rows.append(
        [
            "gold threshold",
            f"{_f(r['params'].get('tau'))}"
            + (
                f" (chosen for target accuracy {_f(r['params']['target_accuracy'])})"
                if r["params"].get("target_accuracy")
                else ""
            ),
        ]
    )
    out = "<h2>Calibration (measured)</h2>" + _table(None, rows)
    ws = m.get("feature_weights") or []
    if ws:
        out += (
            "<p>What each proposer method is worth under this criterion, learnt from the votes (weight of its "
            f"standardised score in the pair-score prior; prior sd τ = {_f(m.get('prior_scale'))}):</p>"
            + _table(["method", "weight", "sd"], [[_html.escape(w["method"]), _f(w["w"]), _f(w["sd"])] for w in ws])
        )
    return out + f"<img alt='reliability diagram' src='{figs['reliability']}'>"


def _head_html(r: dict, figs: dict[str, str]) -> list[str]:
    """Title, provenance, summary and agreement."""
    e = _html.escape
    c = r["criterion"]
    nv = r["n_votes"]
    g = r["gold"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>condsim-annot report: {e(c['name'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Calibration report: <code>{e(c['name'])}</code> (v{c['version']})</h1><p>{e(c['description'])}</p>",
    ]
    dv = r["data_version"]
    parts.append(
        "<h2>Provenance</h2>"
        + _table(
            None,
            [
                ["report command", f"<code>{e(r['command'] or '(library call)')}</code>"],
                ["calibration command", f"<code>{e(r['calibration_command'] or '(library call)')}</code>"],
                ["calibration run", f"{dv['calibration_run']} at {e(str(dv['calibrated_at']))}"],
                [
                    "data version",
                    f"{dv['active_votes']} active votes, last vote id {dv['max_vote_id']} at "
                    f"{e(str(dv['last_vote_at']))}, votes sha256 <code>{dv['votes_sha256']}</code>",
                ],
                ["store", f"<code>{e(r['store'])}</code>"],
                ["parameters", f"<code>{e(json.dumps(r['params'], sort_keys=True))}</code>"],
            ],
        )
    )
    parts.append(
        "<h2>Summary</h2>"
        + _table(
            ["quantity", "value"],
            [
                [
                    "votes (active / fitted / best-of-k choices / ties)",
                    f"{nv.get('active')} / {nv.get('fitted')} / {nv.get('luce_choices')} / {nv.get('tie')}",
                ],
                [
                    "can't tell / skipped",
                    f"{nv.get('cant_tell')} / {nv.get('skip')} (can't-tell rate {_f(r['cant_tell_rate'])})",
                ],
                [
                    "pair items / components",
                    f"{r['n_items']} / {r['components'].get('count')} (largest {r['components'].get('largest')})",
                ],
                ["tie parameter ν", _f(r["tie_parameter"])],
                [
                    "labels",
                    f"<b>{g.get('gold', 0)} gold</b>, {g.get('uncertain', 0)} uncertain, "
                    f"{g.get('contested', 0)} contested, {g.get('derived', 0)} derived",
                ],
            ],
        )
    )
    arows = []
    for k, a in r["alpha"].items():
        ci = f"[{_f(a['ci'][0])}, {_f(a['ci'][1])}]" if a.get("ci") and a["ci"][0] is not None else "–"
        arows.append([k, _f(a.get("value")), ci, a.get("n_units", 0), a.get("n_annotators", 0)])
    parts.append(
        "<h2>Agreement</h2><p>Krippendorff's alpha (nominal, canonical first/second/tie; "
        "95% bootstrap CI over triplets)</p>"
        + _table(["annotators", "alpha", "95% CI", "triplets", "annotators"], arows)
    )
    if r["kappa"]:
        parts.append(
            "<p>Cohen's kappa: human consensus vs each LM judge</p>"
            + _table(["judge", "kappa", "n"], [[e(k["judge"]), _f(k["kappa"]), k["n"]] for k in r["kappa"]])
        )
    parts.append(f"<img alt='agreement matrix' src='{figs['agreement_matrix']}'>")
    return parts


def _annotators_html(r: dict, figs: dict[str, str]) -> list[str]:
    """Annotators: beta, agreement, attention checks, position bias."""
    e = _html.escape
    parts: list[str] = []
    parts.append("<h2>Annotators</h2>")
    rows = []
    for a in r["annotators"]:
        att = f"{a['attention_accuracy']:.2f} ({a['attention_n']})" if a["attention_n"] else "–"
        name = f"<span class='flag'>{e(a['name'])} ⚠</span>" if a["flagged"] else e(a["name"])
        rows.append(
            [
                name,
                a["kind"],
                _f(a["beta"], 2),
                a["n_votes"],
                a["n_cant_tell"],
                _f(a["loo_agreement"], 2),
                _f(a["gold_agreement"], 2),
                att,
                _f(a["position_bias"], 2)
                + (
                    f" <span class='flag'>(p={a['position_bias_p']:.3f})</span>"
                    if (a.get("position_bias_p") is not None and a["position_bias_p"] < 0.01)
                    else ""
                ),
                _f(a["median_latency_ms"], 0),
            ]
        )
    parts.append(
        _table(
            [
                "annotator",
                "kind",
                "β",
                "votes",
                "can't tell",
                "LOO agreement",
                "gold agreement",
                "attention",
                "position bias",
                "median latency ms",
            ],
            rows,
        )
    )
    failed = r["attention"].get("failed", [])
    if r["attention"].get("key_suspect"):
        parts.append(
            "<p class='flag'>Most annotators fail the attention checks, so the checks' expected answers "
            "are suspect (they come from the proposer methods' agreement): they were left out of the fit "
            "and nobody is down-weighted for them.</p>"
        )
    elif failed:
        parts.append(
            "<p class='flag'>Failed attention checks (accuracy below "
            f"{r['attention'].get('threshold')}): down-weighted through β</p>"
            + _table(
                ["annotator", "attention accuracy", "checks", "β", "β / median β"],
                [
                    [
                        e(f["name"]),
                        _f(f["attention_accuracy"], 2),
                        f["attention_n"],
                        _f(f["beta"], 2),
                        _f(f["beta_vs_median"], 2),
                    ]
                    for f in failed
                ],
            )
        )
    else:
        parts.append("<p class='muted'>No annotator failed the attention checks.</p>")
    parts.append(f"<img alt='annotator reliability' src='{figs['annotator_reliability']}'>")
    parts.append(f"<img alt='position bias' src='{figs['position_bias']}'>")
    return parts


def _tail_html(r: dict, figs: dict[str, str]) -> list[str]:
    """Calibration, scores, LM judges, leaderboard, votes over time, ill-defined triplets."""
    e = _html.escape
    parts: list[str] = []
    parts.append(_calibration_html(r, figs))
    parts.append("<h2>Scores and labels</h2>" + f"<img alt='score distribution' src='{figs['score_distribution']}'>")
    parts.append(
        "<h2>LM-judge calibration</h2><p>Stated confidence (label probability) against agreement with the "
        "human answer (majority of human votes, adjudications decide; the model's gold only where no human voted "
        "at all).</p>" + f"<img alt='LM-judge reliability diagram' src='{figs['judge_reliability']}'>"
    )
    if r["judge_calibration"]:
        parts.append(
            _table(
                ["judge", "n", "accuracy", "mean confidence", "ECE"],
                [
                    [e(j["judge"]), j["n"], _f(j["accuracy"]), _f(j["mean_confidence"]), _f(j["ece"])]
                    for j in r["judge_calibration"]
                ],
            )
        )
    lb = r["leaderboard"]
    parts.append("<h2>Leaderboard on gold triplets</h2>")
    if lb["methods"] or lb["judges"]:

        def ci(x):
            return f"[{_f(x['ci'][0])}, {_f(x['ci'][1])}]" if x["ci"][0] is not None else "–"

        rows = [
            [
                e(m["method"]),
                "proposer method",
                _f(m["accuracy"]),
                ci(m),
                m["n"],
                f"{_f(m['audit']['accuracy'])} (n={m['audit']['n']})",
            ]
            for m in lb["methods"]
        ]
        rows += [[e(j["annotator"]), "LM judge", _f(j["accuracy"]), ci(j), j["n"], "–"] for j in lb["judges"]]
        parts.append(
            _table(["who", "kind", "accuracy", "95% bootstrap CI", "gold triplets", "on the audit slice"], rows)
        )
    else:
        parts.append("<p class='muted'>No proposer margins or LM-judge votes on gold triplets.</p>")
    parts.append("<h2>Votes over time</h2>" + f"<img alt='votes over time' src='{figs['votes_over_time']}'>")
    parts.append("<h2>Ill-defined triplets</h2>")
    if (r["cant_tell_rate"] or 0) >= CRITERION_CANT_TELL_WARN:
        parts.append(
            f"<p class='flag'>{r['cant_tell_rate']:.0%} of all answers under this criterion are \"can't tell\": "
            "the criterion itself may be ill-defined; consider rewording it (criteria edit).</p>"
        )
    if r["ill_defined"]:
        parts.append(
            f'<p>{len(r["ill_defined"])} triplet(s) where most annotators answered "can\'t tell": '
            "reword the criterion or drop them.</p>"
            + _table(
                ["triplet", "can't tell / votes", "anchor", "first", "second"],
                [
                    [t["triplet_id"], f"{t['cant_tell']} / {t['votes']}"]
                    + [f"<b>{e(t[k]['id'])}</b>: {e(t[k]['text'][:160])}" for k in ("anchor", "first", "second")]
                    for t in r["ill_defined"][:50]
                ],
            )
        )
    else:
        parts.append("<p class='muted'>None flagged.</p>")
    parts.append(
        "<p class='muted'>Made by condsim-annot; this file is self-contained (no external resources).</p></body></html>"
    )
    return parts


def render_html(r: dict, figs: dict[str, str]) -> str:
    """The whole report (``figs``: :func:`.report_figures.figures`)."""
    return "".join(_head_html(r, figs) + _annotators_html(r, figs) + _tail_html(r, figs))
