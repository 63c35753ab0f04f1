"""The embedding cache: one memory-mapped float32 ``.npy`` per model, beside the store.

Layout (``<cache dir>/emb/``)::

    <model-key>.npy      float32 [n, dim], a valid .npy (``np.load(p, mmap_mode="r")`` works)
    <model-key>.index    one key per line; line i is row i (key = sha256 of the document text,
                         or of prompt + text for query-side embeddings)
    <model-key>.json     {"model": ..., "dim": ...}
    <model-key>.lock     taken while appending (several processes may share a cache)

Rows are only ever appended.  An append writes the vectors first, then the new shape
into the header, then the keys; a reader trusts the smallest of the three counts, so a
Ctrl-C (or a crash) at any point leaves a cache that is consistent up to the last
complete row, and the next append first trims any half-written tail.

Where the cache lives: ``$CONDSIM_CACHE`` (or ``cache_dir=``) when given; otherwise
``<store dir>/.condsim`` for a SQLite store and ``~/.cache/condsim-annot`` for
PostgreSQL and in-memory stores.  Keys are content hashes, so one cache can serve
many stores.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ENV_CACHE = "CONDSIM_CACHE"


def cache_root(store_url: str | None = None, cache_dir: str | None = None) -> Path:
    """The folder holding ``emb/`` (and other proposal caches) for a store."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    if store_url and store_url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        db = make_url(store_url).database
        if db and db != ":memory:":
            return Path(db).expanduser().resolve().parent / ".condsim"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "condsim-annot"


