"""LLM-based methods, on the LM-judge stage's cached API (:mod:`condsim_annot.llm`).

* ``rewrite-bm25``: each document rewritten as a criterion-focused description
  (``transform_documents(task="rewrite")``); BM25 over the rewrites, the anchor's
  rewrite as the query.
* ``in-one-word`` (PromptEOL / PonTE): each document condensed to one word in terms
  of the criterion (``task="in-one-word"``); the words are embedded with the
  bi-encoder (and cached like any text); score = cosine of the words' embeddings.
* ``lm-judge`` (off by default): the judge compares pairs of each anchor's few best
  pooled candidates in both orders (``judge_margin``); a candidate's score is its mean
  margin against the others.  Expensive: ``n(n-1)`` calls per anchor.

All LLM answers are cached in the store's call log, so a second run makes no calls.
Without an endpoint (``--base-url`` / ``$OPENAI_BASE_URL`` / ``$OPENAI_API_KEY``) or a
model (``--llm-model`` / ``$CONDSIM_LLM_MODEL``) the methods are skipped with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from .bm25 import BM25Method
from .cache import EmbeddingCache, model_key, text_key
from .registry import DenseMethod, RerankMethod, SkipMethod

ENV_MODEL = "CONDSIM_LLM_MODEL"
JUDGE_POOL = 5  # candidates per anchor the lm-judge compares pairwise


def llm_status(base_url: str | None = None, model: str | None = None) -> tuple[bool, str]:
    """(usable, why): an endpoint and a model are configured."""
    try:
        from ..llm.transform import endpoint_status
    except ImportError as exc:  # pragma: no cover - the LLM stage is part of the package
        return False, f"the LLM client is not installed ({exc})"
    ok, why = endpoint_status(base_url)
    if not ok:
        return False, why
    if not (model or os.environ.get(ENV_MODEL)):
        return False, f"no LLM model: pass --llm-model or set ${ENV_MODEL}"
    return True, why


def _check(ctx) -> None:
    ok, why = llm_status(ctx.options.get("base_url"), ctx.options.get("llm_model"))
    if not ok:
        raise SkipMethod(why)


def _transform(method, task: str) -> tuple[list[str], int]:
    """The transformed text of every document (the raw text where the LLM gave no usable answer)."""
    from ..llm.transform import transform_documents

    ctx = method.ctx
    ids = [int(d) for d in ctx.doc_ids]
    res = transform_documents(
        ctx.store, ctx.criterion_name, ids, task=task, model=ctx.options.get("llm_model"),
        base_url=ctx.options.get("base_url"), progress=ctx.progress_fn(f"LLM {task} ({method.name})"),
    )
    method.llm_stats = {"calls": getattr(res.stats, "calls", None), "cached": getattr(res.stats, "cached", None),
                        "failed": len(res.failed)}
    raw = None
    out = []
    for p, d in enumerate(ids):
        t = res.get(d)
        if not t:
            raw = raw or ctx.all_texts()
            t = raw[p]
        out.append(t)
    return out, len(res.failed)


class RewriteBM25Method(BM25Method):
    texts_source = "llm rewrite"

    def prepare(self) -> None:
        _check(self.ctx)
        super().prepare()

    def _texts(self) -> list[str]:
        texts, self.n_failed = _transform(self, "rewrite")
        return texts

    def _text_keys(self) -> tuple[list[str], list[str] | None]:
        texts = self._texts()  # the rewrites themselves (cached by the LLM stage): the index is keyed by their hashes
        return [text_key(t) for t in texts], texts

    def info(self) -> dict:
        return {**super().info(), "llm": getattr(self, "llm_stats", {})}


class InOneWordMethod(DenseMethod):
    def prepare(self) -> None:
        _check(self.ctx)
        from .embedding import LazyEncoder, encode_cached, resolve_model

        ctx = self.ctx
        words, self.n_failed = _transform(self, "in-one-word")
        self.words = words
        name = resolve_model(ctx.options.get("model"))
        model = LazyEncoder(name)
        cache = EmbeddingCache(ctx.cache_root / "emb", model_key(name), model=name)
        keys = [text_key(w) for w in words]
        encode_cached(model, cache, keys, lambda pos: [words[p] for p in pos],
                      progress=ctx.progress_fn("embedding one-word forms"))
        self.W = np.ascontiguousarray(cache.get(keys), dtype=np.float32)

    def scores(self, anchor_pos: np.ndarray) -> np.ndarray:
        return self.W[np.asarray(anchor_pos)] @ self.W.T

    def score_pairs(self, anchor_pos: int, cand_pos: np.ndarray) -> np.ndarray:
        return self.W[np.asarray(cand_pos)] @ self.W[int(anchor_pos)]

    def info(self) -> dict:
        return {"llm": getattr(self, "llm_stats", {}), "distinct_words": len(set(self.words))}


class LMJudgeMethod(RerankMethod):
    def prepare(self) -> None:
        _check(self.ctx)

    def score_pools(self, anchors: Sequence[int], pools: Sequence[np.ndarray], progress: Callable | None = None,
                    prior: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        from ..llm.judge import judge_margin

        ctx = self.ctx
        ids = ctx.doc_ids
        judged: list[np.ndarray] = []
        triples = []
        for n, (a, p) in enumerate(zip(anchors, pools, strict=False)):
            order = np.argsort(-prior[n]) if prior is not None else np.arange(len(p))
            sel = order[: min(JUDGE_POOL, len(p))]
            judged.append(sel)
            for i in range(len(sel)):
                for j in range(i + 1, len(sel)):
                    triples.append((int(ids[a]), int(ids[p[sel[i]]]), int(ids[p[sel[j]]])))
        res = judge_margin(ctx.store, ctx.criterion_name, triples, model=ctx.options.get("llm_model"),
                           base_url=ctx.options.get("base_url"), progress=progress)
        self.llm_stats = {"triples": len(triples), "failed": len(res.failed),
                          "calls": getattr(res.stats, "calls", None), "cached": getattr(res.stats, "cached", None)}
        out = []
        for a, p, sel in zip(anchors, pools, judged, strict=False):
            tot = np.zeros(len(sel))
            cnt = np.zeros(len(sel))
            for i in range(len(sel)):
                for j in range(i + 1, len(sel)):
                    m = res.get((int(ids[a]), int(ids[p[sel[i]]]), int(ids[p[sel[j]]])))
                    if m is None:
                        continue
                    tot[i] += m
                    tot[j] -= m
                    cnt[i] += 1
                    cnt[j] += 1
            s = np.divide(tot, cnt, out=np.zeros_like(tot), where=cnt > 0)
            full = np.full(len(p), float(s.mean()) if len(s) else 0.0, dtype=np.float32)  # unjudged: neutral
            full[sel] = s
            out.append(full)
        return out

    def info(self) -> dict:
        return {"llm": getattr(self, "llm_stats", {}), "pool": JUDGE_POOL}
