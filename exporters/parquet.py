"""Parquet export: the JSONL columns in one Parquet file (annotators as a list column)."""

from __future__ import annotations

from pathlib import Path

from .common import TRIPLET_COLUMNS, arrow_table, out_file


def write(rows: list[dict], out: str | Path, *, name: str) -> Path:
    import pyarrow.parquet as pq

    path = out_file(out, f"{name}.parquet", (".parquet", ".pq"))
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(arrow_table(rows, TRIPLET_COLUMNS), tmp)
    tmp.replace(path)
    return path
