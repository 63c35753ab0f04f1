"""The ``bm25`` method: BM25 (bm25s) over the raw text; the anchor's own text is the query.

Criterion-blind by design: it is the cheap, generic member of the committee and
(with the bi-encoder's prompt-free similarity) the reference for
"criterion-contrast" negatives.  ``rewrite-bm25`` reuses it over LLM rewrites.

The index is cached beside the embedding cache (``<cache dir>/bm25/<key>/``), keyed by
the sha256 of the documents' content hashes (in corpus order) and the tokenizer and
BM25 settings (k1, b, stopwords, bm25s version); a second run over the same texts
loads it (``bm25s.BM25.load``, memory-mapped, plus each document's token ids) instead
of reading the texts, tokenizing and indexing them again.  A cache folder is written
under a temporary name and renamed into place, so a crash or a concurrent writer never
leaves a half-written index; the ``BM25_KEEP`` most recently used indexes are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from .registry import DenseMethod

BM25_KEEP = 6  # cached indexes kept per cache folder (least recently used ones are removed)
FORMAT = 1  # of the cache folder (bump when its files change)


def _bm25s_version() -> str:
    try:
        return version("bm25s")
    except PackageNotFoundError:  # pragma: no cover
        return "?"


def index_key(text_keys: Sequence[str], *, k1: float, b: float, stopwords: str) -> str:
    """The cache key of an index: the texts (by content hash, in order) and every setting that shapes it."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, "bm25s": _bm25s_version(), "k1": k1, "b": b,
                                   "stopwords": stopwords, "method": "lucene", "n": len(text_keys)},
                                  sort_keys=True).encode())
    h.update("\n".join(text_keys).encode("ascii", "replace"))
    return h.hexdigest()[:32]


class BM25Index:
    def __init__(self, texts: list[str] | None = None, *, k1: float = 1.5, b: float = 0.75, stopwords: str = "english",
                 show_progress: bool = False):
        self.loaded_from: Path | None = None
        if texts is None:  # filled by load()
            return
        import bm25s

        tok = bm25s.tokenize(texts, stopwords=stopwords, show_progress=show_progress, allow_empty=True)
        uniq = [np.unique(np.asarray(ids, dtype=np.int64)) for ids in tok.ids]
        lens = np.fromiter((len(u) for u in uniq), dtype=np.int64, count=len(uniq))
        # each document's distinct token ids (its query), flat: document i is tokens[offsets[i]:offsets[i + 1]]
        self.offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        flat = np.concatenate(uniq) if uniq else np.zeros(0, dtype=np.int64)
        self.tokens = flat.astype(np.int32 if flat.size == 0 or flat.max() < 2**31 else np.int64)
        self.n = len(texts)
        self.model = bm25s.BM25(k1=k1, b=b)
        self.model.index(tok, show_progress=show_progress)
        # bm25s adds an empty-token id when allow_empty; never query with it
        self._empty = tok.vocab.get("")

    # ------------------------------------------------------------------ the cache
    def save(self, folder: Path) -> None:
        """Write the index to ``folder`` (created under a temporary name, then renamed into place)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            self.model.save(str(tmp), show_progress=False)
            np.save(tmp / "doc_offsets.npy", self.offsets)
            np.save(tmp / "doc_tokens.npy", self.tokens)
            (tmp / "condsim.json").write_text(json.dumps({"format": FORMAT, "n": self.n, "empty_id": self._empty}))
            os.rename(tmp, folder)
        except OSError:  # another process got there first (theirs is as good), or the disk failed: no cache
            pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename succeeded

    @classmethod
    def load(cls, folder: Path) -> BM25Index | None:
        """The index cached in ``folder``, or None when there is none (or it is unreadable)."""
        folder = Path(folder)
        meta_path = folder / "condsim.json"
        if not meta_path.exists():
            return None
        try:
            import bm25s

            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT:
                return None
            self = cls()
            self.model = bm25s.BM25.load(str(folder), mmap=True, load_vocab=False, show_progress=False)
            self.offsets = np.load(folder / "doc_offsets.npy")
            self.tokens = np.load(folder / "doc_tokens.npy", mmap_mode="r")
            self.n = int(meta["n"])
            if len(self.offsets) != self.n + 1 or int(self.offsets[-1]) != len(self.tokens):
                return None
            self._empty = meta.get("empty_id")
            self.loaded_from = folder
            os.utime(meta_path)  # most recently used
            return self
        except (OSError, ValueError, KeyError, TypeError, EOFError):  # a damaged cache entry is rebuilt, not fatal
            return None

    @classmethod
    def cached(cls, root: Path, text_keys: Sequence[str], texts: Callable[[], list[str]], *, k1: float = 1.5,
               b: float = 0.75, stopwords: str = "english") -> BM25Index:
        """Load the index of these texts from ``root`` or build it (calling ``texts()``) and cache it."""
        root = Path(root)
        folder = root / index_key(text_keys, k1=k1, b=b, stopwords=stopwords)
        idx = cls.load(folder)
        if idx is not None:
            return idx
        idx = cls(texts(), k1=k1, b=b, stopwords=stopwords)
        try:
            if folder.exists():  # unreadable: replace it
                shutil.rmtree(folder, ignore_errors=True)
            idx.save(folder)
            _prune(root)
        except OSError:  # pragma: no cover - a read-only cache folder: the run goes on uncached
            pass
        return idx

    # ------------------------------------------------------------------ scoring
    def doc_tokens(self, pos: int) -> np.ndarray:
        """Document ``pos``'s distinct token ids: its query as an anchor."""
        return self.tokens[self.offsets[pos] : self.offsets[pos + 1]]

    def scores_for(self, query_ids: np.ndarray) -> np.ndarray:
        ids = [int(i) for i in query_ids if self._empty is None or int(i) != self._empty]
        if not ids:
            return np.zeros(self.n, dtype=np.float32)
        return np.asarray(self.model.get_scores_from_ids(ids), dtype=np.float32)

    def rows(self, anchor_pos: np.ndarray) -> np.ndarray:
        out = np.empty((len(anchor_pos), self.n), dtype=np.float32)
        for i, a in enumerate(anchor_pos):
            out[i] = self.scores_for(self.doc_tokens(int(a)))
        return out


