"""JSONL export: one gold triplet per line (anchor, positive, negative + provenance)."""

from __future__ import annotations

import json
from pathlib import Path

from .common import TRIPLET_COLUMNS, out_file


def write(rows: list[dict], out: str | Path, *, name: str) -> Path:
    path = out_file(out, f"{name}.jsonl", (".jsonl", ".json"))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({c: r.get(c) for c in TRIPLET_COLUMNS}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
