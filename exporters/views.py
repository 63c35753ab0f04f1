"""Views of the corpus under criteria, and how much the proposer methods agree.

* :func:`criterion_map`: a 2-D map of the documents of one criterion: PCA of the
  criterion-conditioned embeddings when the proposers' cache holds them for every
  document (query-side embeddings with the criterion's instruction, default model),
  else classical MDS of the calibrated pair scores (distance = max score - score within
  an anchor's pairs, unknown pairs filled by shortest paths).  Coloured by a metadata
  field, or by k-means clusters (k chosen by silhouette); the silhouette score of that
  colouring in the map's own distances is reported.
* :func:`method_agreement`: per pair of methods, CKA of their similarity kernels and
  the mean Jaccard overlap of each anchor's top-10 candidates (top-min(10, n/2) of the
  n candidates the proposers scored for that anchor; anchors with fewer than 4 skipped).  The kernels are only
  observed on the pairs the proposers scored (``tripletmargin.score_first/second``), so
  CKA here is the alignment of the row-centred observed kernels (linear CKA restricted
  to observed entries).
* :func:`write_views`: one self-contained HTML file (criteria side by side) + JSON.
"""

from __future__ import annotations

import base64
import html as _html
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np

from condsim_annot.errors import CondsimError


def _embeddings(store, criterion, docs: list) -> Optional[np.ndarray]:
    """Criterion-conditioned embeddings from the proposers' cache, if all are there."""
    try:
        from condsim_annot.criteria import default_instruction
        from condsim_annot.propose.cache import EmbeddingCache, cache_root, model_key, query_key
        from condsim_annot.propose.embedding import default_model_path

        model = default_model_path()
        folder = cache_root(store.url) / "emb"
        if not (folder / f"{model_key(model)}.npy").exists():
            return None
        cache = EmbeddingCache(folder, model_key(model), model=model)
        prompt = default_instruction(criterion)
        keys = [query_key(prompt, d.content_hash) for d in docs]
        if cache.missing(keys):
            return None
        return np.asarray(cache.get(keys), dtype=float)
    except Exception:
        return None


def _classical_mds(D: np.ndarray, dim: int = 2) -> np.ndarray:
    n = len(D)
    J = np.eye(n) - np.ones((n, n)) / n
    B = -0.5 * J @ (D ** 2) @ J
    w, V = np.linalg.eigh(B)
    order = np.argsort(w)[::-1][:dim]
    return V[:, order] * np.sqrt(np.maximum(w[order], 0))


def _pair_distances(view, doc_ids: list[int]) -> np.ndarray:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path

    idx = {d: i for i, d in enumerate(doc_ids)}
    n = len(doc_ids)
    by_anchor: dict[int, list[dict]] = defaultdict(list)
    for p in view.pairs:
        by_anchor[p["anchor_id"]].append(p)
    W = np.zeros((n, n))
    for a, ps in by_anchor.items():
        top = max(p["score"] for p in ps)
        for p in ps:
            d = top - p["score"] + 0.1  # the anchor's most similar pair is close, not identical
            i, j = idx[p["anchor_id"]], idx[p["candidate_id"]]
            W[i, j] = W[j, i] = d if W[i, j] == 0 else min(W[i, j], d)
    D = shortest_path(csr_matrix(W), directed=False)
    finite = D[np.isfinite(D)]
    fill = (finite.max() if finite.size else 1.0) * 1.5
    D[~np.isfinite(D)] = fill
    np.fill_diagonal(D, 0)
    return D


def criterion_map(store, criterion: str, *, color_by: Optional[str] = None, seed: int = 0) -> dict[str, Any]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    from condsim_annot.calibrate.pipeline import load_run

    view = load_run(store, criterion)
    doc_ids = sorted({p["anchor_id"] for p in view.pairs} | {p["candidate_id"] for p in view.pairs})
    if len(doc_ids) < 3:
        raise CondsimError(f"criterion {criterion!r} has scores for fewer than 3 documents: nothing to map")
    docs = [view.docs[i] for i in doc_ids]
    E = _embeddings(store, view.criterion, docs)
    if E is not None:
        from sklearn.decomposition import PCA

        En = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
        xy = PCA(n_components=2, random_state=seed).fit_transform(En)
        D = 1 - En @ En.T
        np.fill_diagonal(D, 0)
        D = np.maximum(D, 0)
        method = "pca-embeddings"
    else:
        D = _pair_distances(view, doc_ids)
        xy = _classical_mds(D)
        method = "mds-pair-scores"
    labels: list[str]
    if color_by:
        labels = [str((d.meta or {}).get(color_by, "(none)")) for d in docs]
        colour = f"metadata:{color_by}"
    else:
        best = None
        for k in range(2, min(6, len(docs) - 1) + 1):
            lab = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(xy)
            if len(set(lab)) < 2:
                continue
            sc = silhouette_score(D, lab, metric="precomputed")
            if best is None or sc > best[0]:
                best = (sc, lab)
        labels = [f"cluster {x}" for x in (best[1] if best else np.zeros(len(docs), dtype=int))]
        colour = "clusters"
    sil = None
    if 1 < len(set(labels)) < len(labels):
        sil = float(silhouette_score(D, labels, metric="precomputed"))
    return {"criterion": view.criterion.name, "calibration_run": view.run.id, "method": method, "colour": colour,
            "silhouette": sil, "points": [{"id": d.ext_id, "x": float(x), "y": float(y), "label": lab}
                                          for d, (x, y), lab in zip(docs, xy, labels)]}