def model_key(model: str) -> str:
    """A file-name-safe key for a model path or hub name (paths get a short hash of their location)."""
    p = Path(model).expanduser()
    if p.exists():
        resolved = str(p.resolve())
        base = p.resolve().name
        if base == "model":  # e.g. site-packages/<package>/model
            base = p.resolve().parent.name
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", base) + "-" + hashlib.sha256(resolved.encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model.replace("/", "__"))


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def query_key(prompt: str, content_hash: str) -> str:
    return hashlib.sha256(("query\x00" + prompt + "\x00" + content_hash).encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Append-only float32 rows keyed by content hash, memory-mapped for reading."""

    def __init__(self, folder: Path, key: str, *, model: str | None = None, dim: int | None = None):
        self.folder = Path(folder)
        self.key = key
        self.model = model
        self.path = self.folder / f"{key}.npy"
        self.index_path = self.folder / f"{key}.index"
        self.meta_path = self.folder / f"{key}.json"
        self.lock_path = self.folder / f"{key}.lock"
        self.dim = dim
        if self.meta_path.exists():
            meta = json.loads(self.meta_path.read_text())
            self.dim = int(meta["dim"])
            self.model = self.model or meta.get("model")
        self._index: dict[str, int] = {}
        self._n = 0
        self._mm: np.ndarray | None = None
        self.reload()

    # ------------------------------------------------------------------ reading
    def _header(self) -> tuple[int, int, int]:
        """(rows in header, dim, header length in bytes)."""
        with open(self.path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _fortran, _dtype = reader(fh)
            return int(shape[0]), int(shape[1]), fh.tell()

    def _count(self) -> int:
        if not self.path.exists() or not self.index_path.exists() or self.dim is None:
            return 0
        rows, dim, hlen = self._header()
        by_size = (self.path.stat().st_size - hlen) // (4 * dim)
        return min(rows, by_size, len(self._read_keys()))

    def _read_keys(self) -> list[str]:
        if not self.index_path.exists():
            return []
        raw = self.index_path.read_text("ascii")
        lines = raw.split("\n")
        if not raw.endswith("\n"):
            lines = lines[:-1]  # a half-written last key
        return [x for x in lines if x] if lines else []

    def reload(self) -> None:
        n = self._count()
        keys = self._read_keys()[:n]
        self._index = {k: i for i, k in enumerate(keys)}
        self._n = n
        self._mm = None

    def __len__(self) -> int:
        return self._n

    def __contains__(self, key: str) -> bool:
        return key in self._index

    @property
    def array(self) -> np.ndarray:
        """All complete rows, memory-mapped read-only ([0, dim] when empty)."""
        if self._n == 0:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        if self._mm is None or self._mm.shape[0] != self._n:
            _rows, dim, hlen = self._header()
            self._mm = np.memmap(self.path, dtype=np.float32, mode="r", offset=hlen, shape=(self._n, dim))
        return self._mm

    def missing(self, keys: Sequence[str]) -> list[int]:
        """Positions in ``keys`` not in the cache."""
        return [i for i, k in enumerate(keys) if k not in self._index]

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        """Row numbers of ``keys`` (all must be present)."""
        return np.fromiter((self._index[k] for k in keys), dtype=np.int64, count=len(keys))

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """The vectors of ``keys`` as an in-memory [len(keys), dim] array (contiguous runs are not copied twice)."""
        r = self.rows(keys)
        arr = self.array
        if len(r) and r[0] == 0 and len(r) == arr.shape[0] and np.all(np.diff(r) == 1):
            return np.asarray(arr)
        return arr[r]

    # ------------------------------------------------------------------ writing
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lk, fcntl.LOCK_UN)

    def _create(self, dim: int) -> None:
        self.dim = dim
        self.meta_path.write_text(json.dumps({"model": self.model, "dim": dim}))
        with open(self.path, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (0, dim)})
        self.index_path.write_text("")

    def append(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add rows (keys already present are skipped).  Safe against concurrent appenders and Ctrl-C."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(keys) != len(vectors):
            raise ValueError("keys and vectors differ in length")
        if not len(keys):
            return
        with self._locked():
            if not self.path.exists() or not self.meta_path.exists():
                self._create(int(vectors.shape[1]))
            self.reload()  # another process may have appended
            if vectors.shape[1] != self.dim:
                raise ValueError(f"cache {self.path} holds {self.dim}-d vectors, not {vectors.shape[1]}-d")
            fresh, seen = [], set()
            for i, k in enumerate(keys):
                if k not in self._index and k not in seen:
                    fresh.append(i)
                    seen.add(k)
            if not fresh:
                return
            n = self._n
            _rows, dim, hlen = self._header()
            new = vectors[fresh]
            with open(self.path, "r+b") as fh:
                fh.truncate(hlen + n * 4 * dim)  # drop a half-written tail
                fh.seek(0, os.SEEK_END)
                fh.write(new.tobytes())
                fh.flush()
                os.fsync(fh.fileno())
                # the new shape in place: numpy pads the header so axis 0 can grow
                buf = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    buf, {"descr": "<f4", "fortran_order": False, "shape": (n + len(fresh), dim)}
                )
                header = buf.getvalue()
                if len(header) != hlen:  # pragma: no cover - numpy leaves room for 21 digits
                    raise RuntimeError("cannot grow the .npy header in place")
                fh.seek(0)
                fh.write(header)
                fh.flush()
            all_keys = self._read_keys()
            raw_ok = self.index_path.stat().st_size == sum(len(k) + 1 for k in all_keys)
            if len(all_keys) != n or not raw_ok:  # trim extra or half-written keys
                self.index_path.write_text("".join(k + "\n" for k in all_keys[:n]), "ascii")
            with open(self.index_path, "a", encoding="ascii") as fx:
                fx.write("".join(keys[i] + "\n" for i in fresh))
            self.reload()

    def info(self) -> dict:
        size = self.path.stat().st_size if self.path.exists() else 0
        return {"key": self.key, "model": self.model, "dim": self.dim, "rows": self._n, "bytes": size,
                "path": str(self.path)}


def list_caches(root: Path) -> list[dict]:
    folder = Path(root) / "emb"
    out = []
    if folder.exists():
        for meta in sorted(folder.glob("*.json")):
            try:
                out.append(EmbeddingCache(folder, meta.stem).info())
            except (OSError, ValueError, KeyError) as exc:  # a damaged cache is reported, not fatal
                out.append({"key": meta.stem, "error": str(exc), "path": str(meta)})
    return out
