"""The ``bm25`` method: BM25 (bm25s) over the raw text; the anchor's own text is the query.

Criterion-blind by design: it is the cheap, generic member of the committee and
(with the bi-encoder's prompt-free similarity) the reference for
"criterion-contrast" negatives.  ``rewrite-bm25`` reuses it over LLM rewrites.
"""

from __future__ import annotations

import numpy as np

from .registry import DenseMethod


class BM25Index:
    def __init__(self, texts: list[str], *, k1: float = 1.5, b: float = 0.75, show_progress: bool = False):
        import bm25s

        tok = bm25s.tokenize(texts, stopwords="english", show_progress=show_progress, allow_empty=True)
        self.doc_ids = [np.unique(np.asarray(ids, dtype=np.int64)) for ids in tok.ids]
        self.n = len(texts)
        self.model = bm25s.BM25(k1=k1, b=b)
        self.model.index(tok, show_progress=show_progress)
        # bm25s adds an empty-token id when allow_empty; never query with it
        self._empty = tok.vocab.get("")

    def scores_for(self, query_ids: np.ndarray) -> np.ndarray:
        ids = [int(i) for i in query_ids if self._empty is None or int(i) != self._empty]
        if not ids:
            return np.zeros(self.n, dtype=np.float32)
        return np.asarray(self.model.get_scores_from_ids(ids), dtype=np.float32)

    def rows(self, anchor_pos: np.ndarray) -> np.ndarray:
        out = np.empty((len(anchor_pos), self.n), dtype=np.float32)
        for i, a in enumerate(anchor_pos):
            out[i] = self.scores_for(self.doc_ids[int(a)])
        return out


class BM25Method(DenseMethod):
    texts_source = "raw"

    def _texts(self) -> list[str]:
        return self.ctx.all_texts()

    def prepare(self) -> None:
        s = self.spec.settings
        texts = self._texts()
        cb = self.ctx.progress_fn(f"indexing ({self.name})")
        cb(0, 1)
        self.index = BM25Index(texts, k1=float(s.get("k1", 1.5)), b=float(s.get("b", 0.75)))
        cb(1, 1)

    def scores(self, anchor_pos: np.ndarray) -> np.ndarray:
        return self.index.rows(anchor_pos)

    def generic_scores(self, anchor_pos: np.ndarray):
        return self.scores(anchor_pos) if not self.criterion_aware else None

    def score_pairs(self, anchor_pos: int, cand_pos: np.ndarray) -> np.ndarray:
        return self.index.scores_for(self.index.doc_ids[int(anchor_pos)])[np.asarray(cand_pos)]

    def info(self) -> dict:
        return {"documents": self.index.n, "texts": self.texts_source}
