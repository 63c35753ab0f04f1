"""Graded pair scores: s({anchor, candidate}) with stderr and a 95% interval, per component.

Scores compare only inside one ``component``; within it they are on the model's
logit scale (a difference of 1 = odds e:1 for an annotator with beta = 1)."""

from __future__ import annotations

import json
from pathlib import Path

from .common import out_file

PAIR_COLUMNS = ["criterion", "anchor_id", "candidate_id", "anchor", "candidate", "score", "stderr", "ci_low", "ci_high",
                "component", "n_votes", "calibration_run"]


def write(rows: list[dict], out: str | Path, *, name: str) -> Path:
    path = out_file(out, f"{name}.pairs.jsonl", (".jsonl", ".parquet", ".csv"))
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        from .common import arrow_table

        pq.write_table(arrow_table(rows, PAIR_COLUMNS), tmp)
    elif path.suffix == ".csv":
        import csv

        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=PAIR_COLUMNS)
            w.writeheader()
            for r in rows:
                w.writerow({c: r.get(c) for c in PAIR_COLUMNS})
    else:
        with tmp.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({c: r.get(c) for c in PAIR_COLUMNS}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
