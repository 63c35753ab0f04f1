"""JSONL export: one gold triplet per line (anchor, positive, negative + provenance)."""

from __future__ import annotations

import json
from pathlib import Path

from .common import TRIPLET_COLUMNS, out_file, staged_file


def write(rows: list[dict], out: str | Path, *, name: str, overwrite: bool = False,
          manifest: dict | None = None) -> Path:
    """An existing file is refused unless ``overwrite``; then replaced in one rename."""
    path = out_file(out, f"{name}.jsonl", (".jsonl", ".json"))
    with staged_file(path, overwrite=overwrite) as tmp, tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({c: r.get(c) for c in TRIPLET_COLUMNS}, ensure_ascii=False) + "\n")
    return path
