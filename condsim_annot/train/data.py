"""What training reads: a criterion's gold triplets (never its votes) and cached embeddings.

Gold comes from the stored tables of the latest calibration run (``goldlabel`` joined with
``triplet``), so training does not depend on how calibration computes it.  Embeddings come
from the proposer's memory-mapped cache (:mod:`condsim_annot.propose.cache`): documents
without the prompt, anchors with the criterion's query prompt.  Anything missing is encoded
and appended to the cache, and counted: a run on a warm cache reports 0 encoder calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlmodel import col

from ..criteria import default_instruction, get_criterion
from ..db import Store
from ..errors import CondsimError
from ..models import Annotator, CalibrationRun, Criterion, Document, GoldLabel, Triplet, Vote
from ..propose.cache import EmbeddingCache, cache_root, model_key, query_key
from ..propose.embedding import LazyEncoder, encode_cached, resolve_model

MIN_GOLD = 30  # fewer gold triplets than this cannot be split by anchor and still say anything
MIN_ANCHORS = 5


@dataclass
class GoldSet:
    """Gold triplets oriented as (anchor, positive, negative), with y = P(label) from calibration."""

    criterion: str
    criterion_id: int
    criterion_version: int
    prompt: str
    corpus_id: int | None
    run_id: int
    triplet_id: np.ndarray  # -1 for derived labels (no triplet row)
    anchor: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    y: np.ndarray
    audit: np.ndarray  # True for the proposer's uniformly random audit slice

    def __len__(self) -> int:
        return len(self.y)


def _latest_run(session: Any, crit: Criterion) -> CalibrationRun:
    run = session.scalars(
        select(CalibrationRun)
        .where(col(CalibrationRun.criterion_id) == crit.id)
        .order_by(col(CalibrationRun.id).desc())
    ).first()
    if run is None:
        raise CondsimError(
            f"criterion {crit.name!r} has no calibration run yet: run `condsim-annot calibrate {crit.name}` first"
        )
    return run


def load_gold(store: Store, criterion: str, *, derived: bool = False, min_gold: int = MIN_GOLD) -> GoldSet:
    """The latest calibration run's gold triplets (attention checks left out: their key is the methods' own
    agreement).  ``derived``: add labels implied by transitivity.  Too few: an error naming the number needed."""
    with store.session() as s:
        crit = get_criterion(s, criterion)
        run = _latest_run(s, crit)
        rows = s.execute(
            select(
                col(GoldLabel.triplet_id),
                col(GoldLabel.label),
                col(GoldLabel.probability),
                col(Triplet.anchor_id),
                col(Triplet.first_id),
                col(Triplet.second_id),
                col(Triplet.strategy),
            )
            .join(Triplet, col(Triplet.id) == GoldLabel.triplet_id)
            .where(
                col(GoldLabel.calibration_run_id) == run.id,
                col(GoldLabel.status) == "gold",
                col(GoldLabel.label).in_(("first", "second")),
                col(Triplet.is_attention_check).is_(False),
            )
            .order_by(col(GoldLabel.triplet_id))
        ).all()
        info: dict[str, Any] = dict(
            criterion=crit.name,
            criterion_id=crit.id,
            criterion_version=crit.version,
            prompt=default_instruction(crit),
            corpus_id=crit.corpus_id,
            run_id=run.id,
        )
    recs = [
        (t, a, f if lab == "first" else sec, sec if lab == "first" else f, p, st == "audit")
        for t, lab, p, a, f, sec, st in rows
    ]
    if derived:
        from ..calibrate.pipeline import derived_triplets, load_run  # public readers of a stored run

        for g in derived_triplets(load_run(store, criterion, run_id=run.id)):
            f, sec = g["first_id"], g["second_id"]
            pos, neg = (f, sec) if g["label"] == "first" else (sec, f)
            recs.append((-1, g["anchor_id"], pos, neg, g["probability"], False))
    n_anchors = len({r[1] for r in recs})
    if len(recs) < min_gold or n_anchors < MIN_ANCHORS:
        raise CondsimError(
            f"criterion {crit.name!r} has {len(recs)} gold triplets over {n_anchors} anchors "
            f"in calibration run {run.id}; "
            f"training needs at least {min_gold} gold triplets over at least {MIN_ANCHORS} anchors "
            f"({max(0, min_gold - len(recs))} more): collect more votes and run "
            f"`condsim-annot calibrate {crit.name}` again"
        )
    cols = list(zip(*recs, strict=True))
    return GoldSet(
        **info,
        triplet_id=np.asarray(cols[0], dtype=np.int64),
        anchor=np.asarray(cols[1], dtype=np.int64),
        pos=np.asarray(cols[2], dtype=np.int64),
        neg=np.asarray(cols[3], dtype=np.int64),
        y=np.asarray(cols[4], dtype=np.float64),
        audit=np.asarray(cols[5], dtype=bool),
    )


class CachedEmbeddings:
    """Document and query-side vectors of one base model, read from the cache (missing ones encoded, counted)."""

    def __init__(self, store: Store, *, model: str | None = None, cache_dir: str | None = None, batch_size: int = 64):
        self.store = store
        self.model_name = resolve_model(model)
        self.root: Path = cache_root(store.url, cache_dir)
        key = model_key(self.model_name)
        folder = self.root / "emb"
        self.doc_cache = EmbeddingCache(folder, key, model=self.model_name)
        self.query_cache = EmbeddingCache(folder, key + ".query", model=self.model_name)
        self.encoder = LazyEncoder(self.model_name)
        self.batch_size = batch_size
        self.texts_encoded = 0

    def _hashes(self, ids: Sequence[int]) -> dict[int, str]:
        uniq = sorted({int(i) for i in ids})
        out: dict[int, str] = {}
        with self.store.session() as s:
            for i in range(0, len(uniq), 900):
                out.update(
                    s.execute(
                        select(col(Document.id), col(Document.content_hash)).where(
                            col(Document.id).in_(uniq[i : i + 900])
                        )
                    ).all()
                )
        return out

    def _texts(self, ids: Sequence[int]) -> list[str]:
        with self.store.session() as s:
            got = dict(
                s.execute(
                    select(col(Document.id), col(Document.text)).where(col(Document.id).in_([int(i) for i in ids]))
                ).all()
            )
        return [got[int(i)] for i in ids]

    def documents(self, ids: Sequence[int]) -> np.ndarray:
        """Prompt-free vectors of documents (by store id), [len(ids), dim]."""
        h = self._hashes(ids)
        keys = [h[int(i)] for i in ids]
        self.texts_encoded += encode_cached(
            self.encoder,
            self.doc_cache,
            keys,
            lambda pos: self._texts([ids[p] for p in pos]),
            batch_size=self.batch_size,
        )
        return np.asarray(self.doc_cache.get(keys), dtype=np.float64)

    def queries(self, ids: Sequence[int], prompt: str) -> np.ndarray:
        """Vectors of anchors embedded with the criterion's query prompt, [len(ids), dim]."""
        h = self._hashes(ids)
        keys = [query_key(prompt, h[int(i)]) for i in ids]
        self.texts_encoded += encode_cached(
            self.encoder,
            self.query_cache,
            keys,
            lambda pos: self._texts([ids[p] for p in pos]),
            prompt=prompt,
            batch_size=self.batch_size,
        )
        return np.asarray(self.query_cache.get(keys), dtype=np.float64)


