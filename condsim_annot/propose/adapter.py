"""The ``adapter`` method: the criterion's trained adapter (``condsim-annot train``) as a committee member.

It scores with the latest adapter stored for the criterion on top of the same cached vectors as
``embedding`` (documents without the prompt, anchors with it), so it costs one extra matrix
product and no re-embedding.  It skips itself, with the reason, when no adapter was trained,
when the run's ``--model`` differs from the adapter's base model, or when the criterion's
prompt changed since training.
"""

from __future__ import annotations

import numpy as np

from ..train.adapter import BilinearAdapter
from ..train.pipeline import latest_adapter
from .cache import EmbeddingCache, model_key, query_key
from .embedding import LazyEncoder, encode_cached, resolve_model
from .registry import DenseMethod, SkipMethod


class AdapterMethod(DenseMethod):
    def prepare(self) -> None:
        ctx = self.ctx
        row = latest_adapter(ctx.store, ctx.criterion.id)
        if row is None or row.weights is None:
            raise SkipMethod(
                f"no adapter trained for {ctx.criterion_name!r}: run `condsim-annot train {ctx.criterion_name}`"
            )
        model_name = resolve_model(ctx.options.get("model"))
        if model_key(row.base_model) != model_key(model_name):
            raise SkipMethod(f"the adapter was trained on {row.base_model}, this run uses {model_name}")
        if row.prompt is not None and row.prompt != ctx.prompt:
            raise SkipMethod(
                f"criterion {ctx.criterion_name!r} changed since the adapter was trained "
                f"(version {row.criterion_version}): train it again"
            )
        self.row_id, self.base_model = row.id, row.base_model
        adapter = BilinearAdapter.from_bytes(row.weights)
        key = model_key(model_name)
        folder = ctx.cache_root / "emb"
        doc_cache = EmbeddingCache(folder, key, model=model_name)
        query_cache = EmbeddingCache(folder, key + ".query", model=model_name)
        enc = LazyEncoder(model_name)
        bs = int(ctx.options.get("batch_size") or 64)
        hashes = ctx.content_hashes
        n_doc = encode_cached(
            enc,
            doc_cache,
            hashes,
            ctx.texts_at,
            batch_size=bs,
            progress=ctx.progress_fn("embedding documents (adapter)"),
        )
        anchors = np.asarray(ctx.anchor_pos, dtype=np.int64)
        qkeys = [query_key(ctx.prompt, hashes[a]) for a in anchors]
        n_q = encode_cached(
            enc,
            query_cache,
            qkeys,
            lambda pos: ctx.texts_at([int(anchors[p]) for p in pos]),
            prompt=ctx.prompt,
            batch_size=bs,
        )
        self.encoded = n_doc + n_q
        self.D = np.ascontiguousarray(adapter.expand_documents(doc_cache.get(hashes)))
        self.Q = np.ascontiguousarray(adapter.expand_queries(query_cache.get(qkeys)))
        self._q_row = {int(a): i for i, a in enumerate(anchors)}

    def scores(self, anchor_pos: np.ndarray) -> np.ndarray:
        return self.Q[[self._q_row[int(a)] for a in anchor_pos]] @ self.D.T

    def score_pairs(self, anchor_pos: int, cand_pos: np.ndarray) -> np.ndarray:
        return self.D[np.asarray(cand_pos)] @ self.Q[self._q_row[int(anchor_pos)]]

    def info(self) -> dict:
        return {"trained_model": self.row_id, "base_model": self.base_model, "texts_encoded": self.encoded}
