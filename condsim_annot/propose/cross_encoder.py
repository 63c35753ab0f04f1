"""The ``cross-encoder`` method: a sentence-transformers CrossEncoder rescoring pooled candidates.

Used when the user names a model (``--cross-encoder PATH_OR_NAME``); none ships
offline.  The criterion goes in as the CrossEncoder's prompt (prepended to the
anchor side).  Only the candidates pooled by the other methods are scored.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import CondsimError
from .registry import RerankMethod, SkipMethod

_MODELS: dict[str, object] = {}
_LOCK = threading.Lock()


def load_cross_encoder(name: str):
    with _LOCK:
        m = _MODELS.get(name)
        if m is not None:
            return m
        if os.path.exists(name):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import CrossEncoder

            m = CrossEncoder(name, device=os.environ.get("CONDSIM_DEVICE") or None)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:  # missing, not a model, unreadable
            raise CondsimError(
                f"cannot load cross-encoder {name!r}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None
        _MODELS[name] = m
        return m


class CrossEncoderMethod(RerankMethod):
    def prepare(self) -> None:
        name = self.ctx.options.get("cross_encoder")
        if not name:
            raise SkipMethod("cross-encoder needs a model: pass --cross-encoder PATH_OR_NAME")
        self.model_name = name
        self.model = load_cross_encoder(name)
        self.prompt = self.ctx.prompt

    def score_pools(self, anchors: Sequence[int], pools: Sequence[np.ndarray], progress: Callable | None = None,
                    prior=None) -> list[np.ndarray]:
        ctx = self.ctx
        pairs: list[tuple[str, str]] = []
        bounds = []
        texts = ctx.texts_map(set(int(a) for a in anchors) | set(int(x) for p in pools for x in p))
        for a, p in zip(anchors, pools, strict=False):
            start = len(pairs)
            pairs.extend((texts[int(a)], texts[int(x)]) for x in p)
            bounds.append((start, len(pairs)))
        out = np.empty(len(pairs), dtype=np.float32)
        step = 256
        for s in range(0, len(pairs), step):
            out[s : s + step] = np.asarray(
                self.model.predict(pairs[s : s + step], prompt=self.prompt, batch_size=32, show_progress_bar=False),
                dtype=np.float32,
            ).reshape(-1)
            if progress:
                progress(min(s + step, len(pairs)), len(pairs))
        return [out[a:b] for a, b in bounds]

    def score_pool(self, anchor_pos: int, cand_pos: np.ndarray) -> np.ndarray:
        return self.score_pools([anchor_pos], [cand_pos])[0]

    def info(self) -> dict:
        return {"model": self.model_name}