def method_agreement(store, criterion: str, *, k: int = 10) -> dict[str, Any]:
    """CKA (observed, row-centred kernels) and Jaccard@k between the methods that scored pairs."""
    try:
        from condsim_annot.propose.tables import TripletMargin
    except Exception:
        return {"methods": [], "cka": [], "jaccard_at_k": [], "k": k}
    from sqlalchemy import select

    from condsim_annot.calibrate.pipeline import get_criterion
    from condsim_annot.models import Triplet

    scores: dict[str, dict[tuple[int, int], float]] = defaultdict(dict)
    try:
        with store.session() as s:
            crit = get_criterion(s, criterion)
            rows = s.execute(select(TripletMargin.method, TripletMargin.score_first, TripletMargin.score_second,
                                    Triplet.anchor_id, Triplet.first_id, Triplet.second_id)
                             .join(Triplet, Triplet.id == TripletMargin.triplet_id)
                             .where(Triplet.criterion_id == crit.id)).all()
    except CondsimError:
        raise
    except Exception:
        rows = []
    for m, sf, ss, a, f, sec in rows:
        scores[m][(a, f)] = float(sf)
        scores[m][(a, sec)] = float(ss)
    methods = sorted(scores)
    n = len(methods)
    cka = np.full((n, n), np.nan)
    jac = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(n):
            common = sorted(set(scores[methods[i]]) & set(scores[methods[j]]))
            if len(common) < 3:
                continue
            anchors = defaultdict(list)
            for key in common:
                anchors[key[0]].append(key)
            x, y = [], []
            js = []
            for a, keys in anchors.items():
                xa = np.array([scores[methods[i]][q] for q in keys])
                ya = np.array([scores[methods[j]][q] for q in keys])
                x.append(xa - xa.mean()); y.append(ya - ya.mean())
                if len(keys) < 4:
                    continue
                kk = min(k, len(keys) // 2)  # top-k of all the anchor's scored candidates would be trivial
                ti = {keys[t] for t in np.argsort(-xa, kind="stable")[:kk]}
                tj = {keys[t] for t in np.argsort(-ya, kind="stable")[:kk]}
                js.append(len(ti & tj) / len(ti | tj))
            x, y = np.concatenate(x), np.concatenate(y)
            den = np.linalg.norm(x) * np.linalg.norm(y)
            # linear CKA of rank-one-per-anchor kernels reduces to the squared alignment
            cka[i, j] = float((x @ y) ** 2 / den ** 2) if den > 0 else np.nan
            jac[i, j] = float(np.mean(js)) if js else np.nan

    def lst(M):
        return [[None if np.isnan(v) else float(v) for v in row] for row in M]

    return {"methods": methods, "cka": lst(cka), "jaccard_at_k": lst(jac), "k": k}


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_views(store, criteria: list[str], *, html: str, color_by: Optional[str] = None,
                json_path: Optional[str] = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = [criterion_map(store, c, color_by=color_by) for c in criteria]
    agree = {c: method_agreement(store, c) for c in criteria}
    fig, axes = plt.subplots(1, len(maps), figsize=(5.5 * len(maps), 5), squeeze=False)
    for ax, m in zip(axes[0], maps):
        labs = sorted({p["label"] for p in m["points"]})
        cmap = plt.get_cmap("tab10")
        for li, lab in enumerate(labs):
            pts = [p for p in m["points"] if p["label"] == lab]
            ax.scatter([p["x"] for p in pts], [p["y"] for p in pts], s=22, color=cmap(li % 10), label=lab)
        sil = f"{m['silhouette']:.2f}" if m["silhouette"] is not None else "n/a"
        ax.set_title(f"{m['criterion']} ({m['method']})\ncolour: {m['colour']}, silhouette {sil}", fontsize=10)
        ax.set_xticks([]); ax.set_yticks([])
        if len(labs) <= 12:
            ax.legend(fontsize=7)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>condsim-annot views</title>"
             "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:24px auto;padding:0 16px}"
             "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px}img{max-width:100%}</style></head><body>",
             f"<h1>Views: {_html.escape(', '.join(criteria))}</h1><img alt='maps' src='{_png(fig)}'>"]
    for c, a in agree.items():
        if not a["methods"]:
            parts.append(f"<p>{_html.escape(c)}: no method scores stored (they come from <code>condsim-annot propose</code>).</p>")
            continue
        n = len(a["methods"])
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key, title in ((axes[0], "cka", "CKA of similarity kernels"), (axes[1], "jaccard_at_k", f"Jaccard@{a['k']} of top candidates")):
            M = np.array([[np.nan if v is None else v for v in row] for row in a[key]], dtype=float)
            ax.imshow(M, vmin=0, vmax=1, cmap="viridis")
            ax.set_xticks(range(n), a["methods"], rotation=60, ha="right", fontsize=8)
            ax.set_yticks(range(n), a["methods"], fontsize=8)
            for i in range(n):
                for j in range(n):
                    if not np.isnan(M[i, j]):
                        ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", color="w", fontsize=7)
            ax.set_title(f"{c}: {title}", fontsize=10)
        parts.append(f"<h2>Method agreement: {_html.escape(c)}</h2><img alt='method agreement' src='{_png(fig)}'>")
    parts.append("</body></html>")
    Path(html).write_text("".join(parts), encoding="utf-8")
    if json_path:
        Path(json_path).write_text(json.dumps({"maps": maps, "method_agreement": agree}, indent=2, sort_keys=True) + "\n",
                                   encoding="utf-8")
    return str(html)
