"""The views page: one self-contained HTML file (data, script and style inlined) and the JSON beside it.

Tables (silhouettes, clusters, method agreement) are rendered here with every string
escaped; the maps and self-organising maps are drawn by the inlined script from the
JSON data block (``<`` escaped, so document text cannot close the script element).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from condsim_annot.views.page_assets import CSS, JS


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _shade(v: float | None) -> str:
    if v is None:
        return ""
    a = max(0.0, min(1.0, v))
    return f" style='background:rgba(78,121,167,{a * 0.75:.2f});color:{'#fff' if a > 0.6 else '#111'}'"


def _silhouettes(data: dict) -> str:
    rows = data["silhouettes"]
    if not rows:
        return (
            "<p class='muted'>No categorical metadata field (2 to 50 values) to measure a silhouette for; "
            "pass <code>--color-by FIELD</code>.</p>"
        )
    out = [
        "<table><tr><th>field</th><th>criterion</th><th>space</th><th>groups</th><th>silhouette in the space</th>"
        "<th>silhouette in the 2-D map</th></tr>"
    ]
    for r in rows:
        out.append(
            f"<tr><td>{_e(r['field'])}</td><td>{_e(r['criterion'])}</td><td>{_e(r['space'])}</td>"
            f"<td class='num'>{r['groups']}</td><td class='num'>{_num(r['silhouette_space'])}</td>"
            f"<td class='num'>{_num(r['silhouette_map'])}</td></tr>"
        )
    return "".join(out) + "</table>"


def _clusters(data: dict) -> str:
    out = []
    for crit in data["criteria"]:
        c = data["maps"][crit]["clusters"]
        out.append(
            f"<h3>{_e(crit)}: k = {c['k']} (silhouette {_num(c['silhouette'])})</h3><table><tr><th>cluster</th>"
            "<th>size</th><th>distinctive terms (c-TF-IDF)</th><th>LLM label</th><th>example</th></tr>"
        )
        for lab, nm in c["names"].items():
            ex = data["docs"][nm["examples"][0]]["text"][:120] if nm["examples"] else ""
            out.append(
                f"<tr><td>{_e(lab)}</td><td class='num'>{nm['size']}</td><td>{_e(', '.join(nm['terms']))}</td>"
                f"<td>{_e(nm['llm'] or '–')}</td><td>{_e(ex)}</td></tr>"
            )
        out.append("</table>")
    return "".join(out)


def _matrix(names: list[str], M: list[list[float | None]]) -> str:
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    body = "".join(
        f"<tr><th>{_e(a)}</th>" + "".join(f"<td class='num'{_shade(v)}>{_num(v, 2)}</td>" for v in row) + "</tr>"
        for a, row in zip(names, M, strict=False)
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _agreement(data: dict) -> str:
    a = data["agreement"]
    out = [
        f"<p>Computed on <b>{_e(a['sample']['described'])}</b>: whole similarity kernels, "
        "not proposer-selected pairs.</p>",
        "<div class='row'><div><h3>Linear CKA of the similarity kernels</h3>",
        _matrix(a["methods"], a["cka"]),
        f"</div><div><h3>k-NN Jaccard@{a['k']}</h3>",
        _matrix(a["methods"], a["jaccard"]),
        "</div></div>",
    ]
    if a["linear_maps"]:
        out.append(
            "<h3>Linear map between embedding spaces (ridge, held-out documents)</h3><table><tr><th>from</th>"
            "<th>to</th><th>held-out R²</th><th>k-NN Jaccard after translation</th><th>without translation</th>"
            "<th>train / test</th></tr>"
        )
        for m in a["linear_maps"]:
            out.append(
                f"<tr><td>{_e(m['from'])}</td><td>{_e(m['to'])}</td><td class='num'>{_num(m['r2_heldout'])}</td>"
                f"<td class='num'>{_num(m['knn_overlap'])}</td><td class='num'>{_num(m['knn_overlap_untranslated'])}"
                f"</td><td class='num'>{m['n_train']} / {m['n_test']}</td></tr>"
            )
        out.append("</table>")
    return "".join(out)


def _votes(data: dict) -> str:
    out = ["<ul>"]
    for crit in data["criteria"]:
        v = data["maps"][crit]["votes"]
        if "heldout_accuracy" in v:
            h = v["heldout_accuracy"]
            out.append(
                f"<li><b>{_e(crit)}</b>: t-STE on {v['used']} votes ({v['outside_sample']} outside the sample, "
                f"{v['ties_or_skips']} ties/skips); held-out triplet accuracy (n={h['n']}): method space "
                f"{_num(h['method_space'])}, method map {_num(h['method_map'])}, votes map {_num(h['votes_map'])}</li>"
            )
        else:
            out.append(f"<li><b>{_e(crit)}</b>: {_e(v.get('note', 'no votes map'))}</li>")
    return "".join(out) + "</ul>"


def _controls(data: dict, k: int) -> str:
    opts = "".join(f"<option value='{_e(c)}'>{_e(c)}</option>" for c in data["criteria"])
    return (
        f"<div class='panel'><select id='crit-{k}' aria-label='criterion'>{opts}</select>"
        f"<select id='space-{k}' aria-label='space'></select><canvas id='map-{k}'></canvas>"
        f"<div class='legend' id='legend-{k}'></div></div>"
    )


def render_page(data: dict) -> str:
    """The whole page as one string."""
    colour = f"<option value='field'>metadata: {_e(data['color_by'])}</option>" if data["color_by"] else ""
    colour += "<option value='clusters'>clusters (of each map's criterion)</option>"
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    crits = ", ".join(data["criteria"])
    soms = "".join(
        f"<div><h3>{_e(c)}</h3><div class='som' id='som-{k}'></div></div>" for k, c in enumerate(data["criteria"])
    )
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>condsim-annot views: {_e(crits)}</title><style>{CSS}</style></head><body>",
            f"<h1>Views of the corpus under {_e(crits)}</h1>",
            f"<p class='muted'>{_e(data['sample']['described'])}; projection {_e(data['projection'])}. "
            "Hover a point for its text, click it for its nearest neighbours under each criterion, "
            "drag a rectangle to select documents in one map "
            "and see them in the other (Esc clears).</p>",
            f"<p>Colour: <select id='colour'>{colour}</select> <span id='selection' class='muted'></span></p>",
            f"<div class='row'>{_controls(data, 0)}{_controls(data, 1)}<div class='panel' id='neighbours'>"
            "<p class='muted'>Click a point to list its nearest neighbours.</p></div></div>",
            "<h2>Votes</h2>",
            _votes(data),
            "<h2>Self-organising maps</h2><p class='muted'>Each cell shows its most typical document "
            "and how many documents "
            "it holds; hovering a cell selects its documents in the maps above.</p>",
            f"<div class='row'>{soms}</div>",
            "<h2>Clusters</h2>",
            _clusters(data),
            "<h2>Which criterion separates which field (silhouette)</h2>",
            _silhouettes(data),
            "<h2>Method agreement</h2>",
            _agreement(data),
            "<div id='tooltip'></div>",
            f"<script id='views-data' type='application/json'>{payload}</script><script>{JS}</script></body></html>",
        ]
    )


def write_page(data: dict, html_path: str, json_path: str | None = None) -> tuple[str, str | None]:
    """Write the page (and the JSON beside it when ``json_path``)."""
    Path(html_path).write_text(render_page(data), encoding="utf-8")
    if json_path:
        Path(json_path).write_text(
            json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8"
        )
    return html_path, json_path
