"""What methods see (:class:`ProposeContext`) and the store reads of a run (documents, existing triplets).

Documents are addressed by *position* 0..n-1 in the criterion's corpus (``doc_ids[pos]`` is the
store id): every array of the proposer is indexed by position.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlmodel import col

from ..criteria import default_instruction
from ..db import Store
from ..models import Criterion, Document, Triplet

Progress = Callable[[str, int, int | None], Any]


class ProposeContext:
    """What methods see: the documents (positions 0..n-1), the criterion, anchors, options."""

    def __init__(self, store: Store, criterion: Criterion, doc_ids: np.ndarray, hashes: list[str], *, options: dict,
                 cache: Path, progress: Progress | None):
        self.store = store
        self.criterion = criterion
        self.criterion_name = criterion.name
        self.doc_ids = doc_ids
        self.content_hashes = hashes
        self.options = options
        self.cache_root = cache
        self.prompt = default_instruction(criterion)
        self.anchor_pos: np.ndarray = np.zeros(0, dtype=np.int64)
        self._progress = progress
        self._texts: list[str] | None = None
        self._pos = {int(d): i for i, d in enumerate(doc_ids)}

    def progress_fn(self, name: str) -> Callable[[int, int | None], None]:
        def cb(done: int, total: int | None) -> None:
            if self._progress:
                self._progress(name, done, total)

        return cb

    def all_texts(self) -> list[str]:
        if self._texts is None:
            texts: list[str | None] = [None] * len(self.doc_ids)
            with self.store.session() as s:
                lo, hi = int(self.doc_ids.min()), int(self.doc_ids.max())
                q = select(col(Document.id), col(Document.text)).where(col(Document.id) >= lo, col(Document.id) <= hi)
                if self.criterion.corpus_id is not None:
                    q = q.where(col(Document.corpus_id) == self.criterion.corpus_id)
                for did, text in s.execute(q):
                    p = self._pos.get(int(did))
                    if p is not None:
                        texts[p] = text
            self._texts = [t or "" for t in texts]
        return self._texts

    def texts_map(self, positions: set[int] | Sequence[int]) -> dict[int, str]:
        positions = [int(p) for p in positions]
        if self._texts is not None:
            return {p: self._texts[p] for p in positions}
        out: dict[int, str] = {}
        ids = [int(self.doc_ids[p]) for p in positions]
        with self.store.session() as s:
            for i in range(0, len(ids), 900):
                q = select(col(Document.id), col(Document.text)).where(col(Document.id).in_(ids[i : i + 900]))
                for did, text in s.execute(q):
                    out[self._pos[int(did)]] = text
        return out

    def texts_at(self, positions: Sequence[int]) -> list[str]:
        m = self.texts_map(positions)
        return [m[int(p)] for p in positions]


def load_docs(store: Store, criterion: Criterion) -> tuple[np.ndarray, list[str]]:
    """The criterion's documents (store ids in position order) and their content hashes."""
    with store.session() as s:
        q = select(col(Document.id), col(Document.content_hash)).order_by(col(Document.id))
        if criterion.corpus_id is not None:
            q = q.where(col(Document.corpus_id) == criterion.corpus_id)
        rows = s.execute(q).all()
    return np.asarray([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]


def existing_triplets(store: Store, criterion_id: int) -> tuple[set, Counter]:
    """Canonical keys (anchor, first, second) of the criterion's triplets and their count per anchor."""
    keys: set = set()
    per_anchor: Counter = Counter()
    with store.session() as s:
        q = (select(col(Triplet.anchor_id), col(Triplet.first_id), col(Triplet.second_id))
             .where(col(Triplet.criterion_id) == criterion_id))
        for a, f, sec in s.execute(q):
            keys.add((a, f, sec))
            per_anchor[a] += 1
    return keys, per_anchor
