"""Store-facing: the documents a view shows, and each method's representation of them.

Only moves data: a uniform random sample of the criterion's corpus, the MiniLM
embeddings (from the proposers' memory-mapped cache; missing ones are encoded and
appended, so a second run encodes nothing), the BM25 kernel, and the votes as
(anchor, closer, farther) rows of the sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from condsim_annot.criteria import default_instruction, get_criterion
from condsim_annot.db import Store
from condsim_annot.errors import CondsimError
from condsim_annot.models import Criterion, Document, Triplet, Vote
from condsim_annot.propose.bm25 import BM25Index
from condsim_annot.propose.cache import EmbeddingCache, cache_root, model_key, query_key
from condsim_annot.propose.embedding import encode_cached, load_embedder, resolve_model

Progress = Callable[[str, int, int | None], None]


@dataclass
class DocSample:
    """The documents of a view, in sample order (``ids`` are store ids)."""

    ids: list[int]
    ext_ids: list[str]
    texts: list[str]
    metas: list[dict]
    hashes: list[str]
    n_corpus: int
    seed: int
    pos: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pos = {d: i for i, d in enumerate(self.ids)}

    @property
    def whole(self) -> bool:
        return len(self.ids) == self.n_corpus

    def describe(self) -> str:
        if self.whole:
            return f"the whole corpus ({self.n_corpus} documents)"
        return f"a uniform random sample of {len(self.ids)} of {self.n_corpus} documents (seed {self.seed})"


def load_criteria(store: Store, names: Sequence[str]) -> list[Criterion]:
    """The named criteria; they must view one corpus."""
    with store.session() as s:
        crits = [get_criterion(s, n) for n in names]
    corpora = {c.corpus_id for c in crits}
    if len(corpora) > 1:
        raise CondsimError("these criteria view different corpora: map criteria of one corpus together")
    return crits


def sample_documents(store: Store, crit: Criterion, size: int | None, seed: int = 0) -> DocSample:
    """A uniform random sample of ``size`` documents of the criterion's corpus (all when None or larger)."""
    with store.session() as s:
        q = select(Document.id).order_by(Document.id)
        if crit.corpus_id is not None:
            q = q.where(Document.corpus_id == crit.corpus_id)
        all_ids = [int(r[0]) for r in s.execute(q)]
    if len(all_ids) < 3:
        raise CondsimError(
            f"criterion {crit.name!r} has {len(all_ids)} documents: ingest a corpus first "
            "(`condsim-annot ingest corpus.jsonl --id-field id --text-field text`)"
        )
    chosen = all_ids
    if size is not None and size < len(all_ids):
        rng = np.random.default_rng(seed)
        chosen = sorted(int(all_ids[i]) for i in rng.choice(len(all_ids), size=max(size, 3), replace=False))
    rows: dict[int, tuple] = {}
    with store.session() as s:
        for i in range(0, len(chosen), 900):
            q = select(Document.id, Document.ext_id, Document.text, Document.meta, Document.content_hash)
            for r in s.execute(q.where(Document.id.in_(chosen[i : i + 900]))):
                rows[int(r[0])] = tuple(r)
    got = [rows[d] for d in chosen]
    return DocSample(
        [r[0] for r in got],
        [str(r[1]) for r in got],
        [r[2] or "" for r in got],
        [dict(r[3] or {}) for r in got],
        [r[4] for r in got],
        len(all_ids),
        seed,
    )


def embeddings(
    store: Store,
    docs: DocSample,
    *,
    prompt: str | None,
    model: str | None = None,
    cache_dir: str | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """L2-normalised embeddings of the sample: with ``prompt`` on every document (the criterion's view), or plain.

    Shares the proposers' cache: plain vectors under the model's key, prompted ones under
    ``<key>.query`` keyed by (prompt, content hash), exactly as ``propose`` stores its anchors.
    """
    name = resolve_model(model)
    folder = cache_root(store.url, cache_dir) / "emb"
    key = model_key(name)
    cache = EmbeddingCache(folder, key + ".query" if prompt else key, model=name)
    keys = [query_key(prompt, h) for h in docs.hashes] if prompt else list(docs.hashes)
    if cache.missing(keys):  # load the model only when something is to be encoded
        label = "embedding documents" + (" (criterion prompt)" if prompt else "")

        def cb(done: int, total: int) -> None:
            if progress:
                progress(label, done, total)

        encode_cached(
            load_embedder(name), cache, keys, lambda pos: [docs.texts[p] for p in pos], prompt=prompt, progress=cb
        )
    E = np.asarray(cache.get(keys), dtype=np.float64)
    return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)


def criterion_prompt(crit: Criterion) -> str:
    return default_instruction(crit)


def bm25_kernel(
    store: Store, docs: DocSample, *, cache_dir: str | None = None, progress: Progress | None = None
) -> np.ndarray:
    """S[a, d] = BM25 score of document d for document a's distinct tokens as the query (as ``propose`` scores)."""
    idx = BM25Index.cached(cache_root(store.url, cache_dir) / "bm25", docs.hashes, lambda: list(docs.texts))
    n = len(docs.ids)
    S = np.empty((n, n), dtype=np.float32)
    step = max(n // 20, 1)
    for a in range(n):
        S[a] = idx.scores_for(idx.doc_tokens(a))
        if progress and (a % step == 0 or a == n - 1):
            progress("bm25 kernel", a + 1, n)
    return S


def vote_triplets(store: Store, crit: Criterion, docs: DocSample) -> tuple[np.ndarray, dict[str, int]]:
    """Active first/second votes as (anchor, closer, farther) sample rows; counts (used, outside the sample, other)."""
    with store.session() as s:
        q = (
            select(Triplet.anchor_id, Triplet.first_id, Triplet.second_id, Vote.choice)
            .join(Vote, Vote.triplet_id == Triplet.id)
            .where(Triplet.criterion_id == crit.id, Vote.state == "active", Triplet.is_attention_check.is_(False))
        )
        rows = s.execute(q).all()
    out, outside, other = [], 0, 0
    for a, f, sec, choice in rows:
        if choice not in ("first", "second"):
            other += 1
            continue
        win, lose = (f, sec) if choice == "first" else (sec, f)
        p = [docs.pos.get(int(x)) for x in (a, win, lose)]
        if None in p:
            outside += 1
            continue
        out.append(p)
    T = np.asarray(out, dtype=np.int64).reshape(-1, 3)
    return T, {"used": len(T), "outside_sample": outside, "ties_or_skips": other, "total": len(rows)}


def metadata_fields(docs: DocSample) -> dict[str, int]:
    """Every metadata field of the sample and how many documents have it."""
    counts: dict[str, int] = {}
    for m in docs.metas:
        for k in m:
            counts[k] = counts.get(k, 0) + 1
    return dict(sorted(counts.items()))


def field_values(docs: DocSample, name: str) -> list[str | None]:
    """The field as strings (lists joined by ','), None where absent."""

    def fmt(v: Any) -> str | None:
        if v is None:
            return None
        if isinstance(v, (list, tuple)):
            return ",".join(map(str, v))
        return str(v)

    return [fmt(m.get(name)) for m in docs.metas]


def categorical_fields(docs: DocSample, max_values: int = 50) -> list[str]:
    """Fields that partition the sample into 2..max_values groups (what a silhouette can be measured for)."""
    out = []
    n = len(docs.ids)
    for name in metadata_fields(docs):
        vals = [v for v in field_values(docs, name) if v is not None]
        k = len(set(vals))
        if 2 <= k <= min(max_values, max(2, len(vals) // 2)) and len(vals) >= n // 2:
            out.append(name)
    return out
