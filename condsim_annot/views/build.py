"""Build every view of a corpus under some criteria: maps, SOMs, named clusters, silhouettes, agreement.

The result is one JSON-able dict (the page's data, and the ``--json`` file).  Spaces per
criterion: ``embedding`` (MiniLM with the criterion's instruction on every document),
``bm25`` (criterion-blind: the same for every criterion) and, once votes exist,
``votes`` (a t-STE fitted on them, started from and pulled towards the embedding map).
Method agreement is measured on a uniform random subsample of the (itself uniform
random) sample, never on proposer-selected pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from condsim_annot.db import Store
from condsim_annot.errors import CondsimError, InputError
from condsim_annot.models import Criterion
from condsim_annot.views import spaces as sp
from condsim_annot.views.agreement import LinearMapAgreement, knn_indices, linear_cka, row_jaccard
from condsim_annot.views.clusters import choose_clusters, ctfidf_terms, llm_labels
from condsim_annot.views.projection import default_projection, kernel_features, pca, project
from condsim_annot.views.som import SelfOrganizingMap, grid_shape
from condsim_annot.views.tste import TSTE, triplet_accuracy

Progress = Callable[[str, int, int | None], None]
VERSION = 1


@dataclass
class ViewOptions:
    """What to compute; defaults suit a few thousand documents on a laptop."""

    sample: int | None = 3000
    agreement_sample: int = 1000
    projection: str = field(default_factory=default_projection)
    color_by: str | None = None
    k: int = 10
    model: str | None = None
    cache_dir: str | None = None
    seed: int = 0
    votes: bool = True
    snippet: int = 500
    llm_model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None


@dataclass
class Space:
    """One representation of the sample under a criterion, and its 2-D map."""

    name: str
    X: np.ndarray
    metric: str  # how silhouettes are measured in X: cosine | precomputed | euclidean
    xy: np.ndarray
    D: np.ndarray | None = None  # precomputed distances when metric == "precomputed"
    info: dict = field(default_factory=dict)


def _tick(progress: Progress | None, label: str) -> None:
    if progress:
        progress(label, 1, 1)


def check_color_by(docs: sp.DocSample, color_by: str | None) -> None:
    """An unknown field is an error that lists the fields that exist."""
    if color_by is None:
        return
    fields = sp.metadata_fields(docs)
    if color_by not in fields:
        known = ", ".join(f"{k} ({v} documents)" for k, v in fields.items()) or "none: the documents have no metadata"
        raise InputError(
            f"no document has a metadata field {color_by!r}; fields that exist: {known}", field="--color-by"
        )


def build_views(
    store: Store, criteria: Sequence[str], opts: ViewOptions | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """Everything the page shows, as one dict (see the module docstring)."""
    opts = opts or ViewOptions()
    if not criteria:
        raise CondsimError("name at least one criterion (`condsim-annot criteria list` shows them)")
    crits = sp.load_criteria(store, criteria)
    docs = sp.sample_documents(store, crits[0], opts.sample, opts.seed)
    check_color_by(docs, opts.color_by)
    plain = sp.embeddings(store, docs, prompt=None, model=opts.model, cache_dir=opts.cache_dir, progress=progress)
    S_bm25 = sp.bm25_kernel(store, docs, cache_dir=opts.cache_dir, progress=progress)
    bm25 = _bm25_space(S_bm25, opts, progress)
    emb = {
        c.name: sp.embeddings(
            store, docs, prompt=sp.criterion_prompt(c), model=opts.model, cache_dir=opts.cache_dir, progress=progress
        )
        for c in crits
    }
    maps: dict[str, Any] = {}
    all_spaces: dict[str, list[Space]] = {}
    for c in crits:
        e = emb[c.name]
        spaces = [Space("embedding", e, "cosine", project(e, opts.projection, opts.seed))]
        _tick(progress, f"{opts.projection} map: {c.name}")
        spaces.append(bm25)
        votes: dict[str, Any] = {"note": "votes not read (--no-votes)"}
        if opts.votes:
            v, votes = _votes_space(store, c, docs, spaces[0], opts, progress)
            if v is not None:
                spaces.append(v)
        all_spaces[c.name] = spaces
        maps[c.name] = _criterion_view(store, c, docs, spaces, votes, opts)
        _tick(progress, f"clusters and SOM: {c.name}")
    return finite(
        {
            "version": VERSION,
            "criteria": [c.name for c in crits],
            "projection": opts.projection,
            "sample": {
                "n": len(docs.ids),
                "corpus": docs.n_corpus,
                "seed": opts.seed,
                "whole": docs.whole,
                "described": docs.describe(),
            },
            "color_by": opts.color_by,
            "fields": sp.metadata_fields(docs),
            "docs": _doc_rows(docs, opts),
            "maps": maps,
            "silhouettes": silhouette_table(docs, all_spaces, opts.color_by),
            "agreement": method_agreement(docs, emb, plain, S_bm25, opts, progress),
        }
    )


def finite(obj: Any) -> Any:
    """NaN / inf (an undefined statistic) as None, numpy scalars as Python numbers: strict JSON."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _doc_rows(docs: sp.DocSample, opts: ViewOptions) -> list[dict[str, Any]]:
    colour = sp.field_values(docs, opts.color_by) if opts.color_by else [None] * len(docs.ids)
    return [
        {"id": e, "text": t[: opts.snippet] + ("…" if len(t) > opts.snippet else ""), "value": v}
        for e, t, v in zip(docs.ext_ids, docs.texts, colour, strict=False)
    ]


