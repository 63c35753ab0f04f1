"""Parquet export: the JSONL columns in one Parquet file (annotators as a list column)."""

from __future__ import annotations

from pathlib import Path

from .common import TRIPLET_COLUMNS, arrow_table, out_file, staged_file


def write(rows: list[dict], out: str | Path, *, name: str, overwrite: bool = False,
          manifest: dict | None = None) -> Path:
    """An existing file is refused unless ``overwrite``; then replaced in one rename."""
    import pyarrow.parquet as pq

    path = out_file(out, f"{name}.parquet", (".parquet", ".pq"))
    with staged_file(path, overwrite=overwrite) as tmp:
        pq.write_table(arrow_table(rows, TRIPLET_COLUMNS), str(tmp))
    return path
