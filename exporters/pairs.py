"""Graded pair scores: s({anchor, candidate}) with stderr and a 95% interval, per component.

Scores compare only inside one ``component``; within it they are on the model's
logit scale (a difference of 1 = odds e:1 for an annotator with beta = 1)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq

from .common import arrow_table, out_file, staged_file

PAIR_COLUMNS = ["criterion", "anchor_id", "candidate_id", "anchor", "candidate", "score", "stderr", "ci_low", "ci_high",
                "component", "n_votes", "calibration_run"]


def write(rows: list[dict], out: str | Path, *, name: str, overwrite: bool = False,
          manifest: dict | None = None) -> Path:
    """An existing file is refused unless ``overwrite``; then replaced in one rename."""
    path = out_file(out, f"{name}.pairs.jsonl", (".jsonl", ".parquet", ".csv"))
    with staged_file(path, overwrite=overwrite) as tmp:
        _write_rows(rows, path.suffix, tmp)
    return path


def _write_rows(rows: list[dict], suffix: str, tmp: Path) -> None:
    if suffix == ".parquet":
        pq.write_table(arrow_table(rows, PAIR_COLUMNS), str(tmp))
    elif suffix == ".csv":
        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=PAIR_COLUMNS)
            w.writeheader()
            for r in rows:
                w.writerow({c: r.get(c) for c in PAIR_COLUMNS})
    else:
        with tmp.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({c: r.get(c) for c in PAIR_COLUMNS}, ensure_ascii=False) + "\n")