def _prune(root: Path, keep: int = BM25_KEEP) -> None:
    entries = []
    for d in Path(root).iterdir():
        m = d / "condsim.json"
        if d.is_dir() and not d.name.startswith(".") and m.exists():
            entries.append((m.stat().st_mtime, d))
    for _t, d in sorted(entries, reverse=True)[keep:]:
        shutil.rmtree(d, ignore_errors=True)


def list_bm25_caches(root: Path) -> list[dict]:
    folder = Path(root) / "bm25"
    out = []
    if folder.exists():
        for d in sorted(folder.iterdir()):
            m = d / "condsim.json"
            if d.is_dir() and m.exists():
                try:
                    n = json.loads(m.read_text()).get("n")
                except (OSError, ValueError):
                    n = None
                out.append({"key": d.name, "documents": n, "bytes": sum(f.stat().st_size for f in d.iterdir()),
                            "path": str(d)})
    return out


class BM25Method(DenseMethod):
    texts_source = "raw"

    def _texts(self) -> list[str]:
        return self.ctx.all_texts()

    def _text_keys(self) -> tuple[list[str], list[str] | None]:
        """(one content hash per document, the texts if they had to be read for it)."""
        return list(self.ctx.content_hashes), None

    def prepare(self) -> None:
        s = self.spec.settings
        keys, texts = self._text_keys()
        cb = self.ctx.progress_fn(f"indexing ({self.name})")
        cb(0, 1)
        self.index = BM25Index.cached(self.ctx.cache_root / "bm25", keys,
                                      lambda: texts if texts is not None else self._texts(),
                                      k1=float(s.get("k1", 1.5)), b=float(s.get("b", 0.75)),
                                      stopwords=str(s.get("stopwords", "english")))
        cb(1, 1)

    def scores(self, anchor_pos: np.ndarray) -> np.ndarray:
        return self.index.rows(anchor_pos)

    def generic_scores(self, anchor_pos: np.ndarray):
        return self.scores(anchor_pos) if not self.criterion_aware else None

    def score_pairs(self, anchor_pos: int, cand_pos: np.ndarray) -> np.ndarray:
        return self.index.scores_for(self.index.doc_tokens(int(anchor_pos)))[np.asarray(cand_pos)]

    def info(self) -> dict:
        return {"documents": self.index.n, "texts": self.texts_source,
                "index": "cached" if self.index.loaded_from is not None else "built"}