def _bm25_space(S: np.ndarray, opts: ViewOptions, progress: Progress | None) -> Space:
    """BM25 as a space: kernel-PCA features for the map; silhouettes in 1 - cosine-normalised kernel distances
    (above 5000 documents, in the features instead: an n x n distance matrix would not fit in memory)."""
    F = kernel_features(S, 50, opts.seed)
    xy = project(F, opts.projection, opts.seed, metric="euclidean")
    _tick(progress, f"{opts.projection} map: bm25")
    if len(S) > 5000:
        return Space("bm25", F, "euclidean", xy, info={"criterion_blind": True})
    K = (S + S.T) / 2.0
    d = np.sqrt(np.maximum(np.diag(K), 1e-12))
    D = np.clip(1.0 - K / d[:, None] / d[None, :], 0.0, None)
    np.fill_diagonal(D, 0.0)
    return Space("bm25", F, "precomputed", xy, D=D, info={"criterion_blind": True})


def _votes_space(
    store: Store, c: Criterion, docs: sp.DocSample, base: Space, opts: ViewOptions, progress: Progress | None
) -> tuple[Space | None, dict[str, Any]]:
    """The t-STE map of the criterion's votes (None below 10 usable votes), with its held-out triplet accuracy."""
    T, counts = sp.vote_triplets(store, c, docs)
    info: dict[str, Any] = dict(counts)
    if len(T) < 10:
        info["note"] = (
            f"{len(T)} usable votes under {c.name!r}: the votes map needs at least 10 (vote with "
            f"`condsim-annot tui --criterion {c.name}` or `condsim-annot judge {c.name}`)"
        )
        return None, info
    n = len(docs.ids)
    perm = np.random.default_rng(opts.seed).permutation(len(T))
    test, train = T[perm[: max(len(T) // 5, 1)]], T[perm[max(len(T) // 5, 1) :]]

    def cb(label: str) -> Callable[[int, int], None]:
        return lambda done, total: progress(label, done, total) if progress else None

    held = TSTE(seed=opts.seed).fit(train, n, init=base.xy, progress=cb(f"t-STE held-out fit: {c.name}"))
    info["heldout_accuracy"] = {
        "n": len(test),
        "method_map": triplet_accuracy(base.xy, test),
        "method_space": triplet_accuracy(base.X, test),
        "votes_map": triplet_accuracy(held.embedding_, test),
    }
    full = TSTE(seed=opts.seed).fit(T, n, init=base.xy, progress=cb(f"t-STE fit: {c.name}"))
    X = full.embedding_
    xy = (X - X.mean(0)) / max(float(X.std()), 1e-12)
    info["loss"] = full.loss_
    return Space("votes", X, "euclidean", xy, info=info), info


def top_neighbours(X: np.ndarray, k: int = 10, chunk: int = 1024) -> np.ndarray:
    """Each row's k nearest rows by cosine (itself excluded), in chunks so 10k documents stay small in memory."""
    Xn = (X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    k = min(k, len(X) - 1)
    out = np.empty((len(X), k), dtype=np.int64)
    for s in range(0, len(X), chunk):
        S = Xn[s : s + chunk] @ Xn.T
        S[np.arange(len(S)), np.arange(s, s + len(S))] = -np.inf
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(S, part, axis=1), axis=1, kind="stable")
        out[s : s + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def _clusters(store: Store, c: Criterion, docs: sp.DocSample, X: np.ndarray, opts: ViewOptions) -> dict[str, Any]:
    labels, k, sil = choose_clusters(X, seed=opts.seed)
    terms = ctfidf_terms(docs.texts, labels.tolist())
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    members: dict[int, list[str]] = {}
    names: dict[str, dict[str, Any]] = {}
    for lab in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == lab)
        centre = Xn[rows].mean(0)
        closest = rows[np.argsort(-(Xn[rows] @ centre))[:5]]
        members[lab] = [docs.texts[i] for i in closest]
        names[str(lab)] = {
            "size": int(len(rows)),
            "terms": terms.get(lab, []),
            "examples": [int(i) for i in closest],
            "llm": None,
        }
    if opts.llm_model or opts.base_url:
        for lab, label in llm_labels(
            store, c.name, members, terms, model=opts.llm_model, base_url=opts.base_url, api_key_env=opts.api_key_env
        ).items():
            names[str(lab)]["llm"] = label
    return {"k": k, "silhouette": None if np.isnan(sil) else sil, "labels": labels.tolist(), "names": names}


def _som(docs: sp.DocSample, X: np.ndarray, colours: Sequence[str | None], seed: int) -> dict[str, Any]:
    rows, cols = grid_shape(len(X))
    if X.shape[1] > 50 and len(X) > 50:  # the grid is laid out in the first 50 principal components: same
        X = pca(X, 50, seed)  # neighbourhoods, an eighth of the distance computations
    som = SelfOrganizingMap(rows, cols, seed=seed).fit(X)
    cells = []
    for cell in range(rows * cols):
        members = np.flatnonzero(som.bmu_ == cell)
        vals = [colours[i] for i in members if colours[i] is not None]
        top = max(set(vals), key=vals.count) if vals else None
        cells.append({"doc": int(som.representative_[cell]), "n": int(len(members)), "label": top})
    return {
        "rows": rows,
        "cols": cols,
        "cells": cells,
        "bmu": som.bmu_.tolist(),
        "quantization_error": som.quantization_error_,
    }


def _criterion_view(
    store: Store, c: Criterion, docs: sp.DocSample, spaces: list[Space], votes: dict[str, Any], opts: ViewOptions
) -> dict[str, Any]:
    base = spaces[0]
    clusters = _clusters(store, c, docs, base.X, opts)
    colours = sp.field_values(docs, opts.color_by) if opts.color_by else [f"cluster {x}" for x in clusters["labels"]]
    return {
        "criterion": c.name,
        "description": c.description,
        "spaces": {s.name: {"xy": np.round(s.xy, 4).tolist(), "info": s.info} for s in spaces},
        "clusters": clusters,
        "som": _som(docs, base.X, colours, opts.seed),
        "neighbours": top_neighbours(base.X, opts.k).tolist(),
        "votes": votes,
    }


def _silhouette(X: np.ndarray, labels: list[str], metric: str, seed: int, sample: int = 2000) -> float | None:
    from sklearn.metrics import silhouette_score

    if not 1 < len(set(labels)) < len(labels):
        return None
    size = min(sample, len(labels)) if len(labels) > sample else None
    return float(silhouette_score(X, labels, metric=metric, sample_size=size, random_state=seed))


def silhouette_table(
    docs: sp.DocSample, spaces: dict[str, list[Space]], color_by: str | None, seed: int = 0
) -> list[dict[str, Any]]:
    """Silhouette of each metadata field (``color_by``, else every categorical field) in each criterion's spaces:
    in the representation itself ("space": cosine, BM25 distance or t-STE coordinates) and in its 2-D map."""
    fields = [color_by] if color_by else sp.categorical_fields(docs)
    rows = []
    for name in fields:
        vals = sp.field_values(docs, name)
        keep = np.array([v is not None for v in vals])
        labels = [v for v in vals if v is not None]
        for crit, sps in spaces.items():
            for s in sps:
                X = s.D[np.ix_(keep, keep)] if s.metric == "precomputed" and s.D is not None else s.X[keep]
                rows.append(
                    {
                        "field": name,
                        "criterion": crit,
                        "space": s.name,
                        "n": len(labels),
                        "groups": len(set(labels)),
                        "silhouette_space": _silhouette(X, labels, s.metric, seed),
                        "silhouette_map": _silhouette(s.xy[keep], labels, "euclidean", seed),
                    }
                )
    return rows


def agreement_sample(docs: sp.DocSample, size: int, seed: int) -> tuple[np.ndarray, str]:
    """Rows of a uniform random subsample of the (uniform random) view sample, and what it is, in words."""
    n = len(docs.ids)
    m = min(size, n)
    idx = np.sort(np.random.default_rng(seed + 1).permutation(n)[:m])
    if m == docs.n_corpus:
        return idx, f"the whole corpus ({m} documents)"
    return idx, f"a uniform random sample of {m} of {docs.n_corpus} documents (seeds {seed}, {seed + 1})"


def method_agreement(
    docs: sp.DocSample,
    emb: dict[str, np.ndarray],
    plain: np.ndarray,
    S_bm25: np.ndarray,
    opts: ViewOptions,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Linear CKA and k-NN Jaccard between every method's whole kernel on a random sample; linear maps between
    embedding spaces.  Kernels: E E^T for embeddings (cosine), BM25 scores S[a, d] (CKA symmetrises them,
    the k-NN sets use each anchor's own ranking, as the proposer does)."""
    idx, described = agreement_sample(docs, opts.agreement_sample, opts.seed)
    vecs = {f"embedding[{c}]": E[idx] for c, E in emb.items()}
    vecs["embedding-plain"] = plain[idx]
    kernels = {name: V @ V.T for name, V in vecs.items()}
    kernels["bm25"] = np.asarray(S_bm25, dtype=np.float64)[np.ix_(idx, idx)]
    names = list(kernels)
    k = min(opts.k, len(idx) - 1)
    nn = {name: knn_indices(K, k) for name, K in kernels.items()}
    cka = np.eye(len(names))
    jac = np.eye(len(names))
    for i, a in enumerate(names):  # both statistics are symmetric: the upper triangle, mirrored
        for j in range(i + 1, len(names)):
            cka[i, j] = cka[j, i] = linear_cka(kernels[a], kernels[names[j]])
            jac[i, j] = jac[j, i] = float(np.mean(row_jaccard(nn[a], nn[names[j]])))
    _tick(progress, "method agreement")
    maps = []
    for a in vecs:
        for b in vecs:
            if a != b and len(idx) >= 8:
                lm = LinearMapAgreement(k=k, seed=opts.seed).fit(vecs[a], vecs[b])
                maps.append(
                    {
                        "from": a,
                        "to": b,
                        "r2_heldout": lm.r2_heldout_,
                        "knn_overlap": lm.knn_overlap_,
                        "knn_overlap_untranslated": lm.knn_overlap_before_,
                        "n_train": lm.n_train_,
                        "n_test": lm.n_test_,
                        "ridge_alpha": lm.alpha_,
                    }
                )
    return {
        "sample": {"n": len(idx), "described": described, "rows": idx.tolist()},
        "methods": names,
        "k": k,
        "cka": cka.tolist(),
        "jaccard": jac.tolist(),
        "linear_maps": maps,
    }