def corpus_documents(store: Store, corpus_id: int | None) -> tuple[np.ndarray, list[str]]:
    """(document ids, content hashes) of a criterion's corpus in id order: the proposer's document order."""
    with store.session() as s:
        q = select(col(Document.id), col(Document.content_hash)).order_by(col(Document.id))
        if corpus_id is not None:
            q = q.where(col(Document.corpus_id) == corpus_id)
        rows = s.execute(q).all()
    return np.asarray([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]


def bm25_margins(store: Store, gold: GoldSet, rows: np.ndarray, root: Path) -> np.ndarray:
    """BM25(anchor text -> positive) - BM25(anchor -> negative) for ``rows`` of ``gold``, from the cached index."""
    from ..propose.bm25 import BM25Index

    ids, hashes = corpus_documents(store, gold.corpus_id)
    pos_of = {int(d): i for i, d in enumerate(ids)}

    def texts() -> list[str]:
        with store.session() as s:
            got = dict(
                s.execute(select(col(Document.id), col(Document.text)).where(col(Document.id).in_(ids.tolist()))).all()
            )
        return [got[int(d)] for d in ids]

    index = BM25Index.cached(root / "bm25", hashes, texts)
    out = np.zeros(len(rows))
    for a in np.unique(gold.anchor[rows]):
        k = np.flatnonzero(gold.anchor[rows] == a)
        sc = index.scores_for(index.doc_tokens(pos_of[int(a)]))
        pairs = zip(gold.pos[rows[k]], gold.neg[rows[k]], strict=True)
        out[k] = [sc[pos_of[int(p)]] - sc[pos_of[int(n)]] for p, n in pairs]
    return out


def judge_margins(store: Store, gold: GoldSet, rows: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{LM judge: (margin, answered mask)} on ``rows``: +1 for the gold positive, -1 against, 0 tie (mean over its
    votes; both presentation orders count).  Read for evaluation only: training never sees a vote."""
    tids = gold.triplet_id[rows]
    row_of = {int(t): k for k, t in enumerate(tids) if t >= 0}
    first_is_pos = {int(t): bool(p < n) for t, p, n in zip(tids, gold.pos[rows], gold.neg[rows], strict=True)}
    acc: dict[str, list[list[float]]] = {}
    with store.session() as s:
        ids = list(row_of)
        for i in range(0, len(ids), 900):
            q = (
                select(col(Vote.triplet_id), col(Vote.choice), col(Annotator.name))
                .join(Annotator, col(Annotator.id) == Vote.annotator_id)
                .where(
                    col(Vote.triplet_id).in_(ids[i : i + 900]),
                    col(Vote.state) == "active",
                    col(Annotator.kind) == "llm",
                    col(Vote.choice).in_(("first", "second", "tie")),
                )
            )
            for tid, choice, name in s.execute(q).all():
                v = 0.0 if choice == "tie" else (1.0 if (choice == "first") == first_is_pos[int(tid)] else -1.0)
                acc.setdefault(name, [[] for _ in range(len(rows))])[row_of[int(tid)]].append(v)
    return {
        name: (np.asarray([np.mean(v) if v else 0.0 for v in per]), np.asarray([bool(v) for v in per]))
        for name, per in acc.items()
    }
